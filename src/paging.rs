//! Paging tokens: opaque to clients, signed so that a token this service did not issue, or
//! an altered one, is refused (`REALTIME-00009`).
//!
//! A token is `base64url(creationTime "." id "." mac)` where `mac` is an HMAC-SHA256 (first
//! 16 bytes) over `creationTime "." id`, keyed by a key derived from the token secret.

use crate::model::Cursor;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;
const MAC_LEN: usize = 16;

#[derive(Clone)]
pub struct PageTokens {
    key: [u8; 32],
}

impl PageTokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"convene paging token v1\0");
        hasher.update(secret);
        Self {
            key: hasher.finalize().into(),
        }
    }

    fn mac(&self, body: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(body.as_bytes());
        mac
    }

    pub fn encode(&self, cursor: &Cursor) -> String {
        let body = format!("{}.{}", cursor.creation_time, cursor.id);
        let tag = self.mac(&body).finalize().into_bytes();
        let mut bytes = body.into_bytes();
        bytes.push(b'.');
        bytes.extend_from_slice(&tag[..MAC_LEN]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The cursor in a token, or `None` for anything this service did not issue.
    pub fn decode(&self, token: &str) -> Option<Cursor> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        if bytes.len() <= MAC_LEN + 1 {
            return None;
        }
        let (body, tag) = bytes.split_at(bytes.len() - MAC_LEN - 1);
        let (dot, tag) = tag.split_first()?;
        let body = std::str::from_utf8(body).ok()?;
        if *dot != b'.' {
            return None;
        }
        self.mac(body).verify_truncated_left(tag).ok()?;
        let (time, id) = body.split_once('.')?;
        Some(Cursor {
            creation_time: time.parse().ok()?,
            id: id.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_forgery() {
        let tokens = PageTokens::new(b"secret");
        let cursor = Cursor {
            creation_time: 1649425468429,
            id: "RO-7403cb88-8e88-452a-8bb7-0923923348f7".into(),
        };
        let token = tokens.encode(&cursor);
        assert_eq!(tokens.decode(&token), Some(cursor.clone()));
        assert_eq!(PageTokens::new(b"other").decode(&token), None);
        assert_eq!(tokens.decode("B53AF55E"), None);
        assert_eq!(tokens.decode(""), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[0] = b'2';
        assert_eq!(tokens.decode(&URL_SAFE_NO_PAD.encode(bytes)), None);
    }
}
