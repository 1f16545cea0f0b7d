//! The checksum-pushdown contract for `verify`: each side hashes key ranges inside its own
//! engine, so only digests cross the network until a range is small enough to read its rows.

use cutover_model::{Key, Position, Row, TableName, TableSchema};

use crate::{ConnectorError, KeyRange};

/// The rows of a range, summarised: how many, and the wrapping sum of their row hashes
/// ([`crate::canonical::row_hash`] of each row's canonical text). Order-insensitive and
/// additive: the digest of a range is the sum of its slices' digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RangeDigest {
    pub rows: u64,
    pub sum: u64,
}

impl std::ops::Add for RangeDigest {
    type Output = RangeDigest;
    fn add(self, other: RangeDigest) -> RangeDigest {
        RangeDigest {
            rows: self.rows + other.rows,
            sum: self.sum.wrapping_add(other.sum),
        }
    }
}

/// A physical part of a table (`index` of `of`, by where rows are stored, not by key), so that
/// one key range of a large table can be hashed by several connections at once. An engine
/// that cannot slice a table physically reads everything in slice 0 and nothing in the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub index: u32,
    pub of: u32,
}

impl Slice {
    pub const WHOLE: Slice = Slice { index: 0, of: 1 };
}

/// One row as canonical text: its key (in the engine's values, usable in ranges and repairs)
/// and each column's canonical text (`None` for NULL), in the table's column order.
#[derive(Debug, Clone, PartialEq)]
pub struct CanonicalRow {
    pub key: Key,
    pub values: Vec<Option<String>>,
}

/// A difference as the control store keeps it (`_cutover.mismatches`, `_cutover_mismatches`).
#[derive(Debug, Clone, PartialEq)]
pub struct Mismatch {
    pub table: TableName,
    /// The key as messages show it: `(42, 'abc')` ([`crate::key_text`]).
    pub key: String,
    /// `missing`, `extra` or `different`.
    pub kind: &'static str,
    /// The differing columns (empty unless `different`).
    pub columns: Vec<String>,
    /// A short account of the values: `score: 1.5 → 2`.
    pub detail: String,
}

/// Both sides of every engine implement this for verify. Contract:
/// - Every method hashes, lists and compares the **canonical text** of values
///   ([`crate::canonical`]): equal values give equal text on every engine, whatever their
///   storage spelling.
/// - `checksum(range, bounds, slice)` returns `bounds.len() + 1` digests: bucket 0 holds the
///   rows of `slice` with keys in `[range.start, bounds[0])`, bucket i in
///   `[bounds[i-1], bounds[i])`, the last in `[bounds[n-1], range.end)`. `bounds` ascend
///   strictly and lie inside `range`. Tables without a primary key have one bucket: the whole
///   table (then `range` is [`KeyRange::all`] and `bounds` empty), compared as a multiset.
/// - `split(range, parts)` returns at most `parts - 1` keys of rows in `range`, ascending,
///   strictly after `range.start`, cutting it into parts of about equal row counts; fewer or
///   none for small ranges.
/// - `canonical_rows(range)` returns every row of `range` in key order (tables without a
///   primary key: every row, in canonical-text order, with an empty key).
/// - Reads are not wrapped in one snapshot: concurrent writes show as differences, which
///   `verify --live` re-checks once the change stream has passed them.
/// - `repair` writes `rows` (insert or overwrite by key) and deletes `deletes` in ONE target
///   transaction; rows are what `exact_rows` on the same engine returned.
pub trait RangeChecksum {
    /// About how many rows `table` holds (cheap; for sizing buckets and slices).
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError>;

    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        bounds: &[Key],
        slice: Slice,
    ) -> Result<Vec<RangeDigest>, ConnectorError>;

    fn split(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        parts: usize,
    ) -> Result<Vec<Key>, ConnectorError>;

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError>;

    /// The rows with these keys (those that exist), canonical.
    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError>;

    /// The rows with these keys exactly as stored, for [`RangeChecksum::repair`] on the other
    /// side.
    fn exact_rows(&mut self, table: &TableSchema, keys: &[Key])
        -> Result<Vec<Row>, ConnectorError>;

    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Key],
    ) -> Result<(), ConnectorError>;

    /// Appends to the control store's mismatch table (created if missing), stamped with the
    /// time they were found.
    fn record_mismatches(&mut self, found: &[Mismatch]) -> Result<(), ConnectorError>;

    /// How this engine orders the positions of the two methods below (`None`: it has none).
    fn positions(&self) -> Option<&'static dyn crate::PositionOrder> {
        None
    }

    /// The source's change-stream position now, if the engine has one verify can wait on.
    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError>;

    /// On a target: the source position a running sync has durably applied; `None` when no
    /// sync has recorded one.
    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError>;
}
