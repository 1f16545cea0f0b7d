//! Where a source's change stream stands.

use std::fmt;
use std::str::FromStr;

/// A point in a source's change stream. Positions of one source are totally ordered; positions
/// of different kinds are never compared in a meaningful way (a migration has one source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Position {
    /// A sequence number in a change table (SQLite triggers).
    Sequence(u64),
    /// A PostgreSQL WAL location (LSN).
    Lsn(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a source position: {0:?} (expected seq:N or lsn:X/Y)")]
pub struct ParsePositionError(String);

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Position::Sequence(n) => write!(f, "seq:{n}"),
            Position::Lsn(lsn) => write!(f, "lsn:{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
        }
    }
}

impl FromStr for Position {
    type Err = ParsePositionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParsePositionError(s.chars().take(64).collect());
        if let Some(n) = s.strip_prefix("seq:") {
            return n.parse().map(Position::Sequence).map_err(|_| err());
        }
        if let Some(lsn) = s.strip_prefix("lsn:") {
            let (hi, lo) = lsn.split_once('/').ok_or_else(err)?;
            let hi = u64::from_str_radix(hi, 16).map_err(|_| err())?;
            let lo = u64::from_str_radix(lo, 16).map_err(|_| err())?;
            if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
                return Err(err());
            }
            return Ok(Position::Lsn((hi << 32) | lo));
        }
        Err(err())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_as_text() {
        for p in [
            Position::Sequence(0),
            Position::Sequence(u64::MAX),
            Position::Lsn(0x016B_3748),
            Position::Lsn(u64::MAX),
        ] {
            assert_eq!(p.to_string().parse::<Position>().unwrap(), p);
        }
        assert_eq!(Position::Lsn(0x16B3748).to_string(), "lsn:0/16B3748");
        assert!("lsn:1".parse::<Position>().is_err());
        assert!("wal:1".parse::<Position>().is_err());
    }
}
