//! Room tokens: HS256 JWTs that let an SDK client join one room.
//!
//! A token names its room (`sub`) and carries the room's `nonce`, a random value that lives
//! and dies with the room: a token of a deleted room never works again, not even for a new
//! room of the same name. The algorithm is pinned, `exp` is required, issuer and
//! audience are set and checked, and a `nbf` ("not before"), when a token carries one, is
//! honoured: a token is refused until that time.

//!
//! Two kinds of token share these claims. The room token (made with the room, shown in
//! its `token` field) names nobody: whoever holds it joins anonymously. It carries the
//! room's token generation (`gen`, absent for generation 0): rotating the room token bumps
//! the room's generation, so the older room tokens stop working for new joins. A
//! participant token (issued for one `identity` by `POST …/room/{id}/token`) also carries
//! that identity, optionally a name and `participantInfo`, and its [`Permissions`]; it
//! does not depend on the generation (ban the identity instead).

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a participant may do in its room. Every permission is granted unless a participant
/// token withholds it; a room token grants them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    /// Send media: in SFU rooms the server refuses its send tracks; in MESH rooms signaling
    /// refuses to relay its SDP that would send media.
    pub can_publish: bool,
    /// Receive media: in SFU rooms the server forwards nothing to it.
    pub can_subscribe: bool,
    /// Send `message` frames.
    pub can_send_messages: bool,
}

impl Default for Permissions {
    fn default() -> Self {
        Self {
            can_publish: true,
            can_subscribe: true,
            can_send_messages: true,
        }
    }
}

/// Who a participant token lets join, and as what.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Grant {
    pub identity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_info: Option<Value>,
    #[serde(default)]
    pub permissions: Permissions,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// The claims of a room or participant token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomClaims {
    pub iss: String,
    pub aud: String,
    /// The room id.
    pub sub: String,
    /// The room's per-room value; see the module docs.
    pub nonce: String,
    pub iat: u64,
    pub exp: u64,
    /// A room token's generation (see the module docs); 0 when absent.
    #[serde(rename = "gen", default, skip_serializing_if = "is_zero")]
    pub generation: u32,
    /// A participant token's grant; `None` in a room token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<Grant>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    Expired,
    Invalid,
}

/// A short public fingerprint of a token secret (16 hex digits of an HMAC-SHA256 keyed by
/// it), which nodes register so that two nodes whose secrets differ can tell without either
/// secret leaving its node. Nodes with the same secret, issuer and audience verify each
/// other's room tokens.
pub fn secret_fingerprint(secret: &[u8], issuer: &str, audience: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(secret)
        .expect("HMAC takes a key of any length");
    mac.update(b"convene node secret fingerprint\0");
    mac.update(issuer.as_bytes());
    mac.update(b"\0");
    mac.update(audience.as_bytes());
    mac.finalize().into_bytes()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[derive(Clone)]
pub struct RoomTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl RoomTokens {
    pub fn new(secret: &[u8], issuer: &str, audience: &str) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.validate_exp = true;
        // The service never issues `nbf`, but a token that carries one is not valid before it.
        validation.validate_nbf = true;
        validation.leeway = 0;
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_string(),
            audience: audience.to_string(),
        }
    }

    /// Issues a token for the room, valid for `ttl_seconds` from `now` (seconds since the epoch).
    pub fn issue(&self, room_id: &str, nonce: &str, now: u64, ttl_seconds: u64) -> (String, u64) {
        self.issue_generation(room_id, nonce, 0, now, ttl_seconds)
    }

    /// Issues a room token of the room's token generation `generation`.
    pub fn issue_generation(
        &self,
        room_id: &str,
        nonce: &str,
        generation: u32,
        now: u64,
        ttl_seconds: u64,
    ) -> (String, u64) {
        self.sign(self.claims(room_id, nonce, generation, None, now, ttl_seconds))
    }

    /// Issues a participant token: joins room `room_id` (of nonce `nonce`) as `grant`.
    pub fn issue_participant(
        &self,
        room_id: &str,
        nonce: &str,
        grant: Grant,
        now: u64,
        ttl_seconds: u64,
    ) -> (String, u64) {
        self.sign(self.claims(room_id, nonce, 0, Some(grant), now, ttl_seconds))
    }

    fn claims(
        &self,
        room_id: &str,
        nonce: &str,
        generation: u32,
        grant: Option<Grant>,
        now: u64,
        ttl_seconds: u64,
    ) -> RoomClaims {
        RoomClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: room_id.to_string(),
            nonce: nonce.to_string(),
            iat: now,
            exp: now + ttl_seconds,
            generation,
            grant,
        }
    }

    fn sign(&self, claims: RoomClaims) -> (String, u64) {
        // Signing an HMAC over serializable claims cannot fail.
        let token = encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing of room claims");
        (token, claims.exp)
    }

    /// Verifies signature, algorithm, issuer, audience, expiry and `nbf` (when present). The caller checks that
    /// the room named by `sub` exists and has the token's `nonce`.
    pub fn verify(&self, token: &str) -> Result<RoomClaims, TokenError> {
        decode::<RoomClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn tokens() -> RoomTokens {
        RoomTokens::new(SECRET, "convene", "convene-room")
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn fingerprints_tell_secrets_apart() {
        let a = secret_fingerprint(SECRET, "convene", "convene-room");
        assert_eq!(a, secret_fingerprint(SECRET, "convene", "convene-room"));
        assert_eq!(a.len(), 16);
        assert_ne!(
            a,
            secret_fingerprint(
                b"another-secret-another-secret-xx",
                "convene",
                "convene-room"
            )
        );
        assert_ne!(a, secret_fingerprint(SECRET, "other", "convene-room"));
    }

    #[test]
    fn a_fresh_token_verifies() {
        let (token, exp) = tokens().issue("RO-1", "n1", now(), 60);
        let claims = tokens().verify(&token).unwrap();
        assert_eq!(claims.sub, "RO-1");
        assert_eq!(claims.nonce, "n1");
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn generations_and_grants_survive_the_round_trip() {
        let (token, _) = tokens().issue_generation("RO-1", "n1", 3, now(), 60);
        let claims = tokens().verify(&token).unwrap();
        assert_eq!((claims.generation, claims.grant), (3, None));
        // A token of generation 0 says nothing of it (as tokens before rotation existed).
        let (token, _) = tokens().issue("RO-1", "n1", now(), 60);
        let payload = token.split('.').nth(1).unwrap();
        let claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert!(claims.get("gen").is_none(), "{claims}");

        let grant = Grant {
            identity: "alice".into(),
            name: Some("Alice".into()),
            participant_info: Some(serde_json::json!({"team": "red"})),
            permissions: Permissions {
                can_publish: false,
                ..Permissions::default()
            },
        };
        let (token, exp) = tokens().issue_participant("RO-1", "n1", grant.clone(), now(), 90);
        let claims = tokens().verify(&token).unwrap();
        assert_eq!(claims.grant, Some(grant));
        assert_eq!(claims.exp, exp);
        assert_eq!(claims.generation, 0);
    }

    #[test]
    fn a_grant_without_permissions_grants_them_all() {
        let grant: Grant = serde_json::from_value(serde_json::json!({"identity": "bob"})).unwrap();
        assert_eq!(grant.permissions, Permissions::default());
        assert!(grant.permissions.can_publish && grant.permissions.can_subscribe);
    }

    #[test]
    fn alg_none_is_refused() {
        let (token, _) = tokens().issue("RO-1", "n1", now(), 60);
        let payload = token.split('.').nth(1).unwrap();
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        assert_eq!(
            tokens().verify(&format!("{header}.{payload}.")),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            tokens().verify(&format!("{header}.{payload}")),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn other_algorithms_are_refused() {
        let claims = tokens()
            .verify(&tokens().issue("RO-1", "n1", now(), 60).0)
            .unwrap();
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = encode(
                &Header::new(alg),
                &claims,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert_eq!(tokens().verify(&token), Err(TokenError::Invalid), "{alg:?}");
        }
    }

    #[test]
    fn expired_tokens_are_refused() {
        let (token, _) = tokens().issue("RO-1", "n1", now() - 120, 60);
        assert_eq!(tokens().verify(&token), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_without_exp_is_refused() {
        #[derive(Serialize)]
        struct NoExp<'a> {
            iss: &'a str,
            aud: &'a str,
            sub: &'a str,
            nonce: &'a str,
        }
        let claims = NoExp {
            iss: "convene",
            aud: "convene-room",
            sub: "RO-1",
            nonce: "n",
        };
        let token = encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(tokens().verify(&token), Err(TokenError::Invalid));
    }

    /// Signs `claims` with the test secret, as someone who knows it could.
    fn sign(claims: &serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    fn claims_with_nbf(nbf: Option<u64>) -> serde_json::Value {
        let mut claims = serde_json::json!({
            "iss": "convene", "aud": "convene-room", "sub": "RO-1", "nonce": "n1",
            "iat": now(), "exp": now() + 600,
        });
        if let Some(nbf) = nbf {
            claims["nbf"] = nbf.into();
        }
        claims
    }

    #[test]
    fn a_future_nbf_is_refused() {
        let token = sign(&claims_with_nbf(Some(now() + 300)));
        assert_eq!(tokens().verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_past_or_absent_nbf_is_accepted() {
        for nbf in [Some(now() - 300), Some(now()), None] {
            let claims = tokens().verify(&sign(&claims_with_nbf(nbf))).unwrap();
            assert_eq!(claims.sub, "RO-1", "{nbf:?}");
        }
    }

    #[test]
    fn a_malformed_nbf_is_refused() {
        let mut claims = claims_with_nbf(None);
        claims["nbf"] = "tomorrow".into();
        assert_eq!(tokens().verify(&sign(&claims)), Err(TokenError::Invalid));
    }

    #[test]
    fn a_wrong_secret_is_refused() {
        let other = RoomTokens::new(
            b"another-secret-another-secret-xx",
            "convene",
            "convene-room",
        );
        let (token, _) = other.issue("RO-1", "n1", now(), 60);
        assert_eq!(tokens().verify(&token), Err(TokenError::Invalid));
    }

    #[test]
    fn a_wrong_audience_or_issuer_is_refused() {
        let aud = RoomTokens::new(SECRET, "convene", "someone-else");
        assert_eq!(
            tokens().verify(&aud.issue("RO-1", "n", now(), 60).0),
            Err(TokenError::Invalid)
        );
        let iss = RoomTokens::new(SECRET, "mallory", "convene-room");
        assert_eq!(
            tokens().verify(&iss.issue("RO-1", "n", now(), 60).0),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let (token, _) = tokens().issue("RO-1", "n1", now(), 60);
        let parts: Vec<&str> = token.split('.').collect();
        let mut claims: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        claims["sub"] = "RO-2".into();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap());
        assert_eq!(
            tokens().verify(&format!("{}.{forged}.{}", parts[0], parts[2])),
            Err(TokenError::Invalid)
        );
        assert_eq!(tokens().verify("not-a-token"), Err(TokenError::Invalid));
    }
}
