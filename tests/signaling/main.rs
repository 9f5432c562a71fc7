//! Protocol tests of the signaling WebSocket (`docs/signaling.md`): real sockets against
//! the real binary on a random port.

#[path = "../api/support.rs"]
mod support;

#[path = "../support/ws.rs"]
#[allow(dead_code)]
mod ws;

mod hostile;
mod join;
mod lifecycle;
mod limits;
#[path = "../support/raw_ws.rs"]
#[allow(dead_code)]
mod raw_ws;
mod relay;
