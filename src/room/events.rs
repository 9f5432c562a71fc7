//! The room's domain events: every change of room state that others may follow. Rooms and
//! the registry publish them synchronously through [`RoomServices::publish`]; observers
//! (the admin event hub) must not block.
//!
//! [`RoomServices::publish`]: super::RoomServices::publish

use super::state::MediaStatus;
use crate::metrics::METRICS;
use crate::model::{Participant, RoomRecord};
use std::sync::Arc;

/// A change of room state.
#[derive(Debug, Clone, PartialEq)]
pub enum RoomEvent {
    RoomCreated(Arc<RoomRecord>),
    /// A room's actor started from the stored record (rooms are activated on first use);
    /// observers add it to their live state without an event of their own.
    Activated(Arc<RoomRecord>),
    /// A room's actor stopped because nobody used it (passivation); the room is still in
    /// the store. Observers drop it from their live state without an event of their own.
    Passivated(String),
    /// A change of the room's record other than an upgrade (a refreshed token).
    RoomUpdated(Arc<RoomRecord>),
    RoomUpgraded(Arc<RoomRecord>),
    /// The room was deleted; `seats` participants held a seat in it.
    RoomDeleted {
        room_id: String,
        seats: usize,
    },
    /// The room's `roomTTLSeconds` ran out; `seats` participants held a seat in it.
    RoomExpired {
        room_id: String,
        seats: usize,
    },
    ParticipantJoined {
        room_id: String,
        participant: Participant,
    },
    ParticipantUpdated {
        room_id: String,
        participant: Participant,
    },
    ParticipantLeft {
        room_id: String,
        address: String,
        /// The identity of its participant token (`None`: it joined with the room token).
        identity: Option<String>,
        reason: &'static str,
    },
    /// The media plane reported a change of a participant's media connection or of the
    /// tracks it publishes (SFU rooms).
    ParticipantMediaUpdated {
        room_id: String,
        address: String,
        media: MediaStatus,
    },
    /// The room's active speakers changed (SFU rooms), loudest first.
    ActiveSpeakersChanged {
        room_id: String,
        speakers: Vec<String>,
    },
}

/// Something that follows room events (the admin event hub).
pub trait RoomObserver: Send + Sync {
    fn on_event(&self, event: &RoomEvent);
}

/// The process-wide counters that room events move.
pub(super) fn count(event: &RoomEvent) {
    match event {
        RoomEvent::ParticipantJoined { .. } => METRICS.joined(),
        RoomEvent::ParticipantLeft { reason, .. } => METRICS.left(reason),
        RoomEvent::RoomUpgraded(_) => METRICS.upgraded(),
        RoomEvent::RoomDeleted { seats, .. } | RoomEvent::RoomExpired { seats, .. } => {
            for _ in 0..*seats {
                METRICS.left("roomClosed");
            }
        }
        RoomEvent::RoomCreated(_)
        | RoomEvent::Activated(_)
        | RoomEvent::Passivated(_)
        | RoomEvent::RoomUpdated(_)
        | RoomEvent::ParticipantUpdated { .. }
        | RoomEvent::ParticipantMediaUpdated { .. }
        | RoomEvent::ActiveSpeakersChanged { .. } => {}
    }
}
