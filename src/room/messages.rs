//! What a room tells its participants, as domain values. Signaling turns them into the
//! wire format (`src/signaling/protocol.rs`); relayed `signal`/`message` frames are made by
//! the sender's session and pass through here as ready text.

use crate::model::{ConferenceType, Participant};
use crate::token::{Grant, Permissions};
use serde_json::Value;
use std::sync::{Arc, OnceLock};

/// `join`'s fields.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinRequest {
    pub token: String,
    pub name: Option<String>,
    pub participant_info: Option<Value>,
    pub audio: bool,
    pub video: bool,
    pub resume: Option<String>,
    /// The grant of a participant token (`None` for a room token); set by signaling
    /// from the verified token, never from the frame.
    pub grant: Option<Box<Grant>>,
    /// The generation of a room token (see `crate::token`); set from the verified token.
    pub token_generation: u32,
}

/// The room as a joining participant sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomInfo {
    pub id: String,
    pub name: Option<String>,
    pub conference_type: ConferenceType,
    pub max_participants: u32,
}

/// A message of the room to one or more participants.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomMessage {
    /// To a participant that joined or resumed: its seat, the room and the others.
    Joined {
        address: String,
        /// Its participant token's identity and permissions (`None`: the room token).
        identity: Option<String>,
        /// Its name as the room shows it (its participant token's, else its `join`'s).
        name: Option<String>,
        permissions: Option<Permissions>,
        room: RoomInfo,
        participants: Vec<Participant>,
        resume_token: String,
    },
    ParticipantJoined(Participant),
    ParticipantLeft {
        address: String,
        reason: &'static str,
    },
    ParticipantUpdated(Participant),
    ConferenceTypeChanged {
        conference_type: ConferenceType,
        reason: &'static str,
        participant_count: u32,
    },
    RoomClosed {
        reason: &'static str,
    },
    /// The participant stayed longer than the room's `endpointTTLSeconds`.
    EndpointExpired {
        ttl_seconds: u64,
    },
    /// Who is speaking now (SFU rooms), loudest first.
    ActiveSpeakers {
        speakers: Vec<String>,
    },
    /// A `signal` to `sfu` in a room whose media does not go through the media plane.
    SfuUnavailable,
    /// Signaling from the media plane (`signal {from: "sfu", data}`).
    SfuSignal {
        data: Value,
    },
    /// The media plane could not use what the participant signaled to `sfu`.
    SfuSignalRejected {
        reason: String,
    },
}

/// Why the room closes a participant's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// After `leave`.
    Left,
    /// Another socket resumed the participant.
    Replaced,
    /// A newer join of the same identity took the participant's place.
    IdentityRejoined,
    /// An admin removed the participant.
    Kicked,
    /// The participant stayed longer than `endpointTTLSeconds`.
    EndpointExpired,
    RoomDeleted,
    RoomExpired,
    /// This node lost the room's lease: another node owns the room now.
    OwnerLost,
    /// This node is draining and handed the room to another node (seats included): the
    /// client resumes its seat there, and an edge re-attaches a bridged socket.
    HandedOver,
}

/// A room message shared by all its recipients, rendered once by the first one.
#[derive(Debug)]
pub struct Notice {
    message: RoomMessage,
    text: OnceLock<Arc<str>>,
}

impl Notice {
    pub fn new(message: RoomMessage) -> Arc<Self> {
        Arc::new(Self {
            message,
            text: OnceLock::new(),
        })
    }

    #[cfg(test)]
    pub fn message(&self) -> &RoomMessage {
        &self.message
    }

    /// The message's text, rendered by `render` on first use.
    pub fn text(&self, render: impl FnOnce(&RoomMessage) -> Arc<str>) -> Arc<str> {
        self.text.get_or_init(|| render(&self.message)).clone()
    }
}

/// What goes into a participant's outbound queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A text frame made by signaling (a relayed `signal` or `message`), shared by every
    /// recipient.
    Text(Arc<str>),
    /// A message of the room.
    Notice(Arc<Notice>),
    /// Close the socket.
    Close(Closing),
}
