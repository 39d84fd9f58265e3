//! Bearer tokens of the HTTP transport: making them, and telling who a
//! request acts for.
//!
//! A token is `arb_` followed by 32 random bytes in base64url: the prefix
//! makes a leaked token easy to spot (secret scanners, logs). Only its
//! SHA-256 is stored. A token is long and random, so a plain hash is enough
//! (no salt, no slow hash: there is nothing to guess), and looking it up by
//! its hash leaks nothing useful through timing.
//!
//! A token the store accepted is trusted for a short while (`serve
//! --token-cache-ttl`, 1 s by default) without asking the store again: the
//! lookup goes through sqlx's worker thread and was about half the server's
//! CPU per call. A revocation made by `arbiter token revoke` in another
//! process therefore takes effect within that time (at once with a TTL of 0).
//! Checking whether the database changed instead would not help: every call
//! writes an audit record, so it changes all the time under load.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use crate::store::{LazyStore, TokenRecord};

/// What every token starts with.
pub const TOKEN_PREFIX: &str = "arb_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;
/// Characters of a token kept in the store to tell tokens apart in lists
/// (`arb_` and 8 characters: 48 of its 256 random bits, too few to matter).
const SHOWN_PREFIX_CHARS: usize = TOKEN_PREFIX.len() + 8;

/// Who an HTTP session acts for: its token's tenant and agent. A session made
/// without a token (`--no-auth`) has none, and acts as tenant `default` under
/// the name its client gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionIdentity {
    pub tenant: String,
    pub agent: String,
}

/// A token just made: the secret (shown once), and what is stored of it.
pub struct NewSecret {
    pub token: String,
    pub hash: String,
    pub prefix: String,
}

/// Make a new random token.
pub fn generate_token() -> Result<NewSecret, getrandom::Error> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes)?;
    let token = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    Ok(NewSecret {
        hash: token_hash(&token),
        prefix: token[..SHOWN_PREFIX_CHARS].to_string(),
        token,
    })
}

/// Hex SHA-256 of a token, as the store keeps it.
pub fn token_hash(token: &str) -> String {
    crate::store::audit::sha256_hex(token.as_bytes())
}

/// Why a request was not let in.
#[derive(Debug)]
pub enum AuthFailure {
    /// No `Authorization` header.
    Missing,
    /// An `Authorization` header that is not `Bearer arb_...`.
    Malformed,
    /// A well-formed token the store does not know.
    Unknown,
    /// A token that was revoked.
    Revoked { id: i64 },
    /// The store holding the tokens cannot be read: nobody can be let in.
    StoreUnavailable(String),
}

impl IntoResponse for AuthFailure {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self {
            AuthFailure::Missing => (
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "this server needs a bearer token: send `Authorization: Bearer arb_...`; \
                 an operator makes one with `arbiter token create --tenant NAME --agent NAME`"
                    .to_string(),
            ),
            AuthFailure::Malformed => (
                StatusCode::UNAUTHORIZED,
                "invalid_request",
                "the Authorization header is not `Bearer arb_...`; send the token exactly as \
                 `arbiter token create` printed it"
                    .to_string(),
            ),
            AuthFailure::Unknown => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "this token is not known to the server; check that it was made for this \
                 server's workspace (`arbiter token list`) or ask for a new one"
                    .to_string(),
            ),
            AuthFailure::Revoked { id } => (
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                format!("token {id} was revoked; ask the operator for a new one"),
            ),
            AuthFailure::StoreUnavailable(reason) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                format!(
                    "the server cannot check tokens: its store cannot be read ({reason}); \
                     the operator must fix the store (see /readyz), then retry"
                ),
            ),
        };
        let mut response = super::http::json_error(status, error, &message);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750: say which scheme, and why this one failed.
            let challenge = format!("Bearer realm=\"arbiter\", error=\"{error}\"");
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
        }
        response
    }
}

/// The token of a request, from `Authorization: Bearer <token>`.
fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthFailure> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthFailure::Missing)?
        .to_str()
        .map_err(|_| AuthFailure::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthFailure::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(TOKEN_PREFIX) {
        return Err(AuthFailure::Malformed);
    }
    Ok(token)
}

/// How long a verified token is trusted without asking the store (the most
/// a revocation from another process waits to take effect).
pub const DEFAULT_TOKEN_CACHE_TTL: Duration = Duration::from_secs(1);
/// Entries kept at most: a bound on memory, far above the tokens in use.
const CACHE_CAPACITY: usize = 4096;

/// Tokens the store accepted, by hash, with when it said so. Only accepted
/// tokens are kept: an unknown or revoked one asks the store every time.
pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, TokenRecord)>>,
}

impl TokenCache {
    /// A TTL of zero asks the store on every request.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, TokenRecord)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fresh(&self, hash: &str) -> Option<TokenRecord> {
        let entries = self.lock();
        let (checked, record) = entries.get(hash)?;
        (checked.elapsed() < self.ttl).then(|| record.clone())
    }

    fn remember(&self, hash: String, record: &TokenRecord) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.lock();
        if entries.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, (checked, _)| checked.elapsed() < ttl);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(hash, (Instant::now(), record.clone()));
    }

    fn forget(&self, hash: &str) {
        self.lock().remove(hash);
    }
}

/// The stored token a request carries, if it is known and not revoked: from
/// the cache while its entry is fresh, else from the store.
pub async fn authenticate(
    store: &LazyStore,
    cache: &TokenCache,
    headers: &HeaderMap,
) -> Result<TokenRecord, AuthFailure> {
    let token = bearer_token(headers)?;
    let hash = token_hash(token);
    if let Some(record) = cache.fresh(&hash) {
        return Ok(record);
    }
    let store = store.get().await.map_err(AuthFailure::StoreUnavailable)?;
    let found = store
        .token_by_hash(&hash)
        .await
        .map_err(|e| AuthFailure::StoreUnavailable(e.to_string()))?;
    match found {
        Some(record) if !record.is_revoked() => {
            cache.remember(hash, &record);
            Ok(record)
        }
        other => {
            cache.forget(&hash);
            Err(other.map_or(AuthFailure::Unknown, |r| AuthFailure::Revoked { id: r.id }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert!(
            a.token.starts_with("arb_") && a.token.len() == 4 + 43,
            "{}",
            a.token
        );
        assert_ne!(a.token, b.token);
        assert_eq!(a.hash, token_hash(&a.token));
        assert_eq!(a.hash.len(), 64);
        assert!(a.token.starts_with(&a.prefix) && a.prefix.len() == 12);
    }

    #[test]
    fn only_bearer_arb_tokens_are_read() {
        let mut h = HeaderMap::new();
        assert!(matches!(bearer_token(&h), Err(AuthFailure::Missing)));
        h.insert(header::AUTHORIZATION, "Basic dXNlcjpwdw==".parse().unwrap());
        assert!(matches!(bearer_token(&h), Err(AuthFailure::Malformed)));
        h.insert(header::AUTHORIZATION, "Bearer xyz".parse().unwrap());
        assert!(matches!(bearer_token(&h), Err(AuthFailure::Malformed)));
        h.insert(header::AUTHORIZATION, "bearer  arb_abc ".parse().unwrap());
        assert_eq!(bearer_token(&h).unwrap(), "arb_abc");
    }
}
