// Convene browser SDK: join a room with its token and hold a WebRTC call.
//
// An ES module with no build step: `import { joinRoom } from '/sdk/convene.js'`.
// The surface follows the public VCS realtime SDK (see convene.d.ts); the wire protocol is
// docs/signaling.md. In MESH rooms each pair of participants has one RTCPeerConnection. The
// first offer always comes from the one who joined later (it learns of the other from
// `joined`); the one already there answers and only then adds its tracks, so the two never
// offer at once (Chromium can stall ICE gathering after rolling back a first offer). Later
// renegotiations (ICE restarts after a reconnect) use the "perfect negotiation" pattern, so
// either side may start one at any time without glare.
//
// In SFU rooms (docs/sfu.md) there is one RTCPeerConnection, to the server's media side (the
// address `sfu`): the SDK offers first with its own tracks, the server answers and later
// offers whenever other participants' tracks come or go; the SDK is the polite side (on glare
// it rolls back its own offer and answers the server's). Every track the server forwards has
// its publisher's address as stream id, which maps it to its participant. When a MESH room
// becomes SFU (`conferenceTypeChanged`) the SDK connects to `sfu` and keeps showing each
// participant's mesh media until that participant's media arrives through the server, then
// closes the mesh connection to it.

/** This SDK's version (web/sdk/package.json; CHANGELOG.md says what changed). */
export const VERSION = '1.1.1';

const SIGNALING_PATH = '/api/realtime/signaling';
/** Default of `connectionTimeout`: a peer connection not connected after this long is
 * reported as `participantJoinFailed`. */
const PEER_TIMEOUT_MS = 20000;
/** How long `joinRoom` (and each resume attempt) waits for `joined`. */
const JOIN_TIMEOUT_MS = 15000;
/** Reconnect back-off after an unexpected drop, doubling up to the maximum. */
const RESUME_FIRST_DELAY_MS = 250;
const RESUME_MAX_DELAY_MS = 5000;
/** Where this module was loaded from, if over http(s): the service that serves it. */
const SDK_ORIGIN = /^https?:$/.test(new URL(import.meta.url).protocol) ? new URL(import.meta.url).origin : null;

/** The media server's address in signaling. */
const SFU = 'sfu';
/** After a room became SFU: how long after the connection to `sfu` is up the SDK still keeps
 * a mesh connection whose participant's media has not come through the server (a participant
 * that publishes nothing, for instance). */
const SWITCHOVER_TIMEOUT_MS = 10000;
/** How often the SDK looks whether media from `sfu` is decoded yet, during a switchover. */
const SWITCH_POLL_MS = 100;
/** Restarts of a failed connection to `sfu`: the first at once, then doubling to the maximum
 * (jittered). */
const SFU_RESTART_MAX_DELAY_MS = 8000;
/** How long the connection to `sfu` may stay `disconnected` before the SDK restarts ICE on
 * it (the server keeps a connection that lost ICE for its ICE timeout, 30 s by default). */
const SFU_ICE_RESTART_AFTER_MS = 2000;

/** A camera's simulcast layers in SFU rooms, low to high (docs/sfu.md, "Simulcast and
 * layers"): the server forwards to each subscriber the one that fits what it shows. */
const SIMULCAST_LAYERS = [
  { rid: 'q', scaleResolutionDownBy: 4, maxBitrate: 150000 },
  { rid: 'h', scaleResolutionDownBy: 2, maxBitrate: 500000 },
  { rid: 'f', scaleResolutionDownBy: 1, maxBitrate: 1500000 },
];
/** How long size and visibility changes of attached videos are gathered before the SDK tells
 * `sfu` what it shows (`views`). */
const VIEWS_DEBOUNCE_MS = 200;
/** Entries in one `views` message at most (the server refuses more). */
const MAX_VIEWS_PER_MESSAGE = 100;

/** Video senders on the connection to `sfu` → the layers (rids) the server last said anybody
 * uses (`layers`), or null before it said anything. Camera off wins over it. */
const sfuVideoSenders = new WeakMap();

/** Whether `track` is a screen share (never simulcast). */
function isScreenShare(track) {
  const settings = track.getSettings?.() ?? {};
  return Boolean(settings.displaySurface) || track.contentHint === 'detail' || track.contentHint === 'text';
}

/** The `sendEncodings` of `track` in an SFU room, or null to send it as a plain track.
 * `option` is `joinRoom`'s `simulcast`: `'auto'` (default) decides by the camera's height as
 * Chrome would keep the layers (3 from 540 lines, 2 from 270, else none), `true` always three,
 * `false` never. Audio and screen shares never. */
function simulcastEncodings(track, option = 'auto') {
  if (option === false || track.kind !== 'video' || isScreenShare(track)) return null;
  if (option === true) return SIMULCAST_LAYERS.map((e) => ({ ...e }));
  const height = track.getSettings?.().height ?? 0;
  if (height >= 540) return SIMULCAST_LAYERS.map((e) => ({ ...e }));
  if (height >= 270) return SIMULCAST_LAYERS.slice(1).map((e) => ({ ...e }));
  return null;
}

/** Sets `encodings[i].active = wanted(encoding)` on `sender`, one change after the other (a
 * second getParameters before the first setParameters settled could undo it); `wanted` is
 * asked when the change is made, so the latest state wins. */
function setActive(sender, wanted) {
  const previous = sender._conveneParams ?? Promise.resolve();
  sender._conveneParams = previous.then(async () => {
    const params = sender.getParameters();
    if (!params.encodings?.length) return;
    const want = params.encodings.map((e) => Boolean(wanted(e)));
    if (params.encodings.every((e, i) => e.active === want[i])) return;
    params.encodings.forEach((e, i) => { e.active = want[i]; });
    await sender.setParameters(params);
  }).catch((e) => console.warn('convene: setting encodings', e));
}

/** `delay` less a random part of up to half of it, so that many clients spread out. */
function jittered(delay) {
  return Math.round(delay * (0.5 + Math.random() * 0.5));
}

/** Per mid of `pc`'s remote description, the track id of its `a=msid:` line. */
function remoteMsids(pc) {
  const result = new Map();
  const sdp = pc.remoteDescription?.sdp ?? '';
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const mid = section.match(/^a=mid:(\S+)/m)?.[1];
    const msid = section.match(/^a=msid:\S+ (\S+)/m)?.[1];
    if (mid && msid) result.set(mid, msid);
  }
  return result;
}

/** Sums the `inbound-rtp` counters of `reports` per kind. */
function inboundCounters(reports) {
  const audio = { packetsReceived: 0, bytesReceived: 0, packetsLost: 0, totalAudioEnergy: 0, totalSamplesReceived: 0, audioLevel: 0 };
  const video = { framesDecoded: 0, framesReceived: 0, packetsReceived: 0, bytesReceived: 0, packetsLost: 0, frameWidth: 0, frameHeight: 0 };
  for (const report of reports) {
    report.forEach((s) => {
      if (s.type !== 'inbound-rtp') return;
      const sum = s.kind === 'audio' ? audio : s.kind === 'video' ? video : null;
      if (!sum) return;
      for (const key of Object.keys(sum)) {
        if (typeof s[key] !== 'number') continue;
        if (['audioLevel', 'frameWidth', 'frameHeight'].includes(key)) sum[key] = Math.max(sum[key], s[key]);
        else sum[key] += s[key];
      }
    });
  }
  return { audio, video };
}
/** Signals kept for a participant whose peer connection does not exist yet. */
const MAX_EARLY_SIGNALS = 200;

/** Close codes after which the SDK does not reconnect, and the reason it reports. Any other
 * code (1001 shutdown, 1006 network, 4015 heartbeat, 4016 slow reader, ...) is resumed. */
const FINAL_CLOSES = {
  1000: 'left',
  1009: 'messageTooLarge',
  4001: 'invalidToken',
  4003: 'banned',
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
  'REALTIME-00031': 'banned',
  // A room token of before a rotation: get the room's current token.
  'REALTIME-00032': 'invalidToken',
  // The service could not reach its store to open the room and closes with 1001: a
  // passing fault, so a resume retries it like a lost connection.
  'BASE-00020': 'connectionFailed',
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
    /** The identity of its participant token; undefined when it joined with the room token. */
    this.identity = info.identity;
    /** What its participant token lets it do; undefined (everything) with the room token. */
    this.permissions = info.permissions;
    this.name = info.name;
    this.participantInfo = info.participantInfo;
    this.audio = info.audio ?? true;
    this.video = info.video ?? true;
    this.joinedAt = info.joinedAt;
    this.self = self;
    this.mediaStream = null;
    /** The participant's screen share (a stream with one video track) while it shares. */
    this.screenStream = null;
    this._videos = new Set();
    this._screenVideos = new Set();
    /** The room (set by it), told of videos whose audio the browser would not play. */
    this._room = null;
    /** What identifies the screen share of a remote participant, as it announced it:
     * `{stream}` (its stream id, in MESH) and `{track}` (the media server's track id,
     * `<address>-<mid>`, in SFU rooms). */
    this._screenKey = null;
    /** Where `mediaStream` comes from: `mesh`, `sfu`, or null (nothing yet). */
    this._via = null;
    /** The receivers of the media shown now (set by the room). */
    this._receivers = () => [];
    /** The room's ViewReporter (remote participants in a room), told of attached videos. */
    this._views = null;
  }

  /** What this participant's media did so far, as received here (a remote participant; the
   * local one answers zeros): `{via, audio: {packetsReceived, bytesReceived, packetsLost,
   * totalAudioEnergy, totalSamplesReceived, audioLevel}, video: {framesDecoded,
   * framesReceived, packetsReceived, bytesReceived, packetsLost, frameWidth, frameHeight}}`,
   * summed over the inbound RTP streams of the connection that carries the media shown now
   * (`via` `mesh` or `sfu`; counters start again from 0 when it changes). */
  async getStats() {
    const receivers = this._receivers();
    const reports = await Promise.all(receivers.map((r) => r.getStats().catch(() => new Map())));
    return { via: this._via, ...inboundCounters(reports) };
  }

  /** Keeps a `<video>` showing this participant in `element` (one per participant and
   * element, however often it is called; removed when the participant leaves); answers the
   * video element. */
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
    this._videos.add(video);
    if (this.mediaStream && video.srcObject !== this.mediaStream) {
      video.srcObject = this.mediaStream;
      this._play(video);
    }
    // In SFU rooms its size and visibility choose the video layer the server sends us.
    this._views?.observe(this, video);
    return video;
  }

  /** Removes the `<video>` that `attach(element)` put in `element` (without `element`: every
   * one of this participant's). A participant whose videos are all gone (or hidden) is no
   * longer sent to us in video in SFU rooms; its audio goes on. */
  detach(element) {
    const videos = [...this._videos].filter((v) => !element || element.contains(v));
    for (const video of videos) {
      this._videos.delete(video);
      this._views?.unobserve(video);
      video.srcObject = null;
      video.remove();
    }
  }

  /** Keeps a `<video>` showing this participant's screen share in `element` while it shares
   * (one per participant and element; removed when the share stops or the participant
   * leaves); answers it, or null when the participant does not share. */
  attachScreen(element) {
    if (!this.screenStream) return null;
    let video = [...element.querySelectorAll('video[data-convene-screen]')]
      .find((v) => v.dataset.conveneScreen === this.address);
    if (!video) {
      video = document.createElement('video');
      video.dataset.conveneScreen = this.address;
      video.autoplay = true;
      video.playsInline = true;
      video.muted = true; // a screen share has no audio; muted video may always autoplay
      element.appendChild(video);
    }
    this._screenVideos.add(video);
    if (video.srcObject !== this.screenStream) video.srcObject = this.screenStream;
    return video;
  }

  /** Plays `video` (a remote participant's, with its audio): when the browser refuses to play
   * audio before a user gesture (autoplay policy), the video plays muted and the room emits
   * `audioBlocked`, until the application calls `room.startAudio()` from a gesture. */
  _play(video) {
    if (this.self || !video.srcObject) return;
    if (this._room?.audioBlocked) {
      this._room._blockedAudio(video);
      return;
    }
    video.play?.()?.catch?.((e) => {
      if (e?.name === 'NotAllowedError' && video.srcObject) this._room?._blockedAudio(video);
    });
  }

  _setScreen(stream) {
    if (this.screenStream === stream) return;
    this.screenStream = stream;
    for (const video of this._screenVideos) {
      if (stream) {
        video.srcObject = stream;
      } else {
        video.srcObject = null;
        video.remove();
      }
    }
    if (!stream) this._screenVideos.clear();
  }

  /** Takes the audio/video state of a participant object; answers whether it changed. */
  _update(info) {
    let changed = false;
    for (const kind of ['audio', 'video']) {
      if (typeof info[kind] === 'boolean' && info[kind] !== this[kind]) {
        this[kind] = info[kind];
        changed = true;
      }
    }
    return changed;
  }

  _setStream(stream, via) {
    this.mediaStream = stream;
    this._via = via;
    for (const video of this._videos) {
      video.srcObject = stream;
      this._play(video);
    }
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
    this._earlySignals = new Map(); // address → signals that came before its Peer
    this._ws = null;
    this._resumeToken = null;
    this._iceServers = [];
    this._left = false;
    this._resumeDelay = RESUME_FIRST_DELAY_MS;
    this._ownStream = false;
    this._pendingStream = null;
    this._starting = null;
    this._closedReason = null;
    this._mediaFailed = false;
    this._sfu = null; // SfuPeer, in SFU rooms
    this._sfuStreams = new Map(); // address → MediaStream from `sfu` whose participant is not known yet
    this._sfuRestarts = 0;
    this._sfuReconnecting = false;
    this._switchTimer = null;
    this._signalingDown = false;
    this._views = new ViewReporter(this);
    this._speakerAddresses = []; // as the server last listed them
    this._ownTracks = new Set(); // tracks the SDK opened (device switches), stopped when replaced or left
    this._screen = null; // { stream, track, owned } while the local participant shares its screen
    this._mutedForAutoplay = new Set(); // remote videos playing muted because audio was refused
    /** Whether the browser refused to play remote audio until a user gesture (autoplay
     * policy); `startAudio()` from a click resolves it. */
    this.audioBlocked = false;
    /** Who speaks now, loudest first (SFU rooms; the local participant included). */
    this.activeSpeakers = [];
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

  /** Mutes or unmutes the microphone and tells the others; answers the new muted state. */
  toggleMute() {
    const muted = !this.isMuted();
    this._setEnabled('audio', !muted);
    for (const pc of this._allConnections()) this._applyMute(pc);
    this.localParticipant._update({ audio: !muted });
    this._send({ type: 'mediaState', audio: !muted });
    return muted;
  }

  /** Turns the camera off or on and tells the others; answers the new video state. */
  async toggleVideo() {
    const video = !this.hasVideo();
    this._setEnabled('video', video);
    // To `sfu` the camera's encodings are deactivated too (mesh connections keep the track
    // disabled only).
    for (const pc of this._allConnections()) this._applyMute(pc);
    this.localParticipant._update({ video });
    this._send({ type: 'mediaState', video });
    return video;
  }

  /** Sends `message` (any JSON value) to one participant, or with `address` empty or absent
   * to everyone else. */
  sendMessageToParticipant(message, address) {
    const frame = { type: 'message', data: message };
    if (address) frame.to = [address];
    this._send(frame);
  }

  /** Plays the remote audio that the browser's autoplay policy held back (`audioBlocked`).
   * Call it from a user gesture (a click handler). Resolves to true when every remote video
   * plays with its audio (then `audioBlocked` is false), false when the browser still refuses. */
  async startAudio() {
    const videos = [...this._mutedForAutoplay];
    let refused = false;
    for (const video of videos) {
      video.muted = false;
      try {
        await video.play();
        this._mutedForAutoplay.delete(video);
      } catch {
        refused = true;
        video.muted = true;
        video.play().catch(() => {});
      }
    }
    if (!refused) this.audioBlocked = false;
    return !refused;
  }

  /** Switches the camera to the device `device` (a `deviceId` from
   * `navigator.mediaDevices.enumerateDevices()`, or a video `MediaStreamTrack` of the
   * application's) while in the room: every connection sends the new track (no
   * renegotiation), the local `mediaStream` holds it instead of the old one, and the old one
   * is stopped when the SDK opened it. Camera on or off stays as it was. Resolves to the new
   * track; emits `localTrackChanged`. */
  switchCamera(device) {
    return this._switchDevice('video', device);
  }

  /** Switches the microphone, as `switchCamera` does the camera. */
  switchMicrophone(device) {
    return this._switchDevice('audio', device);
  }

  /** Shares the screen: `getDisplayMedia()` (or `options.mediaStream`, a stream with a video
   * track), sent as a second video beside the camera, to every participant (MESH) or to the
   * media server (SFU). The others get `screenShareStarted` with the participant, whose
   * `screenStream` then holds it (`attachScreen(element)` shows it); `stopScreenShare()`, or
   * the browser's own "stop sharing", ends it (`screenShareStopped`). Resolves to the stream;
   * rejects with a `ConveneError` (`mediaUnavailable`) when the user or browser refuses. */
  async startScreenShare(options = {}) {
    if (this._screen) return this._screen.stream;
    if (this._left) throw new ConveneError('left', 'the room was left');
    let stream = options.mediaStream ?? null;
    const owned = !stream;
    if (!stream) {
      try {
        stream = await navigator.mediaDevices.getDisplayMedia({ video: options.video ?? true, audio: false });
      } catch (e) {
        throw new ConveneError('mediaUnavailable', `no screen to share: ${e.message ?? e}`);
      }
    }
    const track = stream.getVideoTracks()[0];
    if (!track) throw new ConveneError('mediaUnavailable', 'the screen stream has no video track');
    if (this._left || this._screen) {
      if (owned) for (const t of stream.getTracks()) t.stop();
      if (this._left) throw new ConveneError('left', 'the room was left');
      return this._screen.stream;
    }
    if (!track.contentHint) track.contentHint = 'detail';
    this._screen = { stream, track, owned };
    track.addEventListener('ended', () => {
      if (this._screen?.track === track) this.stopScreenShare();
    });
    this.localParticipant._setScreen(stream);
    for (const peer of this._peers.values()) peer.addScreen();
    this._sfu?.addScreen();
    this._emit('screenShareStarted', this.localParticipant);
    return stream;
  }

  /** Stops sharing the screen (the others get `screenShareStopped`). */
  stopScreenShare() {
    const screen = this._screen;
    if (!screen) return;
    this._screen = null;
    this._announceScreen();
    for (const peer of this._peers.values()) peer.removeScreen(screen.track);
    this._sfu?.removeScreen(screen.track);
    if (screen.owned) for (const t of screen.stream.getTracks()) t.stop();
    this.localParticipant._setScreen(null);
    this._emit('screenShareStopped', this.localParticipant);
  }

  /** Leaves the room: the others see `participantLeft`, and this room emits `roomLeft('left')`. */
  leave() {
    if (this._left) return;
    this._send({ type: 'leave' });
    this._finish('left');
  }

  /** Adds a handler: `participantJoined`, `participantLeft`, `participantUpdated`,
   * `participantJoinFailed`, `localStream`, `remoteStream`, `messageReceived`,
   * `conferenceTypeChanged`, `reconnecting`, `reconnected`, `activeSpeakersChanged`,
   * `audioBlocked`, `localTrackChanged`, `screenShareStarted`, `screenShareStopped`, `roomLeft`. */
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

  /** The peer connection to each remote participant (MESH). */
  _peerConnections() {
    return new Map([...this._peers].map(([address, peer]) => [address, peer.pc]));
  }

  /** The peer connection to `sfu`, if any. */
  _sfuConnection() {
    return this._sfu?.pc ?? null;
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

  /** Delivers queued events in a task after `joinRoom` has resolved, once the app could
   * add its handlers. */
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

  _allConnections() {
    const pcs = [...this._peers.values()].map((p) => p.pc);
    if (this._sfu) pcs.push(this._sfu.pc);
    return pcs;
  }

  /** The browser refused to play `video` with its audio: it plays muted until startAudio(). */
  _blockedAudio(video) {
    video.muted = true;
    video.play?.()?.catch?.(() => {});
    this._mutedForAutoplay.add(video);
    if (this.audioBlocked) return;
    this.audioBlocked = true;
    this._emit('audioBlocked');
  }

  /** The configuration of every peer connection: the servers from `joined` and the
   * application's `iceTransportPolicy` (`relay`: through TURN only). */
  _rtcConfig(extra = {}) {
    const config = { iceServers: this._iceServers, ...extra };
    if (this._options.iceTransportPolicy) config.iceTransportPolicy = this._options.iceTransportPolicy;
    return config;
  }

  async _switchDevice(kind, device) {
    if (this._left) throw new ConveneError('left', 'the room was left');
    let track;
    let owned = false;
    if (typeof MediaStreamTrack !== 'undefined' && device instanceof MediaStreamTrack) {
      if (device.kind !== kind) throw new TypeError(`a ${kind} track is needed, not ${device.kind}`);
      track = device;
    } else {
      const old = this._tracks(kind)[0];
      // The new camera keeps the size and frame rate asked of the old one.
      const kept = {};
      if (kind === 'video') {
        const constraints = old?.getConstraints?.() ?? {};
        for (const key of ['width', 'height', 'frameRate', 'aspectRatio']) {
          if (constraints[key] !== undefined) kept[key] = constraints[key];
        }
      }
      const constraints = device ? { ...kept, deviceId: { exact: device } } : { ...kept };
      try {
        const stream = await navigator.mediaDevices.getUserMedia({ [kind]: Object.keys(constraints).length ? constraints : true });
        track = stream.getTracks()[0];
        owned = true;
      } catch (e) {
        throw new ConveneError('mediaUnavailable', `cannot open that ${kind === 'video' ? 'camera' : 'microphone'}: ${e.message ?? e}`);
      }
    }
    if (this._left) {
      if (owned) track.stop();
      throw new ConveneError('left', 'the room was left');
    }
    const stream = this.localParticipant?.mediaStream;
    if (!stream) {
      // No media yet (delayLocalStream while alone): the device is the one to open later.
      this._options[kind === 'video' ? 'videoDeviceId' : 'audioDeviceId'] = track.getSettings?.().deviceId;
      if (owned) track.stop();
      return null;
    }
    const old = this._tracks(kind)[0] ?? null;
    track.enabled = old ? old.enabled : this._options[kind] !== false;
    if (owned) this._ownTracks.add(track);
    const replace = async (pc, add) => {
      const sender = old && pc.getSenders().find((s) => s.track === old);
      try {
        if (sender) await sender.replaceTrack(track);
        else add();
      } catch (e) {
        if (pc.signalingState !== 'closed') console.warn('convene: switching a device', e);
      }
    };
    const pending = [];
    for (const peer of this._peers.values()) {
      // A peer that has not added its media yet adds the stream's tracks as they will be.
      if (peer.tracksAdded) pending.push(replace(peer.pc, () => peer.pc.addTrack(track, stream)));
    }
    if (this._sfu) {
      const sfu = this._sfu;
      pending.push(replace(sfu.pc, () => {
        const sender = sfu.pc.addTrack(track, stream);
        if (kind === 'video') sfuVideoSenders.set(sender, null);
      }));
    }
    await Promise.all(pending);
    if (old) stream.removeTrack(old);
    stream.addTrack(track);
    if (old && (this._ownStream || this._ownTracks.has(old))) {
      old.stop();
      this._ownTracks.delete(old);
    }
    for (const pc of this._allConnections()) this._applyMute(pc);
    this._emit('localTrackChanged', kind, track);
    return track;
  }

  /** Tells every other participant what identifies our screen share (or that there is none
   * any more): `signal {to, data: {screen}}` between participants, which the server relays
   * in both kinds of room. */
  _announceScreen(to = null) {
    const data = { screen: null };
    if (this._screen) {
      const mid = this._sfu?.screenMid();
      data.screen = { stream: this._screen.stream.id, track: mid ? `${this.localParticipant.address}-${mid}` : null };
    }
    const addresses = to ? [to] : [...this._participants.keys()];
    for (const address of addresses) this._send({ type: 'signal', to: address, data });
  }

  /** A remote participant's announcement of its screen share (`null`: it stopped). */
  _onScreenAnnounced(participant, screen) {
    if (!screen || typeof screen !== 'object') {
      participant._screenKey = null;
      this._setRemoteScreen(participant, null);
      return;
    }
    participant._screenKey = {
      stream: typeof screen.stream === 'string' ? screen.stream : null,
      track: typeof screen.track === 'string' ? screen.track : null,
    };
    // Its track may be here already.
    const peer = this._peers.get(participant.address);
    if (peer) {
      for (const receiver of peer.pc.getReceivers()) {
        const stream = peer.streamsByTrack.get(receiver.track);
        if (stream && stream.id === participant._screenKey.stream && receiver.track.readyState === 'live') {
          this._setRemoteScreen(participant, stream);
        }
      }
    }
    if (this._sfu && participant._screenKey.track) {
      const track = this._sfu.trackByMsid(participant._screenKey.track);
      if (track) this._onSfuScreenTrack(participant, track);
    }
  }

  _setRemoteScreen(participant, stream) {
    if (participant.screenStream === stream) return;
    const had = Boolean(participant.screenStream);
    participant._setScreen(stream);
    if (stream && !had) this._emit('screenShareStarted', participant);
    else if (!stream && had) this._emit('screenShareStopped', participant);
  }

  /** The media server's track `track` is `participant`'s screen share: out of its camera's
   * stream (which would otherwise show it), into a stream of its own. */
  _onSfuScreenTrack(participant, track) {
    const stream = this._sfu?.streams.get(participant.address);
    if (stream?.getTracks().includes(track)) stream.removeTrack(track);
    if (stream && !stream._conveneScreenGuard) {
      // A later description may put the track back into the stream it came with.
      stream._conveneScreenGuard = true;
      stream.addEventListener('addtrack', ({ track: added }) => {
        if (participant.screenStream?.getTracks().includes(added)) stream.removeTrack(added);
      });
    }
    if (participant.screenStream?.getVideoTracks()[0] === track) return;
    this._setRemoteScreen(participant, new MediaStream([track]));
  }

  /** Muted: the audio senders of `pc` send nothing at all (not even silence), so the others
   * see no audio packets from a muted participant. On the connection to `sfu` the camera's
   * encodings follow the same way: all off while the camera is off, else the layers the server
   * last asked for (`layers`), all before it asked. */
  _applyMute(pc) {
    for (const sender of pc.getSenders()) {
      if (sender.track?.kind === 'audio') {
        setActive(sender, () => !this.isMuted());
      } else if (sfuVideoSenders.has(sender)) {
        setActive(sender, (encoding) => {
          if (!this.hasVideo()) return false;
          const wish = sfuVideoSenders.get(sender);
          if (!wish) return true;
          // A plain (not simulcast) track: on unless the server wants none of it.
          return encoding.rid ? wish.includes(encoding.rid) : wish.length > 0;
        });
      }
    }
  }

  _send(frame) {
    if (this._ws?.readyState === WebSocket.OPEN) this._ws.send(JSON.stringify(frame));
  }

  /** The signaling URL: `host` (an origin such as `https://convene.example.com`, a
   * `ws(s)://` URL, or `name:port`), by default the origin this module was loaded from (the
   * service, when the application imports `/sdk/convene.js` from it), else the page's. */
  _url() {
    let host = this._options.host ?? SDK_ORIGIN ?? location.origin;
    if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(host)) host = `${location.protocol}//${host}`;
    const url = new URL(host, location.href);
    url.protocol = url.protocol === 'https:' || url.protocol === 'wss:' ? 'wss:' : 'ws:';
    url.pathname = `${url.pathname.replace(/\/+$/, '')}${SIGNALING_PATH}`;
    url.search = '';
    url.hash = '';
    return url.toString();
  }

  /** Opens the socket and sends `join` (with `resume` after a drop). Resolves on `joined`;
   * rejects with a `ConveneError` when the server refuses, the socket closes first, or
   * nothing answers within the join timeout. */
  _connect() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this._url());
      this._ws = ws;
      let joined = false;
      const fail = (error) => {
        clearTimeout(timer);
        if (this._ws === ws) this._ws = null;
        try {
          ws.close();
        } catch {
          // already closing
        }
        reject(error);
      };
      const timer = setTimeout(() => {
        if (!joined) fail(new ConveneError('connectionFailed', 'no answer from the signaling server'));
      }, this._options.joinTimeout ?? JOIN_TIMEOUT_MS);
      ws.onopen = () => {
        const o = this._options;
        const join = { type: 'join', token: this._token, audio: o.audio !== false, video: o.video !== false };
        if (o.name !== undefined) join.name = o.name;
        if (o.participantInfo !== undefined) join.participantInfo = o.participantInfo;
        if (this._resumeToken) join.resume = this._resumeToken;
        ws.send(JSON.stringify(join));
      };
      ws.onmessage = (e) => {
        if (this._ws !== ws) return;
        let message;
        try {
          message = JSON.parse(e.data);
        } catch {
          return;
        }
        if (joined) {
          this._onMessage(message);
        } else if (message.type === 'joined') {
          joined = true;
          clearTimeout(timer);
          this._onJoined(message);
          resolve();
        } else if (message.type === 'error') {
          const reason = JOIN_ERRORS[message.code] ?? 'joinRefused';
          fail(new ConveneError(reason, message.description?.join(' ') || reason, message.code));
        }
      };
      ws.onclose = (e) => {
        if (this._ws !== ws) return;
        if (!joined) {
          fail(new ConveneError(FINAL_CLOSES[e.code] ?? 'connectionFailed', `could not join (close ${e.code})`));
          return;
        }
        this._ws = null;
        this._onClose(e.code);
      };
    });
  }

  _onJoined(message) {
    const first = this.localParticipant === null;
    this._resumeToken = message.resumeToken;
    this._iceServers = message.iceServers ?? [];
    this.id = message.room.id;
    this.name = message.room.name;
    this.maxParticipants = message.room.maxParticipants;
    this._resumeDelay = RESUME_FIRST_DELAY_MS;
    if (first) {
      this.conferenceType = message.room.conferenceType;
      this.localParticipant = new Participant(
        { address: message.address, identity: message.identity, permissions: message.permissions,
          name: message.name ?? this._options.name, participantInfo: this._options.participantInfo,
          audio: this._options.audio !== false, video: this._options.video !== false },
        true,
      );
      this.localParticipant._room = this;
      if (this._pendingStream) this._applyStream(this._pendingStream);
      this._pendingStream = null;
      for (const info of message.participants) this._addParticipant(info, { announce: false, offerer: true });
      // In an SFU room our media goes to the server even while we are alone.
      if (this._sfuMode() && this.localParticipant.mediaStream) this._startSfu();
      return;
    }
    this._onResumed(message);
    if (this._signalingDown) {
      this._signalingDown = false;
      this._emit('reconnected', 'signaling');
    }
  }

  /** A fresh `joined` after a reconnect: bring the room up to date with what happened while
   * the socket was down (messages to us were dropped meanwhile). */
  _onResumed(message) {
    if (message.room.conferenceType !== this.conferenceType) {
      this._onConferenceType(message.room.conferenceType);
    }
    if (message.address !== this.localParticipant.address) {
      // The seat was gone (the grace period had passed): this is a new participant to the
      // others, so every connection starts again.
      this.localParticipant.address = message.address;
      for (const [address, participant] of [...this._participants]) {
        this._removeParticipant(address, participant, 'disconnected');
      }
      // The server dropped our media connection with the seat: a new one.
      this._sfu?.close();
      this._sfu = null;
      for (const info of message.participants) this._addParticipant(info, { announce: true, offerer: true });
      if (this._sfuMode() && this._mediaReady()) this._startSfu();
      return;
    }
    const present = new Set(message.participants.map((p) => p.address));
    for (const [address, participant] of [...this._participants]) {
      if (!present.has(address)) this._removeParticipant(address, participant, 'left');
    }
    for (const info of message.participants) {
      const participant = this._participants.get(info.address);
      // Someone who joined meanwhile knew of us from its `joined`: its offer is the one to
      // wait for (the resync below asks for it again).
      if (!participant) this._addParticipant(info, { announce: true, offerer: false });
      else if (participant._update(info)) this._emit('participantUpdated', participant);
    }
    // Offers, answers or candidates may have been lost: ask the others to resend what they
    // wait on, resend ours, and restart ICE where no connection was made yet.
    for (const peer of this._peers.values()) {
      peer.signal({ resync: true });
      peer.resync(true);
    }
    // What we show may have changed, or its report been lost, while the socket was down.
    this._views.resend();
  }

  _onMessage(message) {
    switch (message.type) {
      case 'participantJoined':
        if (!this._participants.has(message.participant.address)) {
          this._addParticipant(message.participant, { announce: true, offerer: false });
        }
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
        this._onSignal(message.from, message.data);
        break;
      case 'message': {
        const from = this._participants.get(message.from) ?? { address: message.from };
        this._emit('messageReceived', from, message.data);
        break;
      }
      case 'conferenceTypeChanged':
        if (message.conferenceType !== this.conferenceType) this._onConferenceType(message.conferenceType);
        break;
      case 'roomClosed':
        this._closedReason = message.reason;
        break;
      case 'activeSpeakers':
        if (Array.isArray(message.speakers)) {
          this._speakerAddresses = message.speakers.filter((a) => typeof a === 'string');
          this._resolveSpeakers();
        }
        break;
      case 'error':
        console.warn('convene:', message.code, message.description?.join(' '));
        break;
      default:
        break;
    }
  }

  _onSignal(from, data) {
    if (data === null || typeof data !== 'object') return;
    if (from === SFU) {
      this._sfu?.onSignal(data);
      return;
    }
    if ('screen' in data) {
      const participant = this._participants.get(from);
      if (participant) this._onScreenAnnounced(participant, data.screen);
      return;
    }
    const peer = this._peers.get(from);
    if (peer) {
      peer.onSignal(data);
    } else if (this._participants.has(from) && !this._sfuMode()) {
      // No peer connection yet (our media is still being set up): keep it for later.
      const early = this._earlySignals.get(from) ?? [];
      if (early.length < MAX_EARLY_SIGNALS) early.push(data);
      this._earlySignals.set(from, early);
    }
  }

  _onClose(code) {
    if (this._left) return;
    if (code in FINAL_CLOSES) {
      this._finish(this._closedReason ?? FINAL_CLOSES[code]);
      return;
    }
    // An unexpected drop (network, server restart, heartbeat, slow reader): resume with the
    // same address. The peer connections carry on meanwhile. Attempts back off, doubling up
    // to a maximum, each less a random part so that many clients spread out.
    if (!this._signalingDown) {
      this._signalingDown = true;
      this._emit('reconnecting', 'signaling');
    }
    const delay = jittered(this._resumeDelay);
    this._resumeDelay = Math.min(this._resumeDelay * 2, RESUME_MAX_DELAY_MS);
    setTimeout(() => {
      if (this._left) return;
      this._connect().catch((e) => {
        if (this._left) return;
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
    this._sfu?.close();
    this._sfu = null;
    this._views.close();
    this._mutedForAutoplay.clear();
    clearTimeout(this._switchTimer);
    this._earlySignals.clear();
    const ws = this._ws;
    this._ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    this._stopOwnTracks();
    this._emit('roomLeft', reason);
  }

  _stopOwnTracks() {
    const stream = this.localParticipant?.mediaStream ?? this._pendingStream;
    if (this._ownStream) for (const track of stream?.getTracks() ?? []) track.stop();
    for (const track of this._ownTracks) track.stop();
    this._ownTracks.clear();
    const screen = this._screen;
    this._screen = null;
    if (screen?.owned) for (const track of screen.stream.getTracks()) track.stop();
  }

  /** `offerer`: whether our side makes the first offer to this participant (we joined after
   * it); otherwise we wait for its offer. */
  _addParticipant(info, { announce, offerer }) {
    const participant = new Participant(info, false);
    participant._offerer = offerer;
    participant._views = this._views;
    participant._room = this;
    // Our screen share, for someone new (in MESH the peer connection announces it itself).
    if (this._screen && this._sfuMode()) this._announceScreen(participant.address);
    this._participants.set(participant.address, participant);
    if (announce) this._emit('participantJoined', participant);
    // Named as a speaker before its participantJoined came.
    if (this._speakerAddresses.includes(participant.address)) this._resolveSpeakers();
    const early = this._sfuStreams.get(participant.address);
    if (early) {
      this._sfuStreams.delete(participant.address);
      this._showSfuMedia(participant, early);
    }
    if (this._mediaReady()) {
      this._connectMedia(participant);
    } else if (this._options.delayLocalStream) {
      // Ask for camera and microphone only now that someone is there.
      this._startLocalStream();
    }
  }

  _mediaReady() {
    return Boolean(this.localParticipant?.mediaStream) || this._mediaFailed;
  }

  _sfuMode() {
    return this.conferenceType === 'SFU';
  }

  /** Maps the speakers' addresses the server last sent to participants (someone not known yet
   * counts once its participantJoined is there; someone gone no more) and emits
   * `activeSpeakersChanged` when that changes the list. */
  _resolveSpeakers() {
    const speakers = this._speakerAddresses
      .map((a) => (a === this.localParticipant?.address ? this.localParticipant : this._participants.get(a)))
      .filter(Boolean);
    if (speakers.length === this.activeSpeakers.length && speakers.every((p, i) => p === this.activeSpeakers[i])) return;
    this.activeSpeakers = speakers;
    this._emit('activeSpeakersChanged', [...speakers]);
  }

  /** The server answered the first offer of `sfu`'s connection: it has our peer, so it can
   * take what we show (all of it again, for a new connection). */
  _onSfuNegotiated(sfu) {
    if (this._sfu === sfu) this._views.resend();
  }

  /** Media to and from `participant`: through `sfu` in SFU rooms, else a mesh connection. */
  _connectMedia(participant) {
    if (this._sfuMode()) this._startSfu();
    else this._createPeer(participant);
  }

  _onConferenceType(type) {
    this.conferenceType = type;
    this._emit('conferenceTypeChanged', type);
    // Switchover: the mesh connections carry on until each participant's media comes through
    // the server (see _showSfuMedia).
    if (this._sfuMode() && this._mediaReady()) this._startSfu();
  }

  _startSfu() {
    if (this._sfu || this._left) return;
    this._sfu = new SfuPeer(this);
  }

  /** The connection to `sfu` failed (ICE did not come back) or the server dropped it: a new
   * one, after a capped, jittered back-off. */
  _restartSfu(failed) {
    if (this._sfu !== failed || this._left) return;
    if (!this._sfuReconnecting) {
      this._sfuReconnecting = true;
      this._emit('reconnecting', SFU);
    }
    failed.close();
    this._sfu = null;
    const delay = this._sfuRestarts === 0 ? 0 : jittered(Math.min(500 * 2 ** this._sfuRestarts, SFU_RESTART_MAX_DELAY_MS));
    this._sfuRestarts += 1;
    setTimeout(() => {
      if (this._left || this._sfu || !this._sfuMode()) return;
      this._sfu = new SfuPeer(this);
    }, delay);
  }

  /** The connection to `sfu` lost ICE and restarts it (see SfuPeer.restartIce). */
  _onSfuLost(sfu) {
    if (this._sfu !== sfu || this._sfuReconnecting) return;
    this._sfuReconnecting = true;
    this._emit('reconnecting', SFU);
  }

  /** ICE restarted: the same connection is up again. */
  _onSfuRecovered(sfu) {
    if (this._sfu !== sfu || !this._sfuReconnecting) return;
    this._sfuReconnecting = false;
    this._emit('reconnected', SFU);
  }

  _onSfuConnected(sfu) {
    this._sfuRestarts = 0;
    if (this._sfuReconnecting) {
      this._sfuReconnecting = false;
      this._emit('reconnected', SFU);
    }
    if (this._peers.size === 0) return;
    // Mesh connections whose participant's media has not come through the server by then
    // (it publishes nothing, or its connection to the server failed) are given up.
    clearTimeout(this._switchTimer);
    this._switchTimer = setTimeout(() => {
      if (this._sfu !== sfu) return;
      for (const [address, peer] of [...this._peers]) {
        const participant = this._participants.get(address);
        const stream = sfu.streams.get(address);
        if (participant && stream) this._useSfuMedia(participant, stream);
        peer.close();
        this._peers.delete(address);
      }
    }, SWITCHOVER_TIMEOUT_MS);
  }

  /** A track from `sfu`: its stream id is its publisher's address. */
  _onSfuTrack(sfu, track, stream) {
    const address = stream.id;
    sfu.streams.set(address, stream);
    const participant = this._participants.get(address);
    const msid = sfu.msidOf(track);
    if (participant && msid && participant._screenKey?.track === msid) {
      this._onSfuScreenTrack(participant, track);
      return;
    }
    if (!participant) {
      // Its participantJoined is still on the way.
      this._sfuStreams.set(address, stream);
      return;
    }
    this._showSfuMedia(participant, stream);
  }

  /** Shows `stream` (from `sfu`) for `participant`. While a mesh connection still shows the
   * participant, its media stays until the server's is decoded (a video frame, or an audio
   * packet if the participant sends no video), checked every SWITCH_POLL_MS. */
  _showSfuMedia(participant, stream) {
    if (participant.mediaStream === stream) return;
    const mesh = this._peers.get(participant.address);
    if (!mesh || !participant.mediaStream) {
      this._useSfuMedia(participant, stream);
      return;
    }
    if (participant._switching === stream) return;
    participant._switching = stream;
    const sfu = this._sfu;
    const poll = async () => {
      if (participant._switching !== stream || this._left || this._sfu !== sfu) return;
      if (this._participants.get(participant.address) !== participant) return;
      const receivers = sfu.pc.getReceivers().filter((r) => stream.getTracks().includes(r.track));
      const reports = await Promise.all(receivers.map((r) => r.getStats().catch(() => new Map())));
      const { audio, video } = inboundCounters(reports);
      // No video comes for a participant whose camera is off or whom we do not show (views):
      // its audio is enough.
      const hasVideo = stream.getVideoTracks().length > 0 && participant.video !== false
        && !this._views.hidden(participant.address);
      if ((hasVideo && video.framesDecoded > 0) || (!hasVideo && audio.packetsReceived > 0)) {
        this._useSfuMedia(participant, stream);
      } else {
        setTimeout(poll, SWITCH_POLL_MS);
      }
    };
    poll();
  }

  _useSfuMedia(participant, stream) {
    if (this._participants.get(participant.address) !== participant || participant.mediaStream === stream) return;
    participant._switching = null;
    const sfu = this._sfu;
    participant._receivers = () => (sfu?.pc.getReceivers() ?? []).filter((r) => sfu.streams.get(participant.address)
      ?.getTracks().includes(r.track));
    participant._setStream(stream, 'sfu');
    this._emit('remoteStream', participant);
    const mesh = this._peers.get(participant.address);
    if (mesh) {
      mesh.close();
      this._peers.delete(participant.address);
    }
  }

  _createPeer(participant) {
    if (this._peers.has(participant.address)) return;
    const peer = new Peer(this, participant);
    this._peers.set(participant.address, peer);
    const early = this._earlySignals.get(participant.address) ?? [];
    this._earlySignals.delete(participant.address);
    for (const data of early) peer.onSignal(data);
  }

  _removeParticipant(address, participant, reason = 'left') {
    this._participants.delete(address);
    this._earlySignals.delete(address);
    this._sfuStreams.delete(address);
    this._sfu?.streams.delete(address);
    this._peers.get(address)?.close();
    this._peers.delete(address);
    this._views.forget(participant);
    // Its screen share ends with it.
    this._setRemoteScreen(participant, null);
    this._emit('participantLeft', participant, reason);
    if (this.activeSpeakers.includes(participant)) this._resolveSpeakers();
    // Its videos go with it (after the handlers, which may still want to see them).
    for (const video of participant._videos) {
      this._mutedForAutoplay.delete(video);
      video.remove();
    }
    participant._videos.clear();
  }

  /** The app's `mediaStream`, or camera and microphone. */
  async _acquireStream() {
    if (this._options.mediaStream) return this._options.mediaStream;
    const video = this._options.hdVideo === false ? { width: 640, height: 480 } : { width: 1280, height: 720 };
    if (this._options.videoDeviceId) video.deviceId = { exact: this._options.videoDeviceId };
    const audio = this._options.audioDeviceId ? { deviceId: { exact: this._options.audioDeviceId } } : true;
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    this._ownStream = true;
    return stream;
  }

  _applyStream(stream) {
    for (const t of stream.getAudioTracks()) t.enabled = this._options.audio !== false;
    for (const t of stream.getVideoTracks()) t.enabled = this._options.video !== false;
    this.localParticipant._setStream(stream);
    this._emit('localStream', this.localParticipant);
  }

  /** With `delayLocalStream`: asks for media once someone else is there, then connects.
   * Without camera or microphone the connections are made receive-only. */
  _startLocalStream() {
    this._starting ??= (async () => {
      try {
        const stream = await this._acquireStream();
        if (this._left) {
          if (this._ownStream) for (const track of stream.getTracks()) track.stop();
          return;
        }
        this._applyStream(stream);
      } catch (e) {
        console.error('convene: no camera or microphone; receiving only', e);
        this._mediaFailed = true;
      }
      if (this._left) return;
      for (const participant of this._participants.values()) this._connectMedia(participant);
    })();
    return this._starting;
  }
}

/** Tells `sfu` what the application shows of each remote participant (`views`), so that the
 * server sends each one's video in the layer that fits, or none: per participant, the size in
 * device pixels of the largest of its attached videos that is visible (0×0 when none is:
 * hidden, `display: none`, out of the viewport, detached). Watches the videos with
 * ResizeObserver and IntersectionObserver; sends only changed entries, at most every
 * VIEWS_DEBOUNCE_MS, and only in SFU rooms once the server has our connection (then all of
 * them again for each new connection, and after a resume). A participant never attached is
 * not mentioned: the server sends it as well as it can. */
class ViewReporter {
  constructor(room) {
    this.room = room;
    this.videos = new Map(); // <video> → { participant, width, height (CSS px), intersecting }
    this.sent = new Map(); // address → `${width}x${height}` as last sent
    this.timer = null;
    this.resizes = typeof ResizeObserver === 'function' ? new ResizeObserver((entries) => {
      for (const entry of entries) {
        const view = this.videos.get(entry.target);
        if (!view) continue;
        view.width = entry.contentRect.width;
        view.height = entry.contentRect.height;
      }
      this.schedule();
    }) : null;
    this.intersections = typeof IntersectionObserver === 'function' ? new IntersectionObserver((entries) => {
      for (const entry of entries) {
        const view = this.videos.get(entry.target);
        if (view) view.intersecting = entry.isIntersecting;
      }
      this.schedule();
    }) : null;
  }

  observe(participant, video) {
    if (participant.self || this.videos.has(video)) return;
    const rect = video.getBoundingClientRect?.() ?? { width: 0, height: 0 };
    // Until the observers' first callbacks (which come with the next frame), as laid out now.
    this.videos.set(video, { participant, width: rect.width, height: rect.height, intersecting: !this.intersections });
    this.resizes?.observe(video);
    this.intersections?.observe(video);
    this.schedule();
  }

  unobserve(video, schedule = true) {
    if (!this.videos.delete(video)) return;
    this.resizes?.unobserve(video);
    this.intersections?.unobserve(video);
    if (schedule) this.schedule();
  }

  /** A participant that left: nothing more to say about it. */
  forget(participant) {
    for (const [video, view] of [...this.videos]) {
      if (view.participant === participant) this.unobserve(video, false);
    }
    this.sent.delete(participant.address);
  }

  /** Per address shown: `[width, height]` in device pixels, `[0, 0]` when not visible. */
  current() {
    const ratio = window.devicePixelRatio || 1;
    const sizes = new Map();
    for (const [video, view] of this.videos) {
      let size = [0, 0];
      const visible = video.isConnected && view.intersecting && view.width > 0 && view.height > 0
        && (video.checkVisibility?.({ visibilityProperty: true }) ?? true);
      if (visible) size = [Math.round(view.width * ratio), Math.round(view.height * ratio)];
      const best = sizes.get(view.participant.address);
      if (!best || size[0] * size[1] > best[0] * best[1]) sizes.set(view.participant.address, size);
    }
    return sizes;
  }

  /** Whether `address` has attached videos and none is visible. */
  hidden(address) {
    const size = this.current().get(address);
    return Boolean(size) && size[0] * size[1] === 0;
  }

  schedule() {
    if (this.timer !== null) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.flush();
    }, VIEWS_DEBOUNCE_MS);
  }

  flush() {
    const sfu = this.room._sfu;
    if (this.room._left || !this.room._sfuMode() || !sfu?.negotiated) return;
    const changed = [];
    for (const [address, [width, height]] of this.current()) {
      const key = `${width}x${height}`;
      if (this.sent.get(address) === key) continue;
      this.sent.set(address, key);
      changed.push({ address, width, height });
    }
    for (let i = 0; i < changed.length; i += MAX_VIEWS_PER_MESSAGE) {
      sfu.signal({ views: changed.slice(i, i + MAX_VIEWS_PER_MESSAGE) });
    }
  }

  /** Sends everything again (a new connection to `sfu`, or a resumed socket). */
  resend() {
    this.sent.clear();
    this.flush();
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.resizes?.disconnect();
    this.intersections?.disconnect();
    this.videos.clear();
  }
}

/** The peer connection to one remote participant. The side that joined later makes the first
 * offer; renegotiations follow the "perfect negotiation" pattern. */
class Peer {
  constructor(room, remote) {
    this.room = room;
    this.remote = remote;
    // The side with the smaller address yields when both offer at once.
    this.polite = room.localParticipant.address < remote.address;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.tracksAdded = false;
    this.screenSender = null;
    this.streamsByTrack = new WeakMap(); // remote track → its stream
    this.pc = new RTCPeerConnection(room._rtcConfig());
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
      this.streamsByTrack.set(track, incoming);
      if (room._peers.get(remote.address) !== this) return;
      // The remote's screen share (announced before its offer): a stream of its own.
      if (remote._screenKey?.stream === incoming.id) {
        room._setRemoteScreen(remote, incoming);
        return;
      }
      if (remote.mediaStream !== incoming) {
        remote._receivers = () => this.pc.getReceivers();
        remote._setStream(incoming, 'mesh');
        room._emit('remoteStream', remote);
      }
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === 'connected') {
        clearTimeout(this.failTimer);
        this.wasConnected = true;
        if (this.reconnecting) {
          this.reconnecting = false;
          room._emit('reconnected', remote);
        }
      }
      if (state === 'failed') {
        if (!this.wasConnected) {
          this.failed('connectionFailed');
        } else {
          // It worked before: restart ICE (a new offer, perfect negotiation) and tell the app.
          if (!this.reconnecting) {
            this.reconnecting = true;
            room._emit('reconnecting', remote);
          }
          this.pc.restartIce();
        }
      }
    };
    this.failTimer = setTimeout(() => {
      if (this.pc.connectionState !== 'connected') this.failed('timeout');
    }, room._options.connectionTimeout ?? PEER_TIMEOUT_MS);
    // The offerer adds its media now, which starts the negotiation; the other side waits
    // for the offer and adds its media to the transceivers the offer created.
    if (remote._offerer) this.addLocalMedia();
  }

  addLocalMedia() {
    if (this.tracksAdded) return;
    this.tracksAdded = true;
    const stream = this.room.localParticipant.mediaStream;
    if (stream) {
      for (const track of stream.getTracks()) this.pc.addTrack(track, stream);
      this.room._applyMute(this.pc);
    } else if (this.remote._offerer) {
      // No camera or microphone: still receive the other's media.
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
      this.pc.addTransceiver('video', { direction: 'recvonly' });
    }
    this.addScreen();
  }

  /** Sends our screen share on this connection (announced first, so the other side knows
   * the stream when the offer with its track comes). Before our media is added, that adds it. */
  addScreen() {
    const screen = this.room._screen;
    if (!screen || !this.tracksAdded || this.screenSender || this.pc.signalingState === 'closed') return;
    this.room._announceScreen(this.remote.address);
    this.screenSender = this.pc.addTrack(screen.track, screen.stream);
  }

  removeScreen(track) {
    if (!this.screenSender || this.screenSender.track !== track) return;
    if (this.pc.signalingState !== 'closed') this.pc.removeTrack(this.screenSender);
    this.screenSender = null;
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

  /** After a reconnect of either side: resend an offer that may not have arrived, and (on
   * the side that reconnected) restart ICE if no connection was made yet. */
  resync(restartIce) {
    if (this.pc.signalingState === 'have-local-offer' && this.pc.localDescription) {
      this.signal({ description: this.pc.localDescription });
    }
    const negotiated = this.pc.localDescription && this.pc.remoteDescription;
    if (restartIce && negotiated && !['connected', 'closed'].includes(this.pc.connectionState)) this.pc.restartIce();
  }

  async onSignal({ description, candidate, resync }) {
    try {
      if (resync) {
        this.resync(false);
      } else if (description) {
        // An offer right behind the answer to ours (the other side renegotiates at once, e.g.
        // to add its screen share) comes while that answer is still being set: no collision.
        const readyForOffer = !this.makingOffer && (this.pc.signalingState === 'stable' || this.settingAnswer);
        const collision = description.type === 'offer' && !readyForOffer;
        this.ignoreOffer = !this.polite && collision;
        if (this.ignoreOffer) return;
        // A second answer to one offer (resent after a reconnect): the first one counted.
        if (description.type === 'answer' && this.pc.signalingState === 'stable') return;
        this.settingAnswer = description.type === 'answer';
        try {
          await this.pc.setRemoteDescription(description);
        } finally {
          this.settingAnswer = false;
        }
        if (description.type === 'offer') {
          this.addLocalMedia();
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
      if (this.pc.signalingState !== 'closed') console.error('convene: signal handling failed', e);
    }
  }

  close() {
    clearTimeout(this.failTimer);
    this.pc.close();
  }
}

/** The one peer connection to the server's media side (`sfu`) in an SFU room. The client
 * offers first with its tracks; the server answers, and offers whenever tracks toward the
 * client come or go. The client is the polite side of perfect negotiation: when the server's
 * offer crosses its own, it rolls its own back, answers, and offers again. Its ICE candidates
 * are not sent: the server is ICE-lite and learns the client's address from its checks. */
class SfuPeer {
  constructor(room) {
    this.room = room;
    this.streams = new Map(); // publisher's address → MediaStream
    this.makingOffer = false;
    this.connected = false;
    this.closed = false;
    this.screenSender = null;
    this.announcedScreenMid = null;
    this.pc = new RTCPeerConnection(room._rtcConfig({ bundlePolicy: 'max-bundle' }));
    this.pc.onnegotiationneeded = async () => {
      try {
        this.makingOffer = true;
        await this.pc.setLocalDescription();
        this.signal({ description: this.pc.localDescription });
        // The screen share's mid is known now: the others can tell its track from the camera.
        const mid = this.screenMid();
        if (mid && mid !== this.announcedScreenMid) {
          this.announcedScreenMid = mid;
          room._announceScreen();
        }
      } catch (e) {
        if (!this.closed) console.error('convene: negotiation with sfu failed', e);
      } finally {
        this.makingOffer = false;
      }
    };
    this.pc.ontrack = ({ track, streams }) => {
      if (!this.closed && streams[0]) room._onSfuTrack(this, track, streams[0]);
    };
    this.pc.onconnectionstatechange = () => {
      const state = this.pc.connectionState;
      if (state === 'connected' && !this.connected) {
        this.connected = true;
        clearTimeout(this.failTimer);
        room._onSfuConnected(this);
      } else if (state === 'connected' && this.restarting) {
        this.restarting = false;
        room._onSfuRecovered(this);
      } else if (state === 'disconnected' && this.connected) {
        // Lost: restart ICE on this connection if it does not come back by itself.
        clearTimeout(this.restartTimer);
        this.restartTimer = setTimeout(() => this.restartIce(), SFU_ICE_RESTART_AFTER_MS);
      } else if (state === 'failed') {
        this.fail();
      }
    };
    this.failTimer = setTimeout(() => {
      if (!this.connected) this.fail();
    }, room._options.connectionTimeout ?? PEER_TIMEOUT_MS);
    const stream = room.localParticipant.mediaStream;
    if (stream) {
      for (const track of stream.getTracks()) {
        // The camera in simulcast layers, low to high (rids q, h, f); the rest as it is.
        const sendEncodings = simulcastEncodings(track, room._options.simulcast);
        const sender = sendEncodings
          ? this.pc.addTransceiver(track, { direction: 'sendrecv', streams: [stream], sendEncodings }).sender
          : this.pc.addTrack(track, stream);
        if (track.kind === 'video') sfuVideoSenders.set(sender, null);
      }
      room._applyMute(this.pc);
    } else {
      // Nothing to publish: still offer, to receive.
      this.pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    this.addScreen();
  }

  /** Publishes our screen share as a video of its own (never simulcast). */
  addScreen() {
    const screen = this.room._screen;
    if (!screen || this.screenSender || this.closed) return;
    this.screenSender = this.pc.addTrack(screen.track, screen.stream);
  }

  removeScreen(track) {
    if (!this.screenSender || this.screenSender.track !== track) return;
    if (!this.closed) this.pc.removeTrack(this.screenSender);
    this.screenSender = null;
    this.announcedScreenMid = null;
  }

  /** The mid of our screen share's m-line, once negotiated. */
  screenMid() {
    if (!this.screenSender) return null;
    return this.pc.getTransceivers().find((t) => t.sender === this.screenSender)?.mid ?? null;
  }

  /** The track id that the server's offer gives the m-line of `track` (`<address>-<mid>`). */
  msidOf(track) {
    const transceiver = this.pc.getTransceivers().find((t) => t.receiver.track === track);
    if (!transceiver?.mid) return null;
    return remoteMsids(this.pc).get(transceiver.mid) ?? null;
  }

  /** The live track received on the m-line whose msid track id is `msid`, if any. */
  trackByMsid(msid) {
    for (const [mid, id] of remoteMsids(this.pc)) {
      if (id !== msid) continue;
      const track = this.pc.getTransceivers().find((t) => t.mid === mid)?.receiver.track;
      if (track?.readyState === 'live') return track;
    }
    return null;
  }

  fail() {
    if (this.closed) return;
    this.room._restartSfu(this);
  }

  /** Restarts ICE on the connection (its DTLS session and tracks stay): the next offer
   * carries new ICE credentials, and the server, which kept the connection, answers it. */
  restartIce() {
    if (this.closed || this.pc.connectionState !== 'disconnected') return;
    if (!this.restarting) {
      this.restarting = true;
      this.room._onSfuLost(this);
    }
    this.pc.restartIce();
  }

  signal(data) {
    this.room._send({ type: 'signal', to: SFU, data: JSON.parse(JSON.stringify(data)) });
  }

  async onSignal({ description, closed, layers }) {
    if (this.closed) return;
    // The server dropped this connection (ICE lost for too long, say): a new one.
    if (closed) {
      this.fail();
      return;
    }
    if (layers) {
      this.onLayers(layers);
      return;
    }
    if (!description) return;
    try {
      if (description.type === 'offer') {
        // Glare: the server ignores our offer while its own waits; setting its offer rolls
        // ours back (implicit rollback), and negotiationneeded offers ours again once this
        // one is answered.
        await this.pc.setRemoteDescription(description);
        await this.pc.setLocalDescription();
        this.signal({ description: this.pc.localDescription });
      } else if (description.type === 'answer') {
        if (this.pc.signalingState !== 'have-local-offer') return;
        await this.pc.setRemoteDescription(description);
        if (!this.negotiated && !this.closed) {
          this.negotiated = true;
          this.room._onSfuNegotiated(this);
        }
      }
    } catch (e) {
      if (!this.closed) console.error('convene: signal from sfu failed', e);
    }
  }

  /** The layers of one of our videos that anybody uses (`{mid, active: [rid, …]}`): the others
   * are deactivated at the source (no renegotiation); none pauses the video. Camera off wins,
   * and the wish is kept for when it is on again. */
  onLayers({ mid, active }) {
    if (typeof mid !== 'string' || !Array.isArray(active)) return;
    const sender = this.pc.getTransceivers().find((t) => t.mid === mid)?.sender;
    if (!sender || !sfuVideoSenders.has(sender)) return;
    sfuVideoSenders.set(sender, active.filter((rid) => typeof rid === 'string'));
    this.room._applyMute(this.pc);
  }

  close() {
    this.closed = true;
    clearTimeout(this.failTimer);
    clearTimeout(this.restartTimer);
    this.pc.close();
  }
}

/**
 * Joins the room that `token` names. Resolves to a `Room`, or rejects with a
 * `ConveneError` whose `reason` is `roomFull`, `invalidToken`, `roomNotFound`,
 * `joinRefused`, `mediaUnavailable` or `connectionFailed`.
 */
export async function joinRoom(token, options = {}) {
  const room = new Room(token, { ...options });
  if (!options.delayLocalStream) {
    try {
      room._pendingStream = await room._acquireStream();
    } catch (e) {
      throw new ConveneError('mediaUnavailable', `no camera or microphone: ${e.message ?? e}`);
    }
  }
  try {
    await room._connect();
  } catch (e) {
    room._left = true;
    room._stopOwnTracks();
    throw e;
  }
  if (options.delayLocalStream && room.remoteParticipants.length > 0) {
    await room._startLocalStream();
  }
  room._release();
  return room;
}

export default { joinRoom, ConveneError, VERSION };
