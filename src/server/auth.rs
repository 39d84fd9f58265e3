//! Bearer tokens of the HTTP transport: making them, and telling who a
//! request acts for.
//!
//! A token is `arb_` followed by 32 random bytes in base64url: the prefix
//! makes a leaked token easy to spot (secret scanners, logs). Only its
//! SHA-256 is stored. A token is long and random, so a plain hash is enough
//! (no salt, no slow hash: there is nothing to guess), and looking it up by
//! its hash leaks nothing useful through timing.
//!
//! Every request is checked against the store, so a revocation made by
//! `arbiter token revoke` in another process takes effect on the next request.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

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
    hex::encode(Sha256::digest(token.as_bytes()))
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

/// The stored token a request carries, if it is known and not revoked.
pub async fn authenticate(
    store: &LazyStore,
    headers: &HeaderMap,
) -> Result<TokenRecord, AuthFailure> {
    let token = bearer_token(headers)?;
    let store = store.get().await.map_err(AuthFailure::StoreUnavailable)?;
    let record = store
        .token_by_hash(&token_hash(token))
        .await
        .map_err(|e| AuthFailure::StoreUnavailable(e.to_string()))?
        .ok_or(AuthFailure::Unknown)?;
    if record.is_revoked() {
        return Err(AuthFailure::Revoked { id: record.id });
    }
    Ok(record)
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
