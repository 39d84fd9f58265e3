//! A circuit breaker for the database: after a few connection failures in a
//! row, calls that need it fail at once with the reason (instead of each
//! waiting out the pool's timeout), and one call at a time is let through
//! every retry interval to see whether it is back (half-open). A success
//! closes it again; no restart is needed.
//!
//! Only the state machine lives here; `postgres.rs` (connections) and
//! `LazyStore` (opening the store) report to it. Time is passed in, so the
//! tests drive it without sleeping.

use std::time::{Duration, Instant, SystemTime};

/// Rule id of a call refused because the database is unreachable.
pub const UNREACHABLE: &str = "STORE-001";
/// Rule id of a call refused because the store could not be opened.
pub const NOT_OPENED: &str = "STORE-002";

/// The retry interval: `ARBITER_DB_RETRY_MS`, else 2 s.
pub fn retry_interval() -> Duration {
    std::env::var("ARBITER_DB_RETRY_MS")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(Duration::from_secs(2), |ms| {
            Duration::from_millis(ms.max(10))
        })
}

#[derive(Debug)]
pub struct Breaker {
    /// Failures in a row that open the breaker.
    threshold: u32,
    /// How long it stays open before one probe is let through.
    retry: Duration,
    state: State,
    /// The run of failures in progress: since when, how many, the last error.
    outage: Option<Run>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    /// Refusing until `retry_at`.
    Open {
        retry_at: Instant,
    },
    /// One probe is out; others are refused until it reports or `until`
    /// passes (a probe whose caller gave up never reports).
    HalfOpen {
        until: Instant,
    },
}

#[derive(Debug, Clone)]
struct Run {
    since: SystemTime,
    failures: u32,
    last_error: String,
}

/// Why a call was refused: what the error message says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outage {
    /// Wall-clock time of the first failure of the run.
    pub since: SystemTime,
    pub failures: u32,
    pub last_error: String,
    /// The retry interval.
    pub retry: Duration,
}

impl Outage {
    /// `since` as people read it (UTC, to the second).
    pub fn since_text(&self) -> String {
        let t = time::OffsetDateTime::from(self.since);
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
        t.format(&format).unwrap_or_default()
    }

    /// The retry interval as people read it.
    pub fn retry_text(&self) -> String {
        let ms = self.retry.as_millis();
        if ms.is_multiple_of(1000) {
            format!("{}s", ms / 1000)
        } else {
            format!("{ms}ms")
        }
    }
}

impl Breaker {
    pub fn new(threshold: u32, retry: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            retry,
            state: State::Closed,
            outage: None,
        }
    }

    /// May a call go to the database now? `Err` says why not. When open and
    /// the retry interval has passed, this call is the probe.
    pub fn admit(&mut self, now: Instant) -> Result<(), Outage> {
        match self.state {
            State::Closed => Ok(()),
            State::Open { retry_at } | State::HalfOpen { until: retry_at } if now >= retry_at => {
                // The probe gets as long as a retry interval (at least the
                // pool's timeout, see `postgres.rs`) before another is let through.
                self.state = State::HalfOpen {
                    until: now + self.retry.max(Duration::from_secs(1)) * 4,
                };
                Ok(())
            }
            State::Open { .. } | State::HalfOpen { .. } => Err(self.outage()),
        }
    }

    /// The call reached the database.
    pub fn success(&mut self) {
        if self.outage.is_some() {
            tracing::info!("the store answers again");
        }
        self.state = State::Closed;
        self.outage = None;
    }

    /// The call could not reach the database.
    pub fn failure(&mut self, now: Instant, error: &str) {
        let run = self.outage.get_or_insert_with(|| Run {
            since: SystemTime::now(),
            failures: 0,
            last_error: String::new(),
        });
        run.failures += 1;
        run.last_error = error.to_string();
        let trips = match self.state {
            State::Closed => run.failures >= self.threshold,
            State::Open { .. } | State::HalfOpen { .. } => true,
        };
        if trips {
            if matches!(self.state, State::Closed) {
                tracing::warn!(failures = run.failures, error = %error, "the store is unreachable; calls fail fast until a probe gets through");
            }
            self.state = State::Open {
                retry_at: now + self.retry,
            };
        }
    }

    /// Whether calls are being refused (open, or a probe is out).
    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed)
    }

    /// The current run of failures, if any (also while still closed).
    pub fn outage(&self) -> Outage {
        let run = self.outage.clone().unwrap_or(Run {
            since: SystemTime::now(),
            failures: 0,
            last_error: String::new(),
        });
        Outage {
            since: run.since,
            failures: run.failures,
            last_error: run.last_error,
            retry: self.retry,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RETRY: Duration = Duration::from_secs(2);

    #[test]
    fn opens_after_the_threshold_of_failures_in_a_row() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, RETRY);
        for _ in 0..2 {
            assert!(b.admit(t0).is_ok());
            b.failure(t0, "refused");
        }
        assert!(!b.is_open(), "two failures of three leave it closed");
        assert!(b.admit(t0).is_ok());
        b.failure(t0, "refused again");
        assert!(b.is_open());
        let why = b.admit(t0 + Duration::from_millis(10)).unwrap_err();
        assert_eq!(why.failures, 3);
        assert_eq!(why.last_error, "refused again");
        assert_eq!(why.retry_text(), "2s");
    }

    #[test]
    fn a_success_resets_the_count() {
        let t0 = Instant::now();
        let mut b = Breaker::new(2, RETRY);
        b.failure(t0, "x");
        b.success();
        b.failure(t0, "x");
        assert!(!b.is_open(), "failures must be in a row");
        assert!(b.admit(t0).is_ok());
    }

    #[test]
    fn after_the_interval_one_probe_goes_through_and_a_success_closes_it() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, RETRY);
        b.failure(t0, "down");
        assert!(b.admit(t0 + RETRY - Duration::from_millis(1)).is_err());
        let later = t0 + RETRY;
        assert!(b.admit(later).is_ok(), "the probe");
        assert!(b.admit(later).is_err(), "only one probe at a time");
        b.success();
        assert!(!b.is_open());
        assert!(b.admit(later).is_ok());
        assert!(b.admit(later).is_ok());
    }

    #[test]
    fn a_failed_probe_opens_it_for_another_interval_and_keeps_the_start_of_the_outage() {
        let t0 = Instant::now();
        let mut b = Breaker::new(3, RETRY);
        for _ in 0..3 {
            b.failure(t0, "down");
        }
        let since = b.outage().since;
        let probe_at = t0 + RETRY;
        assert!(b.admit(probe_at).is_ok());
        b.failure(probe_at, "still down");
        let why = b.admit(probe_at + Duration::from_millis(1)).unwrap_err();
        assert_eq!(why.since, since);
        assert_eq!(why.failures, 4);
        assert!(b.admit(probe_at + RETRY).is_ok(), "the next probe");
    }

    #[test]
    fn a_probe_that_never_reports_does_not_keep_it_open_for_ever() {
        let t0 = Instant::now();
        let mut b = Breaker::new(1, RETRY);
        b.failure(t0, "down");
        assert!(b.admit(t0 + RETRY).is_ok());
        // Its caller was cancelled: no success, no failure.
        assert!(b.admit(t0 + RETRY * 2).is_err());
        assert!(
            b.admit(t0 + RETRY * 20).is_ok(),
            "another probe, eventually"
        );
    }
}
