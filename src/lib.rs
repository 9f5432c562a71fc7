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
pub(crate) mod wsguard;
