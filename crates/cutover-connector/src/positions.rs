//! How the neutral crates compare positions: through the source engine, never by their text.

use std::cmp::Ordering;
use std::fmt;

use cutover_model::Position;

/// How far one position is behind another, in the units the engine can count. Both may be
/// known (a binlog counts bytes and transactions), either, or neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Distance {
    /// Bytes of change history (PostgreSQL: WAL bytes).
    pub bytes: Option<u64>,
    /// Changes or change-log entries (SQLite: rows of its change table).
    pub changes: Option<u64>,
}

impl Distance {
    /// Whether nothing separates the two positions.
    pub fn is_zero(&self) -> bool {
        self.bytes.unwrap_or(0) == 0 && self.changes.unwrap_or(0) == 0
    }

    /// The figure to compare with a threshold given in bytes or changes: bytes where known.
    pub fn amount(&self) -> Option<u64> {
        self.bytes.or(self.changes)
    }
}

/// A source engine's knowledge of its positions. Contract:
/// - `compare` is a partial order over the positions this engine wrote: `Some` for two points
///   of one history (PostgreSQL LSNs, SQLite sequence numbers are totally ordered), `None` for
///   positions that are not ordered (GTID sets of concurrent servers, offsets of different
///   partitions) and for text this engine did not write.
/// - `distance(behind, ahead)` counts what separates `behind` from `ahead` (zero if `behind`
///   is not behind).
pub trait PositionOrder: Send + Sync + fmt::Debug {
    fn compare(&self, a: &Position, b: &Position) -> Option<Ordering>;
    fn distance(&self, behind: &Position, ahead: &Position) -> Distance;
    /// A text for `p` whose bytewise order is this order: for any two positions `a`, `b` this
    /// engine wrote that `compare` orders, `sort_key(a).cmp(&sort_key(b)) == compare(a, b)`.
    /// For targets that can only compare strings (DynamoDB's condition on the position an
    /// item holds). `None` (the default) where the engine has no such text, or for text it did
    /// not write.
    fn sort_key(&self, p: &Position) -> Option<String> {
        let _ = p;
        None
    }
}

/// Helpers every caller of a [`PositionOrder`] needs.
pub trait PositionOrderExt {
    /// Whether `at` is at or past `target` (known to be: unordered positions are not).
    fn reached(&self, at: &Position, target: &Position) -> bool;
    /// The later of two positions; `a` when they are not ordered.
    fn later(&self, a: Position, b: Position) -> Position;
    /// The earlier of two positions; `a` when they are not ordered.
    fn earlier(&self, a: Position, b: Position) -> Position;
    /// Whether `a` is strictly after `b`.
    fn after(&self, a: &Position, b: &Position) -> bool;
}

impl<O: PositionOrder + ?Sized> PositionOrderExt for O {
    fn reached(&self, at: &Position, target: &Position) -> bool {
        matches!(
            self.compare(at, target),
            Some(Ordering::Greater | Ordering::Equal)
        )
    }
    fn later(&self, a: Position, b: Position) -> Position {
        match self.compare(&a, &b) {
            Some(Ordering::Less) => b,
            _ => a,
        }
    }
    fn earlier(&self, a: Position, b: Position) -> Position {
        match self.compare(&a, &b) {
            Some(Ordering::Greater) => b,
            _ => a,
        }
    }
    fn after(&self, a: &Position, b: &Position) -> bool {
        self.compare(a, b) == Some(Ordering::Greater)
    }
}

/// Positions that are one unsigned counter of changes under a prefix (`seq:42`): SQLite's
/// change table, and any engine whose history is one totally ordered sequence of changes.
#[derive(Debug, Clone, Copy)]
pub struct Counter {
    /// `seq` of `seq:42`.
    pub kind: &'static str,
}

impl Counter {
    pub fn position(&self, n: u64) -> Position {
        Position::tagged(self.kind, n)
    }

    pub fn value(&self, p: &Position) -> Option<u64> {
        p.strip_kind(self.kind)?.parse().ok()
    }
}

impl PositionOrder for Counter {
    fn compare(&self, a: &Position, b: &Position) -> Option<Ordering> {
        Some(self.value(a)?.cmp(&self.value(b)?))
    }
    fn distance(&self, behind: &Position, ahead: &Position) -> Distance {
        Distance {
            bytes: None,
            changes: match (self.value(behind), self.value(ahead)) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                _ => None,
            },
        }
    }
    /// The counter in 20 decimal digits (`u64::MAX` has 20).
    fn sort_key(&self, p: &Position) -> Option<String> {
        Some(format!("{:020}", self.value(p)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEQ: Counter = Counter { kind: "seq" };

    #[test]
    fn counters_order_their_own_positions_only() {
        let (a, b) = (SEQ.position(9), SEQ.position(10));
        assert_eq!(SEQ.compare(&a, &b), Some(Ordering::Less));
        assert!(SEQ.reached(&b, &a) && SEQ.reached(&a, &a) && !SEQ.reached(&a, &b));
        assert_eq!(SEQ.later(a.clone(), b.clone()), b);
        assert_eq!(SEQ.distance(&a, &b).changes, Some(1));
        assert_eq!(SEQ.distance(&b, &a).changes, Some(0));
        // Another engine's text is not ordered against these (the old derived order put
        // every LSN after every sequence number).
        let lsn: Position = "lsn:0/0".parse().unwrap();
        assert_eq!(SEQ.compare(&lsn, &SEQ.position(u64::MAX)), None);
        assert!(!SEQ.reached(&lsn, &a));
        assert_eq!(SEQ.value(&"seq:12".parse().unwrap()), Some(12));
        assert_eq!(SEQ.value(&"seq:x".parse().unwrap()), None);
    }

    #[test]
    fn counter_sort_keys_order_like_compare() {
        let values = [0, 1, 9, 10, 99, 100, 12_345, u64::MAX - 1, u64::MAX];
        for a in values {
            for b in values {
                let (pa, pb) = (SEQ.position(a), SEQ.position(b));
                assert_eq!(
                    SEQ.sort_key(&pa).cmp(&SEQ.sort_key(&pb)),
                    SEQ.compare(&pa, &pb).unwrap(),
                    "{a} vs {b}"
                );
            }
        }
        assert_eq!(SEQ.sort_key(&"lsn:0/0".parse().unwrap()), None);
    }
}
