//! What a webhook says: the JSON body of each event (`docs/webhooks.md` is its contract)
//! made from a room event, and the signature of a request.

use crate::model::{Participant, RoomRecord};
use crate::room::RoomEvent;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

/// One event as it is queued and POSTed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub id: String,
    pub room: String,
    /// When it happened, ms since the epoch.
    pub at: u64,
    /// The JSON body: `{"id", "type", "timestamp", "roomId", ...}`.
    pub body: String,
}

/// The names of the participants present in each room, so that `participantLeft` and
/// `participantKicked` can say who left (room events of a departure carry the address).
#[derive(Default)]
pub struct Names(HashMap<String, HashMap<String, Option<String>>>);

impl Names {
    fn remember(&mut self, room: &str, participant: &Participant) {
        self.0
            .entry(room.to_string())
            .or_default()
            .insert(participant.address.clone(), participant.name.clone());
    }

    fn forget(&mut self, room: &str, address: &str) -> Option<String> {
        let names = self.0.get_mut(room)?;
        let name = names.remove(address).flatten();
        if names.is_empty() {
            self.0.remove(room);
        }
        name
    }

    fn forget_room(&mut self, room: &str) {
        self.0.remove(room);
    }
}

/// The id of a room's `roomFinished`: a room ends once, so its end has one id, whoever
/// tells of it (the room's actor, or the sweep of a room that expired without one). Should
/// a failure ever make two of them (a sweeping node and an owner cut off from Redis), the
/// receiver's deduplication by id takes care of it. A UUID (version 8) made of the
/// SHA-256 of the room id.
pub fn finished_id(room: &str) -> String {
    let digest = Sha256::digest(format!("convene roomFinished {room}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// The webhook events that a room event makes (none for most; two for a kick:
/// `participantKicked`, then `participantLeft`), stamped `at` with fresh ids (the room's
/// one id for `roomFinished`, see [`finished_id`]).
pub fn describe(event: &RoomEvent, names: &mut Names, at: u64) -> Vec<WebhookEvent> {
    let mut out = Vec::new();
    let mut push = |room: &str, kind: &str, fields: Value| {
        let id = if kind == "roomFinished" {
            finished_id(room)
        } else {
            uuid::Uuid::new_v4().to_string()
        };
        let mut body = Map::new();
        body.insert("id".into(), id.clone().into());
        body.insert("type".into(), kind.into());
        body.insert("timestamp".into(), at.into());
        body.insert("roomId".into(), room.into());
        if let Value::Object(fields) = fields {
            body.extend(fields);
        }
        out.push(WebhookEvent {
            id,
            room: room.to_string(),
            at,
            body: Value::Object(body).to_string(),
        });
    };
    match event {
        RoomEvent::RoomCreated(record) => {
            push(&record.id, "roomStarted", json!({"room": room(record)}));
        }
        RoomEvent::RoomUpgraded(record) => push(
            &record.id,
            "conferenceTypeChanged",
            json!({"previousConferenceType": "MESH", "conferenceType": record.conference_type}),
        ),
        RoomEvent::RoomDeleted { room_id, seats } | RoomEvent::RoomExpired { room_id, seats } => {
            names.forget_room(room_id);
            let reason = if matches!(event, RoomEvent::RoomDeleted { .. }) {
                "deleted"
            } else {
                "expired"
            };
            push(
                room_id,
                "roomFinished",
                json!({"reason": reason, "participants": seats}),
            );
        }
        RoomEvent::ParticipantJoined {
            room_id,
            participant,
        } => {
            names.remember(room_id, participant);
            push(
                room_id,
                "participantJoined",
                json!({"participant": participant}),
            );
        }
        RoomEvent::ParticipantLeft {
            room_id,
            address,
            identity,
            reason,
        } => {
            let mut who = Map::new();
            who.insert("address".into(), address.as_str().into());
            if let Some(identity) = identity {
                who.insert("identity".into(), identity.as_str().into());
            }
            if let Some(name) = names.forget(room_id, address) {
                who.insert("name".into(), name.into());
            }
            if *reason == "kicked" {
                push(room_id, "participantKicked", json!({"participant": who}));
            }
            push(
                room_id,
                "participantLeft",
                json!({"participant": who, "reason": reason}),
            );
        }
        RoomEvent::Passivated(room_id) => names.forget_room(room_id),
        RoomEvent::Activated(_)
        | RoomEvent::RoomUpdated(_)
        | RoomEvent::ParticipantUpdated { .. }
        | RoomEvent::ParticipantMediaUpdated { .. }
        | RoomEvent::ActiveSpeakersChanged { .. } => {}
    }
    out
}

/// The room as `roomStarted` shows it: the published fields, without the token.
fn room(record: &RoomRecord) -> Value {
    let mut room = Map::new();
    if let Some(name) = &record.name {
        room.insert("name".into(), name.as_str().into());
    }
    if let Some(description) = &record.description {
        room.insert("description".into(), description.as_str().into());
    }
    room.insert("creationTime".into(), record.creation_time.into());
    room.insert("conferenceType".into(), json!(record.conference_type));
    room.insert("roomTTLSeconds".into(), record.room_ttl_seconds.into());
    Value::Object(room)
}

/// The `Convene-Signature` header of a request sent at `timestamp` (Unix seconds):
/// `t=<timestamp>,v1=<hex of HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConferenceType;
    use std::sync::Arc;

    fn record() -> RoomRecord {
        RoomRecord {
            id: "R1".into(),
            name: Some("Daily".into()),
            description: None,
            creation_time: 5,
            modification_time: 5,
            conference_type: ConferenceType::Mesh,
            auto_upgrade_participant_count: None,
            room_token_ttl_seconds: 60,
            room_ttl_seconds: 600,
            endpoint_ttl_seconds: 60,
            nonce: "n".into(),
            token: "secret-token".into(),
            token_expires_at: 60,
            participant_count: 0,
            access: Default::default(),
        }
    }

    fn bodies(events: &[WebhookEvent]) -> Vec<Value> {
        events
            .iter()
            .map(|e| {
                let mut v: Value = serde_json::from_str(&e.body).unwrap();
                assert_eq!(v["id"], e.id.as_str());
                v.as_object_mut().unwrap().remove("id");
                v
            })
            .collect()
    }

    #[test]
    fn room_events_become_webhook_events() {
        let mut names = Names::default();
        let created = describe(&RoomEvent::RoomCreated(Arc::new(record())), &mut names, 7);
        assert_eq!(
            bodies(&created),
            [
                json!({"type": "roomStarted", "timestamp": 7, "roomId": "R1",
                    "room": {"name": "Daily", "creationTime": 5, "conferenceType": "MESH",
                             "roomTTLSeconds": 600}})
            ]
        );
        assert!(!created[0].body.contains("secret-token"));
        let participant = Participant {
            address: "a1".into(),
            name: Some("Al".into()),
            participant_info: None,
            audio: true,
            video: false,
            joined_at: 6,
            identity: None,
            permissions: None,
        };
        let joined = RoomEvent::ParticipantJoined {
            room_id: "R1".into(),
            participant,
        };
        assert_eq!(
            bodies(&describe(&joined, &mut names, 8)),
            [
                json!({"type": "participantJoined", "timestamp": 8, "roomId": "R1",
                    "participant": {"address": "a1", "name": "Al", "audio": true,
                                    "video": false, "joinedAt": 6}})
            ]
        );
        let kicked = RoomEvent::ParticipantLeft {
            room_id: "R1".into(),
            address: "a1".into(),
            identity: Some("user-7".into()),
            reason: "kicked",
        };
        let events = describe(&kicked, &mut names, 9);
        assert_eq!(
            bodies(&events),
            [
                json!({"type": "participantKicked", "timestamp": 9, "roomId": "R1",
                       "participant": {"address": "a1", "identity": "user-7", "name": "Al"}}),
                json!({"type": "participantLeft", "timestamp": 9, "roomId": "R1",
                       "participant": {"address": "a1", "identity": "user-7", "name": "Al"},
                       "reason": "kicked"}),
            ]
        );
        assert_ne!(events[0].id, events[1].id);
        // The name is known once: a second departure of the address has none.
        let left = RoomEvent::ParticipantLeft {
            room_id: "R1".into(),
            address: "a1".into(),
            identity: None,
            reason: "left",
        };
        assert_eq!(
            bodies(&describe(&left, &mut names, 9))[0]["participant"],
            json!({"address": "a1"})
        );
        let mut upgraded = record();
        upgraded.conference_type = ConferenceType::Sfu;
        assert_eq!(
            bodies(&describe(
                &RoomEvent::RoomUpgraded(Arc::new(upgraded)),
                &mut names,
                10
            )),
            [
                json!({"type": "conferenceTypeChanged", "timestamp": 10, "roomId": "R1",
                    "previousConferenceType": "MESH", "conferenceType": "SFU"})
            ]
        );
        let expired = RoomEvent::RoomExpired {
            room_id: "R1".into(),
            seats: 2,
        };
        assert_eq!(
            bodies(&describe(&expired, &mut names, 11)),
            [
                json!({"type": "roomFinished", "timestamp": 11, "roomId": "R1",
                    "reason": "expired", "participants": 2})
            ]
        );
        assert!(describe(&RoomEvent::Passivated("R1".into()), &mut names, 12).is_empty());
        assert!(names.0.is_empty());
    }

    #[test]
    fn a_room_s_end_has_one_id_whoever_tells_of_it() {
        let mut names = Names::default();
        let ended = |room: &str| RoomEvent::RoomExpired {
            room_id: room.into(),
            seats: 0,
        };
        let first = describe(&ended("R1"), &mut names, 1);
        let again = describe(&ended("R1"), &mut names, 2);
        assert_eq!(first[0].id, again[0].id);
        assert_eq!(first[0].id, finished_id("R1"));
        assert_ne!(finished_id("R1"), finished_id("R2"));
        let uuid = uuid::Uuid::parse_str(&first[0].id).unwrap();
        assert_eq!(uuid.get_version_num(), 8);
        assert_eq!(bodies(&first)[0]["type"], "roomFinished");
    }

    #[test]
    fn signatures_are_hmac_sha256_of_timestamp_dot_body() {
        // echo -n '1700000000.{"a":1}' | openssl dgst -sha256 -hmac 'whsec-test-secret'
        assert_eq!(
            signature(b"whsec-test-secret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=4b776f4eda0086dafb75030a7dcbe0b60f5c49dbdc5376afc01e2e4d98eff080"
        );
    }
}
