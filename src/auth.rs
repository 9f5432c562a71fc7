//! API keys: several at once (so keys can be rotated), compared in constant time.
//!
//! Keys are hashed with SHA-256 at start-up; a presented key is hashed too and compared
//! against every configured hash with `subtle`, without an early exit, so neither the
//! position nor the length of a matching key leaks through timing. Keys are never logged.

use crate::error::ApiError;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The header that carries an API key, as published.
pub const API_KEY_HEADER: &str = "x-vcs-token";

#[derive(Clone)]
pub struct ApiKeys {
    hashes: Vec<[u8; 32]>,
}

impl ApiKeys {
    pub fn new<S: AsRef<str>>(keys: &[S]) -> Self {
        Self {
            hashes: keys.iter().map(|k| hash(k.as_ref())).collect(),
        }
    }

    /// Whether `presented` is one of the configured keys, in time independent of which.
    pub fn accepts(&self, presented: &str) -> bool {
        let presented = hash(presented);
        let mut found = subtle::Choice::from(0);
        for known in &self.hashes {
            found |= known.ct_eq(&presented);
        }
        found.into()
    }

    /// Checks a request's key: 401 when missing or empty, 400 `REALTIME-00009` when unknown.
    pub fn check(&self, presented: Option<&str>) -> Result<(), ApiError> {
        match presented.map(str::trim) {
            None | Some("") => Err(ApiError::authorization_missing()),
            Some(key) if self.accepts(key) => Ok(()),
            Some(key) => Err(ApiError::invalid_token(key)),
        }
    }
}

fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn accepts_every_configured_key_and_nothing_else() {
        let keys = ApiKeys::new(&["old-key", "new-key"]);
        assert!(keys.accepts("old-key"));
        assert!(keys.accepts("new-key"));
        assert!(!keys.accepts("new-ke"));
        assert!(!keys.accepts("new-key2"));
        assert!(!keys.accepts(""));
    }

    #[test]
    fn missing_and_unknown_keys_get_their_codes() {
        let keys = ApiKeys::new(&["k"]);
        assert_eq!(
            keys.check(None).unwrap_err().code,
            Code::AuthorizationMissing
        );
        assert_eq!(
            keys.check(Some("  ")).unwrap_err().code,
            Code::AuthorizationMissing
        );
        assert_eq!(keys.check(Some("x")).unwrap_err().code, Code::InvalidToken);
        assert!(keys.check(Some("k")).is_ok());
    }
}
