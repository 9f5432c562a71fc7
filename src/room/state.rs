//! The rules of one room as a plain state machine: seats, resume and its grace period,
//! endpoint expiry, kicks, media state, the MESH→SFU upgrade, token refresh and the room's
//! own expiry. Commands come in, [`Effect`]s come out; the room's actor (`actor.rs`)
//! executes them (queues, timers, the store, the published snapshot and seats). No actix,
//! no channels, and time comes from an injected [`Clock`], so the rules are unit-tested
//! below without sockets or waiting.

use super::RoomServices;
use super::events::RoomEvent;
use super::messages::{Closing, JoinRequest, Notice, RoomInfo, RoomMessage};
use crate::model::{ConferenceType, JoinRefused, Participant, RoomRecord};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Milliseconds since the epoch, as the room sees them.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Names a timer that the room asked for.
pub type TimerId = u64;

/// What a timer is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Timer {
    /// The room's `roomTTLSeconds`.
    RoomExpiry,
    /// The resume grace of a participant whose socket is gone.
    Grace(String),
    /// A participant's `endpointTTLSeconds`.
    Endpoint(String),
}

/// What the room's actor must do after a command, in order.
#[derive(Debug)]
pub enum Effect {
    /// Queue a message for a participant, if its socket is still `session`'s.
    Send {
        to: String,
        session: u64,
        message: Arc<Notice>,
    },
    /// Close a participant's socket, if it is still `session`'s.
    Close {
        to: String,
        session: u64,
        closing: Closing,
    },
    /// The socket of the join or resume being handled now speaks for `address`.
    SeatLinked {
        address: String,
        session: u64,
    },
    /// `address` keeps its seat but has no socket (it waits for a resume).
    SeatUnlinked {
        address: String,
    },
    /// `address` has no seat any more.
    SeatRemoved {
        address: String,
    },
    /// Nobody can be reached through the seats table any more (the room closes).
    SeatsCleared,
    StartTimer {
        id: TimerId,
        after: Duration,
    },
    CancelTimer(TimerId),
    /// Write the record (with its participant count) soon; many changes, one write.
    PersistSoon,
    /// Write the record now.
    PersistNow,
    /// Remove the record from the store, best effort (the room expired).
    RemoveFromStore,
    Publish(RoomEvent),
    /// Publish the current record for fetches and lists.
    PublishSnapshot,
    /// Publish that the room is gone: fetches answer 404 from now on.
    PublishGone,
    /// Stop the room's actor.
    Stop,
}

/// A participant as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantState {
    #[serde(flatten)]
    pub participant: Participant,
    /// `false` while the participant's socket is gone and its seat waits for a resume.
    pub connected: bool,
}

struct Member {
    participant: Participant,
    resume_token: String,
    /// The session of the socket that speaks for the participant; `None` while it waits
    /// for a resume.
    session: Option<u64>,
    grace: Option<TimerId>,
    expiry: TimerId,
}

pub struct RoomState {
    /// Shared with the snapshot and the admin event hub until it changes
    /// (`Arc::make_mut`), so a room's record is held once. Its `participant_count` is the
    /// one it was created or restored with: the count is `members.len()`, and only the
    /// store's copy carries it.
    record: Arc<RoomRecord>,
    services: Arc<RoomServices>,
    clock: Clock,
    /// In join order.
    members: Vec<Member>,
    timers: HashMap<TimerId, Timer>,
    next_timer: TimerId,
    out: Vec<Effect>,
}

impl RoomState {
    /// A room with nobody in it; the effects start its expiry timer.
    pub fn new(
        record: Arc<RoomRecord>,
        services: Arc<RoomServices>,
        clock: Clock,
    ) -> (Self, Vec<Effect>) {
        let mut state = Self {
            record,
            services,
            clock,
            members: Vec::new(),
            timers: HashMap::new(),
            next_timer: 1,
            out: Vec::new(),
        };
        state.schedule_expiry();
        let effects = state.done();
        (state, effects)
    }

    pub fn record(&self) -> &Arc<RoomRecord> {
        &self.record
    }

    /// The record as the store keeps it: with the participant count.
    pub fn stored_record(&self) -> RoomRecord {
        RoomRecord {
            participant_count: self.members.len() as u32,
            ..(*self.record).clone()
        }
    }

    /// The participants, in join order.
    pub fn participants(&self) -> Vec<ParticipantState> {
        self.members.iter().map(Member::state).collect()
    }

    fn now(&self) -> u64 {
        (self.clock)()
    }

    fn done(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.out)
    }

    fn start_timer(&mut self, after: Duration, timer: Timer) -> TimerId {
        let id = self.next_timer;
        self.next_timer += 1;
        self.timers.insert(id, timer);
        self.out.push(Effect::StartTimer { id, after });
        id
    }

    fn cancel_timer(&mut self, id: TimerId) {
        if self.timers.remove(&id).is_some() {
            self.out.push(Effect::CancelTimer(id));
        }
    }

    fn schedule_expiry(&mut self) {
        let left = self.record.expires_at().saturating_sub(self.now());
        self.start_timer(Duration::from_millis(left), Timer::RoomExpiry);
    }

    fn max_participants(&self) -> u32 {
        self.services
            .limits
            .max_participants(self.record.conference_type)
    }

    fn index_of(&self, address: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.participant.address == address)
    }

    /// The member behind a message from a session, if that session still speaks for it.
    fn sender(&self, address: &str, session: u64) -> Option<usize> {
        self.index_of(address)
            .filter(|&i| self.members[i].session == Some(session))
    }

    /// Queues a message for one member, if it has a socket.
    fn send(&mut self, i: usize, message: Arc<Notice>) {
        let member = &self.members[i];
        if let Some(session) = member.session {
            self.out.push(Effect::Send {
                to: member.participant.address.clone(),
                session,
                message,
            });
        }
    }

    fn close(&mut self, i: usize, closing: Closing) {
        let member = &self.members[i];
        if let Some(session) = member.session {
            self.out.push(Effect::Close {
                to: member.participant.address.clone(),
                session,
                closing,
            });
        }
    }

    /// Queues a message for every member but `except`.
    fn broadcast(&mut self, message: RoomMessage, except: Option<&str>) {
        let notice = Notice::new(message);
        for i in (0..self.members.len()).rev() {
            if except != Some(self.members[i].participant.address.as_str()) {
                self.send(i, notice.clone());
            }
        }
    }

    fn publish(&mut self, event: RoomEvent) {
        self.out.push(Effect::Publish(event));
    }

    /// Takes a seat, or resumes one (a `resume` token of a seat in this room), for the
    /// socket of `session`; answers the participant's address.
    pub fn join(
        &mut self,
        nonce: &str,
        request: JoinRequest,
        session: u64,
    ) -> (Result<String, JoinRefused>, Vec<Effect>) {
        let result = self.admit(nonce, request, session);
        (result, self.done())
    }

    fn admit(
        &mut self,
        nonce: &str,
        request: JoinRequest,
        session: u64,
    ) -> Result<String, JoinRefused> {
        if nonce != self.record.nonce {
            return Err(JoinRefused::Token);
        }
        // A resume within the grace period: same address, and nobody sees a leave.
        if let Some(token) = &request.resume
            && let Some(i) = self.members.iter().position(|m| &m.resume_token == token)
        {
            let address = self.members[i].participant.address.clone();
            if let Some(old) = self.members[i].session {
                self.out.push(Effect::Close {
                    to: address.clone(),
                    session: old,
                    closing: Closing::Replaced,
                });
            }
            self.out.push(Effect::SeatLinked {
                address: address.clone(),
                session,
            });
            self.members[i].session = Some(session);
            if let Some(grace) = self.members[i].grace.take() {
                self.cancel_timer(grace);
            }
            tracing::info!(room = %self.record.id, %address, "participant resumed");
            self.send_joined(i);
            return Ok(address);
        }
        let max = self.max_participants();
        if self.members.len() as u32 >= max {
            return Err(JoinRefused::Full { max });
        }
        let address = format!("PA-{}", uuid::Uuid::new_v4());
        let expiry = self.start_timer(
            Duration::from_secs(self.record.endpoint_ttl_seconds),
            Timer::Endpoint(address.clone()),
        );
        let participant = Participant {
            address: address.clone(),
            name: request.name,
            participant_info: request.participant_info,
            audio: request.audio,
            video: request.video,
            joined_at: self.now(),
        };
        self.out.push(Effect::SeatLinked {
            address: address.clone(),
            session,
        });
        self.members.push(Member {
            participant: participant.clone(),
            resume_token: uuid::Uuid::new_v4().simple().to_string(),
            session: Some(session),
            grace: None,
            expiry,
        });
        tracing::info!(room = %self.record.id, %address, "participant joined");
        self.send_joined(self.members.len() - 1);
        self.publish(RoomEvent::ParticipantJoined {
            room_id: self.record.id.clone(),
            participant: participant.clone(),
        });
        self.broadcast(RoomMessage::ParticipantJoined(participant), Some(&address));
        self.maybe_upgrade();
        self.out.push(Effect::PersistSoon);
        Ok(address)
    }

    /// Sends `joined` to member `i`.
    fn send_joined(&mut self, i: usize) {
        let member = &self.members[i];
        let address = &member.participant.address;
        let message = RoomMessage::Joined {
            address: address.clone(),
            room: RoomInfo {
                id: self.record.id.clone(),
                name: self.record.name.clone(),
                conference_type: self.record.conference_type,
                max_participants: self.max_participants(),
            },
            participants: self
                .members
                .iter()
                .filter(|m| &m.participant.address != address)
                .map(|m| m.participant.clone())
                .collect(),
            resume_token: member.resume_token.clone(),
        };
        self.send(i, Notice::new(message));
    }

    /// Applies the MESH→SFU rule after a join: at `autoUpgradeParticipantCount` seats a
    /// MESH room becomes SFU, once.
    fn maybe_upgrade(&mut self) {
        let count = self.members.len() as u32;
        if self.record.conference_type != ConferenceType::Mesh
            || self
                .record
                .auto_upgrade_participant_count
                .is_none_or(|at| count < at)
        {
            return;
        }
        let now = self.now();
        let record = Arc::make_mut(&mut self.record);
        record.conference_type = ConferenceType::Sfu;
        record.modification_time = now.max(record.modification_time);
        tracing::info!(room = %record.id, participants = count, "room upgraded to SFU");
        self.out.push(Effect::PublishSnapshot);
        self.publish(RoomEvent::RoomUpgraded(self.record.clone()));
        self.broadcast(
            RoomMessage::ConferenceTypeChanged {
                conference_type: ConferenceType::Sfu,
                reason: "participantCount",
                participant_count: count,
            },
            None,
        );
    }

    /// A participant's new audio and video state (each kept when absent).
    pub fn media_state(
        &mut self,
        address: &str,
        session: u64,
        audio: Option<bool>,
        video: Option<bool>,
    ) -> Vec<Effect> {
        // Messages of a socket that no longer speaks for the participant are dropped.
        if let Some(i) = self.sender(address, session) {
            let participant = &mut self.members[i].participant;
            participant.audio = audio.unwrap_or(participant.audio);
            participant.video = video.unwrap_or(participant.video);
            let participant = participant.clone();
            self.publish(RoomEvent::ParticipantUpdated {
                room_id: self.record.id.clone(),
                participant: participant.clone(),
            });
            self.broadcast(RoomMessage::ParticipantUpdated(participant), Some(address));
        }
        self.done()
    }

    /// The participant leaves: its socket closes, the others see it go.
    pub fn leave(&mut self, address: &str, session: u64) -> Vec<Effect> {
        if let Some(i) = self.sender(address, session) {
            self.close(i, Closing::Left);
            self.remove(i, "left");
        }
        self.done()
    }

    /// The participant's socket is gone; a resume may follow within the grace period.
    pub fn disconnected(&mut self, address: &str, session: u64) -> Vec<Effect> {
        if let Some(i) = self.sender(address, session) {
            self.unlink(i);
        }
        self.done()
    }

    /// The participant's queue was found full or closed: it loses its socket (as when
    /// the socket is gone), unless another socket resumed it since.
    pub fn overflow(&mut self, address: &str, session: u64) -> Vec<Effect> {
        if let Some(i) = self.sender(address, session) {
            tracing::info!(room = %self.record.id, %address, "participant dropped: outbound queue full or closed");
            self.unlink(i);
        }
        self.done()
    }

    /// Removes a participant on an admin's request: it gets `roomClosed {reason: "kicked"}`
    /// and its socket closes, its resume token dies with its seat, the others see it leave.
    pub fn kick(&mut self, address: &str) -> (Option<ParticipantState>, Vec<Effect>) {
        let Some(i) = self.index_of(address) else {
            return (None, self.done());
        };
        let state = self.members[i].state();
        self.send(i, Notice::new(RoomMessage::RoomClosed { reason: "kicked" }));
        self.close(i, Closing::Kicked);
        self.members[i].session = None;
        self.remove(i, "kicked");
        (Some(state), self.done())
    }

    /// A timer the room asked for ran out. A cancelled timer is ignored.
    pub fn timer_fired(&mut self, id: TimerId) -> Vec<Effect> {
        match self.timers.remove(&id) {
            Some(Timer::RoomExpiry) => self.expire(),
            Some(Timer::Grace(address)) => {
                if let Some(i) = self
                    .index_of(&address)
                    .filter(|&i| self.members[i].session.is_none())
                {
                    self.members[i].grace = None;
                    self.remove(i, "disconnected");
                }
            }
            Some(Timer::Endpoint(address)) => {
                if let Some(i) = self.index_of(&address) {
                    let ttl_seconds = self.record.endpoint_ttl_seconds;
                    self.send(i, Notice::new(RoomMessage::EndpointExpired { ttl_seconds }));
                    self.close(i, Closing::EndpointExpired);
                    self.remove(i, "expired");
                }
            }
            None => {}
        }
        self.done()
    }

    /// The record, with a usable token: a stale one is replaced (and persisted).
    pub fn get_record(&mut self) -> (Arc<RoomRecord>, Vec<Effect>) {
        let now = self.now();
        if self.record.token_is_stale(now) {
            Arc::make_mut(&mut self.record).refresh_token(&self.services.tokens, now);
            self.out.push(Effect::PublishSnapshot);
            self.out.push(Effect::PersistNow);
            self.publish(RoomEvent::RoomUpdated(self.record.clone()));
        }
        (self.record.clone(), self.done())
    }

    /// The store removed the room: everyone is told, and the room stops.
    pub fn delete_confirmed(&mut self) -> Vec<Effect> {
        self.out.push(Effect::PublishGone);
        let seats = self.close_all("deleted", Closing::RoomDeleted);
        self.publish(RoomEvent::RoomDeleted {
            room_id: self.record.id.clone(),
            seats,
        });
        self.out.push(Effect::Stop);
        self.done()
    }

    fn expire(&mut self) {
        if !self.record.is_expired(self.now()) {
            // Timers far in the future may fire early; look again later.
            return self.schedule_expiry();
        }
        tracing::info!(room = %self.record.id, "room expired");
        self.out.push(Effect::PublishGone);
        let seats = self.close_all("expired", Closing::RoomExpired);
        self.publish(RoomEvent::RoomExpired {
            room_id: self.record.id.clone(),
            seats,
        });
        // Best effort: Redis expires the key by itself and the sweep cleans the index.
        self.out.push(Effect::RemoveFromStore);
        self.out.push(Effect::Stop);
    }

    /// The member's socket is gone: keep its seat for the resume grace period.
    fn unlink(&mut self, i: usize) {
        let address = self.members[i].participant.address.clone();
        self.members[i].session = None;
        self.out.push(Effect::SeatUnlinked {
            address: address.clone(),
        });
        let grace = self.start_timer(self.services.resume_grace, Timer::Grace(address));
        if let Some(old) = self.members[i].grace.replace(grace) {
            self.cancel_timer(old);
        }
    }

    /// Removes a member and tells the others.
    fn remove(&mut self, i: usize, reason: &'static str) {
        let member = self.members.remove(i);
        self.cancel_timer(member.expiry);
        if let Some(grace) = member.grace {
            self.cancel_timer(grace);
        }
        let address = member.participant.address;
        self.out.push(Effect::SeatRemoved {
            address: address.clone(),
        });
        tracing::info!(room = %self.record.id, %address, reason, "participant left");
        self.publish(RoomEvent::ParticipantLeft {
            room_id: self.record.id.clone(),
            address: address.clone(),
            reason,
        });
        self.broadcast(RoomMessage::ParticipantLeft { address, reason }, None);
        self.out.push(Effect::PersistSoon);
    }

    /// Tells everyone the room is closing and closes their sockets; answers how many
    /// held a seat.
    fn close_all(&mut self, reason: &'static str, closing: Closing) -> usize {
        self.out.push(Effect::SeatsCleared);
        let notice = Notice::new(RoomMessage::RoomClosed { reason });
        for i in 0..self.members.len() {
            self.send(i, notice.clone());
            self.close(i, closing);
        }
        let seats = self.members.len();
        self.members.clear();
        seats
    }
}

impl Member {
    fn state(&self) -> ParticipantState {
        ParticipantState {
            participant: self.participant.clone(),
            connected: self.session.is_some(),
        }
    }
}
