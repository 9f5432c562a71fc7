//! Convene: a realtime-conferencing control plane. See `ARCHITECTURE.md` for the map.

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod media;
pub mod metrics;
pub mod paging;
pub mod room;
pub mod signaling;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod token;
