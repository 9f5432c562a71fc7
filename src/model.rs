//! The record types that every layer shares: a room as the store keeps it and the REST API
//! shows it, a participant as rooms hold it, list cursors, and the domain errors that the
//! layers below `api` return (mapped to the published table in `src/error.rs`).

use crate::token::RoomTokens;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// MESH (peer to peer, the default) or SFU (through the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ConferenceType {
    Mesh,
    Sfu,
}

impl ConferenceType {
    /// Case-insensitive, as the contract wants.
    pub fn parse(s: &str) -> Option<Self> {
        if s.eq_ignore_ascii_case("MESH") {
            Some(Self::Mesh)
        } else if s.eq_ignore_ascii_case("SFU") {
            Some(Self::Sfu)
        } else {
            None
        }
    }
}

/// Participant limits per conference type, from configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub mesh: u32,
    pub sfu: u32,
}

impl Limits {
    pub fn max_participants(&self, kind: ConferenceType) -> u32 {
        match kind {
            ConferenceType::Mesh => self.mesh,
            ConferenceType::Sfu => self.sfu,
        }
    }
}

/// A room as the store keeps it. Times are milliseconds since the epoch, except
/// `token_expires_at`, which is in seconds like the token's own `exp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRecord {
    pub id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub creation_time: u64,
    pub modification_time: u64,
    pub conference_type: ConferenceType,
    pub auto_upgrade_participant_count: Option<u32>,
    pub room_token_ttl_seconds: u64,
    pub room_ttl_seconds: u64,
    pub endpoint_ttl_seconds: u64,
    /// The per-room value that every token of this room carries; dies with the room.
    pub nonce: String,
    pub token: String,
    pub token_expires_at: u64,
    pub participant_count: u32,
}

impl RoomRecord {
    /// When the room disappears, in milliseconds since the epoch.
    pub fn expires_at(&self) -> u64 {
        self.creation_time + self.room_ttl_seconds * 1000
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        now_ms >= self.expires_at()
    }

    /// Whether the stored token needs replacing: expired, or with less than a tenth of its
    /// lifetime (at most a minute) left, so that every response carries a usable token.
    pub fn token_is_stale(&self, now_ms: u64) -> bool {
        let margin = (self.room_token_ttl_seconds / 10).clamp(1, 60);
        now_ms / 1000 + margin >= self.token_expires_at
    }

    /// Replaces the token with a fresh one.
    pub fn refresh_token(&mut self, tokens: &RoomTokens, now_ms: u64) {
        let (token, exp) = tokens.issue(
            &self.id,
            &self.nonce,
            now_ms / 1000,
            self.room_token_ttl_seconds,
        );
        self.token = token;
        self.token_expires_at = exp;
    }

    /// The published JSON shape of this room.
    pub fn view(&self, limits: &Limits) -> RoomView<'_> {
        RoomView {
            id: &self.id,
            name: self.name.as_deref(),
            description: self.description.as_deref(),
            creation_time: self.creation_time,
            conference_type: self.conference_type,
            auto_upgrade_participant_count: self.auto_upgrade_participant_count,
            modification_time: self.modification_time,
            max_participants: limits.max_participants(self.conference_type),
            room_token_ttl_seconds: self.room_token_ttl_seconds,
            room_ttl_seconds: self.room_ttl_seconds,
            endpoint_ttl_seconds: self.endpoint_ttl_seconds,
            token: &self.token,
        }
    }
}

/// The room object of the published API, field for field and in its order.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomView<'a> {
    pub id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    pub creation_time: u64,
    pub conference_type: ConferenceType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auto_upgrade_participant_count: Option<u32>,
    pub modification_time: u64,
    pub max_participants: u32,
    #[serde(rename = "roomTokenTTLSeconds")]
    pub room_token_ttl_seconds: u64,
    #[serde(rename = "roomTTLSeconds")]
    pub room_ttl_seconds: u64,
    #[serde(rename = "endpointTTLSeconds")]
    pub endpoint_ttl_seconds: u64,
    pub token: &'a str,
}

/// What a client asks for when it creates a room, already validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewRoom {
    pub name: Option<String>,
    pub description: Option<String>,
    pub conference_type: Option<ConferenceType>,
    pub auto_upgrade_participant_count: Option<u32>,
}

/// A participant as the protocol shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_info: Option<Value>,
    pub audio: bool,
    pub video: bool,
    pub joined_at: u64,
}

/// A position in the newest-first order of rooms: the last room of a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub creation_time: u64,
    pub id: String,
}

impl Cursor {
    pub fn of(room: &RoomRecord) -> Self {
        Self {
            creation_time: room.creation_time,
            id: room.id.clone(),
        }
    }
}

/// The store could not be reached in time, or failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "store unavailable: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    /// The token is not one of this room's.
    Token,
    /// The room is gone.
    Gone,
    /// No seat left.
    Full { max: u32 },
    /// The room has no actor and could not be activated: the store failed.
    Unavailable,
}

/// What a room operation on a room named by id can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomError {
    /// No room has this id (in the store, or with an actor).
    NotFound(String),
    /// The store failed or did not answer in time.
    Store(StoreError),
    /// Another node owns the room (holds its lease): the request belongs there.
    Elsewhere(Owner),
}

/// The node that holds a room's lease, and where its HTTP API is; `http_addr` is `None`
/// when that node is not in the list of live nodes (its lease has not expired yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub http_addr: Option<String>,
}

impl From<StoreError> for RoomError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
