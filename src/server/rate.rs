//! Per-token request limits of the HTTP server: each token may make at most
//! N requests per period (a token bucket of N, refilled evenly over the
//! period, by `governor`'s GCRA). A request over the limit gets 429 with
//! `Retry-After`, before any MCP work is done.
//!
//! The limit of a token is its own (`arbiter token create --rate-limit`) or
//! the server's (`serve --rate-limit`, default [`DEFAULT_RATE_LIMIT`]).
//! On PostgreSQL the counts live in the database (`Store::rate_take`, the
//! same GCRA on the database's clock, one round trip per request), so several
//! servers on one database share a token's budget; on SQLite they live in
//! this process. If the database cannot count a request, this process does.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};

use crate::store::LazyStore;

/// The server's limit per token when neither the token nor `serve` names one:
/// 20 requests a second sustained, with bursts of up to 1,200.
pub const DEFAULT_RATE_LIMIT: &str = "1200/min";

/// How many requests a token may make per period, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Off,
    Per {
        requests: NonZeroU32,
        period: Duration,
    },
}

impl FromStr for RateLimit {
    type Err = String;

    /// `off`, or `N/s`, `N/min`, `N/h` (also `sec`, `second`, `m`, `minute`, `hour`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("off") {
            return Ok(RateLimit::Off);
        }
        let bad = || {
            format!(
                "rate limit `{s}`: write N/s, N/min or N/h with N from 1 to 1000000 \
                 (for example 1200/min), or `off`"
            )
        };
        let (n, unit) = s.split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        if requests > 1_000_000 {
            return Err(bad());
        }
        let requests = NonZeroU32::new(requests).ok_or_else(bad)?;
        let period = match unit.trim().to_ascii_lowercase().as_str() {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        Ok(RateLimit::Per { requests, period })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RateLimit::Off => f.write_str("off"),
            RateLimit::Per { requests, period } => {
                let unit = match period.as_secs() {
                    1 => "s",
                    60 => "min",
                    _ => "h",
                };
                write!(f, "{requests}/{unit}")
            }
        }
    }
}

impl RateLimit {
    fn quota(self) -> Option<Quota> {
        match self {
            RateLimit::Off => None,
            RateLimit::Per { requests, period } => {
                let every = period / requests.get();
                Some(Quota::with_period(every)?.allow_burst(requests))
            }
        }
    }
}

/// A request refused for its token's limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    pub limit: RateLimit,
    /// Whole seconds until a request would be let in (at least 1).
    pub retry_after_secs: u64,
}

/// Each token's bucket, made on its first request.
pub struct RateLimits {
    default: RateLimit,
    buckets: Mutex<HashMap<i64, (RateLimit, Arc<DefaultDirectRateLimiter>)>>,
    /// The store that may count for every process (PostgreSQL).
    store: Option<Arc<LazyStore>>,
}

impl RateLimits {
    /// Counts kept in this process only.
    pub fn new(default: RateLimit) -> Self {
        Self {
            default,
            buckets: Mutex::new(HashMap::new()),
            store: None,
        }
    }

    /// Counts kept by `store` when it shares them (PostgreSQL), else here.
    pub fn with_store(default: RateLimit, store: Arc<LazyStore>) -> Self {
        Self {
            store: Some(store),
            ..Self::new(default)
        }
    }

    /// Count one request of `token` (of `tenant`), whose own limit is `own`
    /// (as stored: `None` is the server's). Refused when the bucket is empty.
    pub async fn check(
        &self,
        token: i64,
        tenant: &str,
        own: Option<&str>,
    ) -> Result<(), OverLimit> {
        // A stored limit that no longer parses falls back to the server's:
        // `token create` validated it, so only a hand-edited row gets here.
        let limit = own
            .and_then(|s| s.parse::<RateLimit>().ok())
            .unwrap_or(self.default);
        let RateLimit::Per { requests, period } = limit else {
            return Ok(());
        };
        if let Some(wait) = self.shared_count(token, tenant, requests, period).await {
            return if wait.is_zero() {
                Ok(())
            } else {
                Err(over_limit(limit, wait))
            };
        }
        self.local_count(token, limit)
    }

    /// The store's count: how long to wait (zero: let in), or `None` when
    /// the store keeps no shared counts or could not count this one.
    async fn shared_count(
        &self,
        token: i64,
        tenant: &str,
        requests: NonZeroU32,
        period: Duration,
    ) -> Option<Duration> {
        let store = self.store.as_ref()?.get().await.ok()?;
        let interval = period / requests.get();
        match store
            .rate_take(tenant, token, interval, period - interval)
            .await
        {
            Ok(wait) => wait,
            Err(e) => {
                tracing::warn!(error = %e, token, "the store could not count a request; counting it in this process");
                None
            }
        }
    }

    fn local_count(&self, token: i64, limit: RateLimit) -> Result<(), OverLimit> {
        let Some(quota) = limit.quota() else {
            return Ok(());
        };
        let bucket = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
            let entry = buckets
                .entry(token)
                .or_insert_with(|| (limit, Arc::new(DefaultDirectRateLimiter::direct(quota))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(DefaultDirectRateLimiter::direct(quota)));
            }
            entry.1.clone()
        };
        bucket.check().map_err(|not_until| {
            over_limit(
                limit,
                not_until.wait_time_from(DefaultClock::default().now()),
            )
        })
    }
}

fn over_limit(limit: RateLimit, wait: Duration) -> OverLimit {
    OverLimit {
        limit,
        // Whole seconds, rounded up: never 0, which would invite a retry at once.
        retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_parse_and_print() {
        for (text, shown) in [
            ("1200/min", "1200/min"),
            ("5/s", "5/s"),
            ("10 / hour", "10/h"),
            ("3/SEC", "3/s"),
            ("off", "off"),
        ] {
            let limit: RateLimit = text.parse().unwrap();
            assert_eq!(limit.to_string(), shown);
            assert_eq!(shown.parse::<RateLimit>().unwrap(), limit);
        }
        for bad in ["", "0/s", "-1/s", "10", "10/day", "x/min", "2000000/s"] {
            let err = bad.parse::<RateLimit>().unwrap_err();
            assert!(err.contains("N/s, N/min or N/h"), "{bad}: {err}");
        }
    }

    #[tokio::test]
    async fn a_token_gets_its_burst_then_waits_and_tokens_count_apart() {
        let limits = RateLimits::new("3/h".parse().unwrap());
        for _ in 0..3 {
            limits.check(1, "t", None).await.unwrap();
        }
        let over = limits.check(1, "t", None).await.unwrap_err();
        assert_eq!(over.limit.to_string(), "3/h");
        // One request comes back every 20 minutes.
        assert!((1100..=1200).contains(&over.retry_after_secs), "{over:?}");
        // Another token has its own bucket; its own limit outranks the server's.
        limits.check(2, "t", Some("1/h")).await.unwrap();
        assert!(limits.check(2, "t", Some("1/h")).await.is_err());
        for _ in 0..100 {
            limits.check(3, "t", Some("off")).await.unwrap();
        }
    }

    #[tokio::test]
    async fn off_lets_everything_in() {
        let limits = RateLimits::new(RateLimit::Off);
        for _ in 0..10_000 {
            limits.check(1, "t", None).await.unwrap();
        }
    }
}
