//! Tests of the admin API (`docs/admin.md`): the live event stream, the participants
//! endpoints and the metrics, against the real binary.

#[path = "../api/support.rs"]
mod support;

mod access;
mod activation;
mod bridge;
mod cluster;
mod cluster_events;
mod events;
mod limits;
mod metrics;
mod participants;
#[path = "../support/raw_ws.rs"]
#[allow(dead_code)]
mod raw_ws;
#[path = "../support/ws.rs"]
#[allow(dead_code)]
mod ws;
