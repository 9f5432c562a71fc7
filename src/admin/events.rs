//! The admin event hub: every change of room state, numbered, with a bounded log and a
//! live snapshot, fanned out to admin event streams.
//!
//! Rooms and the registry publish here synchronously and cheaply (a lock, an append, one
//! `try_send` per subscriber). Subscribers have bounded queues: one that falls behind is
//! cut off (its socket closes) and reconnects with the last sequence number it saw, so a
//! slow admin client never slows a room down.

use crate::model::{ConferenceType, Limits, Participant, RoomRecord, RoomView};
use crate::room::{MediaStatus, RoomEvent, RoomObserver};
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The wire form of an event: `{"type": ..., "seq": ..., ...}`.
#[derive(Serialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
enum Wire<'a> {
    RoomCreated {
        seq: u64,
        room: RoomView<'a>,
    },
    RoomUpdated {
        seq: u64,
        room: RoomView<'a>,
    },
    RoomUpgraded {
        seq: u64,
        room: RoomView<'a>,
    },
    RoomDeleted {
        seq: u64,
        room_id: &'a str,
    },
    RoomExpired {
        seq: u64,
        room_id: &'a str,
    },
    ParticipantJoined {
        seq: u64,
        room_id: &'a str,
        participant: &'a Participant,
    },
    ParticipantUpdated {
        seq: u64,
        room_id: &'a str,
        participant: &'a Participant,
    },
    ParticipantLeft {
        seq: u64,
        room_id: &'a str,
        address: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a str>,
        reason: &'a str,
    },
    ParticipantMediaUpdated {
        seq: u64,
        room_id: &'a str,
        address: &'a str,
        media: &'a MediaStatus,
    },
    ActiveSpeakersChanged {
        seq: u64,
        room_id: &'a str,
        speakers: &'a [String],
    },
    Snapshot {
        seq: u64,
        rooms: Vec<SnapshotRoom<'a>>,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRoom<'a> {
    #[serde(flatten)]
    room: RoomView<'a>,
    participants: &'a [LiveParticipant],
    /// Who is speaking (SFU rooms), loudest first; left out when nobody is.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    active_speakers: &'a [String],
}

/// A participant as snapshots show it: the protocol's participant, with its media
/// connection once the media plane reported on it (SFU rooms only).
#[derive(Serialize)]
struct LiveParticipant {
    #[serde(flatten)]
    participant: Participant,
    #[serde(skip_serializing_if = "Option::is_none")]
    media: Option<MediaStatus>,
}

struct LiveRoom {
    /// Shared with the room's actor (and its snapshot) while the record does not change.
    record: Arc<RoomRecord>,
    participants: Vec<LiveParticipant>,
    active_speakers: Vec<String>,
}

struct Subscriber {
    tx: mpsc::Sender<Arc<str>>,
}

struct State {
    seq: u64,
    log: VecDeque<(u64, Arc<str>)>,
    rooms: HashMap<String, LiveRoom>,
    subscribers: Vec<Subscriber>,
}

pub struct Events {
    state: Mutex<State>,
    limits: Limits,
    log_capacity: usize,
    queue_capacity: usize,
}

/// What a new subscriber gets: the messages to send first, then a live queue.
pub struct Subscription {
    /// A snapshot, or the events after the subscriber's last sequence number.
    pub backlog: Vec<Arc<str>>,
    pub live: mpsc::Receiver<Arc<str>>,
}

impl Events {
    pub fn new(limits: Limits, log_capacity: usize, queue_capacity: usize) -> Self {
        Self {
            state: Mutex::new(State {
                seq: 0,
                log: VecDeque::new(),
                rooms: HashMap::new(),
                subscribers: Vec::new(),
            }),
            limits,
            log_capacity: log_capacity.max(1),
            queue_capacity: queue_capacity.max(1),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every update below leaves the state whole before it can panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies a change to the live state, numbers it, logs it and fans it out.
    pub fn publish(&self, event: &RoomEvent) {
        let mut guard = self.state();
        let state = &mut *guard;
        let seq = state.seq + 1;
        let limits = &self.limits;
        let wire = match event {
            // A room's actor started from the stored record (first use since start-up or
            // since it passivated): the room joins the live set that snapshots show.
            RoomEvent::Activated(record) => {
                state
                    .rooms
                    .entry(record.id.clone())
                    .or_insert_with(|| LiveRoom {
                        record: record.clone(),
                        participants: Vec::new(),
                        active_speakers: Vec::new(),
                    });
                return;
            }
            // A room's actor stopped because nobody used it: the room leaves the live set.
            // It is still in the store (and in the REST list).
            RoomEvent::Passivated(room_id) => {
                state.rooms.remove(room_id);
                return;
            }
            RoomEvent::RoomCreated(r) => {
                state.rooms.insert(
                    r.id.clone(),
                    LiveRoom {
                        record: r.clone(),
                        participants: Vec::new(),
                        active_speakers: Vec::new(),
                    },
                );
                Wire::RoomCreated {
                    seq,
                    room: r.view(limits),
                }
            }
            RoomEvent::RoomUpdated(r) | RoomEvent::RoomUpgraded(r) => {
                if let Some(live) = state.rooms.get_mut(&r.id) {
                    live.record = r.clone();
                }
                match event {
                    RoomEvent::RoomUpgraded(_) => Wire::RoomUpgraded {
                        seq,
                        room: r.view(limits),
                    },
                    _ => Wire::RoomUpdated {
                        seq,
                        room: r.view(limits),
                    },
                }
            }
            RoomEvent::RoomDeleted { room_id, .. } | RoomEvent::RoomExpired { room_id, .. } => {
                if state.rooms.remove(room_id).is_none() {
                    return;
                }
                match event {
                    RoomEvent::RoomExpired { .. } => Wire::RoomExpired { seq, room_id },
                    _ => Wire::RoomDeleted { seq, room_id },
                }
            }
            RoomEvent::ParticipantJoined {
                room_id,
                participant: p,
            } => {
                if let Some(live) = state.rooms.get_mut(room_id) {
                    live.participants.push(LiveParticipant {
                        participant: p.clone(),
                        media: None,
                    });
                }
                Wire::ParticipantJoined {
                    seq,
                    room_id,
                    participant: p,
                }
            }
            RoomEvent::ParticipantUpdated {
                room_id,
                participant: p,
            } => {
                if let Some(live) = state.rooms.get_mut(room_id)
                    && let Some(slot) = live
                        .participants
                        .iter_mut()
                        .find(|q| q.participant.address == p.address)
                {
                    slot.participant = p.clone();
                }
                Wire::ParticipantUpdated {
                    seq,
                    room_id,
                    participant: p,
                }
            }
            RoomEvent::ParticipantLeft {
                room_id,
                address,
                identity,
                reason,
            } => {
                if let Some(live) = state.rooms.get_mut(room_id) {
                    live.participants
                        .retain(|p| &p.participant.address != address);
                }
                Wire::ParticipantLeft {
                    seq,
                    room_id,
                    address,
                    identity: identity.as_deref(),
                    reason,
                }
            }
            RoomEvent::ActiveSpeakersChanged { room_id, speakers } => {
                if let Some(live) = state.rooms.get_mut(room_id) {
                    live.active_speakers = speakers.clone();
                }
                Wire::ActiveSpeakersChanged {
                    seq,
                    room_id,
                    speakers,
                }
            }
            RoomEvent::ParticipantMediaUpdated {
                room_id,
                address,
                media,
            } => {
                if let Some(live) = state.rooms.get_mut(room_id)
                    && let Some(slot) = live
                        .participants
                        .iter_mut()
                        .find(|q| &q.participant.address == address)
                {
                    slot.media = Some(media.clone());
                }
                Wire::ParticipantMediaUpdated {
                    seq,
                    room_id,
                    address,
                    media,
                }
            }
        };
        let text: Arc<str> = serde_json::to_string(&wire)
            .expect("events always serialize")
            .into();
        state.seq = seq;
        if state.log.len() == self.log_capacity {
            state.log.pop_front();
        }
        state.log.push_back((seq, text.clone()));
        // A subscriber whose queue is full or closed is cut off; it resumes by sequence.
        state
            .subscribers
            .retain(|s| s.tx.try_send(text.clone()).is_ok());
    }

    /// Subscribes: with `last_seq` still in the log, the backlog is the events after it;
    /// otherwise (or without `last_seq`) it is a snapshot of every room.
    pub fn subscribe(&self, last_seq: Option<u64>) -> Subscription {
        let mut state = self.state();
        let oldest = state.log.front().map_or(state.seq + 1, |(seq, _)| *seq);
        let backlog = match last_seq {
            // Everything after `n` is in the log when `n + 1 >= oldest` (and `n` is not from
            // the future, as after a restart of the service).
            Some(n) if n <= state.seq && n + 1 >= oldest => state
                .log
                .iter()
                .filter(|(seq, _)| *seq > n)
                .map(|(_, text)| text.clone())
                .collect(),
            _ => vec![self.snapshot(&state)],
        };
        let (tx, live) = mpsc::channel(self.queue_capacity);
        state.subscribers.push(Subscriber { tx });
        Subscription { backlog, live }
    }

    fn snapshot(&self, state: &State) -> Arc<str> {
        let mut rooms: Vec<&LiveRoom> = state.rooms.values().collect();
        rooms.sort_by(|a, b| {
            (b.record.creation_time, &b.record.id).cmp(&(a.record.creation_time, &a.record.id))
        });
        let wire = Wire::Snapshot {
            seq: state.seq,
            rooms: rooms
                .into_iter()
                .map(|r| SnapshotRoom {
                    room: r.record.view(&self.limits),
                    participants: &r.participants,
                    active_speakers: &r.active_speakers,
                })
                .collect(),
        };
        serde_json::to_string(&wire)
            .expect("snapshots always serialize")
            .into()
    }

    /// Rooms by conference type, and participants, for metrics.
    pub fn gauges(&self) -> (usize, usize, usize) {
        let state = self.state();
        let sfu = state
            .rooms
            .values()
            .filter(|r| r.record.conference_type == ConferenceType::Sfu)
            .count();
        let participants = state.rooms.values().map(|r| r.participants.len()).sum();
        (state.rooms.len() - sfu, sfu, participants)
    }
}

impl RoomObserver for Events {
    fn on_event(&self, event: &RoomEvent) {
        self.publish(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, conference_type: ConferenceType) -> Arc<RoomRecord> {
        Arc::new(RoomRecord {
            id: id.into(),
            name: None,
            description: None,
            creation_time: 1_000,
            modification_time: 1_000,
            conference_type,
            auto_upgrade_participant_count: None,
            room_token_ttl_seconds: 60,
            room_ttl_seconds: 60,
            endpoint_ttl_seconds: 60,
            nonce: "n".into(),
            token: "t".into(),
            token_expires_at: 0,
            participant_count: 0,
            access: Default::default(),
        })
    }

    #[test]
    fn activation_and_passivation_change_the_live_set_without_events() {
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        let mut early = hub.subscribe(None);
        hub.on_event(&RoomEvent::Activated(record("RO-a", ConferenceType::Mesh)));
        hub.on_event(&RoomEvent::Activated(record("RO-b", ConferenceType::Sfu)));
        assert_eq!(hub.gauges(), (1, 1, 0));
        let snapshot: serde_json::Value =
            serde_json::from_str(&hub.subscribe(None).backlog[0]).unwrap();
        assert_eq!(snapshot["seq"], 0, "no event was numbered");
        assert_eq!(snapshot["rooms"].as_array().unwrap().len(), 2);

        hub.on_event(&RoomEvent::Passivated("RO-a".into()));
        assert_eq!(hub.gauges(), (0, 1, 0));
        let snapshot: serde_json::Value =
            serde_json::from_str(&hub.subscribe(None).backlog[0]).unwrap();
        assert_eq!(snapshot["seq"], 0);
        assert_eq!(snapshot["rooms"][0]["id"], "RO-b");
        // A subscriber saw nothing go by.
        assert!(early.live.try_recv().is_err());
    }
    #[test]
    fn identities_are_shown_in_joins_snapshots_and_leaves() {
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        hub.on_event(&RoomEvent::Activated(record("RO-i", ConferenceType::Mesh)));
        let mut live = hub.subscribe(None);
        let participant = Participant {
            address: "PA-1".into(),
            identity: Some("alice".into()),
            name: None,
            participant_info: None,
            audio: true,
            video: true,
            joined_at: 5,
            permissions: Some(crate::token::Permissions {
                can_publish: false,
                ..Default::default()
            }),
        };
        hub.on_event(&RoomEvent::ParticipantJoined {
            room_id: "RO-i".into(),
            participant,
        });
        let event: serde_json::Value =
            serde_json::from_str(&live.live.try_recv().unwrap()).unwrap();
        assert_eq!(event["participant"]["identity"], "alice", "{event}");
        assert_eq!(
            event["participant"]["permissions"],
            serde_json::json!({"canPublish": false, "canSubscribe": true, "canSendMessages": true})
        );
        let snapshot: serde_json::Value =
            serde_json::from_str(&hub.subscribe(None).backlog[0]).unwrap();
        assert_eq!(snapshot["rooms"][0]["participants"][0]["identity"], "alice");
        hub.on_event(&RoomEvent::ParticipantLeft {
            room_id: "RO-i".into(),
            address: "PA-1".into(),
            identity: Some("alice".into()),
            reason: "kicked",
        });
        let event: serde_json::Value =
            serde_json::from_str(&live.live.try_recv().unwrap()).unwrap();
        assert_eq!(
            event,
            serde_json::json!({"type": "participantLeft", "seq": 2, "roomId": "RO-i",
                               "address": "PA-1", "identity": "alice", "reason": "kicked"})
        );
    }

    #[test]
    fn media_updates_reach_the_snapshot_and_survive_participant_updates() {
        use crate::media::PublishedTrack;
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        hub.on_event(&RoomEvent::Activated(record("RO-s", ConferenceType::Sfu)));
        let participant = Participant {
            address: "PA-1".into(),
            identity: None,
            name: None,
            participant_info: None,
            audio: true,
            video: true,
            joined_at: 5,
            permissions: None,
        };
        hub.on_event(&RoomEvent::ParticipantJoined {
            room_id: "RO-s".into(),
            participant: participant.clone(),
        });
        let snapshot = |hub: &Events| -> serde_json::Value {
            serde_json::from_str(&hub.subscribe(None).backlog[0]).unwrap()
        };
        assert!(
            snapshot(&hub)["rooms"][0]["participants"][0]
                .get("media")
                .is_none()
        );

        let mut live = hub.subscribe(None);
        let media = MediaStatus {
            connected: true,
            tracks: vec![PublishedTrack {
                mid: "0".into(),
                kind: "audio",
            }],
        };
        hub.on_event(&RoomEvent::ParticipantMediaUpdated {
            room_id: "RO-s".into(),
            address: "PA-1".into(),
            media,
        });
        let event: serde_json::Value =
            serde_json::from_str(&live.live.try_recv().unwrap()).unwrap();
        let expected_media =
            serde_json::json!({"connected": true, "tracks": [{"mid": "0", "kind": "audio"}]});
        assert_eq!(
            event,
            serde_json::json!({"type": "participantMediaUpdated", "seq": 2, "roomId": "RO-s",
                               "address": "PA-1", "media": expected_media})
        );
        // A participantUpdated keeps the participant's media in the snapshot, and does not
        // carry it itself.
        hub.on_event(&RoomEvent::ParticipantUpdated {
            room_id: "RO-s".into(),
            participant: Participant {
                audio: false,
                ..participant
            },
        });
        let event: serde_json::Value =
            serde_json::from_str(&live.live.try_recv().unwrap()).unwrap();
        assert!(event["participant"].get("media").is_none(), "{event}");
        let p = &snapshot(&hub)["rooms"][0]["participants"][0];
        assert_eq!(p["media"], expected_media);
        assert_eq!(p["audio"], false);
    }
}
