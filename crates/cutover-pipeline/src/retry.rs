//! The one place that decides whether to try an operation again, from the error's kind.

use std::time::Duration;

use cutover_connector::ConnectorError;

const ATTEMPTS: u32 = 8;

/// Runs `op` until it succeeds, fails with a kind that is not retryable, or has failed
/// [`ATTEMPTS`] times; waits 50 ms, 100 ms, 200 ms … (capped at 2 s) in between.
pub(crate) fn retry<T>(
    what: &str,
    mut op: impl FnMut() -> Result<T, ConnectorError>,
) -> Result<T, ConnectorError> {
    let mut wait = Duration::from_millis(50);
    let mut attempt = 1;
    loop {
        match op() {
            Ok(v) => return Ok(v),
            Err(e) if e.kind().is_retryable() && attempt < ATTEMPTS => {
                tracing::warn!(attempt, error = %e, "{what} failed; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_connector::ErrorKind;

    #[test]
    fn retries_only_retryable_kinds() {
        let mut calls = 0;
        let r: Result<(), _> = retry("x", || {
            calls += 1;
            Err(ConnectorError::new(ErrorKind::Conflict, "no"))
        });
        assert!(r.is_err());
        assert_eq!(calls, 1);

        let mut calls = 0;
        let r = retry("x", || {
            calls += 1;
            if calls < 3 {
                Err(ConnectorError::new(ErrorKind::Busy, "locked"))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(r.unwrap(), 3);
    }
}
