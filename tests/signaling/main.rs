//! Protocol tests of the signaling WebSocket (`docs/signaling.md`): real sockets against
//! the real binary on a random port.

#[path = "../api/support.rs"]
mod support;

mod client;

mod hostile;
mod join;
mod lifecycle;
mod relay;
