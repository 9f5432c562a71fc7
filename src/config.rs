//! Configuration: `config/default.toml` (compiled in), then an optional file named by
//! `CONVENE_CONFIG`, then `CONVENE_*` environment variables. Every key of the file has an
//! environment variable of the same name in upper case with the `CONVENE_` prefix.
//!
//! Invalid configuration stops start-up with a message that names the setting.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../config/default.toml");
const ENV_PREFIX: &str = "CONVENE_";

/// The body limit of the contract, used where the configured one is not at hand.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// Largest request head (request line, header fields and the blank line after them); see
/// `crate::heads`, which enforces it.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;
/// Most header fields in one request head (actix-http's own limit).
pub const MAX_HEADERS: usize = 96;

/// The service's settings, after layering and validation.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub bind: String,
    pub metrics_bind: String,
    pub workers: usize,
    pub shutdown_timeout_seconds: u64,
    pub api_keys: Vec<String>,
    pub token_secret: String,
    pub token_issuer: String,
    pub token_audience: String,
    pub redis_url: String,
    pub redis_cluster: bool,
    pub redis_key_prefix: String,
    pub store_timeout_ms: u64,
    pub store_startup_timeout_seconds: u64,
    pub store_sweep_interval_seconds: u64,
    pub mesh_max_participants: u32,
    pub sfu_max_participants: u32,
    pub room_token_ttl_seconds: u64,
    pub room_ttl_seconds: u64,
    pub room_idle_seconds: u64,
    pub endpoint_ttl_seconds: u64,
    pub max_body_bytes: usize,
    pub request_body_timeout_seconds: u64,
    pub log_format: String,
    pub log_level: String,
    pub signaling_join_timeout_ms: u64,
    pub signaling_ping_interval_ms: u64,
    pub signaling_client_timeout_ms: u64,
    pub signaling_resume_grace_ms: u64,
    pub signaling_max_frame_bytes: usize,
    pub signaling_rate_per_second: u32,
    pub signaling_rate_burst: u32,
    pub signaling_queue_capacity: usize,
    pub signaling_max_pending_sockets: usize,
    pub signaling_max_pending_sockets_per_ip: usize,
    pub signaling_fanout_bytes_per_second: u64,
    pub signaling_fanout_burst_bytes: u64,
    pub ice_servers: Vec<String>,
    pub turn_secret: String,
    pub turn_credential_ttl_seconds: u64,
    pub rtc_udp_port: u16,
    pub rtc_advertise_ip: String,
    pub rtc_advertise_port: u16,
    pub rtc_udp_buffer_bytes: usize,
    pub rtc_threads: usize,
    pub rtc_max_tracks_per_participant: usize,
    pub rtc_ice_timeout_ms: u64,
    pub admin_allowed_origins: Vec<String>,
    pub admin_event_log_size: usize,
    pub admin_queue_capacity: usize,
    pub node_id: String,
    pub node_http_addr: String,
    pub node_heartbeat_ms: u64,
    pub node_ttl_ms: u64,
    pub room_lease_ms: u64,
    /// With `cluster`, the most active rooms and seated participants this node takes (0: no
    /// limit); a node at either takes no more rooms (`docs/cluster.md`, "Placement").
    pub node_max_rooms: u64,
    pub node_max_participants: u64,
    /// Several nodes share the rooms of one Redis: room leases, fenced writes, forwarding
    /// (`docs/cluster.md`). Off: one node, rooms served from memory through a Redis outage.
    pub cluster: bool,
    /// Where room events are POSTed (`docs/webhooks.md`); empty: no webhooks.
    pub webhook_urls: Vec<String>,
    /// The HMAC-SHA256 key of webhook signatures; required with `webhook_urls`.
    pub webhook_secret: String,
    /// How long one webhook request may take before it counts as failed.
    pub webhook_timeout_ms: u64,
    /// How long an event is retried (from the time it happened) before it is dropped.
    pub webhook_retry_seconds: u64,
    /// The first retry's delay; each next one doubles, up to five minutes.
    pub webhook_backoff_ms: u64,
    /// Events a node holds in memory per webhook URL (queued, or read ahead from Redis).
    pub webhook_queue_limit: usize,
    /// A PEM file of extra CA certificates that `https://` webhook URLs may chain to, besides
    /// the system's roots; empty: the system's roots only.
    pub webhook_ca_file: String,
    /// Set when `token_secret` was made up at start-up rather than configured (not a
    /// setting: `main` sets it), so a node that joins others can refuse to run with it.
    #[serde(skip)]
    pub token_secret_generated: bool,
}

/// Secrets never show up in `{:?}` output.
impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("metrics_bind", &self.metrics_bind)
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field("token_secret", &"[redacted]")
            .field("redis", &!self.redis_url.is_empty())
            .field("redis_cluster", &self.redis_cluster)
            .field("cluster", &self.cluster)
            .field("node_id", &self.node_id)
            .field("webhook_urls", &self.webhook_urls.len())
            .field("webhook_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

/// A configuration error, naming the setting at fault.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid configuration: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Settings {
    /// Loads the settings from the defaults, `CONVENE_CONFIG` and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_env(std::env::vars())
    }

    /// Loads the settings from the defaults and the given environment (tests pass their own).
    pub fn from_env(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table: toml::Table = DEFAULTS
            .parse()
            .map_err(|e| err(format!("config/default.toml: {e}")))?;
        let vars: Vec<(String, String)> = vars.into_iter().collect();
        if let Some((_, path)) = vars.iter().find(|(k, _)| k == "CONVENE_CONFIG") {
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(format!("CONVENE_CONFIG: cannot read {path}: {e}")))?;
            let file: toml::Table = text
                .parse()
                .map_err(|e| err(format!("CONVENE_CONFIG ({path}): {e}")))?;
            for (key, value) in file {
                let Some(default) = table.get(&key) else {
                    return Err(err(format!("{key} (in {path}): unknown setting")));
                };
                if default.type_str() != value.type_str() {
                    return Err(err(format!(
                        "{key} (in {path}): expected a {}, got a {}",
                        default.type_str(),
                        value.type_str()
                    )));
                }
                table.insert(key, value);
            }
        }
        for (name, raw) in &vars {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            if key == "config" {
                continue;
            }
            let Some(default) = table.get(&key) else {
                continue;
            };
            let value = env_value(default, raw).map_err(|why| err(format!("{name}: {why}")))?;
            table.insert(key, value);
        }
        let settings: Settings = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| err(e.message().to_string()))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|_| {
            err(format!(
                "CONVENE_BIND: '{}' is not an address like 127.0.0.1:8080",
                self.bind
            ))
        })?;
        if !self.metrics_bind.is_empty() && self.metrics_bind.parse::<SocketAddr>().is_err() {
            return Err(err(format!(
                "CONVENE_METRICS_BIND: '{}' is not an address like 127.0.0.1:9090",
                self.metrics_bind
            )));
        }
        if self.api_keys.iter().any(|k| k.trim().is_empty()) {
            return Err(err("CONVENE_API_KEYS: an API key is empty"));
        }
        if !self.token_secret.is_empty() && self.token_secret.len() < 32 {
            return Err(err(format!(
                "CONVENE_TOKEN_SECRET: must be at least 32 bytes, got {}",
                self.token_secret.len()
            )));
        }
        let urls = self.redis_urls();
        if urls.len() > 1 && !self.redis_cluster {
            return Err(err(
                "CONVENE_REDIS_URL: several URLs are the seed nodes of a Redis Cluster; set CONVENE_REDIS_CLUSTER=1",
            ));
        }
        if self.redis_cluster && urls.is_empty() {
            return Err(err(
                "CONVENE_REDIS_CLUSTER: needs CONVENE_REDIS_URL (one or more cluster nodes)",
            ));
        }
        if self.cluster && urls.is_empty() {
            return Err(err(
                "CONVENE_CLUSTER: needs CONVENE_REDIS_URL (the nodes of a cluster share one Redis); a single node runs without CONVENE_CLUSTER",
            ));
        }
        if self.cluster && self.token_secret.is_empty() {
            return Err(err(
                "CONVENE_CLUSTER: needs CONVENE_TOKEN_SECRET (the same on every node, at least 32 bytes); a generated one is refused in a cluster",
            ));
        }
        if urls
            .iter()
            .any(|url| redis::Client::open(url.as_str()).is_err())
        {
            return Err(err("CONVENE_REDIS_URL: not a valid Redis URL"));
        }
        if !self.node_id.is_empty()
            && (self.node_id.len() > 64
                || !self
                    .node_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(err(
                "CONVENE_NODE_ID: 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'",
            ));
        }
        if self.node_http_addr.len() > 255
            || self
                .node_http_addr
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(err(
                "CONVENE_NODE_HTTP_ADDR: an address like 10.0.0.5:8080, without spaces",
            ));
        }
        if self.node_ttl_ms <= self.node_heartbeat_ms {
            return Err(err(
                "CONVENE_NODE_TTL_MS: must be more than CONVENE_NODE_HEARTBEAT_MS",
            ));
        }
        if self.room_lease_ms < 300 {
            return Err(err("CONVENE_ROOM_LEASE_MS: must be at least 300"));
        }
        if self.mesh_max_participants < 2 {
            return Err(err("CONVENE_MESH_MAX_PARTICIPANTS: must be at least 2"));
        }
        if self.sfu_max_participants < self.mesh_max_participants {
            return Err(err(
                "CONVENE_SFU_MAX_PARTICIPANTS: must not be below CONVENE_MESH_MAX_PARTICIPANTS",
            ));
        }
        for (name, v) in [
            (
                "CONVENE_ROOM_TOKEN_TTL_SECONDS",
                self.room_token_ttl_seconds,
            ),
            ("CONVENE_ROOM_TTL_SECONDS", self.room_ttl_seconds),
            ("CONVENE_ROOM_IDLE_SECONDS", self.room_idle_seconds),
            ("CONVENE_ENDPOINT_TTL_SECONDS", self.endpoint_ttl_seconds),
            ("CONVENE_STORE_TIMEOUT_MS", self.store_timeout_ms),
            (
                "CONVENE_REQUEST_BODY_TIMEOUT_SECONDS",
                self.request_body_timeout_seconds,
            ),
            (
                "CONVENE_STORE_SWEEP_INTERVAL_SECONDS",
                self.store_sweep_interval_seconds,
            ),
            (
                "CONVENE_SIGNALING_JOIN_TIMEOUT_MS",
                self.signaling_join_timeout_ms,
            ),
            (
                "CONVENE_SIGNALING_PING_INTERVAL_MS",
                self.signaling_ping_interval_ms,
            ),
            (
                "CONVENE_SIGNALING_CLIENT_TIMEOUT_MS",
                self.signaling_client_timeout_ms,
            ),
            (
                "CONVENE_SIGNALING_RESUME_GRACE_MS",
                self.signaling_resume_grace_ms,
            ),
            (
                "CONVENE_SIGNALING_MAX_FRAME_BYTES",
                self.signaling_max_frame_bytes as u64,
            ),
            (
                "CONVENE_SIGNALING_RATE_PER_SECOND",
                self.signaling_rate_per_second.into(),
            ),
            (
                "CONVENE_SIGNALING_RATE_BURST",
                self.signaling_rate_burst.into(),
            ),
            (
                "CONVENE_SIGNALING_QUEUE_CAPACITY",
                self.signaling_queue_capacity as u64,
            ),
            (
                "CONVENE_SIGNALING_MAX_PENDING_SOCKETS",
                self.signaling_max_pending_sockets as u64,
            ),
            (
                "CONVENE_SIGNALING_MAX_PENDING_SOCKETS_PER_IP",
                self.signaling_max_pending_sockets_per_ip as u64,
            ),
            (
                "CONVENE_SIGNALING_FANOUT_BYTES_PER_SECOND",
                self.signaling_fanout_bytes_per_second,
            ),
            (
                "CONVENE_SIGNALING_FANOUT_BURST_BYTES",
                self.signaling_fanout_burst_bytes,
            ),
            (
                "CONVENE_TURN_CREDENTIAL_TTL_SECONDS",
                self.turn_credential_ttl_seconds,
            ),
            ("CONVENE_RTC_ICE_TIMEOUT_MS", self.rtc_ice_timeout_ms),
            ("CONVENE_NODE_HEARTBEAT_MS", self.node_heartbeat_ms),
            ("CONVENE_NODE_TTL_MS", self.node_ttl_ms),
            ("CONVENE_ROOM_LEASE_MS", self.room_lease_ms),
            (
                "CONVENE_RTC_UDP_BUFFER_BYTES",
                self.rtc_udp_buffer_bytes as u64,
            ),
            (
                "CONVENE_RTC_MAX_TRACKS_PER_PARTICIPANT",
                self.rtc_max_tracks_per_participant as u64,
            ),
            (
                "CONVENE_ADMIN_EVENT_LOG_SIZE",
                self.admin_event_log_size as u64,
            ),
            (
                "CONVENE_ADMIN_QUEUE_CAPACITY",
                self.admin_queue_capacity as u64,
            ),
            ("CONVENE_WEBHOOK_TIMEOUT_MS", self.webhook_timeout_ms),
            ("CONVENE_WEBHOOK_RETRY_SECONDS", self.webhook_retry_seconds),
            ("CONVENE_WEBHOOK_BACKOFF_MS", self.webhook_backoff_ms),
            (
                "CONVENE_WEBHOOK_QUEUE_LIMIT",
                self.webhook_queue_limit as u64,
            ),
        ] {
            // Ten years bounds every lifetime, so millisecond arithmetic never overflows.
            if v == 0 || v > 10 * 365 * 86400 {
                return Err(err(format!("{name}: must be between 1 and 315360000")));
            }
        }
        if let Some(url) = self.ice_servers.iter().find(|u| {
            !(u.starts_with("stun:") || u.starts_with("turn:") || u.starts_with("turns:"))
        }) {
            return Err(err(format!(
                "CONVENE_ICE_SERVERS: '{url}' is not a stun:, turn: or turns: URL"
            )));
        }
        if !self.rtc_advertise_ip.is_empty()
            && self
                .rtc_advertise_ip
                .parse::<std::net::IpAddr>()
                .map_or(true, |ip| ip.is_unspecified())
        {
            return Err(err(format!(
                "CONVENE_RTC_ADVERTISE_IP: '{}' is not an IP address clients can reach",
                self.rtc_advertise_ip
            )));
        }
        if self.rtc_threads > 256 {
            return Err(err(
                "CONVENE_RTC_THREADS: must be between 0 (one per CPU) and 256",
            ));
        }
        if self.max_body_bytes == 0 {
            return Err(err("CONVENE_MAX_BODY_BYTES: must be at least 1"));
        }
        if self.redis_key_prefix.is_empty() {
            return Err(err("CONVENE_REDIS_KEY_PREFIX: must not be empty"));
        }
        // Braces would make a Redis Cluster hash tag of the prefix, putting every key in
        // one slot (and breaking the per-room tags).
        if self.redis_key_prefix.contains(['{', '}']) {
            return Err(err("CONVENE_REDIS_KEY_PREFIX: must not contain '{' or '}'"));
        }
        self.validate_webhooks()?;
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(err(format!(
                "CONVENE_LOG_FORMAT: expected text or json, got '{}'",
                self.log_format
            )));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| err(format!("CONVENE_LOG_LEVEL: {e}")))?;
        Ok(())
    }

    /// Webhook URLs are `http://` or `https://` URLs, named once each; with any of them a
    /// secret of at least 16 bytes is required. A `webhook_ca_file` must hold CA certificates.
    fn validate_webhooks(&self) -> Result<(), ConfigError> {
        for (i, url) in self.webhook_urls.iter().enumerate() {
            match reqwest::Url::parse(url) {
                Ok(parsed)
                    if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => {}
                _ => {
                    return Err(err(format!(
                        "CONVENE_WEBHOOK_URLS: '{url}' is not an http:// or https:// URL"
                    )));
                }
            }
            if self.webhook_urls[..i].contains(url) {
                return Err(err(format!("CONVENE_WEBHOOK_URLS: '{url}' is named twice")));
            }
        }
        if !self.webhook_urls.is_empty() && self.webhook_secret.len() < 16 {
            return Err(err(format!(
                "CONVENE_WEBHOOK_SECRET: needed with CONVENE_WEBHOOK_URLS, at least 16 bytes, got {}",
                self.webhook_secret.len()
            )));
        }
        self.webhook_ca_certs()?;
        Ok(())
    }

    /// The certificates of `webhook_ca_file` (DER), each usable as a trust anchor; none
    /// when the setting is empty. An unreadable file, one without a certificate, or one
    /// with a malformed certificate is an error naming the setting.
    pub fn webhook_ca_certs(&self) -> Result<Vec<Vec<u8>>, ConfigError> {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let path = &self.webhook_ca_file;
        if path.is_empty() {
            return Ok(Vec::new());
        }
        let bad = |why: String| err(format!("CONVENE_WEBHOOK_CA_FILE: {path}: {why}"));
        let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("not a PEM file of certificates: {e}")))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        let mut roots = rustls::RootCertStore::empty();
        for (i, cert) in certs.iter().enumerate() {
            roots.add(cert.clone()).map_err(|e| {
                bad(format!(
                    "certificate {} is not a valid CA certificate: {e}",
                    i + 1
                ))
            })?;
        }
        Ok(certs.into_iter().map(|c| c.to_vec()).collect())
    }

    /// The settings as TOML, one `key = value` line each in the order of
    /// `config/default.toml`, with every secret replaced by `"[redacted]"`: the API keys
    /// (one `"[redacted]"` each, so their number shows), the token and TURN secrets (an
    /// unset one stays `""`), and the password of every Redis URL. `convene config check`
    /// prints it.
    pub fn redacted_toml(&self) -> String {
        let Ok(toml::Value::Table(mut table)) = toml::Value::try_from(self) else {
            return String::new();
        };
        let redacted = || toml::Value::String(REDACTED.to_string());
        table.insert(
            "api_keys".into(),
            toml::Value::Array(self.api_keys.iter().map(|_| redacted()).collect()),
        );
        for (key, secret) in [
            ("token_secret", &self.token_secret),
            ("turn_secret", &self.turn_secret),
            ("webhook_secret", &self.webhook_secret),
        ] {
            if !secret.is_empty() {
                table.insert(key.into(), redacted());
            }
        }
        let urls: Vec<String> = self.redis_url.split(',').map(redact_url).collect();
        table.insert("redis_url".into(), toml::Value::String(urls.join(",")));
        let mut out = String::new();
        for line in DEFAULTS.lines() {
            let Some((key, _)) = line.split_once('=') else {
                continue;
            };
            let key = key.trim();
            if line.starts_with('#') || key.is_empty() {
                continue;
            }
            if let Some(value) = table.remove(key) {
                out.push_str(&format!("{key} = {value}\n"));
            }
        }
        // A setting missing from the defaults file (none should be) still shows.
        for (key, value) in table {
            out.push_str(&format!("{key} = {value}\n"));
        }
        out
    }

    pub fn json_logs(&self) -> bool {
        self.log_format == "json"
    }

    /// Where the media plane's UDP socket binds: the IP of `bind`, port `rtc_udp_port`.
    pub fn rtc_udp_bind(&self) -> SocketAddr {
        let ip = self
            .bind
            .parse::<SocketAddr>()
            .map(|a| a.ip())
            .unwrap_or(std::net::Ipv4Addr::LOCALHOST.into());
        SocketAddr::new(ip, self.rtc_udp_port)
    }

    /// The Redis URLs of `redis_url` (comma-separated; several only for a cluster's seed
    /// nodes); none when Redis is not configured.
    pub fn redis_urls(&self) -> Vec<String> {
        self.redis_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(String::from)
            .collect()
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }
}

/// What a redacted secret reads as.
pub const REDACTED: &str = "[redacted]";

/// A URL with its password (`scheme://user:password@host`, or a `password=`/`pass=` query
/// parameter) replaced by [`REDACTED`]; the rest (user, host, port, database) is kept.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(start) = out.find("://").map(|i| i + 3) {
        let end = out[start..]
            .find(['/', '?', '#'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..end].rfind('@').map(|i| start + i) {
            match out[start..at].find(':').map(|i| start + i) {
                Some(colon) => out.replace_range(colon + 1..at, REDACTED),
                // `redis://secret@host`: the only part of the user information is the
                // password (the redis crate reads it so).
                None if at > start => out.replace_range(start..at, REDACTED),
                None => {}
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _))
                    if name.eq_ignore_ascii_case("password")
                        || name.eq_ignore_ascii_case("pass") =>
                {
                    format!("{name}={REDACTED}")
                }
                _ => pair.to_string(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// Parses an environment variable's text as the type of the setting's default.
fn env_value(default: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match default {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(toml::Value::Integer)
            .ok_or_else(|| format!("expected a whole number, got '{raw}'"))?,
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" => toml::Value::Boolean(true),
            "false" | "0" => toml::Value::Boolean(false),
            _ => return Err(format!("expected true or false, got '{raw}'")),
        },
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        other => {
            return Err(format!(
                "cannot be set from the environment ({})",
                other.type_str()
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn defaults_load() {
        let s = env(&[]).unwrap();
        assert_eq!(s.bind, "127.0.0.1:8080");
        assert_eq!(s.mesh_max_participants, 7);
        assert_eq!(s.sfu_max_participants, 100);
        assert_eq!(s.room_ttl_seconds, 86400);
        assert!(s.api_keys.is_empty());
        assert!(s.redis_url.is_empty());
        assert_eq!(s.rtc_udp_port, 7882);
        assert_eq!(s.rtc_udp_bind().to_string(), "127.0.0.1:7882");
        assert_eq!(s.rtc_max_tracks_per_participant, 4);
    }

    #[test]
    fn environment_overrides() {
        let s = env(&[
            ("CONVENE_API_KEYS", "a, b,c"),
            ("CONVENE_MESH_MAX_PARTICIPANTS", "4"),
            ("CONVENE_LOG_FORMAT", "json"),
        ])
        .unwrap();
        assert_eq!(s.api_keys, ["a", "b", "c"]);
        assert_eq!(s.mesh_max_participants, 4);
        assert!(s.json_logs());
    }

    #[test]
    fn errors_name_the_setting() {
        let e = env(&[("CONVENE_MESH_MAX_PARTICIPANTS", "many")]).unwrap_err();
        assert!(e.0.contains("CONVENE_MESH_MAX_PARTICIPANTS"), "{e}");
        let e = env(&[("CONVENE_TOKEN_SECRET", "short")]).unwrap_err();
        assert!(e.0.contains("CONVENE_TOKEN_SECRET"), "{e}");
        let e = env(&[("CONVENE_BIND", "nowhere")]).unwrap_err();
        assert!(e.0.contains("CONVENE_BIND"), "{e}");
        let e = env(&[("CONVENE_METRICS_BIND", "nowhere")]).unwrap_err();
        assert!(e.0.contains("CONVENE_METRICS_BIND"), "{e}");
        assert_eq!(env(&[]).unwrap().metrics_bind, "");
        let e = env(&[("CONVENE_ROOM_TTL_SECONDS", "0")]).unwrap_err();
        assert!(e.0.contains("CONVENE_ROOM_TTL_SECONDS"), "{e}");
        let e = env(&[("CONVENE_RTC_ADVERTISE_IP", "0.0.0.0")]).unwrap_err();
        assert!(e.0.contains("CONVENE_RTC_ADVERTISE_IP"), "{e}");
        let e = env(&[("CONVENE_RTC_THREADS", "1000")]).unwrap_err();
        assert!(e.0.contains("CONVENE_RTC_THREADS"), "{e}");
        let e = env(&[("CONVENE_RTC_UDP_BUFFER_BYTES", "0")]).unwrap_err();
        assert!(e.0.contains("CONVENE_RTC_UDP_BUFFER_BYTES"), "{e}");
        let e = env(&[("CONVENE_RTC_UDP_PORT", "70000")]).unwrap_err();
        assert!(e.0.contains("rtc_udp_port") || e.0.contains("70000"), "{e}");
        let e = env(&[("CONVENE_RTC_MAX_TRACKS_PER_PARTICIPANT", "0")]).unwrap_err();
        assert!(
            e.0.contains("CONVENE_RTC_MAX_TRACKS_PER_PARTICIPANT"),
            "{e}"
        );
        let e = env(&[("CONVENE_LOG_FORMAT", "xml")]).unwrap_err();
        assert!(e.0.contains("CONVENE_LOG_FORMAT"), "{e}");
        for name in [
            "CONVENE_SIGNALING_MAX_PENDING_SOCKETS",
            "CONVENE_SIGNALING_MAX_PENDING_SOCKETS_PER_IP",
        ] {
            let e = env(&[(name, "0")]).unwrap_err();
            assert!(e.0.contains(name), "{e}");
        }
    }

    #[test]
    fn node_and_cluster_settings() {
        let s = env(&[]).unwrap();
        assert_eq!(s.node_id, "");
        assert_eq!((s.node_heartbeat_ms, s.node_ttl_ms), (1000, 3000));
        assert_eq!(s.room_lease_ms, 5000);
        assert!(!s.redis_cluster && s.redis_urls().is_empty());
        assert!(!s.cluster, "one node by default");
        let secret = ("CONVENE_TOKEN_SECRET", "a-secret-of-at-least-32-bytes-long");
        let redis = ("CONVENE_REDIS_URL", "redis://a:1");
        assert!(
            env(&[("CONVENE_CLUSTER", "1"), redis, secret])
                .unwrap()
                .cluster
        );
        // A Redis Cluster as the store does not make the nodes a cluster.
        assert!(
            !env(&[redis, ("CONVENE_REDIS_CLUSTER", "1")])
                .unwrap()
                .cluster
        );
        for pairs in [
            &[("CONVENE_CLUSTER", "1"), secret][..],
            &[("CONVENE_CLUSTER", "1"), redis][..],
        ] {
            let e = env(pairs).unwrap_err();
            assert!(e.0.starts_with("CONVENE_CLUSTER: needs"), "{pairs:?}: {e}");
        }
        let s = env(&[
            ("CONVENE_REDIS_URL", "redis://a:1, redis://b:2"),
            ("CONVENE_REDIS_CLUSTER", "1"),
            ("CONVENE_NODE_ID", "node-1.a_b"),
        ])
        .unwrap();
        assert_eq!(s.redis_urls(), ["redis://a:1", "redis://b:2"]);
        for (pairs, name) in [
            (
                &[("CONVENE_REDIS_URL", "redis://a:1,redis://b:2")][..],
                "CONVENE_REDIS_URL",
            ),
            (
                &[("CONVENE_REDIS_CLUSTER", "1")][..],
                "CONVENE_REDIS_CLUSTER",
            ),
            (&[("CONVENE_NODE_ID", "a b")][..], "CONVENE_NODE_ID"),
            (&[("CONVENE_NODE_ID", "a|b")][..], "CONVENE_NODE_ID"),
            (
                &[("CONVENE_NODE_HTTP_ADDR", "a b:1")][..],
                "CONVENE_NODE_HTTP_ADDR",
            ),
            (
                &[("CONVENE_NODE_TTL_MS", "1000")][..],
                "CONVENE_NODE_TTL_MS",
            ),
            (
                &[("CONVENE_NODE_HEARTBEAT_MS", "0")][..],
                "CONVENE_NODE_HEARTBEAT_MS",
            ),
            (
                &[("CONVENE_REDIS_KEY_PREFIX", "a{b}")][..],
                "CONVENE_REDIS_KEY_PREFIX",
            ),
        ] {
            let e = env(pairs).unwrap_err();
            assert!(e.0.contains(name), "{pairs:?}: {e}");
        }
        let long = "n".repeat(65);
        assert!(env(&[("CONVENE_NODE_ID", &long)]).is_err());
    }

    #[test]
    fn webhook_settings() {
        let s = env(&[]).unwrap();
        assert!(s.webhook_urls.is_empty() && s.webhook_secret.is_empty());
        assert_eq!(s.webhook_retry_seconds, 86400);
        let url = ("CONVENE_WEBHOOK_URLS", "http://a:1/hook, http://b/x");
        let secret = ("CONVENE_WEBHOOK_SECRET", "sixteen-bytes-ok");
        assert_eq!(
            env(&[url, secret]).unwrap().webhook_urls,
            ["http://a:1/hook", "http://b/x"]
        );
        for pairs in [&[url][..], &[url, ("CONVENE_WEBHOOK_SECRET", "short")][..]] {
            let e = env(pairs).unwrap_err();
            assert!(
                e.0.starts_with("CONVENE_WEBHOOK_SECRET: needed"),
                "{pairs:?}: {e}"
            );
        }
        let https = (
            "CONVENE_WEBHOOK_URLS",
            "https://app.example.com/hook,http://b/x",
        );
        assert_eq!(
            env(&[https, secret]).unwrap().webhook_urls,
            ["https://app.example.com/hook", "http://b/x"]
        );
        for bad in [
            "ftp://a/x",
            "ws://a/x",
            "https://",
            "nothing",
            "http://a/x,http://a/x",
        ] {
            let e = env(&[("CONVENE_WEBHOOK_URLS", bad), secret]).unwrap_err();
            assert!(e.0.starts_with("CONVENE_WEBHOOK_URLS: "), "{bad}: {e}");
        }
        let e = env(&[("CONVENE_WEBHOOK_RETRY_SECONDS", "0")]).unwrap_err();
        assert!(e.0.contains("CONVENE_WEBHOOK_RETRY_SECONDS"), "{e}");
        let debug = format!("{:?}", env(&[url, secret]).unwrap());
        assert!(!debug.contains("sixteen"), "{debug}");
    }

    #[test]
    fn webhook_ca_file_must_hold_valid_ca_certificates() {
        assert!(env(&[]).unwrap().webhook_ca_certs().unwrap().is_empty());
        let dir = std::env::temp_dir().join(format!("convene-ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            path.to_str().unwrap().to_string()
        };
        // A small self-signed EC CA, made once with `openssl req -x509 -newkey ec`.
        let good = write("good.pem", TEST_CA_PEM);
        let s = env(&[("CONVENE_WEBHOOK_CA_FILE", &good)]).unwrap();
        assert_eq!(s.webhook_ca_certs().unwrap().len(), 1);
        let missing = dir.join("missing.pem").to_str().unwrap().to_string();
        let no_cert = write("key.pem", "just some text, no PEM block\n");
        let garbage = write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        for (path, why) in [
            (&missing, "cannot read it"),
            (&no_cert, "holds no PEM certificate"),
            (&garbage, "is not a valid CA certificate"),
        ] {
            let e = env(&[("CONVENE_WEBHOOK_CA_FILE", path)]).unwrap_err();
            assert!(e.0.starts_with("CONVENE_WEBHOOK_CA_FILE: "), "{e}");
            assert!(e.0.contains(why), "{path}: {e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A self-signed P-256 CA certificate (CN=Convene config test CA), for the CA file test.
    const TEST_CA_PEM: &str = include_str!("../tests/data/webhook-test-ca.pem");

    #[test]
    fn redis_url_passwords_are_redacted() {
        for (url, shown) in [
            ("", ""),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            (
                "redis://user:hunter2@10.0.0.1:6379/1",
                "redis://user:[redacted]@10.0.0.1:6379/1",
            ),
            ("rediss://:hunter2@h:6380", "rediss://:[redacted]@h:6380"),
            ("redis://hunter2@h", "redis://[redacted]@h"),
            (
                "redis+unix:///run/redis.sock?db=2&pass=hunter2",
                "redis+unix:///run/redis.sock?db=2&pass=[redacted]",
            ),
            (
                "redis://h/0?password=hunter2",
                "redis://h/0?password=[redacted]",
            ),
            // An `@` after the host belongs to the path or query, not to a password.
            ("redis://h/0?x=a@b", "redis://h/0?x=a@b"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn redacted_toml_hides_every_secret_and_shows_the_rest() {
        let s = env(&[
            ("CONVENE_API_KEYS", "key-one-hunter2,key-two-hunter2"),
            (
                "CONVENE_TOKEN_SECRET",
                "token-secret-hunter2-0123456789abcdef",
            ),
            ("CONVENE_TURN_SECRET", "turn-secret-hunter2"),
            ("CONVENE_WEBHOOK_URLS", "http://app.internal/hook"),
            ("CONVENE_WEBHOOK_SECRET", "webhook-secret-hunter2"),
            ("CONVENE_REDIS_URL", "redis://u:hunter2@127.0.0.1:1/0"),
            ("CONVENE_MESH_MAX_PARTICIPANTS", "5"),
        ])
        .unwrap();
        let text = s.redacted_toml();
        assert!(!text.contains("hunter2"), "{text}");
        let table: toml::Table = text.parse().unwrap();
        assert_eq!(table["api_keys"].as_array().unwrap().len(), 2);
        assert_eq!(table["api_keys"][0].as_str(), Some(REDACTED));
        assert_eq!(table["token_secret"].as_str(), Some(REDACTED));
        assert_eq!(table["turn_secret"].as_str(), Some(REDACTED));
        assert_eq!(table["webhook_secret"].as_str(), Some(REDACTED));
        assert_eq!(
            table["redis_url"].as_str(),
            Some("redis://u:[redacted]@127.0.0.1:1/0")
        );
        assert_eq!(table["mesh_max_participants"].as_integer(), Some(5));
        // Every setting of the defaults file, in its order; nothing else.
        let defaults: toml::Table = DEFAULTS.parse().unwrap();
        assert_eq!(table.len(), defaults.len());
        assert!(text.starts_with("bind = "), "{text}");
        // Unset secrets stay visibly unset.
        let text = env(&[]).unwrap().redacted_toml();
        assert!(text.contains("token_secret = \"\"\n"), "{text}");
        assert!(text.contains("api_keys = []\n"), "{text}");
    }

    #[test]
    fn pending_socket_caps_default_to_10000_and_100_per_address() {
        let s = env(&[]).unwrap();
        assert_eq!(s.signaling_max_pending_sockets, 10000);
        assert_eq!(s.signaling_max_pending_sockets_per_ip, 100);
    }
}
