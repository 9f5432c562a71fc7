//! Signaling: SDK clients join rooms over a WebSocket and exchange SDP, ICE and messages.
//!
//! One task per socket ([`session`]) reads the client's frames, writes what the room puts
//! into the participant's bounded queue, and keeps the heartbeat. The room actor owns the
//! participants and holds each one's queue sender. The wire format is in [`protocol`] and
//! `docs/signaling.md`.

pub mod bridge;
pub mod protocol;
pub mod session;

use crate::config::Settings;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use protocol::IceServer;
use sha1::Sha1;
use std::time::Duration;

/// Limits and intervals of signaling, from configuration.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    pub join_timeout: Duration,
    pub ping_interval: Duration,
    pub client_timeout: Duration,
    pub resume_grace: Duration,
    pub max_frame_bytes: usize,
    pub rate_per_second: u32,
    pub rate_burst: u32,
    pub queue_capacity: usize,
    /// Bytes per second of relayed fan-out (size times recipients) a socket may cause.
    pub fanout_bytes_per_second: u64,
    pub fanout_burst_bytes: u64,
    pub ice: IceConfig,
}

impl SignalingConfig {
    pub fn from_settings(s: &Settings) -> Self {
        Self {
            join_timeout: Duration::from_millis(s.signaling_join_timeout_ms),
            ping_interval: Duration::from_millis(s.signaling_ping_interval_ms),
            client_timeout: Duration::from_millis(s.signaling_client_timeout_ms),
            resume_grace: Duration::from_millis(s.signaling_resume_grace_ms),
            max_frame_bytes: s.signaling_max_frame_bytes,
            rate_per_second: s.signaling_rate_per_second,
            rate_burst: s.signaling_rate_burst,
            queue_capacity: s.signaling_queue_capacity,
            fanout_bytes_per_second: s.signaling_fanout_bytes_per_second,
            fanout_burst_bytes: s.signaling_fanout_burst_bytes,
            ice: IceConfig {
                urls: s.ice_servers.clone(),
                turn_secret: s.turn_secret.clone(),
                turn_ttl_seconds: s.turn_credential_ttl_seconds,
            },
        }
    }
}

/// STUN/TURN servers, and the TURN shared secret when there is one.
#[derive(Debug, Clone, Default)]
pub struct IceConfig {
    pub urls: Vec<String>,
    pub turn_secret: String,
    pub turn_ttl_seconds: u64,
}

impl IceConfig {
    /// The `iceServers` of one participant. With a TURN secret, TURN URLs carry
    /// credentials in the TURN REST API convention that coturn's `use-auth-secret`
    /// accepts: username `expiry:address`, credential base64(HMAC-SHA1(secret, username)).
    pub fn servers_for(&self, address: &str, now_secs: u64) -> Vec<IceServer> {
        let (turn, stun): (Vec<String>, Vec<String>) = self
            .urls
            .iter()
            .cloned()
            .partition(|u| u.starts_with("turn"));
        let mut servers = Vec::new();
        if !stun.is_empty() {
            servers.push(IceServer {
                urls: stun,
                username: None,
                credential: None,
            });
        }
        if !turn.is_empty() {
            let (username, credential) = if self.turn_secret.is_empty() {
                (None, None)
            } else {
                let username = format!("{}:{address}", now_secs + self.turn_ttl_seconds);
                let credential = turn_credential(&self.turn_secret, &username);
                (Some(username), Some(credential))
            };
            servers.push(IceServer {
                urls: turn,
                username,
                credential,
            });
        }
        servers
    }
}

fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_credentials_follow_the_turn_rest_convention() {
        // base64(HMAC-SHA1("secret", "1060:PA-1")), as coturn computes it.
        assert_eq!(
            turn_credential("secret", "1060:PA-1"),
            "Gwsfb7jBBGZbUuPsS0zkBJbMGTs="
        );
        let ice = IceConfig {
            urls: vec!["stun:s.example:3478".into(), "turn:t.example:3478".into()],
            turn_secret: "secret".into(),
            turn_ttl_seconds: 60,
        };
        let servers = ice.servers_for("PA-1", 1000);
        assert_eq!(
            servers[0],
            IceServer {
                urls: vec!["stun:s.example:3478".into()],
                username: None,
                credential: None
            }
        );
        assert_eq!(servers[1].username.as_deref(), Some("1060:PA-1"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some(turn_credential("secret", "1060:PA-1").as_str())
        );
        assert!(IceConfig::default().servers_for("PA-1", 0).is_empty());
    }
}
