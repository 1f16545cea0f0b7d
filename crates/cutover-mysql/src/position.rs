//! MySQL's and MariaDB's positions: a place in the binary log, `binlog:FILE/OFFSET`, where
//! `FILE` is the binlog file's name (`binlog.000003`) and `OFFSET` the byte offset just past a
//! transaction's commit event (what `SHOW MASTER STATUS` and a snapshot's
//! `binlog_snapshot_position` give). One server's binlog files are numbered in sequence, so the
//! positions of one server are totally ordered: by the file's number, then by offset.

use std::cmp::Ordering;

use cutover_connector::{ConnectorError, Distance, ErrorKind, PositionOrder};
use cutover_model::Position;

const KIND: &str = "binlog";

/// A place in one server's binary log.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinlogPos {
    /// The binlog file's name, as the server gives it (`binlog.000003`).
    pub file: String,
    /// Bytes from the start of the file.
    pub offset: u64,
}

impl BinlogPos {
    pub fn new(file: impl Into<String>, offset: u64) -> BinlogPos {
        BinlogPos {
            file: file.into(),
            offset,
        }
    }

    /// `binlog:binlog.000003/1234`.
    pub fn position(&self) -> Position {
        Position::tagged(KIND, format_args!("{}/{}", self.file, self.offset))
    }

    /// The binlog place of a position this engine wrote; `None` for any other text.
    pub fn parse(p: &Position) -> Option<BinlogPos> {
        let (file, offset) = p.strip_kind(KIND)?.rsplit_once('/')?;
        let offset = offset.parse().ok()?;
        (!file.is_empty() && sequence(file).is_some()).then(|| BinlogPos::new(file, offset))
    }

    /// The binlog place of a position, or an error naming it.
    pub fn of(p: &Position) -> Result<BinlogPos, ConnectorError> {
        BinlogPos::parse(p).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "position {p} is not a MySQL binlog position (binlog:FILE/OFFSET): the \
                     target's state belongs to a migration from another source; run `cutover \
                     cleanup` on it or use another --name"
                ),
            )
        })
    }

    /// (base name, sequence number) of the file: `binlog.000003` → (`binlog`, 3).
    fn key(&self) -> Option<(&str, u64)> {
        let (base, _) = self.file.rsplit_once('.')?;
        Some((base, sequence(&self.file)?))
    }
}

/// The number after the last dot of a binlog file's name.
pub(crate) fn sequence(file: &str) -> Option<u64> {
    let (_, n) = file.rsplit_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// The order of binlog positions: one server's files in sequence, then offsets.
#[derive(Debug, Clone, Copy)]
pub struct BinlogPositions;

/// The one [`BinlogPositions`], for `Source::positions`.
pub static BINLOG_POSITIONS: BinlogPositions = BinlogPositions;

/// The order of two places of one server's binlog (`None`: files of different base names).
pub(crate) fn compare(a: &BinlogPos, b: &BinlogPos) -> Option<Ordering> {
    let (ba, na) = a.key()?;
    let (bb, nb) = b.key()?;
    // Files of another base name are another server's (or a renamed log): not ordered.
    (ba == bb).then(|| na.cmp(&nb).then(a.offset.cmp(&b.offset)))
}

impl PositionOrder for BinlogPositions {
    fn compare(&self, a: &Position, b: &Position) -> Option<Ordering> {
        compare(&BinlogPos::parse(a)?, &BinlogPos::parse(b)?)
    }

    fn distance(&self, behind: &Position, ahead: &Position) -> Distance {
        let (Some(b), Some(a)) = (BinlogPos::parse(behind), BinlogPos::parse(ahead)) else {
            return Distance::default();
        };
        let bytes = match compare(&b, &a) {
            Some(Ordering::Less) if a.file == b.file => Some(a.offset - b.offset),
            // Bytes across files would need every file's size: unknown here.
            Some(Ordering::Less) => None,
            Some(_) => Some(0),
            None => None,
        };
        Distance {
            bytes,
            changes: None,
        }
    }

    /// `BASE.SEQUENCE/OFFSET` with the file's number and the offset in 20 decimal digits:
    /// positions of one server's binlog (one base name) sort as `compare` orders them.
    fn sort_key(&self, p: &Position) -> Option<String> {
        let pos = BinlogPos::parse(p)?;
        let (base, n) = pos.key()?;
        Some(format!("{base}.{n:020}/{:020}", pos.offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_connector::PositionOrderExt;

    fn p(file: &str, offset: u64) -> Position {
        BinlogPos::new(file, offset).position()
    }

    #[test]
    fn positions_order_by_file_number_then_offset() {
        let a = p("binlog.000009", 900);
        let b = p("binlog.000010", 4);
        let c = p("binlog.000010", 120);
        assert_eq!(a.as_str(), "binlog:binlog.000009/900");
        assert_eq!(
            BinlogPos::parse(&a),
            Some(BinlogPos::new("binlog.000009", 900))
        );
        let o = &BINLOG_POSITIONS;
        assert_eq!(o.compare(&a, &b), Some(Ordering::Less));
        assert_eq!(o.compare(&c, &b), Some(Ordering::Greater));
        assert!(o.reached(&c, &c));
        assert_eq!(o.distance(&b, &c).bytes, Some(116));
        assert_eq!(o.distance(&c, &b).bytes, Some(0));
        assert_eq!(o.distance(&a, &b).bytes, None);
        // Another server's files, another engine's text: not ordered.
        assert_eq!(o.compare(&a, &p("other-bin.000001", 4)), None);
        assert_eq!(o.compare(&a, &"lsn:0/0".parse().unwrap()), None);
        assert!(BinlogPos::parse(&"binlog:nofile/3".parse().unwrap()).is_none());
        assert!(BinlogPos::of(&"seq:3".parse().unwrap()).is_err());
    }

    #[test]
    fn binlog_sort_keys_order_like_compare() {
        let ps = [
            p("binlog.000009", 900),
            p("binlog.000009", 4),
            p("binlog.000010", 4),
            p("binlog.000010", 120),
            p("binlog.000010", 1_000_000),
            p("binlog.1000000", 4),
            p("binlog.999999", 99_999_999),
        ];
        let o = &BINLOG_POSITIONS;
        for a in &ps {
            for b in &ps {
                assert_eq!(
                    o.sort_key(a).cmp(&o.sort_key(b)),
                    o.compare(a, b).unwrap(),
                    "{a} vs {b}"
                );
            }
        }
        assert_eq!(o.sort_key(&"lsn:0/0".parse().unwrap()), None);
    }
}
