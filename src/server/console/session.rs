//! Console sessions: a random id in an HttpOnly cookie maps to the admin
//! token that signed in (its hash, never the token), in memory only. A
//! session ends on logout, after [`IDLE`] without a request, or [`MAX_AGE`]
//! after sign-in; the token itself is checked against the store on every
//! request, so revoking it ends the session at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, header};
use base64::Engine;
use subtle::ConstantTimeEq;

/// The session cookie.
pub const COOKIE: &str = "arbiter_console";
/// The sign-in form's CSRF cookie (there is no session yet to hold it).
pub const LOGIN_COOKIE: &str = "arbiter_console_login";
/// A session ends after this long without a request.
const IDLE: Duration = Duration::from_secs(30 * 60);
/// ... and this long after sign-in, however busy.
const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Sessions kept at most; the oldest go first (sign-ins are by people).
const MAX_SESSIONS: usize = 1000;

/// A message for the next page (what a decision did, or why it did not).
#[derive(Debug, Clone)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

/// Who a console session acts for.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the admin token, to check it again on each request.
    pub token_hash: String,
    pub token_id: i64,
    pub tenant: String,
    pub person: String,
    /// Every form of this session carries it in a hidden field.
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
    flash: Option<Flash>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Start a session; returns its id (the cookie's value).
    pub fn create(
        &self,
        token_hash: String,
        token_id: i64,
        tenant: String,
        person: String,
    ) -> String {
        let id = random_secret();
        let now = Instant::now();
        let session = Session {
            token_hash,
            token_id,
            tenant,
            person,
            csrf: random_secret(),
            started: now,
            last_seen: now,
            flash: None,
        };
        let mut map = self.lock();
        map.retain(|_, s| live(s, now));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session of `id`, marked as used now (its flash is taken).
    pub fn touch(&self, id: &str) -> Option<(Session, Option<Flash>)> {
        let now = Instant::now();
        let mut map = self.lock();
        let session = map.get_mut(id)?;
        if !live(session, now) {
            map.remove(id);
            return None;
        }
        session.last_seen = now;
        let flash = session.flash.take();
        Some((session.clone(), flash))
    }

    pub fn flash(&self, id: &str, ok: bool, text: String) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some(Flash { ok, text });
        }
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// End every session of a token (it was revoked or is no longer admin).
    pub fn end_token(&self, token_id: i64) {
        self.lock().retain(|_, s| s.token_id != token_id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.started) < MAX_AGE
}

/// 32 random bytes, base64url: session ids and CSRF tokens.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    // The OS's generator failing leaves nothing safe to do.
    getrandom::fill(&mut bytes).expect("the operating system's random generator works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Whether a submitted secret equals the expected one, in constant time
/// (an empty expected secret matches nothing).
pub fn same_secret(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// The value of cookie `name`, if the request has it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim().to_string())
}

/// A `Set-Cookie` value scoped to the console: never readable by scripts,
/// never sent by another site's page. (No `Secure`: the server speaks plain
/// HTTP; with TLS in front, the proxy can add it.)
pub fn set_cookie(name: &str, value: &str) -> String {
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict")
}

/// A `Set-Cookie` value that deletes a cookie.
pub fn clear_cookie(name: &str) -> String {
    format!("{name}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_compare_whole_and_never_empty() {
        let s = random_secret();
        assert_eq!(s.len(), 43);
        assert!(same_secret(&s, &s.clone()));
        assert!(!same_secret(&s, &s[..42]));
        assert!(!same_secret(&s, ""));
        assert!(!same_secret("", ""));
    }

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "x_arbiter_console=bad; arbiter_console=good"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("good"));
        assert_eq!(cookie(&h, LOGIN_COOKIE), None);
    }

    #[test]
    fn sessions_end_on_logout_and_revocation() {
        let sessions = Sessions::default();
        let a = sessions.create("h".into(), 7, "default".into(), "alice".into());
        let b = sessions.create("h".into(), 7, "default".into(), "alice".into());
        assert_ne!(a, b);
        sessions.flash(&a, true, "done".into());
        let (s, flash) = sessions.touch(&a).unwrap();
        assert_eq!(s.person, "alice");
        assert_eq!(flash.unwrap().text, "done");
        assert!(
            sessions.touch(&a).unwrap().1.is_none(),
            "a flash shows once"
        );
        sessions.end(&a);
        assert!(sessions.touch(&a).is_none());
        sessions.end_token(7);
        assert!(sessions.touch(&b).is_none());
    }
}
