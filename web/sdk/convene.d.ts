// Types of the Convene browser SDK (/sdk/convene.js, /sdk/v1/convene.js, npm @convene/sdk).
// The surface follows the public VCS realtime SDK, so an application written against it moves
// over by changing an import; Convene's additions are marked "(Convene extension.)".

/** This SDK's version, e.g. `1.1.0`. (Convene extension.) */
export const VERSION: string;

export type ConferenceType = 'MESH' | 'SFU';

/** Why `joinRoom` rejected: the room is full (`REALTIME-00010`, close 4009), the token is
 * bad, expired or of another room (`REALTIME-00009`, close 4001), the room was deleted or has
 * expired (`REALTIME-00004`, close 4004), the participant token's identity is banned from
 * the room (`REALTIME-00031`, close 4003), another refusal, no camera or microphone (when
 * neither `mediaStream` nor `delayLocalStream` is given), or no answer from the server. */
export type JoinFailure =
  | 'roomFull' | 'invalidToken' | 'roomNotFound' | 'banned' | 'joinRefused' | 'mediaUnavailable'
  | 'connectionFailed';

/** Why a room was left: `left` (leave()), `deleted`, `expired`, `kicked` (by an admin),
 * `replaced` (the same participant resumed on another socket), `endpointExpired`,
 * `messageTooLarge`, or a join failure while resuming. Other socket drops are resumed
 * silently and end nothing. */
export type LeaveReason =
  | 'left' | 'deleted' | 'expired' | 'kicked' | 'replaced' | 'endpointExpired' | 'messageTooLarge' | JoinFailure;

export class ConveneError extends Error {
  /** Why `joinRoom` failed; from the methods that open devices or share the screen,
   * `mediaUnavailable` (refused or no such device) or `left` (the room was left). */
  readonly reason: JoinFailure | 'left';
  /** The server's error code, e.g. `REALTIME-00010`; `null` when there was none (no
   * answer, no media). */
  readonly code: string | null;
}

export interface JoinOptions {
  /** The service: an origin such as `https://convene.example.com`, `host:port` (with the
   * page's scheme), or a `ws(s)://` URL; the signaling socket is `/api/realtime/signaling`
   * there (wss for https). Default: the origin the SDK module was loaded from (the service
   * itself when imported from its `/sdk/convene.js`), else the page's. */
  host?: string;
  name?: string;
  participantInfo?: Record<string, unknown>;
  /** Start with the microphone on. Default true. */
  audio?: boolean;
  /** Start with the camera on. Default true. */
  video?: boolean;
  /** Ask for 1280x720 (true, the default) or 640x480. */
  hdVideo?: boolean;
  /** Use this stream instead of the camera and microphone. */
  mediaStream?: MediaStream;
  /** Ask for camera and microphone only once a second participant is there. */
  delayLocalStream?: boolean;
  /** Milliseconds a peer connection may take to connect before `participantJoinFailed`
   * (MESH), or before the connection to the media server is started again (SFU, with
   * `reconnecting`). Default 20000. (Convene extension.) */
  connectionTimeout?: number;
  /** In SFU rooms, publish the camera in simulcast layers (rids `q`, `h`, `f`: a quarter, half
   * and full resolution), of which the server forwards to each participant the one that fits
   * what it shows. `'auto'` (the default): three layers from a camera 540 lines high, two
   * (`h`, `f`) from 270, none below (Chrome would not send more); `true`: always three (for
   * small cameras Chrome then needs the field trial `WebRTC-LegacySimulcastLayerLimit/Disabled/`);
   * `false`: never. Audio and screen shares are never simulcast; MESH rooms never. (Convene
   * extension.) */
  simulcast?: 'auto' | boolean;
  /** `'relay'`: every peer connection uses only the TURN servers of `joined.iceServers` (media
   * never goes directly); `'all'` (the default): any candidate. (Convene extension.) */
  iceTransportPolicy?: RTCIceTransportPolicy;
  /** The camera the SDK opens (a `deviceId` of `enumerateDevices()`), when it opens one.
   * (Convene extension.) */
  videoDeviceId?: string;
  /** The microphone the SDK opens, when it opens one. (Convene extension.) */
  audioDeviceId?: string;
}

export interface ScreenShareOptions {
  /** Share this stream (its first video track) instead of asking `getDisplayMedia()`. */
  mediaStream?: MediaStream;
  /** The `video` constraints given to `getDisplayMedia()`. Default `true`. */
  video?: boolean | MediaTrackConstraints;
}

/** What a participant token lets its participant do (docs/api.md). */
export interface Permissions {
  canPublish: boolean;
  canSubscribe: boolean;
  canSendMessages: boolean;
}

export class Participant {
  readonly address: string;
  /** The identity of its participant token; absent when it joined with the room token. */
  readonly identity?: string;
  /** Its participant token's permissions; absent (everything allowed) with the room token. */
  readonly permissions?: Permissions;
  readonly name?: string;
  readonly participantInfo?: Record<string, unknown>;
  /** Microphone on, as last reported by the participant. */
  readonly audio: boolean;
  /** Camera on, as last reported by the participant. */
  readonly video: boolean;
  readonly joinedAt?: number;
  /** Whether this is the local participant. */
  readonly self: boolean;
  /** The participant's media, once there is any. */
  readonly mediaStream: MediaStream | null;
  /** The participant's screen share while it shares (one video track). (Convene extension.) */
  readonly screenStream: MediaStream | null;
  /** Keeps a `<video>` showing this participant inside `element` (one per participant and
   * element, however often it is called; its stream follows `mediaStream`; a remote
   * participant's are removed when it leaves); answers it. In SFU rooms the SDK watches the
   * size and visibility of a remote participant's attached videos and tells the server, which
   * sends its video in the layer that fits the largest visible one, and none while none is
   * visible (hidden, `display: none`, out of the viewport, detached); audio always comes. */
  attach(element: HTMLElement): HTMLVideoElement;
  /** Removes the `<video>` that `attach(element)` put in `element`, or without `element` all
   * of this participant's. (Convene extension.) */
  detach(element?: HTMLElement): void;
  /** Keeps a muted `<video>` showing the participant's screen share in `element` while it
   * shares (one per participant and element; removed when the share stops or the participant
   * leaves); answers it, or null when the participant does not share now. Call it from
   * `screenShareStarted`. (Convene extension.) */
  attachScreen(element: HTMLElement): HTMLVideoElement | null;
  /** What this participant's media did so far, as received here, summed over the inbound RTP
   * streams of the connection that carries the media shown now (`via`: the peer connection
   * to it in MESH, the one to the media server in SFU; counters start again from 0 when it
   * changes, e.g. at the switchover). The local participant answers `via: null` and zeros.
   * (Convene extension.) */
  getStats(): Promise<ParticipantStats>;
}

export interface ParticipantStats {
  via: 'mesh' | 'sfu' | null;
  audio: {
    packetsReceived: number; bytesReceived: number; packetsLost: number;
    totalAudioEnergy: number; totalSamplesReceived: number; audioLevel: number;
  };
  video: {
    framesDecoded: number; framesReceived: number; packetsReceived: number; bytesReceived: number;
    packetsLost: number; frameWidth: number; frameHeight: number;
  };
}

/** What `reconnecting` / `reconnected` are about: the signaling socket, the connection to the
 * media server (`'sfu'`), or the mesh connection to one participant. */
export type ReconnectSubject = 'signaling' | 'sfu' | Participant;

export interface RoomEvents {
  /** Someone joined after us. */
  participantJoined: (participant: Participant) => void;
  /** Someone left; `reason` as the server gave it: `left`, `disconnected`, `expired`, `kicked`. */
  participantLeft: (
    participant: Participant,
    reason: 'left' | 'disconnected' | 'expired' | 'kicked' | 'replaced',
  ) => void;
  /** A participant's audio or video state changed. */
  participantUpdated: (participant: Participant) => void;
  /** No peer connection to this participant could be established within
   * `connectionTimeout`, or it failed. The participant stays in the room. */
  participantJoinFailed: (participant: Participant, reason: 'timeout' | 'connectionFailed') => void;
  /** The local participant's `mediaStream` is there (at join, or with `delayLocalStream`
   * when someone else is). */
  localStream: (participant: Participant) => void;
  /** A remote participant's `mediaStream` is there, or was replaced (in an SFU room the
   * stream comes from the media server; its stream id is the participant's address). */
  remoteStream: (participant: Participant) => void;
  /** `data` as the sender passed it to `sendMessageToParticipant`. */
  messageReceived: (from: Participant | { address: string }, data: unknown) => void;
  /** The room became SFU (it never changes back). The SDK moves to the media server by
   * itself: it connects to it, keeps showing each participant's peer-to-peer media until that
   * participant's media from the server is decoded (then `remoteStream` with the new stream,
   * which `attach`ed videos follow), and closes the peer-to-peer connection to it. Nobody
   * leaves. */
  conferenceTypeChanged: (conferenceType: ConferenceType) => void;
  /** A connection that worked is being restored: the signaling socket dropped (it is resumed
   * with capped, jittered back-off), a mesh connection failed (ICE restart), or the
   * connection to the media server failed (a new one is made, with back-off). Media of the
   * others may pause meanwhile; nobody leaves. */
  reconnecting: (subject: ReconnectSubject) => void;
  /** The connection that `reconnecting` was about works again. */
  reconnected: (subject: ReconnectSubject) => void;
  /** Who speaks changed (SFU rooms): the speakers now, loudest first, at most 3, the local
   * participant included when it speaks; `[]` when nobody does. Someone counts as speaking
   * after about 300 ms of speech and stops after about 1 s of silence. */
  activeSpeakersChanged: (speakers: Participant[]) => void;
  /** The browser refused to play remote audio before a user gesture (autoplay policy): remote
   * videos play muted until the application calls `room.startAudio()` from a click. Emitted
   * once until `startAudio()` succeeds. (Convene extension.) */
  audioBlocked: () => void;
  /** `switchCamera` / `switchMicrophone` put `track` in place of the old one. (Convene
   * extension.) */
  localTrackChanged: (kind: 'audio' | 'video', track: MediaStreamTrack) => void;
  /** A participant (the local one included) started sharing its screen: its `screenStream`
   * is there. (Convene extension.) */
  screenShareStarted: (participant: Participant) => void;
  /** It stopped (or left): `screenStream` is null again. (Convene extension.) */
  screenShareStopped: (participant: Participant) => void;
  roomLeft: (reason: LeaveReason) => void;
}

export class Room {
  readonly id: string;
  readonly name?: string;
  readonly conferenceType: ConferenceType;
  /** The room's limit when we joined (or last resumed). */
  readonly maxParticipants: number;
  readonly localParticipant: Participant;
  readonly remoteParticipants: Participant[];
  /** Who speaks now, as in the last `activeSpeakersChanged` (SFU rooms; always `[]` in MESH). */
  readonly activeSpeakers: Participant[];
  /** Whether remote audio is held back by the browser's autoplay policy (`audioBlocked`).
   * (Convene extension.) */
  readonly audioBlocked: boolean;
  /** Plays the remote audio held back by the autoplay policy; call it from a user gesture.
   * Resolves to true when all of it plays (`audioBlocked` is then false). (Convene extension.) */
  startAudio(): Promise<boolean>;
  /** Switches the camera after joining: `device` is a `deviceId` (the SDK opens it with the
   * size and frame rate asked of the old one, and stops the old one if it opened it) or a
   * video track of the application's. Every connection sends the new track without
   * renegotiation; camera on/off stays. Resolves to the new track (null when no media is
   * open yet: then `device` is the one opened later); rejects with `mediaUnavailable`.
   * (Convene extension.) */
  switchCamera(device: string | MediaStreamTrack): Promise<MediaStreamTrack | null>;
  /** Switches the microphone after joining, as `switchCamera`. (Convene extension.) */
  switchMicrophone(device: string | MediaStreamTrack): Promise<MediaStreamTrack | null>;
  /** Shares the screen as a second video (MESH and SFU rooms). Resolves to the stream;
   * rejects with `mediaUnavailable` when refused. (Convene extension.) */
  startScreenShare(options?: ScreenShareOptions): Promise<MediaStream>;
  /** Stops sharing the screen (also when the browser's own "stop sharing" is used). (Convene
   * extension.) */
  stopScreenShare(): void;
  isMuted(): boolean;
  hasVideo(): boolean;
  /** Enables or disables the microphone track and tells the others (`participantUpdated`);
   * while muted no audio packets are sent at all. Answers the new muted state. */
  toggleMute(): boolean;
  /** Enables or disables the camera track and tells the others; answers the new video state.
   * In SFU rooms, while it is off no video packets are sent at all. */
  toggleVideo(): Promise<boolean>;
  /** Leaves the room; emits `roomLeft('left')`. Own camera and microphone are stopped (not an
   * app's `mediaStream`). */
  leave(): void;
  /** Sends any JSON value to one participant, or with `address` `""` or absent to everyone
   * else. */
  sendMessageToParticipant(message: unknown, address?: string): void;
  on<E extends keyof RoomEvents>(event: E, callback: RoomEvents[E]): this;
  off<E extends keyof RoomEvents>(event: E, callback: RoomEvents[E]): this;
}

/** Joins the room that `token` names. Events that happen while this settles are delivered
 * to handlers added as soon as it resolves. */
export function joinRoom(token: string, options?: JoinOptions): Promise<Room>;

declare const _default: { joinRoom: typeof joinRoom; ConveneError: typeof ConveneError; VERSION: string };
export default _default;
