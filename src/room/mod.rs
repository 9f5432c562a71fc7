//! Rooms: the state machine of one room's rules ([`state`]), the actor that runs it for
//! each active room ([`actor`]), and the registry that owns the set of rooms. The room knows
//! nothing of the wire: it sends participants domain messages ([`messages`]) that signaling
//! renders, and publishes domain events ([`events`]) that the admin hub, webhooks and metrics
//! observe.

mod actor;
mod events;
mod messages;
mod ownership;
mod registry;
mod state;

pub use actor::{HandedOver, RoomHandle, StartElsewhere};
pub use events::{RoomEvent, RoomObserver};
pub use messages::{Closing, JoinRequest, Outbound, RoomMessage};
pub use ownership::{LoadNow, Ownership};
pub use registry::Rooms;
pub use state::{Ban, Kicked, MediaReport, MediaStatus, ParticipantState};

use crate::media::MediaPlane;
use crate::model::Limits;
use crate::store::Store;
use crate::token::RoomTokens;
use std::sync::Arc;
use std::time::Duration;

/// What every room actor and the registry share: configuration, tokens, the store, and
/// the observers of room events.
pub struct RoomServices {
    pub limits: Limits,
    pub room_token_ttl_seconds: u64,
    pub room_ttl_seconds: u64,
    pub endpoint_ttl_seconds: u64,
    /// How long a participant whose socket is gone keeps its seat for a resume.
    pub resume_grace: Duration,
    /// How long a room's actor stays with nobody joined and no request before it stops
    /// (passivates); the room stays in the store.
    pub room_idle: Duration,
    pub tokens: RoomTokens,
    pub store: Arc<dyn Store>,
    /// Every change of room state goes to each of them (the admin event hub, the webhook
    /// dispatcher).
    pub observers: Vec<Arc<dyn RoomObserver>>,
    /// The SFU's media plane (`None`: SFU rooms answer `SFU_UNAVAILABLE`).
    pub media: Option<MediaPlane>,
    /// With `cluster` (and Redis): room leases, fenced writes and the node list (one owner
    /// per room).
    pub ownership: Option<Arc<Ownership>>,
}

impl RoomServices {
    /// Counts the event in the metrics and hands it to every observer.
    pub fn publish(&self, event: &RoomEvent) {
        events::count(event);
        for observer in &self.observers {
            observer.on_event(event);
        }
    }
}
