//! Integration tests of the room REST API: the real binary over real HTTP, against both
//! stores (`memory` and `redis` in each test's name).

mod support;

mod auth;
mod bodies;
mod cli;
mod create;
mod delete;
mod faults;
mod fetch;
mod heads;
mod http;
mod list;
mod openapi;
mod persistence;
mod process;
mod rooms;
mod ttl;
#[path = "../support/ws.rs"]
#[allow(dead_code)]
mod ws;
