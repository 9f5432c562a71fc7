//! Convene: a realtime-conferencing control plane. See `ARCHITECTURE.md` for the map.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod metrics;
pub mod paging;
pub mod room;
pub mod signaling;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod token;

/// The entry points the fuzz targets in `fuzz/` drive, and nothing else: not an API.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::error::ApiError;
    pub use crate::paging::PageTokens;
    pub use crate::room::{ConferenceType, NewRoom};
    pub use crate::signaling::protocol::{ClientMessage, parse as parse_signaling, relayed};
    pub use crate::store::Cursor;

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
