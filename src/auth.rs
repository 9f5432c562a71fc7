//! API keys: several at once (so keys can be rotated), compared in constant time.
//!
//! Keys are hashed with SHA-256 at start-up; a presented key is hashed too and compared
//! against every configured hash with `subtle`, without an early exit, so neither the
//! position nor the length of a matching key leaks through timing. Keys are never logged.
//!
//! A request carries at most one key header: two of them (even two equal ones) are refused,
//! so that no proxy or server in between can pick a different one than this service does.

use crate::error::ApiError;
use actix_web::http::header::HeaderMap;
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

/// The key header of a request: `None` when absent, 400 `BASE-00016` naming the header when
/// it is given more than once. A value that is not visible ASCII reads as an unknown key.
pub fn presented_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(API_KEY_HEADER);
    let first = values.next();
    if values.next().is_some() {
        return Err(ApiError::invalid_value(API_KEY_HEADER));
    }
    Ok(first.map(|v| v.to_str().unwrap_or("\u{fffd}")))
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
    fn a_key_header_given_twice_is_an_invalid_value() {
        use actix_web::http::header::{HeaderName, HeaderValue};
        let name = HeaderName::from_static(API_KEY_HEADER);
        let mut headers = HeaderMap::new();
        assert_eq!(presented_key(&headers), Ok(None));
        headers.append(name.clone(), HeaderValue::from_static("k"));
        assert_eq!(presented_key(&headers), Ok(Some("k")));
        headers.append(name, HeaderValue::from_static("k"));
        let error = presented_key(&headers).unwrap_err();
        assert_eq!(error, ApiError::invalid_value("x-vcs-token"));
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
