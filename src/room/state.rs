//! The rules of one room as a plain state machine: seats, resume and its grace period,
//! endpoint expiry, kicks, media state, the MESH→SFU upgrade, token refresh, the room's
//! own expiry and its passivation when idle. Commands come in, [`Effect`]s come out; the room's actor (`actor.rs`)
//! executes them (queues, timers, the store, the published snapshot and seats). No actix,
//! no channels, and time comes from an injected [`Clock`], so the rules are unit-tested
//! below without sockets or waiting.

use super::RoomServices;
use super::events::RoomEvent;
use super::messages::{Closing, JoinRequest, Notice, RoomInfo, RoomMessage};
use crate::media::PublishedTrack;
use crate::model::{ConferenceType, JoinRefused, Participant, RoomRecord, Seat};
use serde::Serialize;
use serde_json::Value;
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
    /// The look at whether the room is idle (see [`RoomState::timer_fired`]).
    Idle,
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
    /// The room is idle: write the record (participant count 0) to the store, holding
    /// every other message meanwhile; on success publish `Passivated` and stop, otherwise
    /// report [`RoomState::passivation_failed`]. The next use of the room activates a new
    /// actor from that record.
    Passivate,
    /// Tell the media plane (SFU rooms only).
    Media(MediaCommand),
}

/// What an SFU room tells the media plane about its participants.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaCommand {
    /// `address` takes part in the room's media (it may now negotiate with `sfu`), with
    /// what its token lets it do: without `can_publish` its send tracks are refused,
    /// without `can_subscribe` nothing is forwarded to it.
    Add {
        address: String,
        can_publish: bool,
        can_subscribe: bool,
    },
    /// `address` is gone: nothing is forwarded from or to it any more.
    Remove { address: String },
    /// The room is gone, with everyone in it.
    RemoveRoom,
    /// What `address` signaled to `sfu`.
    Signal { address: String, data: Value },
    /// `address` resumed its socket: its peer connection is kept, but what the media plane
    /// said to it meanwhile was lost (an offer of the server is said again).
    Resumed { address: String },
}

/// A participant as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ParticipantState {
    #[serde(flatten)]
    pub participant: Participant,
    /// `false` while the participant's socket is gone and its seat waits for a resume.
    pub connected: bool,
    /// The participant's media connection to the SFU, once the media plane has reported
    /// on it (never in a MESH room).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub media: Option<MediaStatus>,
}

/// A participant's media connection to the SFU, as operators see it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MediaStatus {
    /// Whether its peer connection to the server is up (ICE and DTLS).
    pub connected: bool,
    /// The tracks it publishes, in the order they came.
    pub tracks: Vec<PublishedTrack>,
}

/// How long a kick's ban holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ban {
    /// Until the room ends.
    RoomEnd,
    /// This many seconds (at most until the room ends).
    Seconds(u64),
}

/// What an admin's removal of a participant came to.
#[derive(Debug, Clone)]
pub enum Kicked {
    /// Removed: the participant as it was, and the end of its identity's ban (ms since
    /// the epoch) when one was asked.
    Removed {
        participant: Box<ParticipantState>,
        banned_until: Option<u64>,
    },
    /// No participant has that address.
    Missing,
    /// A ban was asked for a participant that joined with the room token (it has no
    /// identity to ban): nothing was done.
    WithoutIdentity,
}

/// What the media plane reports about one participant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MediaReport {
    /// Its peer connection came up (`true`) or was dropped (`false`).
    Connection(bool),
    /// The tracks it publishes now.
    Tracks(Vec<PublishedTrack>),
}

struct Member {
    participant: Participant,
    resume_token: String,
    /// The session of the socket that speaks for the participant; `None` while it waits
    /// for a resume.
    session: Option<u64>,
    grace: Option<TimerId>,
    expiry: TimerId,
    /// Its media connection, once the media plane reported on it (SFU rooms).
    media: Option<MediaStatus>,
}

pub struct RoomState {
    /// Shared with the snapshot and the admin event hub until it changes
    /// (`Arc::make_mut`), so a room's record is held once. Its `participant_count` is the
    /// one it was created or activated with: the count is `members.len()`, and only the
    /// store's copy carries it.
    record: Arc<RoomRecord>,
    services: Arc<RoomServices>,
    clock: Clock,
    /// In join order.
    members: Vec<Member>,
    /// When the room was last used (a request for it, a join, a leave): its idle time
    /// counts from here.
    last_used: u64,
    timers: HashMap<TimerId, Timer>,
    next_timer: TimerId,
    out: Vec<Effect>,
    /// Whether the service runs a media plane: without one, a `signal` to `sfu` gets
    /// `SFU_UNAVAILABLE` in every room.
    media_plane: bool,
    /// The active speakers last told (SFU rooms), loudest first.
    speakers: Vec<String>,
}

impl RoomState {
    /// A room with nobody in it; the effects start its expiry timer and its idle check.
    pub fn new(
        record: Arc<RoomRecord>,
        services: Arc<RoomServices>,
        clock: Clock,
    ) -> (Self, Vec<Effect>) {
        let last_used = clock();
        let mut state = Self {
            media_plane: services.media.is_some(),
            speakers: Vec::new(),
            record,
            services,
            clock,
            members: Vec::new(),
            last_used,
            timers: HashMap::new(),
            next_timer: 1,
            out: Vec::new(),
        };
        state.schedule_expiry();
        state.schedule_idle_check();
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

    /// The seats as the store keeps them (with `cluster`), in join order.
    pub fn seats(&self) -> Vec<Seat> {
        self.members
            .iter()
            .map(|m| Seat {
                participant: m.participant.clone(),
                resume_token: m.resume_token.clone(),
            })
            .collect()
    }

    /// Gives back the seats that the room's previous owner stored (a takeover): each waits
    /// for its participant's resume, as after a dropped socket (the resume grace starts
    /// now), and keeps its address, `joinedAt` and endpoint expiry. Nobody is told: the
    /// participants were not told of a leave either, and learn of each other again in their
    /// `joined` on resume.
    pub fn restore(&mut self, seats: Vec<Seat>) -> Vec<Effect> {
        let now = self.now();
        for Seat {
            participant,
            resume_token,
        } in seats
        {
            let address = participant.address.clone();
            if self.index_of(&address).is_some()
                || self.members.len() as u32 >= self.max_participants()
            {
                continue;
            }
            let ttl = self.record.endpoint_ttl_seconds.saturating_mul(1000);
            let left = (participant.joined_at.saturating_add(ttl)).saturating_sub(now);
            let expiry = self.start_timer(
                Duration::from_millis(left),
                Timer::Endpoint(address.clone()),
            );
            let grace = self.start_timer(self.services.resume_grace, Timer::Grace(address.clone()));
            self.out.push(Effect::SeatUnlinked {
                address: address.clone(),
            });
            self.members.push(Member {
                participant: participant.clone(),
                resume_token,
                session: None,
                grace: Some(grace),
                expiry,
                media: None,
            });
            let may = participant.may();
            self.media(MediaCommand::Add {
                address: address.clone(),
                can_publish: may.can_publish,
                can_subscribe: may.can_subscribe,
            });
            tracing::info!(room = %self.record.id, %address, "seat restored after a takeover");
            self.publish(RoomEvent::ParticipantJoined {
                room_id: self.record.id.clone(),
                participant,
            });
        }
        if !self.members.is_empty() {
            self.out.push(Effect::PersistSoon);
        }
        self.done()
    }

    /// The participants, in join order.
    pub fn participants(&self) -> Vec<ParticipantState> {
        self.members.iter().map(Member::state).collect()
    }

    /// An admin asks for the participants: a use of the room.
    pub fn list_participants(&mut self) -> Vec<ParticipantState> {
        self.touch();
        self.participants()
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

    /// The room was used: its idle time starts again.
    fn touch(&mut self) {
        self.last_used = self.now();
    }

    /// Looks at whether the room is idle once `room_idle` may have passed since its last
    /// use (with someone seated, a whole `room_idle` from now).
    fn schedule_idle_check(&mut self) {
        let idle = self.services.room_idle;
        let after = if self.members.is_empty() {
            let since = Duration::from_millis(self.now().saturating_sub(self.last_used));
            idle.saturating_sub(since)
        } else {
            idle
        };
        self.start_timer(after, Timer::Idle);
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

    /// Whether this room's media goes through the media plane (SFU rooms).
    fn is_sfu(&self) -> bool {
        self.record.conference_type == ConferenceType::Sfu
    }

    /// Tells the media plane, in an SFU room.
    fn media(&mut self, command: MediaCommand) {
        if self.is_sfu() {
            self.out.push(Effect::Media(command));
        }
    }

    /// Takes a seat, or resumes one (a `resume` token of a seat in this room), for the
    /// socket of `session`; answers the participant's address.
    pub fn join(
        &mut self,
        nonce: &str,
        request: JoinRequest,
        session: u64,
    ) -> (Result<String, JoinRefused>, Vec<Effect>) {
        self.touch();
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
        let identity = request.grant.as_ref().map(|g| g.identity.clone());
        // A resume within the grace period: same address, and nobody sees a leave. It
        // needs a token of the same identity (or, for an anonymous seat, a room token of
        // any generation: those inside stay when the room token is rotated).
        if let Some(token) = &request.resume
            && let Some(i) = self
                .members
                .iter()
                .position(|m| &m.resume_token == token && m.participant.identity == identity)
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
            // The peer connection is kept; what the media plane said meanwhile was lost.
            self.media(MediaCommand::Resumed {
                address: address.clone(),
            });
            return Ok(address);
        }
        let now = self.now();
        match &identity {
            // A room token: only the current generation takes a new seat.
            None if request.token_generation != self.record.access.token_generation => {
                return Err(JoinRefused::Rotated);
            }
            None => {}
            Some(identity) => {
                if let Some(until) = self.record.access.banned_until(identity, now) {
                    return Err(JoinRefused::Banned {
                        identity: identity.clone(),
                        until,
                    });
                }
                // A second join of the same identity takes the place of the first.
                if let Some(i) = self
                    .members
                    .iter()
                    .position(|m| m.participant.identity.as_ref() == Some(identity))
                {
                    self.close(i, Closing::IdentityRejoined);
                    self.members[i].session = None;
                    self.remove(i, "replaced");
                }
            }
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
        // A participant token's name and participantInfo win over the join's own.
        let (name, participant_info, permissions) = match request.grant {
            Some(grant) => (
                grant.name.or(request.name),
                grant.participant_info.or(request.participant_info),
                Some(grant.permissions),
            ),
            None => (request.name, request.participant_info, None),
        };
        let participant = Participant {
            address: address.clone(),
            identity,
            name,
            participant_info,
            audio: request.audio,
            video: request.video,
            joined_at: now,
            permissions,
        };
        let may = participant.may();
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
            media: None,
        });
        // A new seat of an SFU room may negotiate with the media plane (a resume keeps its
        // peer connection: it is told as `Resumed`, above).
        self.media(MediaCommand::Add {
            address: address.clone(),
            can_publish: may.can_publish,
            can_subscribe: may.can_subscribe,
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
            identity: member.participant.identity.clone(),
            name: member.participant.name.clone(),
            permissions: member.participant.permissions,
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
        // From the upgrade on, everyone present takes part in the room's media.
        for i in 0..self.members.len() {
            let participant = &self.members[i].participant;
            let (address, may) = (participant.address.clone(), participant.may());
            self.media(MediaCommand::Add {
                address,
                can_publish: may.can_publish,
                can_subscribe: may.can_subscribe,
            });
        }
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

    /// A `signal` to `sfu`: to the media plane in an SFU room, `SFU_UNAVAILABLE` in a MESH
    /// room (or without a media plane).
    pub fn sfu_signal(&mut self, address: &str, session: u64, data: Value) -> Vec<Effect> {
        if let Some(i) = self.sender(address, session) {
            if self.is_sfu() && self.media_plane {
                self.media(MediaCommand::Signal {
                    address: address.to_string(),
                    data,
                });
            } else {
                self.send(i, Notice::new(RoomMessage::SfuUnavailable));
            }
        }
        self.done()
    }

    /// The media plane reports on a participant's media connection (SFU rooms): the
    /// admin-visible state changes, and observers hear of it. A report about someone who
    /// holds no seat (any more) is stale and ignored. A dropped connection publishes
    /// nothing any more.
    pub fn media_changed(&mut self, address: &str, report: MediaReport) -> Vec<Effect> {
        let Some(i) = self.index_of(address).filter(|_| self.is_sfu()) else {
            return self.done();
        };
        let member = &mut self.members[i];
        let before = member.media.clone();
        let media = member.media.get_or_insert_with(MediaStatus::default);
        match report {
            MediaReport::Connection(connected) => {
                media.connected = connected;
                if !connected {
                    media.tracks.clear();
                }
            }
            MediaReport::Tracks(tracks) => media.tracks = tracks,
        }
        if before.as_ref() != Some(media) {
            let media = media.clone();
            self.publish(RoomEvent::ParticipantMediaUpdated {
                room_id: self.record.id.clone(),
                address: address.to_string(),
                media,
            });
        }
        self.done()
    }

    /// The media plane's active speakers (SFU rooms): when the list of those holding a
    /// seat changes, everyone hears it (`activeSpeakers`) and observers see it.
    pub fn active_speakers(&mut self, speakers: Vec<String>) -> Vec<Effect> {
        let speakers: Vec<String> = speakers
            .into_iter()
            .filter(|a| self.index_of(a).is_some())
            .collect();
        if !self.is_sfu() || speakers == self.speakers {
            return self.done();
        }
        self.speakers = speakers.clone();
        self.publish(RoomEvent::ActiveSpeakersChanged {
            room_id: self.record.id.clone(),
            speakers: speakers.clone(),
        });
        self.broadcast(RoomMessage::ActiveSpeakers { speakers }, None);
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
    /// With `ban`, its identity may not join again for that long: the ban is in the
    /// record, which the caller writes to the store before it answers (the effects do
    /// not persist it).
    pub fn kick(&mut self, address: &str, ban: Option<Ban>) -> (Kicked, Vec<Effect>) {
        self.touch();
        let Some(i) = self.index_of(address) else {
            return (Kicked::Missing, self.done());
        };
        let mut banned_until = None;
        if let Some(ban) = ban {
            let Some(identity) = self.members[i].participant.identity.clone() else {
                return (Kicked::WithoutIdentity, self.done());
            };
            let now = self.now();
            let end = self.record.expires_at();
            let until = match ban {
                Ban::RoomEnd => end,
                Ban::Seconds(s) => now.saturating_add(s.saturating_mul(1000)).min(end),
            };
            let access = &mut Arc::make_mut(&mut self.record).access;
            access.bans.retain(|_, &mut until| until > now);
            access.bans.insert(identity.clone(), until);
            banned_until = Some(until);
            tracing::info!(room = %self.record.id, %identity, until, "identity banned");
        }
        let state = self.members[i].state();
        self.send(i, Notice::new(RoomMessage::RoomClosed { reason: "kicked" }));
        self.close(i, Closing::Kicked);
        self.members[i].session = None;
        self.remove(i, "kicked");
        (
            Kicked::Removed {
                participant: Box::new(state),
                banned_until,
            },
            self.done(),
        )
    }

    /// Rotates the room token: the room's token generation goes up and the room gets a
    /// new token of it, so room tokens issued before stop working for new joins (those
    /// seated stay, and may resume). Participant tokens are not affected. The caller
    /// writes the record to the store before it answers (the effects do not persist it).
    pub fn rotate_token(&mut self) -> (Arc<RoomRecord>, Vec<Effect>) {
        self.touch();
        let now = self.now();
        let record = Arc::make_mut(&mut self.record);
        record.access.token_generation = record.access.token_generation.wrapping_add(1);
        record.refresh_token(&self.services.tokens, now);
        tracing::info!(room = %record.id, generation = record.access.token_generation, "room token rotated");
        self.out.push(Effect::PublishSnapshot);
        self.publish(RoomEvent::RoomUpdated(self.record.clone()));
        (self.record.clone(), self.done())
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
            Some(Timer::Idle) => self.idle_check(),
            None => {}
        }
        self.done()
    }

    /// Passivation: once nobody holds a seat (a seat waiting for a resume counts) and
    /// nothing has used the room for `room_idle`, the actor writes the record and stops;
    /// otherwise the room looks again when that time may have passed.
    fn idle_check(&mut self) {
        let since = Duration::from_millis(self.now().saturating_sub(self.last_used));
        if self.members.is_empty() && since >= self.services.room_idle {
            tracing::debug!(room = %self.record.id, "room idle: passivating");
            self.out.push(Effect::Passivate);
        } else {
            self.schedule_idle_check();
        }
    }

    /// The store did not take the record of a passivating room: the room stays (stopping
    /// now could lose a change), and tries again after another `room_idle`.
    pub fn passivation_failed(&mut self) -> Vec<Effect> {
        self.touch();
        self.schedule_idle_check();
        self.done()
    }

    /// The record, with a usable token: a stale one is replaced (and persisted).
    pub fn get_record(&mut self) -> (Arc<RoomRecord>, Vec<Effect>) {
        self.touch();
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
        self.touch();
        let member = self.members.remove(i);
        self.cancel_timer(member.expiry);
        if let Some(grace) = member.grace {
            self.cancel_timer(grace);
        }
        let (address, identity) = (member.participant.address, member.participant.identity);
        self.out.push(Effect::SeatRemoved {
            address: address.clone(),
        });
        self.media(MediaCommand::Remove {
            address: address.clone(),
        });
        tracing::info!(room = %self.record.id, %address, reason, "participant left");
        self.publish(RoomEvent::ParticipantLeft {
            room_id: self.record.id.clone(),
            address: address.clone(),
            identity,
            reason,
        });
        self.broadcast(RoomMessage::ParticipantLeft { address, reason }, None);
        self.out.push(Effect::PersistSoon);
    }

    /// Tells everyone the room is closing and closes their sockets; answers how many
    /// held a seat.
    fn close_all(&mut self, reason: &'static str, closing: Closing) -> usize {
        self.out.push(Effect::SeatsCleared);
        // The room's media ends with it.
        self.media(MediaCommand::RemoveRoom);
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
            media: self.media.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The room's rules, driven by commands and a hand-set clock: no actor, no socket, no
    //! waiting. Timers fire when a test says so.

    use super::*;
    use crate::model::Limits;
    use crate::store::MemoryStore;
    use crate::token::Permissions;
    use crate::token::RoomTokens;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// The clock's start: a fixed moment, in milliseconds since the epoch.
    const T0: u64 = 1_700_000_000_000;
    const GRACE: Duration = Duration::from_secs(5);
    const IDLE: Duration = Duration::from_secs(300);

    struct Room {
        state: RoomState,
        time: Arc<AtomicU64>,
        /// The room's expiry timer, from its creation.
        expiry: TimerId,
        /// The room's first idle check, from its creation.
        idle: TimerId,
    }

    fn tokens() -> RoomTokens {
        RoomTokens::new(b"a test secret of some length", "convene", "convene-room")
    }

    /// A room created at `T0` with limits MESH 2, SFU 4, a token valid for an hour, a room
    /// TTL of a day and an endpoint TTL of an hour.
    fn room(auto_upgrade: Option<u32>) -> Room {
        let services = Arc::new(RoomServices {
            limits: Limits { mesh: 2, sfu: 4 },
            room_token_ttl_seconds: 3600,
            room_ttl_seconds: 86_400,
            endpoint_ttl_seconds: 3600,
            resume_grace: GRACE,
            room_idle: IDLE,
            tokens: tokens(),
            store: Arc::new(MemoryStore::new()),
            observers: Vec::new(),
            media: None,
            ownership: None,
        });
        let (token, token_expires_at) = tokens().issue("RO-1", "nonce", T0 / 1000, 3600);
        let record = Arc::new(RoomRecord {
            id: "RO-1".into(),
            name: Some("standup".into()),
            description: None,
            creation_time: T0,
            modification_time: T0,
            conference_type: ConferenceType::Mesh,
            auto_upgrade_participant_count: auto_upgrade,
            room_token_ttl_seconds: 3600,
            room_ttl_seconds: 86_400,
            endpoint_ttl_seconds: 3600,
            nonce: "nonce".into(),
            token,
            token_expires_at,
            participant_count: 0,
            access: Default::default(),
        });
        let time = Arc::new(AtomicU64::new(T0));
        let clock = time.clone();
        let (state, effects) = RoomState::new(
            record,
            services,
            Arc::new(move || clock.load(Ordering::SeqCst)),
        );
        let [(expiry, ttl), (idle, idle_after)] = started(&effects)[..] else {
            panic!("no expiry and idle timers: {effects:?}")
        };
        assert_eq!(ttl, Duration::from_secs(86_400));
        assert_eq!(idle_after, IDLE);
        Room {
            state,
            time,
            expiry,
            idle,
        }
    }

    /// A room created as SFU (limit 4), in a service that runs a media plane.
    fn sfu_room() -> Room {
        let mut room = room(None);
        Arc::make_mut(&mut room.state.record).conference_type = ConferenceType::Sfu;
        room.state.media_plane = true;
        room
    }

    /// What the effects tell the media plane, in order.
    fn media(effects: &[Effect]) -> Vec<MediaCommand> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Media(command) => Some(command.clone()),
                _ => None,
            })
            .collect()
    }

    fn add(address: &str) -> MediaCommand {
        MediaCommand::Add {
            address: address.into(),
            can_publish: true,
            can_subscribe: true,
        }
    }

    fn remove(address: &str) -> MediaCommand {
        MediaCommand::Remove {
            address: address.into(),
        }
    }

    impl Room {
        fn set_time(&self, ms: u64) {
            self.time.store(ms, Ordering::SeqCst);
        }

        /// Joins (or resumes, with `resume`) on socket `session`.
        fn join(
            &mut self,
            session: u64,
            resume: Option<&str>,
        ) -> (Result<String, JoinRefused>, Vec<Effect>) {
            self.state.join("nonce", request(resume), session)
        }

        /// Joins on socket `session`; answers the address, the resume token and the
        /// endpoint expiry timer.
        fn joined(&mut self, session: u64) -> (String, String, TimerId) {
            let (result, effects) = self.join(session, None);
            let address = result.expect("a seat");
            let Some(RoomMessage::Joined { resume_token, .. }) =
                sent(&effects, &address).first().cloned()
            else {
                panic!("no joined for {address}: {effects:?}")
            };
            let endpoint = started(&effects)[0].0;
            (address, resume_token.clone(), endpoint)
        }
    }

    fn request(resume: Option<&str>) -> JoinRequest {
        JoinRequest {
            token: "unused by the room".into(),
            name: None,
            participant_info: None,
            audio: true,
            video: true,
            resume: resume.map(str::to_string),
            grant: None,
            token_generation: 0,
        }
    }

    /// A join with a participant token of `identity`.
    fn as_identity(identity: &str, permissions: Permissions) -> JoinRequest {
        JoinRequest {
            name: Some("from the join".into()),
            grant: Some(Box::new(crate::token::Grant {
                identity: identity.into(),
                name: Some(format!("{identity} (token)")),
                participant_info: None,
                permissions,
            })),
            ..request(None)
        }
    }

    /// The messages queued for `to`, in order.
    fn sent(effects: &[Effect], to: &str) -> Vec<RoomMessage> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Send { to: t, message, .. } if t == to => Some(message.message().clone()),
                _ => None,
            })
            .collect()
    }

    fn closed(effects: &[Effect], to: &str) -> Vec<(u64, Closing)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Close {
                    to: t,
                    session,
                    closing,
                } if t == to => Some((*session, *closing)),
                _ => None,
            })
            .collect()
    }

    fn started(effects: &[Effect]) -> Vec<(TimerId, Duration)> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::StartTimer { id, after } => Some((*id, *after)),
                _ => None,
            })
            .collect()
    }

    fn events(effects: &[Effect]) -> Vec<&RoomEvent> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Publish(event) => Some(event),
                _ => None,
            })
            .collect()
    }

    fn left(effects: &[Effect]) -> Vec<(String, &'static str)> {
        events(effects)
            .into_iter()
            .filter_map(|e| match e {
                RoomEvent::ParticipantLeft {
                    address, reason, ..
                } => Some((address.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    fn has(effects: &[Effect], wanted: impl Fn(&Effect) -> bool) -> bool {
        effects.iter().any(wanted)
    }

    #[test]
    fn joins_take_seats_up_to_the_limit_and_need_the_rooms_nonce() {
        let mut room = room(None);
        let (result, effects) = room.state.join("other", request(None), 1);
        assert_eq!(result, Err(JoinRefused::Token));
        assert!(effects.is_empty(), "{effects:?}");

        let (a, _, _) = room.joined(1);
        let (result, effects) = room.join(2, None);
        let b = result.unwrap();
        assert!(has(
            &effects,
            |e| matches!(e, Effect::SeatLinked { address, session: 2 } if *address == b)
        ));
        // B's joined lists A; A hears of B.
        let Some(RoomMessage::Joined {
            participants,
            room: info,
            ..
        }) = sent(&effects, &b).first().cloned()
        else {
            panic!("no joined: {effects:?}")
        };
        assert_eq!(
            participants.iter().map(|p| &p.address).collect::<Vec<_>>(),
            [&a]
        );
        assert_eq!(info.max_participants, 2);
        assert!(
            matches!(&sent(&effects, &a)[..], [RoomMessage::ParticipantJoined(p)] if p.address == b)
        );
        assert!(has(&effects, |e| matches!(e, Effect::PersistSoon)));
        assert_eq!(room.state.stored_record().participant_count, 2);

        let (result, effects) = room.join(3, None);
        assert_eq!(result, Err(JoinRefused::Full { max: 2 }));
        assert!(effects.is_empty(), "{effects:?}");
    }

    #[test]
    fn a_resume_within_the_grace_keeps_the_address_and_nobody_sees_a_leave() {
        let mut room = room(None);
        let (a, token, _) = room.joined(1);
        let (b, _, _) = room.joined(2);

        let effects = room.state.disconnected(&a, 1);
        assert!(has(
            &effects,
            |e| matches!(e, Effect::SeatUnlinked { address } if *address == a)
        ));
        let [(grace, after)] = started(&effects)[..] else {
            panic!("no grace timer: {effects:?}")
        };
        assert_eq!(after, GRACE);
        assert!(!room.state.participants()[0].connected);

        let (result, effects) = room.join(3, Some(&token));
        assert_eq!(result.as_deref(), Ok(a.as_str()));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::CancelTimer(id) if *id == grace)
        ));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::SeatLinked { address, session: 3 } if *address == a)
        ));
        assert!(
            matches!(&sent(&effects, &a)[..], [RoomMessage::Joined { participants, .. }] if participants[0].address == b)
        );
        assert!(
            sent(&effects, &b).is_empty(),
            "B sees nothing of the resume"
        );
        assert!(left(&effects).is_empty());
        assert!(room.state.participants()[0].connected);
        // The grace timer, had it fired anyway, does nothing.
        assert!(room.state.timer_fired(grace).is_empty());
        assert_eq!(room.state.participants().len(), 2);
    }

    #[test]
    fn the_grace_running_out_removes_the_seat_as_disconnected() {
        let mut room = room(None);
        let (a, token, endpoint) = room.joined(1);
        let (b, _, _) = room.joined(2);
        let effects = room.state.disconnected(&a, 1);
        let grace = started(&effects)[0].0;

        let effects = room.state.timer_fired(grace);
        assert_eq!(left(&effects), [(a.clone(), "disconnected")]);
        assert!(has(
            &effects,
            |e| matches!(e, Effect::SeatRemoved { address } if *address == a)
        ));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::CancelTimer(id) if *id == endpoint)
        ));
        assert!(
            matches!(&sent(&effects, &b)[..], [RoomMessage::ParticipantLeft { address, reason: "disconnected" }] if *address == a)
        );
        assert!(sent(&effects, &a).is_empty());
        // The resume token died with the seat: it is a new join now.
        let (result, _) = room.join(3, Some(&token));
        assert_ne!(result.unwrap(), a);
    }

    #[test]
    fn a_replaced_sockets_late_messages_are_ignored() {
        let mut room = room(None);
        let (a, token, _) = room.joined(1);
        let (result, effects) = room.join(2, Some(&token));
        assert_eq!(result.unwrap(), a);
        assert_eq!(closed(&effects, &a), [(1, Closing::Replaced)]);

        assert!(room.state.disconnected(&a, 1).is_empty());
        assert!(room.state.overflow(&a, 1).is_empty());
        assert!(room.state.leave(&a, 1).is_empty());
        assert!(room.state.media_state(&a, 1, Some(false), None).is_empty());
        let participants = room.state.participants();
        assert!(participants[0].connected && participants[0].participant.audio);
    }

    #[test]
    fn an_endpoint_past_its_ttl_is_told_closed_and_removed() {
        let mut room = room(None);
        let (a, _, endpoint) = room.joined(1);
        let (b, _, _) = room.joined(2);
        let effects = room.state.timer_fired(endpoint);
        assert_eq!(
            sent(&effects, &a),
            [RoomMessage::EndpointExpired { ttl_seconds: 3600 }]
        );
        assert_eq!(closed(&effects, &a), [(1, Closing::EndpointExpired)]);
        assert_eq!(left(&effects), [(a.clone(), "expired")]);
        assert!(matches!(
            &sent(&effects, &b)[..],
            [RoomMessage::ParticipantLeft {
                reason: "expired",
                ..
            }]
        ));
        assert_eq!(room.state.participants().len(), 1);
        assert!(room.state.timer_fired(endpoint).is_empty(), "fires once");
    }

    #[test]
    fn a_kick_closes_the_socket_and_the_others_see_a_leave() {
        let mut room = room(None);
        let (a, token, _) = room.joined(1);
        let (b, _, _) = room.joined(2);
        let (kicked, effects) = room.state.kick(&a, None);
        let Kicked::Removed {
            participant,
            banned_until: None,
        } = kicked
        else {
            panic!("not removed without a ban: {kicked:?}")
        };
        assert_eq!(participant.participant.address, a);
        assert_eq!(
            sent(&effects, &a),
            [RoomMessage::RoomClosed { reason: "kicked" }]
        );
        assert_eq!(closed(&effects, &a), [(1, Closing::Kicked)]);
        assert_eq!(left(&effects), [(a.clone(), "kicked")]);
        assert!(matches!(
            &sent(&effects, &b)[..],
            [RoomMessage::ParticipantLeft {
                reason: "kicked",
                ..
            }]
        ));
        let (none, effects) = room.state.kick(&a, None);
        assert!(matches!(none, Kicked::Missing) && effects.is_empty());
        let (result, _) = room.join(3, Some(&token));
        assert_ne!(result.unwrap(), a, "the kicked seat's resume token is dead");
    }

    #[test]
    fn media_state_changes_what_is_given_and_tells_the_others() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        let (b, _, _) = room.joined(2);
        let effects = room.state.media_state(&a, 1, Some(false), None);
        let [RoomMessage::ParticipantUpdated(p)] = &sent(&effects, &b)[..] else {
            panic!("no update for B: {effects:?}")
        };
        assert!(!p.audio && p.video);
        assert!(sent(&effects, &a).is_empty());
        assert!(matches!(
            events(&effects)[..],
            [RoomEvent::ParticipantUpdated { .. }]
        ));
    }

    #[test]
    fn leave_closes_the_socket_and_frees_the_seat() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        let effects = room.state.leave(&a, 1);
        assert_eq!(closed(&effects, &a), [(1, Closing::Left)]);
        assert_eq!(left(&effects), [(a, "left")]);
        assert!(has(&effects, |e| matches!(e, Effect::PersistSoon)));
        assert_eq!(room.state.stored_record().participant_count, 0);
    }

    #[test]
    fn a_mesh_room_upgrades_once_at_the_threshold_and_gets_the_sfu_limit() {
        let mut room = room(Some(2));
        let (a, _, _) = room.joined(1);
        room.set_time(T0 + 1000);
        let (result, effects) = room.join(2, None);
        let b = result.unwrap();
        let changed = RoomMessage::ConferenceTypeChanged {
            conference_type: ConferenceType::Sfu,
            reason: "participantCount",
            participant_count: 2,
        };
        assert_eq!(sent(&effects, &a).last(), Some(&changed));
        assert_eq!(sent(&effects, &b).last(), Some(&changed));
        assert!(has(&effects, |e| matches!(e, Effect::PublishSnapshot)));
        assert!(
            matches!(events(&effects)[..], [_, RoomEvent::RoomUpgraded(r)] if r.conference_type == ConferenceType::Sfu)
        );
        assert_eq!(room.state.record().conference_type, ConferenceType::Sfu);
        assert_eq!(room.state.record().modification_time, T0 + 1000);

        // Now the SFU limit (4) holds, and the upgrade does not happen again.
        let (result, effects) = room.join(3, None);
        let c = result.unwrap();
        assert!(
            matches!(&sent(&effects, &c)[..], [RoomMessage::Joined { room, .. }] if room.max_participants == 4 && room.conference_type == ConferenceType::Sfu)
        );
        assert!(!sent(&effects, &a).contains(&changed));
        assert!(room.join(4, None).0.is_ok());
        assert_eq!(room.join(5, None).0, Err(JoinRefused::Full { max: 4 }));
    }

    #[test]
    fn without_auto_upgrade_a_mesh_room_stays_mesh() {
        let mut room = room(None);
        room.joined(1);
        let (_, effects) = room.join(2, None);
        assert!(!has(&effects, |e| matches!(e, Effect::PublishSnapshot)));
        assert_eq!(room.state.record().conference_type, ConferenceType::Mesh);
    }

    #[test]
    fn the_room_expires_at_its_ttl_and_not_before() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        // Fired early (timers far in the future may): it looks again later.
        room.set_time(T0 + 86_400_000 - 1);
        let effects = room.state.timer_fired(room.expiry);
        assert_eq!(
            started(&effects).iter().map(|t| t.1).collect::<Vec<_>>(),
            [Duration::from_millis(1)]
        );
        assert!(!has(&effects, |e| matches!(e, Effect::Stop)));

        room.set_time(T0 + 86_400_000);
        let effects = room.state.timer_fired(started(&effects)[0].0);
        assert!(matches!(effects.first(), Some(Effect::PublishGone)));
        assert_eq!(
            sent(&effects, &a),
            [RoomMessage::RoomClosed { reason: "expired" }]
        );
        assert_eq!(closed(&effects, &a), [(1, Closing::RoomExpired)]);
        assert!(matches!(
            events(&effects)[..],
            [RoomEvent::RoomExpired { seats: 1, .. }]
        ));
        assert!(has(&effects, |e| matches!(e, Effect::RemoveFromStore)));
        assert!(matches!(effects.last(), Some(Effect::Stop)));
    }

    /// Joins `request` on socket `session`; answers the address.
    fn join_as(room: &mut Room, request: JoinRequest, session: u64) -> String {
        let (result, _) = room.state.join("nonce", request, session);
        result.expect("a seat")
    }

    #[test]
    fn a_participant_token_joins_as_its_identity_with_its_permissions() {
        let mut room = sfu_room();
        let listener = Permissions {
            can_publish: false,
            can_subscribe: true,
            can_send_messages: false,
        };
        let (result, effects) = room.state.join("nonce", as_identity("alice", listener), 1);
        let a = result.unwrap();
        let joined = room.state.participants()[0].participant.clone();
        assert_eq!(joined.identity.as_deref(), Some("alice"));
        assert_eq!(
            joined.name.as_deref(),
            Some("alice (token)"),
            "the token's name wins"
        );
        assert_eq!(joined.permissions, Some(listener));
        assert_eq!(
            media(&effects),
            [MediaCommand::Add {
                address: a.clone(),
                can_publish: false,
                can_subscribe: true
            }]
        );
        assert!(matches!(
            &sent(&effects, &a)[..],
            [RoomMessage::Joined { identity: Some(i), permissions: Some(p), .. }]
                if i == "alice" && *p == listener
        ));
        assert!(
            matches!(&events(&effects)[..], [RoomEvent::ParticipantJoined { participant, .. }] if participant.identity.as_deref() == Some("alice"))
        );
        // A room token joins anonymously, with every permission.
        let (b, _, _) = room.joined(2);
        let anonymous = &room.state.participants()[1].participant;
        assert_eq!(
            (anonymous.identity.as_ref(), anonymous.permissions),
            (None, None)
        );
        assert_eq!(anonymous.may(), Permissions::default());
        let effects = room.state.leave(&b, 2);
        assert!(matches!(
            &events(&effects)[..],
            [RoomEvent::ParticipantLeft { identity: None, .. }]
        ));
        let effects = room.state.leave(&a, 1);
        assert!(
            matches!(&events(&effects)[..], [RoomEvent::ParticipantLeft { identity: Some(i), .. }] if i == "alice")
        );
    }

    #[test]
    fn a_second_join_of_an_identity_replaces_the_first_even_in_a_full_room() {
        let mut room = room(None);
        let all = Permissions::default();
        let a = join_as(&mut room, as_identity("alice", all), 1);
        let (b, _, _) = room.joined(2);
        // MESH holds 2: the room is full, but alice's new join takes her old seat's place.
        let (result, effects) = room.state.join("nonce", as_identity("alice", all), 3);
        let a2 = result.unwrap();
        assert_ne!(a2, a, "a new seat, with a new address");
        assert_eq!(closed(&effects, &a), [(1, Closing::IdentityRejoined)]);
        assert_eq!(left(&effects), [(a.clone(), "replaced")]);
        assert!(matches!(
            &sent(&effects, &b)[..],
            [RoomMessage::ParticipantLeft { reason: "replaced", .. }, RoomMessage::ParticipantJoined(p)]
                if p.address == a2
        ));
        let seats: Vec<String> = room
            .state
            .participants()
            .into_iter()
            .map(|p| p.participant.address)
            .collect();
        assert_eq!(seats, [b, a2]);
        // Another identity still finds the room full.
        let (result, _) = room.state.join("nonce", as_identity("bob", all), 4);
        assert_eq!(result, Err(JoinRefused::Full { max: 2 }));
    }

    #[test]
    fn a_resume_needs_the_seats_own_identity() {
        let mut room = room(None);
        let all = Permissions::default();
        let (result, effects) = room.state.join("nonce", as_identity("alice", all), 1);
        let a = result.unwrap();
        let Some(RoomMessage::Joined { resume_token, .. }) = sent(&effects, &a).first().cloned()
        else {
            panic!("no joined")
        };
        room.state.disconnected(&a, 1);
        // The room token, or another identity, with alice's resume token: a new seat.
        let mut bob = as_identity("bob", all);
        bob.resume = Some(resume_token.clone());
        let (result, _) = room.state.join("nonce", bob, 2);
        assert_ne!(result.unwrap(), a);
        let mut alice = as_identity("alice", all);
        alice.resume = Some(resume_token);
        let (result, effects) = room.state.join("nonce", alice, 3);
        assert_eq!(result.unwrap(), a, "resumed");
        assert!(left(&effects).is_empty());
    }

    #[test]
    fn a_ban_keeps_the_identity_out_for_its_time_and_never_past_the_room() {
        let mut room = room(None);
        let all = Permissions::default();
        let a = join_as(&mut room, as_identity("alice", all), 1);
        let (kicked, effects) = room.state.kick(&a, Some(Ban::Seconds(600)));
        let until = T0 + 600_000;
        assert!(
            matches!(kicked, Kicked::Removed { banned_until: Some(u), .. } if u == until),
            "{kicked:?}"
        );
        assert_eq!(closed(&effects, &a), [(1, Closing::Kicked)]);
        assert_eq!(room.state.stored_record().access.bans["alice"], until);
        let (result, _) = room.state.join("nonce", as_identity("alice", all), 2);
        assert_eq!(
            result,
            Err(JoinRefused::Banned {
                identity: "alice".into(),
                until
            })
        );
        // Others, and the room token, still join.
        join_as(&mut room, as_identity("bob", all), 3);
        room.set_time(until - 1);
        assert!(
            room.state
                .join("nonce", as_identity("alice", all), 4)
                .0
                .is_err()
        );
        room.set_time(until);
        let a = join_as(&mut room, as_identity("alice", all), 5);

        // Until the room ends; a ban longer than the room ends with it.
        let (kicked, _) = room.state.kick(&a, Some(Ban::RoomEnd));
        let end = T0 + 86_400_000;
        assert!(matches!(kicked, Kicked::Removed { banned_until: Some(u), .. } if u == end));
        let b = room.state.participants()[0].participant.address.clone();
        let (kicked, _) = room.state.kick(&b, Some(Ban::Seconds(365 * 86_400)));
        assert!(matches!(kicked, Kicked::Removed { banned_until: Some(u), .. } if u == end));
        // An ended ban is dropped from the record when another is added.
        room.set_time(end - 1);
        assert_eq!(room.state.record().access.bans.len(), 2);
    }

    #[test]
    fn a_participant_without_identity_cannot_be_banned_and_stays() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        let (kicked, effects) = room.state.kick(&a, Some(Ban::RoomEnd));
        assert!(matches!(kicked, Kicked::WithoutIdentity));
        assert!(effects.is_empty(), "{effects:?}");
        assert_eq!(room.state.participants().len(), 1);
        assert!(room.state.record().access.bans.is_empty());
    }

    /// The `gen` claim of a token (the clock of these tests is long past, so its `exp`
    /// would not verify).
    fn generation_of(token: &str) -> u64 {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        claims["gen"].as_u64().unwrap_or(0)
    }

    #[test]
    fn rotating_the_room_token_refuses_older_room_tokens_for_new_seats_only() {
        let mut room = room(None);
        let (a, resume, _) = room.joined(1);
        let old = room.state.record().token.clone();
        room.set_time(T0 + 1000);
        let (record, effects) = room.state.rotate_token();
        assert_ne!(record.token, old);
        assert_eq!(record.access.token_generation, 1);
        assert_eq!(generation_of(&record.token), 1);
        assert!(has(&effects, |e| matches!(e, Effect::PublishSnapshot)));
        assert!(
            matches!(&events(&effects)[..], [RoomEvent::RoomUpdated(r)] if r.token == record.token)
        );
        assert!(sent(&effects, &a).is_empty(), "those inside are not told");
        assert_eq!(room.state.stored_record().access.token_generation, 1);

        // A room token of generation 0 takes no new seat; one of generation 1 does.
        let (result, effects) = room.join(2, None);
        assert_eq!(result, Err(JoinRefused::Rotated));
        assert!(effects.is_empty());
        let current = JoinRequest {
            token_generation: 1,
            ..request(None)
        };
        room.state.join("nonce", current, 3).0.unwrap();
        // The seated participant resumes with its old token.
        room.state.disconnected(&a, 1);
        assert_eq!(room.join(4, Some(&resume)).0.unwrap(), a);
        // Participant tokens do not depend on the generation.
        room.state.leave(&a, 4);
        join_as(&mut room, as_identity("alice", Permissions::default()), 5);
        // A refreshed token keeps the generation.
        room.set_time(T0 + 3600 * 1000);
        let (record, _) = room.state.get_record();
        assert_eq!(generation_of(&record.token), 1);
    }

    #[test]
    fn an_upgrade_tells_the_media_plane_each_members_permissions() {
        let mut room = room(Some(2));
        room.state.media_plane = true;
        let listener = Permissions {
            can_publish: false,
            can_subscribe: false,
            can_send_messages: true,
        };
        let a = join_as(&mut room, as_identity("alice", listener), 1);
        let (result, effects) = room.join(2, None);
        let b = result.unwrap();
        assert_eq!(
            media(&effects),
            [
                MediaCommand::Add {
                    address: a,
                    can_publish: false,
                    can_subscribe: false
                },
                add(&b)
            ]
        );
    }

    #[test]
    fn a_deleted_room_closes_every_socket_and_stops() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        let (b, _, _) = room.joined(2);
        room.state.disconnected(&b, 2);
        let effects = room.state.delete_confirmed();
        assert_eq!(
            sent(&effects, &a),
            [RoomMessage::RoomClosed { reason: "deleted" }]
        );
        assert_eq!(closed(&effects, &a), [(1, Closing::RoomDeleted)]);
        assert!(sent(&effects, &b).is_empty(), "B has no socket");
        assert!(matches!(
            events(&effects)[..],
            [RoomEvent::RoomDeleted { seats: 2, .. }]
        ));
        assert!(left(&effects).is_empty());
        assert!(matches!(effects.last(), Some(Effect::Stop)));
    }

    #[test]
    fn a_stale_token_is_replaced_once_and_persisted() {
        let mut room = room(None);
        let first = room.state.record().token.clone();
        let (record, effects) = room.state.get_record();
        assert_eq!(record.token, first, "a fresh token stays");
        assert!(effects.is_empty());

        // A second before the last minute (a tenth of the hour, at most a minute) it is
        // still good; in the last minute it is stale.
        room.set_time(T0 + 3539 * 1000);
        assert!(room.state.get_record().1.is_empty());
        room.set_time(T0 + 3540 * 1000);
        let (record, effects) = room.state.get_record();
        assert_ne!(record.token, first);
        assert_eq!(record.token_expires_at, T0 / 1000 + 3540 + 3600);
        assert!(has(&effects, |e| matches!(e, Effect::PersistNow)));
        assert!(has(&effects, |e| matches!(e, Effect::PublishSnapshot)));
        assert!(
            matches!(events(&effects)[..], [RoomEvent::RoomUpdated(r)] if r.token == record.token)
        );
        let (again, effects) = room.state.get_record();
        assert_eq!(again.token, record.token);
        assert!(effects.is_empty());
    }

    fn passivates(effects: &[Effect]) -> bool {
        has(effects, |e| matches!(e, Effect::Passivate))
    }

    /// The one idle check that `effects` start, and when.
    fn idle_check(effects: &[Effect]) -> (TimerId, Duration) {
        let [check] = started(effects)[..] else {
            panic!("not one idle check: {effects:?}")
        };
        check
    }

    #[test]
    fn an_idle_room_with_nobody_in_it_passivates() {
        let mut room = room(None);
        room.set_time(T0 + IDLE.as_millis() as u64);
        let effects = room.state.timer_fired(room.idle);
        assert!(passivates(&effects), "{effects:?}");
        assert!(started(&effects).is_empty(), "no further check");
        assert!(!has(&effects, |e| matches!(e, Effect::Stop)));
        assert_eq!(room.state.stored_record().participant_count, 0);
    }

    #[test]
    fn a_seat_keeps_the_room_active_even_while_it_waits_for_a_resume() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        room.state.disconnected(&a, 1);
        room.set_time(T0 + IDLE.as_millis() as u64 * 2);
        let effects = room.state.timer_fired(room.idle);
        assert!(!passivates(&effects), "{effects:?}");
        // Someone is seated: it looks again a whole idle time later.
        let (check, after) = idle_check(&effects);
        assert_eq!(after, IDLE);

        // The seat goes (the grace ran out): the idle time counts from then.
        let now = T0 + IDLE.as_millis() as u64 * 3;
        room.set_time(now);
        let grace = room.state.members[0].grace.unwrap();
        room.state.timer_fired(grace);
        room.set_time(now + 1);
        let effects = room.state.timer_fired(check);
        assert!(!passivates(&effects), "{effects:?}");
        assert_eq!(idle_check(&effects).1, IDLE - Duration::from_millis(1));
        room.set_time(now + IDLE.as_millis() as u64);
        assert!(passivates(&room.state.timer_fired(idle_check(&effects).0)));
    }

    #[test]
    fn any_use_of_the_room_resets_its_idle_time() {
        let mut room = room(None);
        let half = IDLE.as_millis() as u64 / 2;
        let mut check = room.idle;
        let uses: [fn(&mut RoomState); 3] = [
            |s| drop(s.get_record()),
            |s| drop(s.list_participants()),
            |s| drop(s.kick("PA-nobody", None)),
        ];
        let mut now = T0;
        for used in uses {
            now += half;
            room.set_time(now);
            used(&mut room.state);
            now += half;
            room.set_time(now);
            let effects = room.state.timer_fired(check);
            assert!(!passivates(&effects), "{effects:?}");
            let (next, after) = idle_check(&effects);
            assert_eq!(after, Duration::from_millis(half));
            check = next;
        }
        // A join and a leave are uses too.
        let (a, _, _) = room.joined(1);
        room.state.leave(&a, 1);
        now += half;
        room.set_time(now);
        let effects = room.state.timer_fired(check);
        assert!(!passivates(&effects), "{effects:?}");
        now += half;
        room.set_time(now);
        assert!(passivates(&room.state.timer_fired(idle_check(&effects).0)));
    }

    #[test]
    fn a_failed_passivation_keeps_the_room_and_tries_again_later() {
        let mut room = room(None);
        room.set_time(T0 + IDLE.as_millis() as u64);
        assert!(passivates(&room.state.timer_fired(room.idle)));
        let effects = room.state.passivation_failed();
        let (check, after) = idle_check(&effects);
        assert_eq!(after, IDLE);
        room.set_time(T0 + IDLE.as_millis() as u64 * 2);
        assert!(passivates(&room.state.timer_fired(check)));
    }

    #[test]
    fn a_new_seat_of_an_sfu_room_joins_its_media_and_a_resume_is_told_as_resumed() {
        let mut room = sfu_room();
        let (result, effects) = room.join(1, None);
        let a = result.unwrap();
        assert_eq!(media(&effects), [add(&a)]);
        let Some(RoomMessage::Joined { resume_token, .. }) = sent(&effects, &a).first().cloned()
        else {
            panic!("no joined: {effects:?}")
        };

        // The socket drops: the seat waits, the peer connection is kept, nothing is told.
        let effects = room.state.disconnected(&a, 1);
        assert!(media(&effects).is_empty(), "{effects:?}");
        // It resumes: the media plane hears of it (to say again what was lost), after the
        // seat is linked to the new socket (so what it says reaches it).
        let (result, effects) = room.join(2, Some(&resume_token));
        assert_eq!(result.unwrap(), a);
        assert_eq!(
            media(&effects),
            [MediaCommand::Resumed { address: a.clone() }]
        );
        let linked = effects
            .iter()
            .position(|e| matches!(e, Effect::SeatLinked { session: 2, .. }))
            .expect("the seat is linked");
        let resumed = effects
            .iter()
            .position(|e| matches!(e, Effect::Media(_)))
            .unwrap();
        assert!(linked < resumed, "{effects:?}");
    }

    #[test]
    fn every_way_out_of_an_sfu_room_removes_the_participant_from_media() {
        let mut room = sfu_room();
        let (a, _, _) = room.joined(1);
        let (b, _, endpoint) = room.joined(2);
        let (c, _, _) = room.joined(3);
        let (d, _, _) = room.joined(4);

        assert_eq!(media(&room.state.leave(&a, 1)), [remove(&a)]);
        assert_eq!(media(&room.state.kick(&c, None).1), [remove(&c)]);
        assert_eq!(media(&room.state.timer_fired(endpoint)), [remove(&b)]);
        let effects = room.state.disconnected(&d, 4);
        assert!(media(&effects).is_empty(), "the seat waits for a resume");
        let grace = started(&effects)[0].0;
        assert_eq!(media(&room.state.timer_fired(grace)), [remove(&d)]);
    }

    #[test]
    fn an_upgrade_adds_every_member_to_media() {
        let mut room = room(Some(2));
        room.state.media_plane = true;
        let (result, effects) = room.join(1, None);
        let a = result.unwrap();
        assert!(
            media(&effects).is_empty(),
            "a MESH room has no media plane part"
        );
        let (result, effects) = room.join(2, None);
        let b = result.unwrap();
        assert_eq!(media(&effects), [add(&a), add(&b)]);
        // Later joins of the upgraded room are added one by one.
        let (result, effects) = room.join(3, None);
        assert_eq!(media(&effects), [add(&result.unwrap())]);
    }

    #[test]
    fn a_deleted_or_expired_sfu_room_removes_its_media() {
        let mut room = sfu_room();
        room.joined(1);
        assert_eq!(
            media(&room.state.delete_confirmed()),
            [MediaCommand::RemoveRoom]
        );

        let mut room = sfu_room();
        room.joined(1);
        room.set_time(T0 + 86_400_000);
        let effects = room.state.timer_fired(room.expiry);
        assert_eq!(media(&effects), [MediaCommand::RemoveRoom]);
    }

    #[test]
    fn a_mesh_room_tells_the_media_plane_nothing() {
        let mut room = room(None);
        room.state.media_plane = true;
        let (a, _, _) = room.joined(1);
        let (_, _, endpoint) = room.joined(2);
        let mut effects = room.state.leave(&a, 1);
        effects.extend(room.state.timer_fired(endpoint));
        effects.extend(room.state.delete_confirmed());
        assert!(media(&effects).is_empty(), "{effects:?}");
    }

    #[test]
    fn a_signal_to_sfu_goes_to_the_media_plane_only_in_an_sfu_room() {
        let data = serde_json::json!({"description": {"type": "offer", "sdp": "v=0"}});
        let mut sfu = sfu_room();
        let (a, token, _) = sfu.joined(1);
        let effects = sfu.state.sfu_signal(&a, 1, data.clone());
        assert_eq!(
            media(&effects),
            [MediaCommand::Signal {
                address: a.clone(),
                data: data.clone()
            }]
        );
        assert!(sent(&effects, &a).is_empty());
        // A replaced socket's late signal is dropped.
        sfu.join(2, Some(&token)).0.unwrap();
        assert!(sfu.state.sfu_signal(&a, 1, data.clone()).is_empty());

        // MESH room, or no media plane: SFU_UNAVAILABLE, nothing to the media plane.
        let mut mesh = room(None);
        mesh.state.media_plane = true;
        let (m, _, _) = mesh.joined(1);
        let effects = mesh.state.sfu_signal(&m, 1, data.clone());
        assert!(media(&effects).is_empty());
        assert_eq!(sent(&effects, &m), [RoomMessage::SfuUnavailable]);
        let mut unplugged = sfu_room();
        unplugged.state.media_plane = false;
        let (u, _, _) = unplugged.joined(1);
        let effects = unplugged.state.sfu_signal(&u, 1, data);
        assert!(media(&effects).is_empty());
        assert_eq!(sent(&effects, &u), [RoomMessage::SfuUnavailable]);
    }
    /// The `participantMediaUpdated` events that `effects` publish: (address, media).
    fn media_updates(effects: &[Effect]) -> Vec<(String, MediaStatus)> {
        events(effects)
            .into_iter()
            .filter_map(|e| match e {
                RoomEvent::ParticipantMediaUpdated { address, media, .. } => {
                    Some((address.clone(), media.clone()))
                }
                _ => None,
            })
            .collect()
    }

    fn track(mid: &str, kind: &'static str) -> PublishedTrack {
        PublishedTrack {
            mid: mid.into(),
            kind,
        }
    }

    #[test]
    fn media_reports_change_the_admin_view_and_publish_only_changes() {
        let mut room = sfu_room();
        let (a, _, _) = room.joined(1);
        let (b, _, _) = room.joined(2);
        assert!(room.state.participants().iter().all(|p| p.media.is_none()));

        let effects = room.state.media_changed(&a, MediaReport::Connection(true));
        let up = MediaStatus {
            connected: true,
            tracks: Vec::new(),
        };
        assert_eq!(media_updates(&effects), [(a.clone(), up.clone())]);
        assert!(sent(&effects, &b).is_empty(), "participants are not told");

        let tracks = vec![track("0", "audio"), track("1", "video")];
        let effects = room
            .state
            .media_changed(&a, MediaReport::Tracks(tracks.clone()));
        let publishing = MediaStatus {
            connected: true,
            tracks: tracks.clone(),
        };
        assert_eq!(media_updates(&effects), [(a.clone(), publishing.clone())]);
        assert_eq!(room.state.participants()[0].media, Some(publishing));
        assert_eq!(room.state.participants()[1].media, None);
        // The same report again changes nothing and publishes nothing.
        assert!(
            room.state
                .media_changed(&a, MediaReport::Tracks(tracks))
                .is_empty()
        );

        // A dropped connection publishes nothing any more; the media plane's following
        // empty track list is no change.
        let effects = room.state.media_changed(&a, MediaReport::Connection(false));
        let down = MediaStatus::default();
        assert_eq!(media_updates(&effects), [(a.clone(), down.clone())]);
        assert!(
            room.state
                .media_changed(&a, MediaReport::Tracks(Vec::new()))
                .is_empty()
        );
        assert_eq!(room.state.participants()[0].media, Some(down));

        // Reports about someone without a seat (gone, or never there) are stale.
        room.state.leave(&a, 1);
        assert!(
            room.state
                .media_changed(&a, MediaReport::Connection(true))
                .is_empty()
        );
        assert!(
            room.state
                .media_changed("PA-nobody", MediaReport::Connection(true))
                .is_empty()
        );
        assert_eq!(room.state.participants().len(), 1);
    }

    #[test]
    fn a_mesh_room_ignores_media_reports() {
        let mut room = room(None);
        let (a, _, _) = room.joined(1);
        assert!(
            room.state
                .media_changed(&a, MediaReport::Connection(true))
                .is_empty()
        );
        assert_eq!(room.state.participants()[0].media, None);
    }

    #[test]
    fn seats_given_back_after_a_takeover_wait_for_their_resume_and_keep_their_address() {
        let mut old = room(None);
        let (first, first_token, _) = old.joined(1);
        let (second, _, _) = old.joined(2);
        let seats = old.state.seats();
        assert_eq!(seats.len(), 2);
        assert_eq!(seats[0].resume_token, first_token);

        // Another node's actor of the same room, 10 s later, from the stored seats.
        let mut new = room(None);
        new.set_time(T0 + 10_000);
        let effects = new.state.restore(seats.clone());
        // Nobody is told anything; both seats wait for a resume (grace and endpoint timers).
        assert!(sent(&effects, &first).is_empty() && sent(&effects, &second).is_empty());
        let timers = started(&effects);
        assert_eq!(timers.len(), 4);
        assert!(timers.contains(&(timers[0].0, Duration::from_millis(3_600_000 - 10_000))));
        assert!(timers.iter().any(|&(_, after)| after == GRACE));
        assert!(has(
            &effects,
            |e| matches!(e, Effect::SeatUnlinked { address } if *address == first)
        ));
        assert!(has(&effects, |e| matches!(e, Effect::PersistSoon)));
        assert_eq!(new.state.participants().len(), 2);
        assert!(new.state.participants().iter().all(|p| !p.connected));
        // Restoring again adds nothing; a full room takes no more than its seats.
        assert!(started(&new.state.restore(seats)).is_empty());

        // The resume keeps the address, and the resumed participant sees the other seat.
        let (result, effects) = new.join(7, Some(&first_token));
        assert_eq!(result, Ok(first.clone()));
        let Some(RoomMessage::Joined { participants, .. }) =
            sent(&effects, &first).first().cloned()
        else {
            panic!("no joined: {effects:?}")
        };
        assert_eq!(participants.len(), 1);
        assert_eq!(participants[0].address, second);
        assert!(
            sent(&effects, &second).is_empty(),
            "nobody sees a join or a leave"
        );
    }
}
