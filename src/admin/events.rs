//! The admin event hub: every change of room state, numbered, with a bounded log and a
//! live snapshot, fanned out to admin event streams.
//!
//! Rooms and the registry publish here synchronously and cheaply (a lock, an append, one
//! `try_send` per subscriber). Subscribers have bounded queues: one that falls behind is
//! cut off (its socket closes) and reconnects with the last sequence number it saw, so a
//! slow admin client never slows a room down.

use super::cluster::Shipped;
use crate::model::{ConferenceType, Limits, Participant, RoomRecord, RoomView};
use crate::room::{MediaStatus, RoomEvent, RoomObserver};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// A room event in the hub's own, owned form: what the hub applies, and what a node of a
/// cluster ships to the others through Redis (`super::cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum Change {
    RoomCreated {
        room: Arc<RoomRecord>,
    },
    Activated {
        room: Arc<RoomRecord>,
    },
    Passivated {
        room_id: String,
    },
    RoomUpdated {
        room: Arc<RoomRecord>,
    },
    RoomUpgraded {
        room: Arc<RoomRecord>,
    },
    RoomDeleted {
        room_id: String,
    },
    RoomExpired {
        room_id: String,
    },
    ParticipantJoined {
        room_id: String,
        participant: Participant,
    },
    ParticipantUpdated {
        room_id: String,
        participant: Participant,
    },
    ParticipantLeft {
        room_id: String,
        address: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        identity: Option<String>,
        reason: String,
    },
    ParticipantMediaUpdated {
        room_id: String,
        address: String,
        media: Value,
    },
    ActiveSpeakersChanged {
        room_id: String,
        speakers: Vec<String>,
    },
}

impl Change {
    /// Whether it is a change of the live set only (no event of its own).
    pub fn is_silent(&self) -> bool {
        matches!(self, Change::Activated { .. } | Change::Passivated { .. })
    }
}

impl From<&RoomEvent> for Change {
    fn from(event: &RoomEvent) -> Self {
        match event {
            RoomEvent::RoomCreated(room) => Change::RoomCreated { room: room.clone() },
            RoomEvent::Activated(room) => Change::Activated { room: room.clone() },
            RoomEvent::Passivated(room_id) => Change::Passivated {
                room_id: room_id.clone(),
            },
            RoomEvent::RoomUpdated(room) => Change::RoomUpdated { room: room.clone() },
            RoomEvent::RoomUpgraded(room) => Change::RoomUpgraded { room: room.clone() },
            RoomEvent::RoomDeleted { room_id, .. } => Change::RoomDeleted {
                room_id: room_id.clone(),
            },
            RoomEvent::RoomExpired { room_id, .. } => Change::RoomExpired {
                room_id: room_id.clone(),
            },
            RoomEvent::ParticipantJoined {
                room_id,
                participant,
            } => Change::ParticipantJoined {
                room_id: room_id.clone(),
                participant: participant.clone(),
            },
            RoomEvent::ParticipantUpdated {
                room_id,
                participant,
            } => Change::ParticipantUpdated {
                room_id: room_id.clone(),
                participant: participant.clone(),
            },
            RoomEvent::ParticipantLeft {
                room_id,
                address,
                identity,
                reason,
            } => Change::ParticipantLeft {
                room_id: room_id.clone(),
                address: address.clone(),
                identity: identity.clone(),
                reason: reason.to_string(),
            },
            RoomEvent::ParticipantMediaUpdated {
                room_id,
                address,
                media,
            } => Change::ParticipantMediaUpdated {
                room_id: room_id.clone(),
                address: address.clone(),
                media: media_json(media),
            },
            RoomEvent::ActiveSpeakersChanged { room_id, speakers } => {
                Change::ActiveSpeakersChanged {
                    room_id: room_id.clone(),
                    speakers: speakers.clone(),
                }
            }
        }
    }
}

fn media_json(media: &MediaStatus) -> Value {
    serde_json::to_value(media).unwrap_or(Value::Null)
}

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
        room: Located<'a>,
    },
    RoomUpdated {
        seq: u64,
        room: Located<'a>,
    },
    RoomUpgraded {
        seq: u64,
        room: Located<'a>,
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
        media: &'a Value,
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

/// A room object, with the id of the node that owns it in a cluster (`node`, left out on
/// a single node).
#[derive(Serialize)]
struct Located<'a> {
    #[serde(flatten)]
    room: RoomView<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    node: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SnapshotRoom<'a> {
    #[serde(flatten)]
    room: Located<'a>,
    participants: &'a [LiveParticipant],
    /// Who is speaking (SFU rooms), loudest first; left out when nobody is.
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    active_speakers: &'a [String],
}

/// A participant as snapshots show it: the protocol's participant, with its media
/// connection once the media plane reported on it (SFU rooms only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveParticipant {
    #[serde(flatten)]
    pub participant: Participant,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media: Option<Value>,
}

/// One active room of a node with its participants: what a node tells the others of its
/// rooms in a cluster (`super::cluster`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRoom {
    pub room: Arc<RoomRecord>,
    pub participants: Vec<LiveParticipant>,
    #[serde(default)]
    pub active_speakers: Vec<String>,
}

struct LiveRoom {
    /// Shared with the room's actor (and its snapshot) while the record does not change.
    record: Arc<RoomRecord>,
    participants: Vec<LiveParticipant>,
    active_speakers: Vec<String>,
    /// The owner's node id (in the cluster-wide hub only).
    node: Option<Arc<str>>,
}

impl LiveRoom {
    fn new(record: Arc<RoomRecord>, node: Option<&Arc<str>>) -> Self {
        Self {
            record,
            participants: Vec::new(),
            active_speakers: Vec::new(),
            node: node.cloned(),
        }
    }
}

struct Subscriber {
    tx: mpsc::Sender<Arc<str>>,
}

/// Where a node's own hub ships its changes in a cluster, in order (see `super::cluster`).
struct Feed {
    tx: mpsc::Sender<Shipped>,
    /// A change could not be queued: the next thing shipped is this node's whole state.
    lost: bool,
}

struct State {
    seq: u64,
    log: VecDeque<(u64, Arc<str>)>,
    rooms: HashMap<String, LiveRoom>,
    subscribers: Vec<Subscriber>,
    feed: Option<Feed>,
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
                feed: None,
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

    /// Applies a change to the live state, numbers it, logs it and fans it out; with a
    /// feed (a node of a cluster), also ships it, in order, to the cluster's stream.
    pub fn publish(&self, event: &RoomEvent) {
        let change = Change::from(event);
        let mut guard = self.state();
        let state = &mut *guard;
        let seq = state.seq + 1;
        let text = self.apply(state, seq, None, &change);
        let visible = text.is_some();
        if let Some(text) = text {
            self.emit(state, seq, text);
        }
        if state.feed.is_some() && (visible || change.is_silent()) {
            ship(state, Shipped::Change { visible, change });
        }
    }

    /// Cluster-wide hub: applies an event of node `node` that the cluster's stream numbered
    /// `seq` (or, for a change of the live set only, `None`). Answers `false` when `seq`
    /// does not follow the last one (events were missed: the log starts over, so that
    /// clients resuming from before the gap get a snapshot).
    pub fn publish_at(&self, seq: Option<u64>, node: &str, change: &Change) -> bool {
        let mut guard = self.state();
        let state = &mut *guard;
        let node: Arc<str> = node.into();
        let Some(seq) = seq else {
            self.apply(state, state.seq, Some(&node), change);
            return true;
        };
        if seq <= state.seq {
            return true;
        }
        let follows = seq == state.seq + 1;
        if !follows {
            state.log.clear();
        }
        if let Some(text) = self.apply(state, seq, Some(&node), change) {
            self.emit(state, seq, text);
        }
        follows
    }

    /// Cluster-wide hub: the stream's numbering starts after `seq`.
    pub fn start_at(&self, seq: u64) {
        let mut state = self.state();
        state.seq = state.seq.max(seq);
    }

    /// Cluster-wide hub: node `node`'s active rooms are these now.
    pub fn replace_node(&self, node: &str, rooms: Vec<NodeRoom>) {
        let mut state = self.state();
        state.rooms.retain(|_, r| r.node.as_deref() != Some(node));
        let node: Arc<str> = node.into();
        for r in rooms {
            state.rooms.insert(
                r.room.id.clone(),
                LiveRoom {
                    record: r.room,
                    participants: r.participants,
                    active_speakers: r.active_speakers,
                    node: Some(node.clone()),
                },
            );
        }
    }

    /// Cluster-wide hub: drops the rooms of nodes that are not in `live` (they left).
    pub fn retain_nodes(&self, live: &[String]) {
        let mut state = self.state();
        state.rooms.retain(|_, r| {
            r.node
                .as_deref()
                .is_none_or(|n| live.iter().any(|l| l == n))
        });
    }

    /// A node's own hub in a cluster: ships its changes to `tx` from now on.
    pub fn set_feed(&self, tx: mpsc::Sender<Shipped>) {
        self.state().feed = Some(Feed { tx, lost: false });
    }

    /// A node's own hub in a cluster: ships `what` (a resync request) in order with the
    /// changes, or, with `None`, this node's whole state.
    pub fn ship(&self, what: Option<Shipped>) {
        let mut guard = self.state();
        let state = &mut *guard;
        match what {
            Some(what) => ship(state, what),
            None => {
                if let Some(feed) = &mut state.feed {
                    feed.lost = true;
                }
                ship_lost(state);
            }
        }
    }

    /// Applies `change` to the live state; answers its wire form numbered `seq` when it is
    /// an event (`node`: the owner's id in the cluster-wide hub).
    fn apply<'a>(
        &'a self,
        state: &mut State,
        seq: u64,
        node: Option<&'a Arc<str>>,
        change: &'a Change,
    ) -> Option<Arc<str>> {
        let limits = &self.limits;
        let located = |r: &'a RoomRecord| Located {
            room: r.view(limits),
            node: node.map(|n| &**n),
        };
        let wire = match change {
            // A room's actor started from the stored record (first use since start-up or
            // since it passivated): the room joins the live set that snapshots show.
            Change::Activated { room } => {
                state
                    .rooms
                    .entry(room.id.clone())
                    .and_modify(|r| {
                        if node.is_some() {
                            r.node = node.cloned();
                        }
                    })
                    .or_insert_with(|| LiveRoom::new(room.clone(), node));
                return None;
            }
            // A room's actor stopped because nobody used it: the room leaves the live set.
            // It is still in the store (and in the REST list). In the cluster-wide hub,
            // only when it still has this owner (another node may have taken it).
            Change::Passivated { room_id } => {
                if state
                    .rooms
                    .get(room_id)
                    .is_some_and(|r| r.node.as_ref() == node)
                {
                    state.rooms.remove(room_id);
                }
                return None;
            }
            Change::RoomCreated { room } => {
                state
                    .rooms
                    .insert(room.id.clone(), LiveRoom::new(room.clone(), node));
                Wire::RoomCreated {
                    seq,
                    room: located(room),
                }
            }
            Change::RoomUpdated { room } | Change::RoomUpgraded { room } => {
                match state.rooms.get_mut(&room.id) {
                    Some(live) => {
                        live.record = room.clone();
                        if node.is_some() {
                            live.node = node.cloned();
                        }
                    }
                    None if node.is_some() => {
                        state
                            .rooms
                            .insert(room.id.clone(), LiveRoom::new(room.clone(), node));
                    }
                    None => {}
                }
                match change {
                    Change::RoomUpgraded { .. } => Wire::RoomUpgraded {
                        seq,
                        room: located(room),
                    },
                    _ => Wire::RoomUpdated {
                        seq,
                        room: located(room),
                    },
                }
            }
            Change::RoomDeleted { room_id } | Change::RoomExpired { room_id } => {
                // A node's own hub tells only of rooms it knew; the cluster-wide hub tells
                // what the owner told.
                if state.rooms.remove(room_id).is_none() && node.is_none() {
                    return None;
                }
                match change {
                    Change::RoomExpired { .. } => Wire::RoomExpired { seq, room_id },
                    _ => Wire::RoomDeleted { seq, room_id },
                }
            }
            Change::ParticipantJoined {
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
            Change::ParticipantUpdated {
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
            Change::ParticipantLeft {
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
            Change::ActiveSpeakersChanged { room_id, speakers } => {
                if let Some(live) = state.rooms.get_mut(room_id) {
                    live.active_speakers = speakers.clone();
                }
                Wire::ActiveSpeakersChanged {
                    seq,
                    room_id,
                    speakers,
                }
            }
            Change::ParticipantMediaUpdated {
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
        Some(
            serde_json::to_string(&wire)
                .expect("events always serialize")
                .into(),
        )
    }

    /// Logs event `seq` and fans it out.
    fn emit(&self, state: &mut State, seq: u64, text: Arc<str>) {
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
                    room: Located {
                        room: r.record.view(&self.limits),
                        node: r.node.as_deref(),
                    },
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

/// This hub's active rooms, as a node tells the others.
fn node_rooms(state: &State) -> Vec<NodeRoom> {
    state
        .rooms
        .values()
        .map(|r| NodeRoom {
            room: r.record.clone(),
            participants: r.participants.clone(),
            active_speakers: r.active_speakers.clone(),
        })
        .collect()
}

/// Queues `what` on the feed (after this node's whole state, if something was lost
/// before); what does not fit is dropped, and the whole state goes next time instead.
fn ship(state: &mut State, what: Shipped) {
    ship_lost(state);
    if let Some(feed) = &mut state.feed
        && !feed.lost
        && feed.tx.try_send(what).is_err()
    {
        feed.lost = true;
    }
}

fn ship_lost(state: &mut State) {
    if !state.feed.as_ref().is_some_and(|f| f.lost) {
        return;
    }
    let rooms = node_rooms(state);
    if let Some(feed) = &mut state.feed
        && feed.tx.try_send(Shipped::NodeState { rooms }).is_ok()
    {
        feed.lost = false;
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

    fn snapshot_of(hub: &Events) -> serde_json::Value {
        serde_json::from_str(&hub.subscribe(None).backlog[0]).unwrap()
    }

    #[test]
    fn the_cluster_hub_numbers_by_the_stream_and_starts_over_after_a_gap() {
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        hub.start_at(5);
        assert_eq!(snapshot_of(&hub)["seq"], 5);
        let mut live = hub.subscribe(None);
        let created = Change::RoomCreated {
            room: record("RO-a", ConferenceType::Mesh),
        };
        assert!(hub.publish_at(Some(6), "a", &created));
        let event: serde_json::Value =
            serde_json::from_str(&live.live.try_recv().unwrap()).unwrap();
        assert_eq!(
            (&event["seq"], &event["room"]["node"]),
            (&6.into(), &"a".into())
        );
        // Seen already: nothing.
        assert!(hub.publish_at(Some(6), "a", &created));
        assert!(live.live.try_recv().is_err());
        // A gap: the event goes out, and resuming from before the gap is a snapshot.
        let other = Change::RoomCreated {
            room: record("RO-b", ConferenceType::Sfu),
        };
        assert!(!hub.publish_at(Some(9), "b", &other));
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&live.live.try_recv().unwrap()).unwrap()["seq"],
            9
        );
        let resumed = hub.subscribe(Some(6));
        assert!(resumed.backlog[0].contains("\"snapshot\""));
        assert!(hub.subscribe(Some(9)).backlog.is_empty());
        // A deletion the hub did not know of is still an event (the owner knew the room).
        hub.publish_at(
            Some(10),
            "c",
            &Change::RoomDeleted {
                room_id: "RO-x".into(),
            },
        );
        assert!(live.live.try_recv().unwrap().contains("roomDeleted"));
    }

    #[test]
    fn the_cluster_hub_follows_owners_node_states_and_live_nodes() {
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        let activated = |id: &str| Change::Activated {
            room: record(id, ConferenceType::Mesh),
        };
        hub.publish_at(None, "a", &activated("RO-1"));
        hub.publish_at(None, "a", &activated("RO-2"));
        // The room moved to b; a's late passivation of it does not drop it.
        hub.publish_at(None, "b", &activated("RO-2"));
        hub.publish_at(
            None,
            "a",
            &Change::Passivated {
                room_id: "RO-2".into(),
            },
        );
        let nodes = |hub: &Events| -> Vec<(String, String)> {
            let mut v: Vec<(String, String)> = snapshot_of(hub)["rooms"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap().into(),
                        r["node"].as_str().unwrap().into(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        assert_eq!(
            nodes(&hub),
            [("RO-1".into(), "a".into()), ("RO-2".into(), "b".into())]
        );
        assert_eq!(snapshot_of(&hub)["seq"], 0, "no event was numbered");
        // a's state replaces what the hub knew of a's rooms.
        hub.replace_node(
            "a",
            vec![NodeRoom {
                room: record("RO-3", ConferenceType::Mesh),
                participants: Vec::new(),
                active_speakers: Vec::new(),
            }],
        );
        assert_eq!(
            nodes(&hub),
            [("RO-2".into(), "b".into()), ("RO-3".into(), "a".into())]
        );
        hub.retain_nodes(&["a".into()]);
        assert_eq!(nodes(&hub), [("RO-3".into(), "a".into())]);
    }

    #[test]
    fn a_nodes_hub_ships_its_changes_in_order_and_its_state_after_a_loss() {
        let hub = Events::new(Limits { mesh: 2, sfu: 4 }, 10, 10);
        let (tx, mut rx) = mpsc::channel(2);
        hub.set_feed(tx);
        hub.on_event(&RoomEvent::Activated(record("RO-a", ConferenceType::Mesh)));
        // Not an event here (an unknown room): not shipped.
        hub.on_event(&RoomEvent::RoomDeleted {
            room_id: "RO-x".into(),
            seats: 0,
        });
        hub.on_event(&RoomEvent::RoomCreated(record(
            "RO-b",
            ConferenceType::Mesh,
        )));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Shipped::Change {
                visible: false,
                change: Change::Activated { .. }
            }
        ));
        assert!(matches!(
            rx.try_recv().unwrap(),
            Shipped::Change {
                visible: true,
                change: Change::RoomCreated { .. }
            }
        ));
        // The queue overflows: the change is dropped, and the next thing shipped is the
        // whole state, then changes again.
        for id in ["RO-c", "RO-d", "RO-e"] {
            hub.on_event(&RoomEvent::RoomCreated(record(id, ConferenceType::Mesh)));
        }
        rx.try_recv().unwrap();
        rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err());
        hub.on_event(&RoomEvent::Passivated("RO-a".into()));
        match rx.try_recv().unwrap() {
            Shipped::NodeState { rooms } => {
                let mut ids: Vec<&str> = rooms.iter().map(|r| r.room.id.as_str()).collect();
                ids.sort();
                assert_eq!(ids, ["RO-b", "RO-c", "RO-d", "RO-e"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            rx.try_recv().unwrap(),
            Shipped::Change {
                visible: false,
                change: Change::Passivated { .. }
            }
        ));
    }
}
