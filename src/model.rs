//! The record types that every layer shares: a room as the store keeps it and the REST API
//! shows it, a participant as rooms hold it, list cursors, and the domain errors that the
//! layers below `api` return (mapped to the published table in `src/error.rs`).

use crate::token::{Permissions, RoomTokens};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
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
    /// Who may join: the room token's generation and the banned identities. Stored with
    /// the record (absent in records written before it existed).
    #[serde(default, skip_serializing_if = "RoomAccess::is_default")]
    pub access: RoomAccess,
}

/// What decides, beyond the nonce, whether a token may take a seat in a room.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomAccess {
    /// The generation of the room token: a room token of an older one is refused for new
    /// joins (the token was rotated).
    #[serde(default)]
    pub token_generation: u32,
    /// Banned identities, with the end of each ban (milliseconds since the epoch; a ban
    /// until the room ends holds the room's expiry).
    #[serde(default)]
    pub bans: BTreeMap<String, u64>,
}

impl RoomAccess {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The end of `identity`'s ban, if it is banned at `now_ms`.
    pub fn banned_until(&self, identity: &str, now_ms: u64) -> Option<u64> {
        self.bans
            .get(identity)
            .copied()
            .filter(|&until| until > now_ms)
    }
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

    /// Replaces the token with a fresh one (of the room's token generation).
    pub fn refresh_token(&mut self, tokens: &RoomTokens, now_ms: u64) {
        let (token, exp) = tokens.issue_generation(
            &self.id,
            &self.nonce,
            self.access.token_generation,
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
    /// The identity of its participant token; absent for a join with the room token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participant_info: Option<Value>,
    pub audio: bool,
    pub video: bool,
    pub joined_at: u64,
    /// What its participant token grants; absent for a join with the room token (which
    /// grants everything).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub permissions: Option<Permissions>,
}

impl Participant {
    /// What the participant may do (everything, without a participant token).
    pub fn may(&self) -> Permissions {
        self.permissions.unwrap_or_default()
    }
}

/// A seat as its room's owner keeps it in the store (with `cluster`), so that another node
/// taking the room over can give it back to its participant's resume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Seat {
    pub participant: Participant,
    pub resume_token: String,
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
    /// A room token of an older generation: the room token was rotated since.
    Rotated,
    /// The token's identity is banned from the room until then (ms since the epoch).
    Banned { identity: String, until: u64 },
    /// The room is gone.
    Gone,
    /// No seat left.
    Full { max: u32 },
    /// The room has no actor and could not be activated: the store failed.
    Unavailable,
    /// Another node owns the room: the join belongs there (with `cluster`, the node that
    /// got the socket bridges it to the owner).
    Elsewhere(Owner),
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
