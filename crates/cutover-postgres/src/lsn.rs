//! PostgreSQL's positions: WAL locations (LSNs), written `lsn:X/Y` as PostgreSQL writes them
//! (`pg_lsn`'s text after the prefix), ordered as numbers, distances in bytes of WAL; and the
//! snapshots chunks are read in, as the read view the applier asks.

use std::cmp::Ordering;

use cutover_connector::{ConnectorError, Distance, ErrorKind, PositionOrder, ReadView};
use cutover_model::Position;

/// The order of PostgreSQL's positions.
#[derive(Debug, Clone, Copy)]
pub struct Lsns;

/// The one [`Lsns`], for `Source::positions` and the switch.
pub static LSNS: Lsns = Lsns;

/// The position of WAL location `lsn`: `lsn:0/16B3748`.
pub fn position(lsn: u64) -> Position {
    Position::tagged(
        "lsn",
        format_args!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF),
    )
}

/// A WAL location as PostgreSQL writes it (`pg_lsn`'s text: `0/16B3748`).
pub fn parse_text(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u64::from(u32::MAX) && lo <= u64::from(u32::MAX)).then_some((hi << 32) | lo)
}

/// The WAL location of a position, `None` for one PostgreSQL did not write.
pub fn parse(p: &Position) -> Option<u64> {
    parse_text(p.strip_kind("lsn")?)
}

/// The WAL location of a position, or an error naming it (another engine's position given to
/// a PostgreSQL source: the migration's state belongs to another source).
pub fn of(p: &Position) -> Result<u64, ConnectorError> {
    parse(p).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "position {p} is not a PostgreSQL WAL location (lsn:X/Y): the target's state \
                 belongs to a migration from another source; run `cutover cleanup` on it or use \
                 another --name"
            ),
        )
    })
}

impl PositionOrder for Lsns {
    fn compare(&self, a: &Position, b: &Position) -> Option<Ordering> {
        Some(parse(a)?.cmp(&parse(b)?))
    }

    fn distance(&self, behind: &Position, ahead: &Position) -> Distance {
        Distance {
            bytes: match (parse(behind), parse(ahead)) {
                (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                _ => None,
            },
            changes: None,
        }
    }

    /// The WAL location as 16 upper-case hex digits: fixed width, so bytewise order is
    /// numeric order.
    fn sort_key(&self, p: &Position) -> Option<String> {
        Some(format!("{:016X}", parse(p)?))
    }
}

/// A set of visible transactions, as PostgreSQL describes a snapshot: every transaction id below
/// `xmin` is visible, none at or above `xmax`, and between them all but `in_progress`. Ids are
/// 64-bit (epoch and xid), as `pg_current_snapshot()` and the change stream give them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxSnapshot {
    pub xmin: u64,
    pub xmax: u64,
    pub in_progress: Vec<u64>,
}

impl TxSnapshot {
    /// Whether the changes of transaction `xid` are visible in this snapshot.
    pub fn sees(&self, xid: u64) -> bool {
        xid < self.xmin || (xid < self.xmax && !self.in_progress.contains(&xid))
    }

    /// Parses `pg_current_snapshot()`'s text form `xmin:xmax:xip,xip,…`.
    pub fn parse(text: &str) -> Option<TxSnapshot> {
        let mut parts = text.trim().splitn(3, ':');
        let xmin = parts.next()?.parse().ok()?;
        let xmax = parts.next()?.parse().ok()?;
        let in_progress = match parts.next()? {
            "" => Vec::new(),
            list => list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<Vec<u64>>>()?,
        };
        Some(TxSnapshot {
            xmin,
            xmax,
            in_progress,
        })
    }
}

/// A transaction's tag is its 64-bit id; a snapshot reflects what it sees. Its `xmin` is a
/// horizon: every id below it was committed or aborted when the snapshot was taken, so every
/// later snapshot sees it too (and `xmin` never moves backwards).
impl ReadView for TxSnapshot {
    fn reflects(&self, tag: u64) -> bool {
        self.sees(tag)
    }
    fn horizon(&self) -> u64 {
        self.xmin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_connector::PositionOrderExt;

    #[test]
    fn lsns_round_trip_and_order_as_numbers() {
        for l in [0, 0x016B_3748, (7 << 32) | 5, u64::MAX] {
            assert_eq!(parse(&position(l)), Some(l));
        }
        assert_eq!(position(0x16B3748).to_string(), "lsn:0/16B3748");
        // Text order would put 0/A0 before 0/B; numbers do not.
        assert!(LSNS.after(&position(0xA0), &position(0xB)));
        assert_eq!(
            LSNS.distance(&position(100), &position(164)).bytes,
            Some(64)
        );
        assert!(of(&"seq:4".parse().unwrap()).is_err());
        assert_eq!(parse(&"lsn:1".parse().unwrap()), None);
        assert_eq!(parse_text("16/B374D848"), Some((0x16 << 32) | 0xB374_D848));
    }

    #[test]
    fn snapshots_parse_and_decide_visibility() {
        let s = TxSnapshot::parse("100:105:101,103").unwrap();
        assert!(s.sees(99) && s.sees(100) && s.sees(102) && s.sees(104));
        assert!(!s.sees(101) && !s.sees(103) && !s.sees(105) && !s.sees(1_000));
        assert_eq!(s.horizon(), 100);
        assert_eq!(
            TxSnapshot::parse("7:7:").unwrap().in_progress,
            Vec::<u64>::new()
        );
        assert!(TxSnapshot::parse("7:x:").is_none());
        assert!(TxSnapshot::parse("7").is_none());
    }

    #[test]
    fn lsn_sort_keys_order_like_compare() {
        let lsns = [
            0u64,
            1,
            0xF,
            0x10,
            0x16B_3748,
            0xFFFF_FFFF,
            0x1_0000_0000,
            0x1_0000_0001,
            0xA_0000_0000,
            u64::MAX,
        ];
        for a in lsns {
            for b in lsns {
                let (pa, pb) = (position(a), position(b));
                assert_eq!(
                    LSNS.sort_key(&pa).cmp(&LSNS.sort_key(&pb)),
                    LSNS.compare(&pa, &pb).unwrap(),
                    "{pa} vs {pb}"
                );
            }
        }
        assert_eq!(
            LSNS.sort_key(&position(0x16B_3748)).unwrap(),
            "00000000016B3748"
        );
        assert_eq!(LSNS.sort_key(&"seq:1".parse().unwrap()), None);
    }
}
