//! One task per socket: a single `select!` over the client's frames, the participant's
//! bounded outbound queue, the heartbeat, the join deadline and server shutdown.

use super::SignalingConfig;
use super::protocol::{self, ClientMessage, ServerMessage, close};
use crate::error::ApiError;
use crate::model::JoinRefused;
use crate::room::{JoinRequest, Outbound, RoomHandle, Rooms};
use crate::wsguard::{PendingSlot, is_too_big};
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Tells sockets apart, so that a replaced socket cannot act for its participant.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// A participant's place in a room, once joined.
struct Membership {
    room: RoomHandle,
    address: String,
    outbound: mpsc::Receiver<Outbound>,
}

struct Socket {
    ws: Session,
    id: u64,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    member: Option<Membership>,
    limiter: RateLimiter,
    /// The socket's place among those not joined yet; given up at join.
    pending: Option<PendingSlot>,
}

/// How the socket ends.
enum End {
    /// The client went away (closed, or the connection broke): a resume may follow.
    Dropped,
    /// Close with this code; the participant (if any) is already taken care of.
    Close(u16, String),
    /// Close with this code, and tell the room the participant's socket is gone.
    CloseDropped(u16, String),
}

pub async fn run(
    ws: Session,
    mut frames: AggregatedMessageStream,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    mut shutdown: watch::Receiver<bool>,
    pending: PendingSlot,
) {
    let mut socket = Socket {
        ws,
        id: SESSIONS.fetch_add(1, Ordering::Relaxed),
        limiter: RateLimiter::new(config.rate_per_second, config.rate_burst),
        rooms,
        config: config.clone(),
        member: None,
        pending: Some(pending),
    };
    let join_deadline = tokio::time::sleep(config.join_timeout);
    tokio::pin!(join_deadline);
    let mut heartbeat = tokio::time::interval(config.ping_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    let end = loop {
        let joined = socket.member.is_some();
        tokio::select! {
            _ = shutdown.changed() => break End::CloseDropped(close::GOING_AWAY, "server shutting down".into()),
            out = next_outbound(&mut socket.member) => match out {
                Some(Outbound::Text(text)) => {
                    if socket.ws.text(&*text).await.is_err() {
                        break End::Dropped;
                    }
                }
                Some(Outbound::Notice(notice)) => {
                    let text = notice.text(|message| protocol::render(message, &config.ice));
                    if socket.ws.text(&*text).await.is_err() {
                        break End::Dropped;
                    }
                }
                Some(Outbound::Close(closing)) => {
                    let (code, reason) = protocol::closing(closing);
                    break End::Close(code, reason.into());
                }
                None => break End::Close(close::TOO_SLOW, "too slow: outbound queue full".into()),
            },
            frame = frames.recv() => {
                last_heard = Instant::now();
                match frame {
                    None => break End::Dropped,
                    // Answer the closing handshake (echoing the code), then treat it as a
                    // drop: the seat waits for a resume, as for a broken connection.
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let code = reason.map_or(close::NORMAL, |r| u16::from(r.code));
                        break End::CloseDropped(code, String::new());
                    }
                    Some(Err(e)) if is_too_big(&e) => {
                        let limit = config.max_frame_bytes;
                        socket.send_error(&ApiError::payload_too_large(limit)).await;
                        break End::CloseDropped(close::TOO_BIG, format!("frame larger than {limit} bytes"));
                    }
                    Some(Err(_)) => break End::CloseDropped(close::PROTOCOL, "unreadable frame".into()),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        let _ = socket.ws.pong(&bytes).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        socket.send_error(&ApiError::invalid_message()).await;
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if !socket.limiter.allow(Instant::now()) {
                            socket.send_error(&ApiError::too_many_messages(config.rate_per_second)).await;
                            break End::CloseDropped(close::POLICY, "too many messages".into());
                        }
                        if let Some(end) = socket.handle(&text).await {
                            break end;
                        }
                    }
                }
            }
            _ = &mut join_deadline, if !joined => {
                break End::Close(close::JOIN_TIMEOUT, "no join in time".into());
            }
            _ = heartbeat.tick() => {
                if last_heard.elapsed() > config.client_timeout {
                    break End::CloseDropped(close::HEARTBEAT_TIMEOUT, "client timed out".into());
                }
                if socket.ws.ping(b"").await.is_err() {
                    break End::Dropped;
                }
            }
        }
    };

    // Give up the place among unjoined sockets before the close frame goes out, so that a
    // client that saw the close can count on it.
    socket.pending = None;
    let (code, reason, dropped) = match end {
        End::Dropped => (None, String::new(), true),
        End::Close(code, reason) => (Some(code), reason, false),
        End::CloseDropped(code, reason) => (Some(code), reason, true),
    };
    if dropped && let Some(member) = &socket.member {
        member.room.disconnected(&member.address, socket.id);
    }
    if let Some(code) = code {
        let _ = socket
            .ws
            .close(Some(CloseReason {
                code: CloseCode::Other(code),
                description: Some(reason),
            }))
            .await;
    }
}

/// The next message the room queued for this participant; never, before `join`.
async fn next_outbound(member: &mut Option<Membership>) -> Option<Outbound> {
    match member {
        Some(m) => m.outbound.recv().await,
        None => std::future::pending().await,
    }
}

impl Socket {
    async fn send_error(&mut self, error: &ApiError) {
        let _ = self.ws.text(&*ServerMessage::error(error).text()).await;
    }

    /// Handles one text frame; answers how the socket ends, if it does.
    async fn handle(&mut self, text: &str) -> Option<End> {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(e) => {
                self.send_error(&e).await;
                return None;
            }
        };
        if let ClientMessage::Ping = message {
            let _ = self.ws.text(&*ServerMessage::Pong.text()).await;
            return None;
        }
        if let ClientMessage::Join(request) = message {
            if self.member.is_some() {
                self.send_error(&ApiError::already_joined()).await;
                return None;
            }
            return self.join(request).await;
        }
        let Some(member) = &self.member else {
            self.send_error(&ApiError::not_joined()).await;
            return None;
        };
        let (room, from, session) = (&member.room, member.address.as_str(), self.id);
        let errors = match message {
            ClientMessage::Signal { to, data } if to == "sfu" => {
                // To the room's media plane: `data` as it came (the room answers
                // `SFU_UNAVAILABLE` where it has none).
                let data = serde_json::from_str(data.get()).unwrap_or_default();
                room.signal_to_sfu(from, session, data);
                Vec::new()
            }
            ClientMessage::Signal { to, data } => {
                let text = protocol::relayed("signal", from, &data);
                room.signal(from, session, &to, text).into_iter().collect()
            }
            ClientMessage::Message { to, data } => {
                let text = protocol::relayed("message", from, &data);
                room.message(from, session, to.as_deref(), text)
            }
            ClientMessage::MediaState { audio, video } => {
                room.media_state(from, session, audio, video);
                Vec::new()
            }
            ClientMessage::Leave => {
                room.leave(from, session);
                Vec::new()
            }
            ClientMessage::Join(_) | ClientMessage::Ping => unreachable!("handled above"),
        };
        for error in errors {
            self.send_error(&error).await;
        }
        None
    }

    async fn join(&mut self, request: JoinRequest) -> Option<End> {
        let services = self.rooms.services().clone();
        let claims = match services.tokens.verify(&request.token) {
            Ok(claims) => claims,
            Err(_) => {
                return Some(
                    self.refuse(ApiError::room_token_invalid(), close::INVALID_TOKEN)
                        .await,
                );
            }
        };
        let Some(room) = self.rooms.get(&claims.sub).await else {
            return Some(
                self.refuse(
                    ApiError::room_does_not_exist(&claims.sub),
                    close::ROOM_NOT_FOUND,
                )
                .await,
            );
        };
        let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        match room.join(claims.nonce, request, self.id, tx).await {
            Ok(address) => {
                self.member = Some(Membership {
                    room,
                    address,
                    outbound: rx,
                });
                self.pending = None;
                None
            }
            Err(refused) => {
                let code = match refused {
                    JoinRefused::Token => close::INVALID_TOKEN,
                    JoinRefused::Gone => close::ROOM_NOT_FOUND,
                    JoinRefused::Full { .. } => close::ROOM_FULL,
                };
                let error = ApiError::from_join_refused(&claims.sub, &refused);
                Some(self.refuse(error, code).await)
            }
        }
    }

    async fn refuse(&mut self, error: ApiError, code: u16) -> End {
        self.send_error(&error).await;
        End::Close(
            code,
            error.code.id().unwrap_or("refused").to_ascii_lowercase(),
        )
    }
}

/// A token bucket: `burst` messages at once, refilled at `per_second`.
struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limiter_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3);
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(100)));
    }
}
