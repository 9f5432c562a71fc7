// Types of the Convene browser SDK (/sdk/convene.js). The surface follows the public VCS
// realtime SDK, so an application written against it moves over by changing an import.

export type ConferenceType = 'MESH' | 'SFU';

/** Why `joinRoom` rejected. */
export type JoinFailure = 'roomFull' | 'invalidToken' | 'roomNotFound' | 'joinRefused' | 'connectionFailed';

/** Why a room was left: `left` (leave()), `deleted`, `expired`, `kicked`, `replaced`
 * (resumed in another tab), `endpointExpired`, or a join failure after a resume. */
export type LeaveReason =
  | 'left' | 'deleted' | 'expired' | 'kicked' | 'replaced' | 'endpointExpired' | 'messageTooLarge' | JoinFailure;

export class ConveneError extends Error {
  readonly reason: JoinFailure;
  /** The server's error code, e.g. `REALTIME-00010`; `null` when the connection failed. */
  readonly code: string | null;
}

export interface JoinOptions {
  /** The service's origin, e.g. `https://convene.example.com`. Default: the page's origin. */
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
}

export class Participant {
  readonly address: string;
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
  /** Keeps a `<video>` showing this participant inside `element`; answers it. */
  attach(element: HTMLElement): HTMLVideoElement;
}

export interface RoomEvents {
  /** Someone joined after us. */
  participantJoined: (participant: Participant) => void;
  participantLeft: (participant: Participant, reason: string) => void;
  /** A participant's audio or video state changed. */
  participantUpdated: (participant: Participant) => void;
  /** No peer connection to this participant could be established in time. */
  participantJoinFailed: (participant: Participant, reason: 'timeout' | 'connectionFailed') => void;
  localStream: (participant: Participant) => void;
  remoteStream: (participant: Participant) => void;
  messageReceived: (from: Participant | { address: string }, data: unknown) => void;
  conferenceTypeChanged: (conferenceType: ConferenceType) => void;
  roomLeft: (reason: LeaveReason) => void;
}

export class Room {
  readonly id: string;
  readonly name?: string;
  readonly conferenceType: ConferenceType;
  readonly maxParticipants: number;
  readonly localParticipant: Participant;
  readonly remoteParticipants: Participant[];
  isMuted(): boolean;
  hasVideo(): boolean;
  /** Answers the new muted state. */
  toggleMute(): boolean;
  /** Answers the new video state. */
  toggleVideo(): Promise<boolean>;
  leave(): void;
  /** `address` empty or absent: everyone else. */
  sendMessageToParticipant(message: unknown, address?: string): void;
  on<E extends keyof RoomEvents>(event: E, callback: RoomEvents[E]): this;
  off<E extends keyof RoomEvents>(event: E, callback: RoomEvents[E]): this;
}

/** Joins the room that `token` names. Events that happen while this settles are delivered
 * to handlers added as soon as it resolves. */
export function joinRoom(token: string, options?: JoinOptions): Promise<Room>;

declare const _default: { joinRoom: typeof joinRoom; ConveneError: typeof ConveneError };
export default _default;
