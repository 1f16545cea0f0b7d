//! `parquet:///path/to/lake?roll-mb=64&roll-seconds=60` (also `parquet+file://`; a plain
//! `file://` names a SQLite database, as SQLite's URI filenames do). Parsing is pure
//! (unit-tested).

use std::path::PathBuf;
use std::time::Duration;

use cutover_connector::{percent_decode, ConnectorError, ErrorKind};

/// A lake directory and when its files roll.
#[derive(Debug, Clone, PartialEq)]
pub struct ParquetEndpoint {
    pub dir: PathBuf,
    /// Rows held in memory up to about this many bytes before a file is written.
    pub roll_bytes: usize,
    /// Rows held at most this long before a file is written.
    pub roll_after: Duration,
}

fn invalid(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, msg)
}

impl ParquetEndpoint {
    pub fn parse(url: &str) -> Result<ParquetEndpoint, ConnectorError> {
        let Some(rest) = url
            .strip_prefix("parquet://")
            .or_else(|| url.strip_prefix("parquet+file://"))
        else {
            return Err(invalid(format!(
                "{url:?}: a Parquet lake is named parquet:///path/to/dir (S3 is not built yet)"
            )));
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let path = percent_decode(path, "path")?;
        if path.is_empty() {
            return Err(invalid(format!(
                "{url:?}: name a directory: parquet:///path/to/lake"
            )));
        }
        let mut e = ParquetEndpoint {
            dir: PathBuf::from(path),
            roll_bytes: 64 << 20,
            roll_after: Duration::from_secs(60),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let n = v
                .parse::<u64>()
                .ok()
                .ok_or_else(|| invalid(format!("{k}={v}: give a whole number")));
            match k {
                "roll-mb" | "roll_mb" => {
                    let n = n?;
                    if n == 0 {
                        return Err(invalid(format!(
                            "{k}=0: give a positive size, or roll-seconds=0 for a file per batch"
                        )));
                    }
                    e.roll_bytes = usize::try_from(n.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
                }
                // 0: every batch is written out at once (many small files, nothing held).
                "roll-seconds" | "roll_seconds" => e.roll_after = Duration::from_secs(n?),
                other => {
                    return Err(invalid(format!(
                        "{other}: not a setting of a Parquet target; use roll-mb, roll-seconds"
                    )))
                }
            }
        }
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_what_to_fix() {
        let e = ParquetEndpoint::parse("parquet:///data/lake?roll-mb=8&roll-seconds=5").unwrap();
        assert_eq!(e.dir, PathBuf::from("/data/lake"));
        assert_eq!(e.roll_bytes, 8 << 20);
        assert_eq!(e.roll_after, Duration::from_secs(5));
        let d = ParquetEndpoint::parse("parquet+file:///a%20b").unwrap();
        assert_eq!(d.dir, PathBuf::from("/a b"));
        assert_eq!(d.roll_after, Duration::from_secs(60));
        let each = ParquetEndpoint::parse("parquet:///x?roll-seconds=0").unwrap();
        assert_eq!(each.roll_after, Duration::ZERO);
        for (url, says) in [
            ("s3://bucket/x", "parquet:///path"),
            ("parquet://", "name a directory"),
            ("parquet:///x?roll-mb=0", "positive"),
            ("parquet:///x?roll-seconds=soon", "whole number"),
            ("parquet:///x?color=red", "not a setting"),
        ] {
            let e = ParquetEndpoint::parse(url).unwrap_err().to_string();
            assert!(e.contains(says), "{url}: {e}");
        }
    }
}
