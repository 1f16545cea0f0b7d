//! The one retry policy: whether to try an operation again, decided from its error's kind, and
//! how long to wait first (exponential backoff with jitter, within a time budget).
//!
//! An engine that reconnects a broken connection at the start of its next call (PostgreSQL's
//! source and sink do) turns every retry into a fresh attempt on a live connection; the policy
//! only decides when. Operations retried must be safe to repeat: reads, and writes whose
//! outcome may be unknown but that are idempotent (the [`crate::Sink`] contract).

use std::fmt;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::{ConnectorError, ErrorKind};

/// Which database an operation talks to, for logs and messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Source,
    Target,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Source => "source",
            Side::Target => "target",
        })
    }
}

/// How long and how often an operation is tried again after an error whose kind is retryable
/// ([`ErrorKind::is_retryable`]: connect, busy, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How long to keep trying one operation, counted from its first failure; the last
    /// attempt starts no later than this.
    pub budget: Duration,
    /// The wait after the first failure; it doubles after each further one …
    pub first_wait: Duration,
    /// … up to this.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            budget: Duration::from_secs(300),
            first_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// The default backoff, trying for `budget`.
    pub fn with_budget(budget: Duration) -> RetryPolicy {
        RetryPolicy {
            budget,
            ..RetryPolicy::default()
        }
    }

    /// The wait after `failures` consecutive failures (1 = the first), before jitter:
    /// `first_wait × 2^(failures − 1)`, at most `max_wait`.
    pub fn backoff(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(30);
        self.first_wait
            .saturating_mul(1 << doublings)
            .min(self.max_wait)
    }

    /// Whether to try again after the `failures`-th consecutive failure, of kind `kind`, which
    /// came `elapsed` after the first one; and if so, how long to wait. `jitter` in `[0, 1)`
    /// spreads the wait over `[backoff / 2, backoff]`, so that many clients cut off at once do
    /// not come back at once; the wait never reaches past the budget. Pure: no clock, no
    /// randomness of its own.
    pub fn decide(
        &self,
        kind: ErrorKind,
        failures: u32,
        elapsed: Duration,
        jitter: f64,
    ) -> Option<Duration> {
        if !kind.is_retryable() || elapsed >= self.budget {
            return None;
        }
        let backoff = self.backoff(failures);
        let spread = jitter.clamp(0.0, 1.0) / 2.0;
        let wait = backoff.mul_f64(1.0 - spread);
        Some(wait.min(self.budget - elapsed))
    }

    /// Runs `op` until it succeeds, fails with a kind that is not retryable, or keeps failing
    /// for longer than the budget; logs every retry (side, error, attempt, next wait). Stops
    /// waiting at once when `stop` is cancelled, returning the last error.
    ///
    /// The error after giving up is the last one, prefixed with how long and how often the
    /// operation was tried; its kind is unchanged.
    pub fn run<T>(
        &self,
        side: Side,
        what: &str,
        stop: Option<&CancellationToken>,
        mut op: impl FnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        let mut first_failure: Option<Instant> = None;
        let mut failures = 0u32;
        loop {
            let e = match op() {
                Ok(v) => {
                    if let Some(since) = first_failure {
                        tracing::info!(
                            side = %side,
                            attempts = failures + 1,
                            after_ms = since.elapsed().as_millis() as u64,
                            "{what}: succeeded again on the {side}"
                        );
                    }
                    return Ok(v);
                }
                Err(e) => e,
            };
            failures += 1;
            let since = *first_failure.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            let Some(wait) = self.decide(e.kind(), failures, elapsed, fastrand::f64()) else {
                return Err(self.give_up(e, side, failures, elapsed));
            };
            tracing::warn!(
                side = %side,
                attempt = failures,
                wait_ms = wait.as_millis() as u64,
                error = %e,
                "{what} failed on the {side}; trying again"
            );
            // Wait on the process's runtime, woken at once by a stop.
            let stopped = match stop {
                Some(token) => crate::runtime::block_on(async {
                    tokio::select! {
                        biased;
                        () = token.cancelled() => true,
                        () = tokio::time::sleep(wait) => false,
                    }
                }),
                None => {
                    std::thread::sleep(wait);
                    false
                }
            };
            if stopped {
                return Err(e.context(format!(
                    "stopped while retrying (attempt {failures}) on the {side}"
                )));
            }
        }
    }

    fn give_up(
        &self,
        e: ConnectorError,
        side: Side,
        failures: u32,
        elapsed: Duration,
    ) -> ConnectorError {
        if failures <= 1 || !e.kind().is_retryable() {
            return e;
        }
        e.context(format!(
            "gave up on the {side} after {failures} attempts over {:.1} s (the retry budget is {} s; \
             allow longer with --retry-for SECONDS)",
            elapsed.as_secs_f64(),
            self.budget.as_secs()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quick(budget_ms: u64) -> RetryPolicy {
        RetryPolicy {
            budget: Duration::from_millis(budget_ms),
            first_wait: Duration::from_millis(5),
            max_wait: Duration::from_millis(40),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        let waits: Vec<u64> = (1..=9).map(|n| p.backoff(n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(p.backoff(u32::MAX), p.max_wait);
        assert_eq!(p.backoff(0), p.first_wait);
    }

    #[test]
    fn jitter_stays_between_half_and_all_of_the_backoff() {
        let p = RetryPolicy::default();
        for failures in 1..12 {
            let b = p.backoff(failures);
            for j in [0.0, 0.1, 0.5, 0.999_999, fastrand::f64(), 7.0, -3.0] {
                let w = p
                    .decide(ErrorKind::Connect, failures, Duration::ZERO, j)
                    .unwrap();
                assert!(
                    w <= b && w >= b / 2,
                    "{failures} failures, jitter {j}: {w:?} of {b:?}"
                );
            }
        }
    }

    #[test]
    fn the_budget_bounds_the_last_wait_and_ends_retries() {
        let p = RetryPolicy::with_budget(Duration::from_secs(10));
        let almost = Duration::from_millis(9_900);
        assert_eq!(
            p.decide(ErrorKind::Busy, 20, almost, 0.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(
            p.decide(ErrorKind::Busy, 20, Duration::from_secs(10), 0.0),
            None
        );
        assert_eq!(
            p.decide(ErrorKind::Timeout, 1, Duration::from_secs(60), 0.0),
            None
        );
    }

    #[test]
    fn kinds_that_are_not_retryable_are_tried_once() {
        for kind in [
            ErrorKind::Auth,
            ErrorKind::Conflict,
            ErrorKind::SchemaMismatch,
            ErrorKind::HistoryLost,
            ErrorKind::Database,
        ] {
            assert_eq!(
                RetryPolicy::default().decide(kind, 1, Duration::ZERO, 0.0),
                None
            );
            let mut calls = 0;
            let r: Result<(), _> = quick(1_000).run(Side::Target, "x", None, || {
                calls += 1;
                Err(ConnectorError::new(kind, "no"))
            });
            let e = r.unwrap_err();
            assert_eq!((calls, e.kind()), (1, kind));
            assert_eq!(e.to_string(), "no", "not retried, so not dressed up");
        }
    }

    #[test]
    fn a_retryable_failure_is_tried_again_until_it_succeeds() {
        let mut calls = 0;
        let r = quick(5_000).run(Side::Source, "x", None, || {
            calls += 1;
            if calls < 4 {
                Err(ConnectorError::new(ErrorKind::Connect, "reset"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 4);
    }

    #[test]
    fn giving_up_respects_the_budget_and_says_for_how_long() {
        let started = Instant::now();
        let mut calls = 0;
        let r: Result<(), _> = quick(300).run(Side::Target, "applying", None, || {
            calls += 1;
            Err(ConnectorError::new(
                ErrorKind::Connect,
                "connection refused",
            ))
        });
        let took = started.elapsed();
        let e = r.unwrap_err();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
        // 5, 10, 20, 40, 40, … ms (halved at most by jitter) within 300 ms.
        assert!((7..=70).contains(&calls), "{calls} attempts");
        assert_eq!(e.kind(), ErrorKind::Connect);
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "gave up on the target after {calls} attempts over 0.3"
            )),
            "{text}"
        );
        assert!(text.ends_with("connection refused"), "{text}");
    }

    #[test]
    fn a_stop_ends_the_waiting() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut calls = 0;
        let r: Result<(), _> = RetryPolicy::default().run(Side::Source, "x", Some(&stop), || {
            calls += 1;
            Err(ConnectorError::new(ErrorKind::Connect, "down"))
        });
        assert_eq!(calls, 1);
        assert!(r
            .unwrap_err()
            .to_string()
            .contains("stopped while retrying"));
    }
}
