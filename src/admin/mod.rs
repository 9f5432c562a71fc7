//! What operators use: the admin event hub and its WebSocket stream. The participants
//! endpoints live with the other REST handlers in `api`.

pub mod cluster;
pub mod events;
pub mod stream;
