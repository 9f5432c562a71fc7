//! Convene: a realtime-conferencing control plane. See `ARCHITECTURE.md` for the map.

pub(crate) mod admin;
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod body;
pub mod config;
pub(crate) mod error;
pub(crate) mod heads;
pub(crate) mod media;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod paging;
pub(crate) mod room;
pub(crate) mod signaling;
pub mod startup;
pub(crate) mod store;
pub mod telemetry;
pub(crate) mod token;
pub(crate) mod webhooks;
pub(crate) mod wsguard;

/// The entry points the fuzz targets in `fuzz/` drive, and nothing else: not an API.
/// It lives here, in `lib.rs`, above every layer, because it reaches into three of them.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::error::ApiError;
    pub use crate::model::{ConferenceType, Cursor, NewRoom};
    pub use crate::paging::PageTokens;
    pub use crate::signaling::protocol::{ClientMessage, parse as parse_signaling, relayed};

    /// The create-room body check: `Content-Type` value (`None` when absent), body bytes,
    /// and the MESH participant limit that bounds `autoUpgradeParticipantCount`.
    pub fn parse_create_room(
        content_type: Option<&str>,
        body: &[u8],
        mesh_limit: u32,
    ) -> Result<NewRoom, ApiError> {
        crate::api::parse_create_body(content_type, body, mesh_limit)
    }
}

/// The Redis storage layer's entry points that the storage tests in `tests/storage/` drive
/// against a private Redis and a private Redis Cluster (the room store, the fenced leases and
/// the node registry), and nothing else: not an API. It lives here for the reason `fuzzing`
/// does: only `config`, `startup` and `telemetry` are public.
#[doc(hidden)]
pub mod storage {
    pub use crate::model::{ConferenceType, Cursor, RoomRecord, StoreError};
    pub use crate::store::{
        Bus, BusEvent, ExpiredRoom, FencedError, Lease, Leases, MemoryStore, NodeInfo, Nodes,
        Redis, RedisStore, Store,
    };
}
