// Convene browser SDK: join a room with its token and hold a WebRTC call.
//
// An ES module with no build step: `import { joinRoom } from '/sdk/convene.js'`.
// The surface follows the public VCS realtime SDK (see convene.d.ts); the wire protocol is
// docs/signaling.md. In MESH rooms each pair of participants has one RTCPeerConnection,
// set up with the "perfect negotiation" pattern, so either side may (re)negotiate at any
// time without glare.

const SIGNALING_PATH = '/api/realtime/signaling';
/** A peer connection not connected after this long is reported as `participantJoinFailed`. */
const JOIN_FAILED_TIMEOUT_MS = 20000;
/** Reconnect back-off after an unexpected drop, doubling up to the maximum. */
const RESUME_FIRST_DELAY_MS = 250;
const RESUME_MAX_DELAY_MS = 4000;

/** Close codes after which the SDK does not reconnect, and the reason it reports. */
const FINAL_CLOSES = {
  1000: 'left',
  1009: 'messageTooLarge',
  4001: 'invalidToken',
  4004: 'roomNotFound',
  4009: 'roomFull',
  4010: 'deleted',
  4011: 'expired',
  4012: 'replaced',
  4013: 'kicked',
  4014: 'endpointExpired',
};

/** Error codes of a refused join, and the reason `joinRoom` rejects with. */
const JOIN_ERRORS = {
  'REALTIME-00009': 'invalidToken',
  'REALTIME-00004': 'roomNotFound',
  'REALTIME-00010': 'roomFull',
};

/** Why `joinRoom` failed: `reason` is a stable word, `code` the server's error code. */
export class ConveneError extends Error {
  constructor(reason, message, code = null) {
    super(message);
    this.name = 'ConveneError';
    this.reason = reason;
    this.code = code;
  }
}

/** Someone in the room: the local participant (`self`) or a remote one. */
export class Participant {
  constructor(info, self) {
    this.address = info.address;
    this.name = info.name;
    this.participantInfo = info.participantInfo;
    this.audio = info.audio ?? true;
    this.video = info.video ?? true;
    this.joinedAt = info.joinedAt;
    this.self = self;
    this.mediaStream = null;
    this._elements = new Set();
  }

  /** Keeps a `<video>` showing this participant in `element`. */
  attach(element) {
    let video = [...element.querySelectorAll('video[data-convene]')].find((v) => v.dataset.convene === this.address);
    if (!video) {
      video = document.createElement('video');
      video.dataset.convene = this.address;
      video.autoplay = true;
      video.playsInline = true;
      video.muted = this.self; // never play our own microphone back
      element.appendChild(video);
    }
    this._elements.add(video);
    if (this.mediaStream) video.srcObject = this.mediaStream;
    return video;
  }

  _update(info) {
    if ('audio' in info) this.audio = info.audio;
    if ('video' in info) this.video = info.video;
  }

  _setStream(stream) {
    this.mediaStream = stream;
    for (const video of this._elements) video.srcObject = stream;
  }
}

/** A joined room. Get one from `joinRoom`. */
export class Room {
  constructor(token, options) {
    this._token = token;
    this._options = options;
    this._handlers = new Map();
    this._queued = []; // events emitted before the app could add handlers
    this._ready = false;
    this._peers = new Map(); // address → Peer
    this._participants = new Map(); // address → Participant (remote)
    this._ws = null;
    this._resumeToken = null;
    this._iceServers = [];
    this._left = false;
    this._resumeDelay = RESUME_FIRST_DELAY_MS;
    this._ownStream = false;
    this.localParticipant = null;
    this.name = undefined;
    this.conferenceType = undefined;
    this.id = undefined;
    this.maxParticipants = undefined;
  }

  get remoteParticipants() {
    return [...this._participants.values()];
  }

  isMuted() {
    return !this._trackEnabled('audio', this._options.audio);
  }

  hasVideo() {
    return this._trackEnabled('video', this._options.video);
  }

  /** Mutes or unmutes the microphone; answers the new muted state. */
  toggleMute() {
    const muted = !this.isMuted();
    this._setEnabled('audio', !muted);
    this.localParticipant._update({ audio: !muted });
    this._send({ type: 'mediaState', audio: !muted });
    return muted;
  }

  /** Turns the camera off or on; answers the new video state. */
  async toggleVideo() {
    const video = !this.hasVideo();
    this._setEnabled('video', video);
    this.localParticipant._update({ video });
    this._send({ type: 'mediaState', video });
    return video;
  }

  /** Sends `message` to one participant, or with `address` empty or absent to everyone else. */
  sendMessageToParticipant(message, address) {
    const frame = { type: 'message', data: message };
    if (address) frame.to = [address];
    this._send(frame);
  }

  /** Leaves the room: the others see `participantLeft`, and this room emits `roomLeft('left')`. */
  leave() {
    if (this._left) return;
    this._send({ type: 'leave' });
    this._finish('left');
  }

  /** Adds a handler: `participantJoined`, `participantLeft`, `participantUpdated`,
   * `participantJoinFailed`, `localStream`, `remoteStream`, `messageReceived`,
   * `conferenceTypeChanged`, `roomLeft`. */
  on(event, callback) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(callback);
    return this;
  }

  off(event, callback) {
    this._handlers.get(event)?.delete(callback);
    return this;
  }

  // --- For tests and debugging; not part of the supported surface. ---

  /** The peer connection to each remote participant. */
  _peerConnections() {
    return new Map([...this._peers].map(([address, peer]) => [address, peer.pc]));
  }

  /** Drops the signaling socket as a network fault would; the SDK resumes by itself. */
  _dropConnection() {
    this._ws?.close(4999, 'dropped for a test');
  }

  // --- Internals ---

  _emit(event, ...args) {
    if (!this._ready) {
      this._queued.push([event, args]);
      return;
    }
    for (const handler of this._handlers.get(event) ?? []) {
      try {
        handler(...args);
      } catch (e) {
        console.error(`convene: a ${event} handler threw`, e);
      }
    }
  }

  /** Delivers queued events once `joinRoom` has resolved and the app could add handlers. */
  _release() {
    setTimeout(() => {
      this._ready = true;
      for (const [event, args] of this._queued.splice(0)) this._emit(event, ...args);
    }, 0);
  }

  _tracks(kind) {
    const stream = this.localParticipant?.mediaStream;
    if (!stream) return [];
    return kind === 'audio' ? stream.getAudioTracks() : stream.getVideoTracks();
  }

  _trackEnabled(kind, fallback) {
    const tracks = this._tracks(kind);
    return tracks.length ? tracks.some((t) => t.enabled) : fallback !== false;
  }

  _setEnabled(kind, enabled) {
    for (const track of this._tracks(kind)) track.enabled = enabled;
    this._options[kind] = enabled;
  }

  _send(frame) {
    if (this._ws?.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(frame));
  }

  _url() {
    const host = this._options.host ?? location.origin;
    const base = new URL(host, location.href);
    base.protocol = base.protocol === 'https:' ? 'wss:' : 'ws:';
    base.pathname = SIGNALING_PATH;
    base.search = '';
    return base.toString();
  }

  /** Opens the socket and sends `join` (with `resume` after a drop). Resolves on `joined`. */
  _connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this._url());
      this._ws = ws;
      let joined = false;
      ws.onopen = () => {
        const o = this._options;
        const join = { type: 'join', token: this._token, audio: o.audio !== false, video: o.video !== false };
        if (o.name !== undefined) join.name = o.name;
        if (o.participantInfo !== undefined) join.participantInfo = o.participantInfo;
        if (this._resumeToken) join.resume = this._resumeToken;
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (e) => {
        let message;
        try {
          message = JSON.parse(e.data);
        } catch {
          return;
        }
        if (!joined) {
          if (message.type === 'joined') {
            joined = true;
            this._onJoined(message);
            resolve();
          } else if (message.type === 'error') {
            const reason = JOIN_ERRORS[message.code] ?? 'joinRefused';
            reject(new ConveneError(reason, message.description?.join(' ') ?? reason, message.code));
          }
          return;
        }
        this._onMessage(message);
      };
      ws.onclose = (e) => {
        if (this._ws !== ws) return;
        if (!joined) {
          const reason = FINAL_CLOSES[e.code] ?? 'connectionFailed';
          reject(new ConveneError(reason, `could not join (close ${e.code})`, null));
          return;
        }
        this._onClose(e.code);
      };
    });
  }

  _onJoined(message) {
    this._resumeToken = message.resumeToken;
    this._iceServers = message.iceServers ?? [];
    this.id = message.room.id;
    this.name = message.room.name;
    this.conferenceType = message.room.conferenceType;
    this.maxParticipants = message.room.maxParticipants;
    this._resumeDelay = RESUME_FIRST_DELAY_MS;
    const resumed = this.localParticipant !== null;
    if (!resumed) {
      this.localParticipant = new Participant(
        { address: message.address, name: this._options.name, participantInfo: this._options.participantInfo,
          audio: this._options.audio !== false, video: this._options.video !== false },
        true,
      );
      if (this._pendingStream) this._applyStream(this._pendingStream);
      this._pendingStream = null;
    }
    // After a resume, bring the list up to date: who came and went while we were away.
    const present = new Set(message.participants.map((p) => p.address));
    for (const [address, participant] of this._participants) {
      if (!present.has(address)) this._removeParticipant(address, participant);
    }
    for (const info of message.participants) {
      if (!this._participants.has(info.address)) this._addParticipant(info, resumed);
    }
  }

  _onMessage(message) {
    switch (message.type) {
      case 'participantJoined':
        this._addParticipant(message.participant, true);
        break;
      case 'participantLeft': {
        const participant = this._participants.get(message.address);
        if (participant) this._removeParticipant(message.address, participant, message.reason);
        break;
      }
      case 'participantUpdated': {
        const participant = this._participants.get(message.participant.address);
        if (participant) {
          participant._update(message.participant);
          this._emit('participantUpdated', participant);
        }
        break;
      }
      case 'signal':
        this._peers.get(message.from)?.onSignal(message.data);
        break;
      case 'message': {
        const from = this._participants.get(message.from) ?? { address: message.from };
        this._emit('messageReceived', from, message.data);
        break;
      }
      case 'conferenceTypeChanged':
        this.conferenceType = message.conferenceType;
        this._emit('conferenceTypeChanged', message.conferenceType);
        break;
      case 'roomClosed':
        this._closedReason = message.reason;
        break;
      case 'error':
        console.warn('convene:', message.code, message.description?.join(' '));
        break;
      default:
        break;
    }
  }

  _onClose(code) {
    if (this._left) return;
    if (code in FINAL_CLOSES) {
      this._finish(this._closedReason ?? FINAL_CLOSES[code]);
      return;
    }
    // An unexpected drop (network, server restart, heartbeat): resume with the same address.
    const delay = this._resumeDelay;
    this._resumeDelay = Math.min(delay * 2, RESUME_MAX_DELAY_MS);
    setTimeout(() => {
      if (this._left) return;
      this._connect().catch((e) => {
        if (e.reason === 'connectionFailed') this._onClose(1006);
        else this._finish(e.reason);
      });
    }, delay);
  }

  _finish(reason) {
    if (this._left) return;
    this._left = true;
    for (const peer of this._peers.values()) peer.close();
    this._peers.clear();
    if (this._ws && this._ws.readyState <= WebSocket.OPEN) this._ws.close(1000);
    if (this._ownStream) for (const track of this.localParticipant?.mediaStream?.getTracks() ?? []) track.stop();
    this._emit('roomLeft', reason);
  }

  _addParticipant(info, announce) {
    const participant = new Participant(info, false);
    this._participants.set(participant.address, participant);
    if (announce) this._emit('participantJoined', participant);
    if (this.localParticipant.mediaStream) {
      this._peers.set(participant.address, new Peer(this, participant));
    } else if (this._options.delayLocalStream) {
      // Ask for camera and microphone only now that someone is there.
      this._startLocalStream().catch((e) => console.error('convene: no local media', e));
    }
  }

  _removeParticipant(address, participant, reason = 'left') {
    this._participants.delete(address);
    this._peers.get(address)?.close();
    this._peers.delete(address);
    this._emit('participantLeft', participant, reason);
  }

  /** The app's `mediaStream`, or camera and microphone. */
  async _acquireStream() {
    if (this._options.mediaStream) return this._options.mediaStream;
    const video = this._options.hdVideo === false ? { width: 640, height: 480 } : { width: 1280, height: 720 };
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true, video });
    this._ownStream = true;
    return stream;
  }

  _applyStream(stream) {
    for (const t of stream.getAudioTracks()) t.enabled = this._options.audio !== false;
    for (const t of stream.getVideoTracks()) t.enabled = this._options.video !== false;
    this.localParticipant._setStream(stream);
    this._emit('localStream', this.localParticipant);
  }

  /** With `delayLocalStream`: asks for media once someone else is there, then connects. */
  async _startLocalStream() {
    if (this.localParticipant.mediaStream) return undefined;
    this._starting ??= (async () => {
      this._applyStream(await this._acquireStream());
      for (const participant of this._participants.values()) {
        if (!this._peers.has(participant.address)) this._peers.set(participant.address, new Peer(this, participant));
      }
    })();
    return this._starting;
  }
}

/** The peer connection to one remote participant, negotiated the "perfect" way. */
class Peer {
  constructor(room, remote) {
    this.room = room;
    this.remote = remote;
    // The side with the smaller address yields when both offer at once.
    this.polite = room.localParticipant.address < remote.address;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.pc = new RTCPeerConnection({ iceServers: room._iceServers });
    const stream = room.localParticipant.mediaStream;
    for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
    this.pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await this.pc.setLocalDescription();
        this.signal({ description: this.pc.localDescription });
      } catch (e) {
        console.error('convene: negotiation failed', e);
      } finally {
        this.makingOffer = false;
      }
    };
    this.pc.onicecandidate = ({ candidate }) => {
      if (candidate) this.signal({ candidate });
    };
    this.pc.ontrack = ({ track, streams }) => {
      const incoming = streams[0] ?? new MediaStream([track]);
      if (remote.mediaStream !== incoming) {
        remote._setStream(incoming);
        room._emit('remoteStream', remote);
      }
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === 'connected') clearTimeout(this.failTimer);
      if (state === 'failed') this.failed('connectionFailed');
    };
    this.failTimer = setTimeout(() => {
      if (this.pc.connectionState !== 'connected') this.failed('timeout');
    }, JOIN_FAILED_TIMEOUT_MS);
  }

  failed(reason) {
    clearTimeout(this.failTimer);
    if (this.reportedFailure) return;
    this.reportedFailure = true;
    this.room._emit('participantJoinFailed', this.remote, reason);
  }

  signal(data) {
    this.room._send({ type: 'signal', to: this.remote.address, data: JSON.parse(JSON.stringify(data)) });
  }

  async onSignal({ description, candidate }) {
    try {
      if (description) {
        const collision = description.type === 'offer' && (this.makingOffer || this.pc.signalingState !== 'stable');
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        await this.pc.setRemoteDescription(description);
        if (description.type === 'offer') {
          await this.pc.setLocalDescription();
          this.signal({ description: this.pc.localDescription });
        }
      } else if (candidate) {
        try {
          await this.pc.addIceCandidate(candidate);
        } catch (e) {
          if (!this.ignoreOffer) throw e;
        }
      }
    } catch (e) {
      console.error('convene: signal handling failed', e);
    }
  }

  close() {
    clearTimeout(this.failTimer);
    this.pc.close();
  }
}

/**
 * Joins the room that `token` names. Resolves to a `Room`, or rejects with a
 * `ConveneError` whose `reason` is `roomFull`, `invalidToken`, `roomNotFound` or
 * `connectionFailed`.
 */
export async function joinRoom(token, options = {}) {
  const room = new Room(token, { ...options });
  if (!options.delayLocalStream) room._pendingStream = await room._acquireStream();
  await room._connect();
  if (options.delayLocalStream && room.remoteParticipants.length > 0) {
    await room._startLocalStream();
  }
  room._release();
  return room;
}

export default { joinRoom, ConveneError };
