//! Where a source's change stream stands.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A point in a source's change stream, as its engine writes it: opaque text whose meaning,
/// order and distances only that engine knows (`lsn:0/16B3748` for a PostgreSQL WAL location,
/// `seq:42` for SQLite's change table; a MySQL GTID set or per-partition offsets would be
/// text too). The neutral crates store, show and pass positions around; they compare them only
/// through the source engine's `PositionOrder` (in `cutover-connector`), which may leave two
/// positions unordered.
///
/// Equality is textual: an engine writes each point in exactly one way.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Position(Arc<str>);

impl Position {
    /// A position in the engine's own text form. Refused: empty text, or text with
    /// whitespace or control characters (positions travel in logs, status lines and TOML).
    pub fn new(text: &str) -> Result<Position, ParsePositionError> {
        let ok = !text.is_empty()
            && text.len() <= 4096
            && !text.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(Position(Arc::from(text)))
        } else {
            Err(ParsePositionError(text.chars().take(64).collect()))
        }
    }

    /// `kind:value`, as an engine writes its own positions (`lsn:0/16B3748`, `seq:42`): the
    /// engine vouches for both parts (no whitespace or control characters), so this cannot fail.
    pub fn tagged(kind: &str, value: impl fmt::Display) -> Position {
        Position(Arc::from(format!("{kind}:{value}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part after `prefix:` (`"16B3748"` of `lsn:0/16B3748` with prefix `lsn`), for the
    /// engine that wrote it.
    pub fn strip_kind(&self, kind: &str) -> Option<&str> {
        self.0.strip_prefix(kind)?.strip_prefix(':')
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a source position: {0:?}")]
pub struct ParsePositionError(pub String);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Position({})", self.0)
    }
}

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Position::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_the_engines_text() {
        let p: Position = "lsn:0/16B3748".parse().unwrap();
        assert_eq!(p.to_string(), "lsn:0/16B3748");
        assert_eq!(p.strip_kind("lsn"), Some("0/16B3748"));
        assert_eq!(p.strip_kind("seq"), None);
        assert!("".parse::<Position>().is_err());
        assert!("lsn: 1".parse::<Position>().is_err());
        assert!("a\nb".parse::<Position>().is_err());
    }
}
