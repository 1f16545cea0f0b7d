//! Verify: compare two sides of a migration row by row and report every difference by table
//! and key. A difference is data (a [`TableDiff`]), not an error; an unreachable database is an
//! error.
//!
//! Two ways to compare:
//! - [`bisect::verify`]: checksum bisection through [`cutover_connector::RangeChecksum`]: each
//!   side hashes key ranges inside its engine, only digests cross the network, and only ranges
//!   whose digests differ are split, down to the rows. Then optionally a live re-check and a
//!   repair of the differing rows.
//! - [`compare_table`]: the exact, full-scan comparison through [`TableReader`]: both sides
//!   are read in key order with keyset pagination and merged (the demo's check, in one pinned
//!   snapshot).

pub mod bisect;

use std::cmp::Ordering;
use std::collections::VecDeque;

use cutover_connector::canonical::value_text;
use cutover_connector::{ConnectorError, TableReader};
use cutover_model::{Column, Key, Row, TableName, TableSchema, Value};

/// How many differences of each kind a report keeps per table (all are counted).
pub const KEEP_DIFFERENCES: usize = 1_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DifferenceKind {
    /// On the source, not on the target.
    Missing,
    /// On the target, not on the source.
    Extra,
    /// On both, with different values in `columns`.
    Different { columns: Vec<ColumnDiff> },
}

impl DifferenceKind {
    /// `missing`, `extra` or `different`, as reports and the control store name them.
    pub fn name(&self) -> &'static str {
        match self {
            DifferenceKind::Missing => "missing",
            DifferenceKind::Extra => "extra",
            DifferenceKind::Different { .. } => "different",
        }
    }
}

/// One column of a row that differs: its canonical text on each side (`None`: NULL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDiff {
    pub column: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// The primary-key values, in key order (for a table without a primary key: every
    /// column's canonical text).
    pub key: Key,
    pub kind: DifferenceKind,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TableDiff {
    pub table: TableName,
    /// The names of the values in each difference's `key`.
    pub key_columns: Vec<String>,
    /// Something the reader must know about how the table was compared.
    pub note: Option<String>,
    pub source_rows: u64,
    pub target_rows: u64,
    pub missing: u64,
    pub extra: u64,
    pub different: u64,
    /// The first [`KEEP_DIFFERENCES`] differences, in key order.
    pub differences: Vec<Difference>,
}

impl TableDiff {
    /// A table with nothing compared yet.
    pub fn new(table: TableName, key_columns: Vec<String>) -> TableDiff {
        TableDiff {
            table,
            key_columns,
            note: None,
            source_rows: 0,
            target_rows: 0,
            missing: 0,
            extra: 0,
            different: 0,
            differences: Vec::new(),
        }
    }

    pub fn is_equal(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.different == 0
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct VerifyReport {
    pub tables: Vec<TableDiff>,
    /// Set by `--live`: the first pass's differences were re-checked after the applier passed
    /// them; `tables` holds only those that persisted.
    pub live: Option<bisect::LiveSummary>,
    /// Set by `--repair`: what was rewritten, and what still differs after it.
    pub repair: Option<bisect::RepairSummary>,
}

impl VerifyReport {
    pub fn is_equal(&self) -> bool {
        self.tables.iter().all(TableDiff::is_equal)
    }
    /// Whether the target now holds what the source does: equal, or every difference repaired
    /// and re-checked.
    pub fn is_equal_now(&self) -> bool {
        match &self.repair {
            Some(r) => r.still_different == 0,
            None => self.is_equal(),
        }
    }
    pub fn rows_compared(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.source_rows.max(t.target_rows))
            .sum()
    }
    pub fn differences(&self) -> u64 {
        self.tables
            .iter()
            .map(|t| t.missing + t.extra + t.different)
            .sum()
    }
}

pub use cutover_connector::{cmp_keys, cmp_values};

/// Whether two values are the same value. Exact, except that decimals compare without regard
/// to trailing zeros (`1.50` = `1.5`), as engines print them differently.
pub fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Decimal(x), Value::Decimal(y)) => x.normalized() == y.normalized(),
        _ => a == b,
    }
}

/// Rows one side holds in key order, fetched a page at a time.
struct Cursor<'r, R: TableReader> {
    reader: &'r mut R,
    buf: VecDeque<Row>,
    after: Option<Key>,
    done: bool,
    page: usize,
    rows: u64,
}

impl<R: TableReader> Cursor<'_, R> {
    fn peek(&mut self, table: &TableSchema) -> Result<Option<&Row>, ConnectorError> {
        if self.buf.is_empty() && !self.done {
            let rows = self
                .reader
                .scan(table, self.after.as_ref(), None, self.page)?;
            self.done = rows.len() < self.page;
            if let Some(last) = rows.last() {
                self.after = Some(table.key_of(last));
            }
            self.buf.extend(rows);
        }
        Ok(self.buf.front())
    }

    fn pop(&mut self) -> Option<Row> {
        self.rows += 1;
        self.buf.pop_front()
    }
}

/// Compares `table` on both sides, row by row, in key order.
pub fn compare_table<A: TableReader, B: TableReader>(
    source: &mut A,
    target: &mut B,
    table: &TableSchema,
    page: usize,
) -> Result<TableDiff, ConnectorError> {
    let page = page.max(1);
    let mut a = Cursor {
        reader: source,
        buf: VecDeque::new(),
        after: None,
        done: false,
        page,
        rows: 0,
    };
    let mut b = Cursor {
        reader: target,
        buf: VecDeque::new(),
        after: None,
        done: false,
        page,
        rows: 0,
    };
    let mut diff = TableDiff::new(
        table.name.clone(),
        table.key_columns().map(|c| c.name.clone()).collect(),
    );
    let record = |diff: &mut TableDiff, key: Key, kind: DifferenceKind| {
        match kind {
            DifferenceKind::Missing => diff.missing += 1,
            DifferenceKind::Extra => diff.extra += 1,
            DifferenceKind::Different { .. } => diff.different += 1,
        }
        if diff.differences.len() < KEEP_DIFFERENCES {
            diff.differences.push(Difference { key, kind });
        }
    };
    loop {
        let order = match (a.peek(table)?, b.peek(table)?) {
            (None, None) => break,
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(ra), Some(rb)) => cmp_keys(&table.key_of(ra), &table.key_of(rb)),
        };
        match order {
            Ordering::Less => {
                if let Some(r) = a.pop() {
                    record(&mut diff, table.key_of(&r), DifferenceKind::Missing);
                }
            }
            Ordering::Greater => {
                if let Some(r) = b.pop() {
                    record(&mut diff, table.key_of(&r), DifferenceKind::Extra);
                }
            }
            Ordering::Equal => {
                if let (Some(ra), Some(rb)) = (a.pop(), b.pop()) {
                    let text = |c: &Column, v: &Value| {
                        value_text(v).map_err(|e| e.at(&table.name, &c.name, &table.key_of(&ra)))
                    };
                    let columns: Vec<ColumnDiff> = table
                        .columns
                        .iter()
                        .zip(ra.iter().zip(rb.iter()))
                        .filter(|(_, (x, y))| !same_value(x, y))
                        .map(|(c, (x, y))| {
                            Ok(ColumnDiff {
                                column: c.name.clone(),
                                source: text(c, x)?,
                                target: text(c, y)?,
                            })
                        })
                        .collect::<Result<_, ConnectorError>>()?;
                    if !columns.is_empty() {
                        record(
                            &mut diff,
                            table.key_of(&ra),
                            DifferenceKind::Different { columns },
                        );
                    }
                }
            }
        }
    }
    diff.source_rows = a.rows;
    diff.target_rows = b.rows;
    Ok(diff)
}

/// Compares every table in `tables`, one after another, calling `on_table` after each.
pub fn verify_tables<A: TableReader, B: TableReader>(
    source: &mut A,
    target: &mut B,
    tables: &[TableSchema],
    page: usize,
    on_table: &mut dyn FnMut(&TableDiff),
) -> Result<VerifyReport, ConnectorError> {
    let mut report = VerifyReport::default();
    for t in tables {
        let diff = compare_table(source, target, t, page)?;
        on_table(&diff);
        report.tables.push(diff);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_order_like_the_engines() {
        assert_eq!(cmp_values(&Value::Int(2), &Value::Int(10)), Ordering::Less);
        assert_eq!(
            cmp_values(&Value::Text("B".into()), &Value::Text("a".into())),
            Ordering::Less
        );
        assert_eq!(cmp_values(&Value::Null, &Value::Int(-5)), Ordering::Less);
        assert_eq!(
            cmp_values(&Value::Int(3), &Value::Text("1".into())),
            Ordering::Less
        );
        assert_eq!(
            cmp_keys(
                &[Value::Int(1), Value::Text("b".into())],
                &[Value::Int(1), Value::Text("a".into())]
            ),
            Ordering::Greater
        );
    }

    #[test]
    fn decimals_compare_by_value() {
        let a = Value::Decimal("1.50".parse().unwrap());
        let b = Value::Decimal("1.5".parse().unwrap());
        assert!(same_value(&a, &b));
        assert!(!same_value(&Value::Float64(0.0), &Value::Float64(-0.0)));
    }
}
