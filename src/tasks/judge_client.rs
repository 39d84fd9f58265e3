//! The model judge over HTTP: one non-streaming chat call per try, with a
//! time limit, bounded tries with doubling back-off, and a circuit breaker
//! per endpoint. Breakers live for the process and are shared by every
//! session of it (one endpoint is one endpoint, whoever calls it); a new
//! process starts with them closed. Everything sent and received is kept in
//! the [`Exchange`] for the store.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::judge::{
    self, BREAKER_OPEN, Breaker, CALL_FAILED, Exchange, JudgeCall, MALFORMED, Usage,
};
use super::now_ms;
use crate::policy::file::{JudgeSettings, JudgeSpec};

/// Most bytes of a request or reply kept with a call.
const KEEP_REQUEST: usize = 128 * 1024;
const KEEP_REPLY: usize = 16 * 1024;
/// The longest wait between two tries.
const MAX_BACKOFF_MS: u64 = 30_000;

static BREAKERS: LazyLock<Mutex<HashMap<String, Breaker>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn keep(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… (cut at {max} bytes)", &text[..end])
}

/// How one try ended.
struct Tried {
    http_status: Option<u16>,
    raw: Option<String>,
    usage: Usage,
    result: Result<judge::JudgeAnswer, (&'static str, String)>,
}

impl Tried {
    fn failed(rule: &'static str, message: String) -> Self {
        Self {
            http_status: None,
            raw: None,
            usage: Usage::default(),
            result: Err((rule, message)),
        }
    }
}

async fn try_once(
    spec: &JudgeSpec,
    url: &str,
    body: &str,
    timeout: Duration,
    bearer: Option<&str>,
) -> Tried {
    let http = match client() {
        Ok(c) => c,
        Err(e) => return Tried::failed(CALL_FAILED, e),
    };
    let mut req = http
        .post(url)
        .timeout(timeout)
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(token) = bearer {
        req = req.bearer_auth(token);
    }
    let sent = async {
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        Ok::<_, reqwest::Error>((status, text))
    }
    .await;
    let (status, text) = match sent {
        Ok(got) => got,
        Err(e) if e.is_timeout() => {
            return Tried::failed(
                CALL_FAILED,
                format!("no answer within {} ms", timeout.as_millis()),
            );
        }
        Err(e) => {
            let mut msg = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            return Tried::failed(CALL_FAILED, format!("the call failed: {msg}"));
        }
    };
    let mut tried = Tried {
        http_status: Some(status.as_u16()),
        raw: Some(keep(&text, KEEP_REPLY)),
        usage: Usage::default(),
        result: Err((CALL_FAILED, String::new())),
    };
    if !status.is_success() {
        tried.result = Err((CALL_FAILED, format!("HTTP status {status}")));
        return tried;
    }
    let reply: serde_json::Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            tried.result = Err((MALFORMED, format!("the reply is not JSON: {e}")));
            return tried;
        }
    };
    tried.usage = judge::usage(spec.api, &reply);
    tried.result = judge::reply_content(spec.api, &reply)
        .and_then(|content| judge::parse_answer(&content))
        .map_err(|e| (MALFORMED, e));
    tried
}

/// Ask one judge, trying up to `max_attempts` times; a transport failure
/// (not a malformed answer: the endpoint did answer) counts against the
/// endpoint's breaker, and an open breaker ends the tries at once.
pub async fn ask(spec: &JudgeSpec, settings: &JudgeSettings, system: &str, user: &str) -> Exchange {
    let url = judge::endpoint(spec);
    let body = judge::request_body(spec.api, &spec.model, system, user).to_string();
    let kept_request = keep(&body, KEEP_REQUEST);
    let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(settings.timeout_ms));
    let cooldown_ms = settings.breaker_cooldown_seconds as i64 * 1000;
    let bearer = spec
        .api_key_env
        .as_deref()
        .map(|var| std::env::var(var).map_err(|_| var.to_string()));
    let mut calls = Vec::new();
    for attempt in 1..=settings.max_attempts.max(1) {
        if attempt > 1 {
            let wait = settings
                .backoff_ms
                .saturating_mul(1 << (attempt - 2).min(16))
                .min(MAX_BACKOFF_MS);
            tokio::time::sleep(Duration::from_millis(wait)).await;
        }
        let started_at = now_ms();
        let open = BREAKERS
            .lock()
            .unwrap()
            .entry(url.clone())
            .or_default()
            .check(started_at, timeout.as_millis() as i64);
        if let Err(until) = open {
            calls.push(JudgeCall {
                attempt,
                started_at,
                duration_ms: 0,
                request: None,
                http_status: None,
                raw_answer: None,
                answer: None,
                rule_id: Some(BREAKER_OPEN.into()),
                error: Some(format!(
                    "not called: the circuit breaker of {url} is open until {} after {} failed calls in a row",
                    super::rfc3339_ms(until),
                    settings.breaker_failures
                )),
                prompt_tokens: None,
                completion_tokens: None,
                cost: 0.0,
            });
            break;
        }
        let clock = Instant::now();
        let tried = match &bearer {
            Some(Err(var)) => Tried::failed(
                CALL_FAILED,
                format!("the API key variable {var} is not set in the server's environment"),
            ),
            Some(Ok(token)) => try_once(spec, &url, &body, timeout, Some(token)).await,
            None => try_once(spec, &url, &body, timeout, None).await,
        };
        let duration_ms = clock.elapsed().as_millis() as i64;
        {
            let mut breakers = BREAKERS.lock().unwrap();
            let breaker = breakers.entry(url.clone()).or_default();
            match &tried.result {
                Err((rule, _)) if *rule == CALL_FAILED => {
                    if breaker.failure(now_ms(), settings.breaker_failures, cooldown_ms) {
                        tracing::warn!(judge = %spec.name, %url, "judge circuit breaker opened");
                    }
                }
                _ => breaker.success(),
            }
        }
        let (answer, rule_id, error) = match tried.result {
            Ok(a) => (Some(a), None, None),
            Err((rule, e)) => (None, Some(rule.to_string()), Some(e)),
        };
        if let Some(e) = &error {
            tracing::warn!(judge = %spec.name, attempt, error = %e, "judge gave no valid answer");
        }
        let done = answer.is_some();
        calls.push(JudgeCall {
            attempt,
            started_at,
            duration_ms,
            request: Some(kept_request.clone()),
            http_status: tried.http_status,
            raw_answer: tried.raw,
            answer,
            rule_id,
            error,
            prompt_tokens: tried.usage.prompt_tokens,
            completion_tokens: tried.usage.completion_tokens,
            cost: judge::cost(spec, tried.usage),
        });
        if done {
            break;
        }
    }
    Exchange::from_calls(
        spec.name.clone(),
        spec.api.as_str().to_string(),
        url,
        spec.model.clone(),
        calls,
    )
}
