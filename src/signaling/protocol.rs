//! The signaling wire format: JSON text frames, each an object with a `type`.
//! `docs/signaling.md` is the prose version of this file; keep them in step.

use super::IceConfig;
use crate::error::ApiError;
use crate::model::{ConferenceType, Participant, now_ms};
use crate::room::{Closing, JoinRequest, RoomMessage};
use crate::token::Permissions;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use serde_json::value::RawValue;
use std::sync::Arc;

/// WebSocket close codes of the protocol.
pub mod close {
    /// After `leave`.
    pub const NORMAL: u16 = 1000;
    /// The server is shutting down; reconnect (and resume) later.
    pub const GOING_AWAY: u16 = 1001;
    /// Not a WebSocket frame we can read.
    pub const PROTOCOL: u16 = 1002;
    /// More messages per second than allowed.
    pub const POLICY: u16 = 1008;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// `join` with a bad, expired or foreign room token.
    pub const INVALID_TOKEN: u16 = 4001;
    /// `join` for a room that does not exist (deleted or expired).
    pub const ROOM_NOT_FOUND: u16 = 4004;
    /// No `join` within the join timeout.
    pub const JOIN_TIMEOUT: u16 = 4008;
    /// `join` for a room with no seat left.
    pub const ROOM_FULL: u16 = 4009;
    /// `join` with a participant token whose identity is banned from the room.
    pub const BANNED: u16 = 4003;
    /// After `roomClosed {reason: "deleted"}`.
    pub const ROOM_DELETED: u16 = 4010;
    /// After `roomClosed {reason: "expired"}`.
    pub const ROOM_EXPIRED: u16 = 4011;
    /// Another socket resumed this participant; the newer socket wins.
    pub const REPLACED: u16 = 4012;
    /// An admin removed the participant.
    pub const KICKED: u16 = 4013;
    /// The participant stayed longer than `endpointTTLSeconds`.
    pub const ENDPOINT_EXPIRED: u16 = 4014;
    /// Nothing heard from the client within the client timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4015;
    /// The client did not read its messages fast enough.
    pub const TOO_SLOW: u16 = 4016;
}

/// The `room` object of `joined`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomInfo<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub conference_type: ConferenceType,
    pub max_participants: u32,
}

/// An `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// Messages from the server.
#[derive(Debug, Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ServerMessage<'a> {
    Joined {
        address: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        permissions: Option<Permissions>,
        room: RoomInfo<'a>,
        participants: Vec<&'a Participant>,
        ice_servers: &'a [IceServer],
        resume_token: &'a str,
    },
    ParticipantJoined {
        participant: &'a Participant,
    },
    ParticipantLeft {
        address: &'a str,
        reason: &'a str,
    },
    ParticipantUpdated {
        participant: &'a Participant,
    },
    ConferenceTypeChanged {
        conference_type: ConferenceType,
        reason: &'a str,
        participant_count: u32,
    },
    RoomClosed {
        reason: &'a str,
    },
    ActiveSpeakers {
        speakers: &'a [String],
    },
    /// Signaling from the media plane (`from` is `sfu`).
    Signal {
        from: &'a str,
        data: &'a Value,
    },
    Error {
        code: &'static str,
        id: Option<&'static str>,
        description: [&'a str; 1],
    },
    Pong,
}

impl ServerMessage<'_> {
    pub fn error(e: &ApiError) -> ServerMessage<'_> {
        ServerMessage::Error {
            code: e.code.code(),
            id: e.code.id(),
            description: [e.description.as_str()],
        }
    }

    pub fn text(&self) -> Arc<str> {
        serde_json::to_string(self)
            .expect("server messages always serialize")
            .into()
    }
}

/// The wire form of a room's message. `joined` gets the participant's ICE servers (with
/// TURN credentials made now).
pub fn render(message: &RoomMessage, ice: &IceConfig) -> Arc<str> {
    match message {
        RoomMessage::Joined {
            address,
            identity,
            name,
            permissions,
            room,
            participants,
            resume_token,
        } => {
            let ice_servers = ice.servers_for(address, now_ms() / 1000);
            ServerMessage::Joined {
                address,
                identity: identity.as_deref(),
                name: name.as_deref(),
                permissions: *permissions,
                room: RoomInfo {
                    id: &room.id,
                    name: room.name.as_deref(),
                    conference_type: room.conference_type,
                    max_participants: room.max_participants,
                },
                participants: participants.iter().collect(),
                ice_servers: &ice_servers,
                resume_token,
            }
            .text()
        }
        RoomMessage::ParticipantJoined(participant) => {
            ServerMessage::ParticipantJoined { participant }.text()
        }
        RoomMessage::ParticipantLeft { address, reason } => {
            ServerMessage::ParticipantLeft { address, reason }.text()
        }
        RoomMessage::ParticipantUpdated(participant) => {
            ServerMessage::ParticipantUpdated { participant }.text()
        }
        RoomMessage::ConferenceTypeChanged {
            conference_type,
            reason,
            participant_count,
        } => ServerMessage::ConferenceTypeChanged {
            conference_type: *conference_type,
            reason,
            participant_count: *participant_count,
        }
        .text(),
        RoomMessage::RoomClosed { reason } => ServerMessage::RoomClosed { reason }.text(),
        RoomMessage::ActiveSpeakers { speakers } => {
            ServerMessage::ActiveSpeakers { speakers }.text()
        }
        RoomMessage::EndpointExpired { ttl_seconds } => {
            ServerMessage::error(&ApiError::endpoint_expired(*ttl_seconds)).text()
        }
        RoomMessage::SfuUnavailable => ServerMessage::error(&ApiError::sfu_unavailable()).text(),
        RoomMessage::SfuSignal { data } => ServerMessage::Signal { from: "sfu", data }.text(),
        RoomMessage::SfuSignalRejected { reason } => {
            ServerMessage::error(&ApiError::sfu_signal_rejected(reason)).text()
        }
    }
}

/// The close code and reason of a socket the room closes.
pub fn closing(closing: Closing) -> (u16, &'static str) {
    match closing {
        Closing::Left => (close::NORMAL, "left"),
        Closing::Replaced => (close::REPLACED, "resumed on another connection"),
        Closing::IdentityRejoined => (close::REPLACED, "the same identity joined again"),
        Closing::Kicked => (close::KICKED, "removed by an admin"),
        Closing::EndpointExpired => (close::ENDPOINT_EXPIRED, "endpoint expired"),
        Closing::RoomDeleted => (close::ROOM_DELETED, "room closed"),
        Closing::RoomExpired => (close::ROOM_EXPIRED, "room closed"),
        Closing::OwnerLost => (close::GOING_AWAY, "room moved to another node"),
        Closing::HandedOver => (close::GOING_AWAY, HANDED_OVER),
    }
}

/// The close reason of a socket whose room a draining node handed to another node: the
/// seat waits there for a resume (an edge re-attaches a bridged socket at once).
pub const HANDED_OVER: &str = "room handed over to another node";

/// A relayed `signal` or `message`, built by the sender's session: `data` goes out
/// byte for byte as it came in, and `from` is always the sender's own address.
pub fn relayed(kind: &'static str, from: &str, data: &RawValue) -> Arc<str> {
    #[derive(Serialize)]
    struct Relayed<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        from: &'a str,
        data: &'a RawValue,
    }
    serde_json::to_string(&Relayed { kind, from, data })
        .expect("relayed messages always serialize")
        .into()
}

/// Whether a relayed `signal`'s `data` carries an SDP (`{description: {sdp}}`, as the SDK
/// sends it) with a media section that sends: an `m=audio` or `m=video` line with a port
/// other than 0 whose direction is `sendrecv` (the default) or `sendonly`.
pub fn sends_media(data: &RawValue) -> bool {
    #[derive(serde::Deserialize)]
    struct Data {
        description: Option<Description>,
    }
    #[derive(serde::Deserialize)]
    struct Description {
        sdp: Option<String>,
    }
    let Ok(Data {
        description: Some(Description { sdp: Some(sdp) }),
    }) = serde_json::from_str::<Data>(data.get())
    else {
        return false;
    };
    let mut sends = false;
    let mut in_media = false;
    let mut direction = "sendrecv";
    let mut finish = |in_media: bool, direction: &str| {
        if in_media && matches!(direction, "sendrecv" | "sendonly") {
            sends = true;
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(m) = line.strip_prefix("m=") {
            finish(in_media, direction);
            let mut fields = m.split(' ');
            let kind = fields.next().unwrap_or_default();
            let port = fields.next().unwrap_or_default();
            in_media = matches!(kind, "audio" | "video") && port != "0";
            direction = "sendrecv";
        } else if let Some(d) = line.strip_prefix("a=")
            && matches!(d, "sendrecv" | "sendonly" | "recvonly" | "inactive")
        {
            direction = d;
        }
    }
    finish(in_media, direction);
    sends
}

/// Messages from the client.
#[derive(Debug)]
pub enum ClientMessage {
    Join(JoinRequest),
    Signal {
        to: String,
        data: Box<RawValue>,
    },
    Message {
        to: Option<Vec<String>>,
        data: Box<RawValue>,
    },
    MediaState {
        audio: Option<bool>,
        video: Option<bool>,
    },
    Leave,
    Ping,
}

/// Longest participant name, in characters (as for room names).
const NAME_MAX: usize = 512;

/// Every field any client message has; each is checked by the type that uses it.
#[derive(serde::Deserialize)]
struct Fields<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(rename = "participantInfo", borrow)]
    participant_info: Option<&'a RawValue>,
    #[serde(borrow)]
    audio: Option<&'a RawValue>,
    #[serde(borrow)]
    video: Option<&'a RawValue>,
    #[serde(borrow)]
    resume: Option<&'a RawValue>,
    #[serde(borrow)]
    to: Option<&'a RawValue>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// Reads one client frame. Errors name the field at fault.
pub fn parse(text: &str) -> Result<ClientMessage, ApiError> {
    if !text.trim_start().starts_with('{') {
        return Err(ApiError::invalid_message());
    }
    let f: Fields = serde_json::from_str(text).map_err(|_| ApiError::invalid_message())?;
    let kind: String = required("type", f.kind)?;
    Ok(match kind.as_str() {
        "join" => {
            let name: Option<String> = optional("name", f.name)?;
            if name.as_ref().is_some_and(|n| n.chars().count() > NAME_MAX) {
                return Err(ApiError::string_size("name", NAME_MAX));
            }
            let participant_info: Option<Value> = optional("participantInfo", f.participant_info)?;
            if participant_info.as_ref().is_some_and(|v| !v.is_object()) {
                return Err(ApiError::invalid_value("participantInfo"));
            }
            ClientMessage::Join(JoinRequest {
                token: required("token", f.token)?,
                name,
                participant_info,
                audio: optional("audio", f.audio)?.unwrap_or(true),
                video: optional("video", f.video)?.unwrap_or(true),
                resume: optional("resume", f.resume)?,
                grant: None,
                token_generation: 0,
            })
        }
        "signal" => ClientMessage::Signal {
            to: required("to", f.to)?,
            data: raw("data", f.data)?,
        },
        "message" => ClientMessage::Message {
            to: optional("to", f.to)?,
            data: raw("data", f.data)?,
        },
        "mediaState" => ClientMessage::MediaState {
            audio: optional("audio", f.audio)?,
            video: optional("video", f.video)?,
        },
        "leave" => ClientMessage::Leave,
        "ping" => ClientMessage::Ping,
        _ => return Err(ApiError::invalid_value("type")),
    })
}

/// A field that must be there (and not `null`) with the right type.
fn required<T: DeserializeOwned>(name: &str, value: Option<&RawValue>) -> Result<T, ApiError> {
    optional(name, value)?.ok_or_else(|| ApiError::parameter_missing(name))
}

/// A field that may be absent or `null`; present, it must have the right type.
fn optional<T: DeserializeOwned>(
    name: &str,
    value: Option<&RawValue>,
) -> Result<Option<T>, ApiError> {
    match value {
        None => Ok(None),
        Some(raw) if raw.get() == "null" => Ok(None),
        Some(raw) => serde_json::from_str(raw.get())
            .map(Some)
            .map_err(|_| ApiError::invalid_value(name)),
    }
}

/// A field relayed as it came, which must be there (`null` is a value here).
fn raw(name: &str, value: Option<&RawValue>) -> Result<Box<RawValue>, ApiError> {
    value
        .map(|v| v.to_owned())
        .ok_or_else(|| ApiError::parameter_missing(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn parses_every_client_message() {
        let ClientMessage::Join(join) = parse(
            r#"{"type":"join","token":"t","name":"Ann","participantInfo":{"a":1},"video":false}"#,
        )
        .unwrap() else {
            panic!("not a join")
        };
        assert_eq!(join.token, "t");
        assert_eq!(join.name.as_deref(), Some("Ann"));
        assert!(join.audio && !join.video);
        let ClientMessage::Signal { to, data } =
            parse(r#"{"type":"signal","to":"PA-1","data":{"sdp": "x" }}"#).unwrap()
        else {
            panic!("not a signal")
        };
        assert_eq!(to, "PA-1");
        assert_eq!(data.get(), r#"{"sdp": "x" }"#, "data is kept byte for byte");
        assert!(matches!(
            parse(r#"{"type":"message","data":"hi"}"#).unwrap(),
            ClientMessage::Message { to: None, .. }
        ));
        assert!(matches!(
            parse(r#"{"type":"leave"}"#).unwrap(),
            ClientMessage::Leave
        ));
        assert!(matches!(
            parse(r#"{"type":"ping"}"#).unwrap(),
            ClientMessage::Ping
        ));
    }

    #[test]
    fn errors_name_the_field() {
        let code = |text: &str| parse(text).unwrap_err();
        assert_eq!(code("nope").code, Code::InvalidJson);
        assert_eq!(code("[1]").code, Code::InvalidJson);
        assert_eq!(code(r#"{"type":"dance"}"#), ApiError::invalid_value("type"));
        assert_eq!(code(r#"{"to":"x"}"#), ApiError::parameter_missing("type"));
        assert_eq!(
            code(r#"{"type":"join"}"#),
            ApiError::parameter_missing("token")
        );
        assert_eq!(
            code(r#"{"type":"join","token":5}"#),
            ApiError::invalid_value("token")
        );
        assert_eq!(
            code(r#"{"type":"join","token":"t","participantInfo":[]}"#),
            ApiError::invalid_value("participantInfo")
        );
        assert_eq!(
            code(r#"{"type":"signal","data":{}}"#),
            ApiError::parameter_missing("to")
        );
        assert_eq!(
            code(r#"{"type":"signal","to":"PA-1"}"#),
            ApiError::parameter_missing("data")
        );
        assert_eq!(
            code(r#"{"type":"message","to":"PA-1","data":1}"#),
            ApiError::invalid_value("to")
        );
        assert_eq!(
            code(r#"{"type":"mediaState","audio":"yes"}"#),
            ApiError::invalid_value("audio")
        );
    }

    #[test]
    fn sending_media_is_told_from_the_sdp() {
        let data = |sdp: &str| {
            RawValue::from_string(
                serde_json::json!({"description": {"type": "offer", "sdp": sdp}}).to_string(),
            )
            .unwrap()
        };
        let sdp = |sections: &[&str]| format!("v=0\r\ns=-\r\n{}", sections.join(""));
        let audio = |dir: &str| format!("m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n{dir}");
        assert!(sends_media(&data(&sdp(&[&audio("a=sendrecv\r\n")]))));
        assert!(sends_media(&data(&sdp(&[&audio("a=sendonly\r\n")]))));
        // No direction attribute: sendrecv.
        assert!(sends_media(&data(&sdp(&[&audio("")]))));
        assert!(!sends_media(&data(&sdp(&[&audio("a=recvonly\r\n")]))));
        assert!(!sends_media(&data(&sdp(&[&audio("a=inactive\r\n")]))));
        // A rejected section (port 0) and a data channel send no media.
        assert!(!sends_media(&data(&sdp(&[
            "m=video 0 UDP/TLS/RTP/SAVPF 96\r\na=sendrecv\r\n",
            "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n",
            &audio("a=recvonly\r\n"),
        ]))));
        // One sending section among others is enough.
        assert!(sends_media(&data(&sdp(&[
            &audio("a=recvonly\r\n"),
            "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=sendonly\r\n",
        ]))));
        // Candidates and other data are not SDP.
        let candidate = RawValue::from_string(r#"{"candidate":{"candidate":"a"}}"#.into()).unwrap();
        assert!(!sends_media(&candidate));
        assert!(!sends_media(&RawValue::from_string("42".into()).unwrap()));
    }

    #[test]
    fn relayed_messages_carry_data_unchanged() {
        let data = RawValue::from_string(r#"{"candidate" : "a b"}"#.into()).unwrap();
        assert_eq!(
            &*relayed("signal", "PA-1", &data),
            r#"{"type":"signal","from":"PA-1","data":{"candidate" : "a b"}}"#
        );
    }
}
