//! Integration tests of the room REST API: the real binary over real HTTP, against both
//! stores (`memory` and `redis` in each test's name).

mod support;

mod auth;
mod bodies;
mod create;
mod delete;
mod faults;
mod fetch;
mod heads;
mod http;
mod list;
mod persistence;
mod process;
mod rooms;
mod ttl;
