//! `verify` on SQLite: the canonical text and row hash of `cutover_connector::canonical`,
//! computed inside SQLite by functions registered on the connection (so a range's digest is
//! one aggregate query), plus canonical rows, repairs and `_cutover_mismatches`.
//!
//! SQLite's storage classes map to canonical text directly: INTEGER as digits, REAL in the
//! shortest round-trip form, TEXT as it is (as canonical JSON in columns declared JSON), BLOB
//! as `\x` hex. SQLite cannot slice a table physically: slice 0 reads everything. It has no
//! change stream verify can wait on, so `--live` is for PostgreSQL.

use std::path::Path;

use cutover_connector::canonical::{bytes_text, float64_text, json_text, row_hash, row_text};
use cutover_connector::{
    CanonicalRow, ConnectorError, KeyRange, Mismatch, RangeChecksum, RangeDigest, Slice,
};
use cutover_model::{Key, Position, Row, TableSchema, Value};
use rusqlite::functions::{Aggregate, Context, FunctionFlags};
use rusqlite::types::ValueRef;
use rusqlite::{params_from_iter, Connection};

use crate::error::{ident, map};
use crate::sql::{column_list, key_match, order_by_key, range_where};
use crate::value::{from_ref, Param};

/// Where the target keeps verify's differences (removed by `cleanup` with the control store).
pub(crate) const MISMATCHES: &str = "_cutover_mismatches";

/// One side of a SQLite verify.
pub struct SqliteVerifier {
    conn: Connection,
    path: String,
}

impl SqliteVerifier {
    pub fn open(path: &Path) -> Result<SqliteVerifier, ConnectorError> {
        let conn = crate::open_existing(path)?;
        register(&conn).map_err(|e| map(format!("preparing {} for verify", path.display()), e))?;
        Ok(SqliteVerifier {
            conn,
            path: path.display().to_string(),
        })
    }

    /// The database's tables (cutover's own left out).
    pub fn tables(&self) -> Result<Vec<TableSchema>, ConnectorError> {
        crate::schema::read_tables(&self.conn)
    }
}

fn canonical(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(float64_text(f)),
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Some(bytes_text(b)),
    }
}

/// Wrapping sum of 64-bit integers (SQLite's `sum` fails on overflow).
struct Sum64;

impl Aggregate<i64, i64> for Sum64 {
    fn init(&self, _: &mut Context<'_>) -> rusqlite::Result<i64> {
        Ok(0)
    }
    fn step(&self, ctx: &mut Context<'_>, acc: &mut i64) -> rusqlite::Result<()> {
        *acc = acc.wrapping_add(ctx.get::<i64>(0)?);
        Ok(())
    }
    fn finalize(&self, _: &mut Context<'_>, acc: Option<i64>) -> rusqlite::Result<i64> {
        Ok(acc.unwrap_or(0))
    }
}

fn register(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC;
    conn.create_scalar_function("cutover_row_hash", -1, flags, |ctx| {
        let values: Vec<Option<String>> = (0..ctx.len())
            .map(|i| ctx.get_raw(i))
            .map(canonical)
            .collect();
        Ok(row_hash(&row_text(values.iter().map(|v| v.as_deref()))))
    })?;
    conn.create_scalar_function("cutover_canon", 1, flags, |ctx| {
        Ok(canonical(ctx.get_raw(0)))
    })?;
    conn.create_scalar_function("cutover_json", 1, flags, |ctx| {
        Ok(match ctx.get_raw(0) {
            ValueRef::Text(t) => {
                let t = String::from_utf8_lossy(t);
                Some(json_text(&t).unwrap_or_else(|| t.into_owned()))
            }
            other => canonical(other),
        })
    })?;
    conn.create_aggregate_function("cutover_sum64", 1, flags, Sum64)
}

/// The column as the canonical functions take it: `cutover_json("c")` for JSON columns.
fn column_expr(t: &TableSchema, i: usize) -> String {
    let c = &t.columns[i];
    if c.declared_type.to_ascii_uppercase().contains("JSON") {
        format!("cutover_json({})", ident(&c.name))
    } else {
        ident(&c.name)
    }
}

/// The WHERE clause of `[start, end)`.
fn bounds<'a>(
    t: &TableSchema,
    start: Option<&'a Key>,
    end: Option<&'a Key>,
) -> (String, Vec<&'a Value>) {
    range_where(
        t,
        start.map(|k| (k.as_slice(), true)),
        end.map(|k| k.as_slice()),
    )
}

fn hash_expr(t: &TableSchema) -> String {
    let cols: Vec<String> = (0..t.columns.len()).map(|i| column_expr(t, i)).collect();
    format!("cutover_row_hash({})", cols.join(", "))
}

impl SqliteVerifier {
    /// `count(*)` and digest of the rows in `[start, end)`.
    fn digest(
        &self,
        t: &TableSchema,
        start: Option<&Key>,
        end: Option<&Key>,
    ) -> Result<RangeDigest, ConnectorError> {
        let (filter, params) = bounds(t, start, end);
        let sql = format!(
            "SELECT count(*), cutover_sum64({}) FROM {}{filter}",
            hash_expr(t),
            ident(&t.name.name)
        );
        let ctx = || format!("hashing table {} in {}", t.name, self.path);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let (rows, sum): (i64, i64) = stmt
            .query_row(params_from_iter(params.into_iter().map(Param)), |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
            })
            .map_err(|e| map(ctx(), e))?;
        Ok(RangeDigest {
            rows: rows.max(0) as u64,
            sum: sum as u64,
        })
    }

    fn select_canonical(
        &self,
        t: &TableSchema,
        sql_tail: &str,
        params: &[&Value],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let nk = t.primary_key.len();
        let mut cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        cols.extend((0..t.columns.len()).map(|i| format!("cutover_canon({})", column_expr(t, i))));
        let sql = format!(
            "SELECT {} FROM {} {sql_tail}",
            cols.join(", "),
            ident(&t.name.name)
        );
        let ctx = || format!("reading rows of table {} in {}", t.name, self.path);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let mut rows = stmt
            .query(params_from_iter(params.iter().map(|v| Param(v))))
            .map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
            let key: Option<Key> = (0..nk)
                .map(|i| r.get_ref(i).ok().and_then(from_ref))
                .collect();
            let values: Vec<Option<String>> = (0..t.columns.len())
                .map(|i| r.get::<_, Option<String>>(nk + i))
                .collect::<Result<_, _>>()
                .map_err(|e| map(ctx(), e))?;
            out.push(CanonicalRow {
                key: key.unwrap_or_default(),
                values,
            });
        }
        if nk == 0 {
            out.sort_by(|a, b| a.values.cmp(&b.values));
        }
        Ok(out)
    }
}

impl RangeChecksum for SqliteVerifier {
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        let n: i64 = self
            .conn
            .query_row(
                &format!("SELECT count(*) FROM {}", ident(&table.name.name)),
                [],
                |r| r.get(0),
            )
            .map_err(|e| map(format!("counting table {} in {}", table.name, self.path), e))?;
        Ok(n.max(0) as u64)
    }

    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        bounds: &[Key],
        slice: Slice,
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        if slice.index > 0 {
            return Ok(vec![RangeDigest::default(); bounds.len() + 1]);
        }
        let mut edges: Vec<Option<&Key>> = vec![range.start.as_ref()];
        edges.extend(bounds.iter().map(Some));
        edges.push(range.end.as_ref());
        edges
            .windows(2)
            .map(|w| self.digest(table, w[0], w[1]))
            .collect()
    }

    fn split(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        parts: usize,
    ) -> Result<Vec<Key>, ConnectorError> {
        if !table.has_primary_key() || parts < 2 {
            return Ok(Vec::new());
        }
        let rows = self
            .digest(table, range.start.as_ref(), range.end.as_ref())?
            .rows;
        let step = (rows / parts as u64).max(1);
        let (filter, params) = bounds(table, range.start.as_ref(), range.end.as_ref());
        let keys: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
        let sql = format!(
            "SELECT {} FROM {}{filter} {}",
            keys.join(", "),
            ident(&table.name.name),
            order_by_key(table)
        );
        let ctx = || format!("splitting table {} in {}", table.name, self.path);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let mut rs = stmt
            .query(params_from_iter(params.into_iter().map(Param)))
            .map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        let mut seen = 0u64;
        while let Some(r) = rs.next().map_err(|e| map(ctx(), e))? {
            if seen > 0 && seen.is_multiple_of(step) && out.len() + 1 < parts {
                let key: Option<Key> = (0..keys.len())
                    .map(|i| r.get_ref(i).ok().and_then(from_ref))
                    .collect();
                out.extend(key);
            }
            seen += 1;
        }
        Ok(out)
    }

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let (filter, params) = bounds(table, range.start.as_ref(), range.end.as_ref());
        let order = if table.has_primary_key() {
            order_by_key(table)
        } else {
            String::new()
        };
        self.select_canonical(table, &format!("{filter} {order}"), &params)
    }

    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let tail = format!("WHERE {}", key_match(table));
        let mut out = Vec::new();
        for k in keys {
            let params: Vec<&Value> = k.iter().collect();
            out.extend(self.select_canonical(table, &tail, &params)?);
        }
        Ok(out)
    }

    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let sql = format!(
            "SELECT {} FROM {} WHERE {}",
            column_list(table),
            ident(&table.name.name),
            key_match(table)
        );
        let ctx = || format!("reading rows of table {} to repair", table.name);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        for k in keys {
            let mut rows = stmt
                .query(params_from_iter(k.iter().map(Param)))
                .map_err(|e| map(ctx(), e))?;
            while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
                let row: Option<Row> = (0..table.columns.len())
                    .map(|i| r.get_ref(i).ok().and_then(from_ref))
                    .collect();
                out.extend(row);
            }
        }
        Ok(out)
    }

    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Key],
    ) -> Result<(), ConnectorError> {
        let ctx = || {
            format!(
                "repairing table {} in {} (nothing of this batch was written)",
                table.name, self.path
            )
        };
        let keys: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
        let updates: Vec<String> = table
            .columns
            .iter()
            .enumerate()
            .filter(|(i, _)| !table.primary_key.contains(i))
            .map(|(_, c)| format!("{0} = excluded.{0}", ident(&c.name)))
            .collect();
        let upsert = format!(
            "INSERT INTO {} ({}) VALUES ({}) ON CONFLICT ({}) {}",
            ident(&table.name.name),
            column_list(table),
            vec!["?"; table.columns.len()].join(", "),
            keys.join(", "),
            if updates.is_empty() {
                "DO NOTHING".to_owned()
            } else {
                format!("DO UPDATE SET {}", updates.join(", "))
            }
        );
        let delete = format!(
            "DELETE FROM {} WHERE {}",
            ident(&table.name.name),
            key_match(table)
        );
        let tx = self.conn.transaction().map_err(|e| map(ctx(), e))?;
        {
            let mut del = tx.prepare(&delete).map_err(|e| map(ctx(), e))?;
            for k in deletes {
                del.execute(params_from_iter(k.iter().map(Param)))
                    .map_err(|e| map(ctx(), e))?;
            }
            let mut up = tx.prepare(&upsert).map_err(|e| map(ctx(), e))?;
            for r in rows {
                up.execute(params_from_iter(r.iter().map(Param)))
                    .map_err(|e| map(ctx(), e))?;
            }
        }
        tx.commit().map_err(|e| map(ctx(), e))
    }

    fn record_mismatches(&mut self, found: &[Mismatch]) -> Result<(), ConnectorError> {
        if found.is_empty() {
            return Ok(());
        }
        let ctx = || {
            format!(
                "recording mismatches in _cutover_mismatches of {}",
                self.path
            )
        };
        let tx = self.conn.transaction().map_err(|e| map(ctx(), e))?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {MISMATCHES} (
                 id INTEGER PRIMARY KEY,
                 found_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
                 table_name TEXT NOT NULL,
                 key TEXT NOT NULL,
                 kind TEXT NOT NULL CHECK (kind IN ('missing', 'extra', 'different')),
                 columns TEXT NOT NULL DEFAULT '',
                 detail TEXT NOT NULL DEFAULT '')"
        ))
        .map_err(|e| map(ctx(), e))?;
        {
            let mut stmt = tx
                .prepare(&format!(
                    "INSERT INTO {MISMATCHES} (table_name, key, kind, columns, detail) \
                     VALUES (?1, ?2, ?3, ?4, ?5)"
                ))
                .map_err(|e| map(ctx(), e))?;
            for m in found {
                stmt.execute((
                    m.table.to_string(),
                    &m.key,
                    m.kind,
                    m.columns.join(","),
                    &m.detail,
                ))
                .map_err(|e| map(ctx(), e))?;
            }
        }
        tx.commit().map_err(|e| map(ctx(), e))
    }

    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(None)
    }

    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_hashes_rows_as_the_canonical_rules_say() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, r REAL, s TEXT, b BLOB, j JSON);
             INSERT INTO t VALUES (1, 0.1, 'a b', x'00ff', '{\"b\":1, \"a\":[1e2]}'), (2, NULL, '', NULL, NULL);",
        )
        .unwrap();
        drop(c);
        let mut v = SqliteVerifier::open(&path).unwrap();
        let t = v.tables().unwrap().remove(0);
        let rows = v.canonical_rows(&t, &KeyRange::all()).unwrap();
        assert_eq!(
            rows[0].values,
            vec![
                Some("1".to_owned()),
                Some("0.1".to_owned()),
                Some("a b".to_owned()),
                Some("\\x00ff".to_owned()),
                Some("{\"a\": [100], \"b\": 1}".to_owned())
            ]
        );
        let expected = rows.iter().fold(0u64, |acc, r| {
            acc.wrapping_add(row_hash(&row_text(r.values.iter().map(|v| v.as_deref()))) as u64)
        });
        let d = v.checksum(&t, &KeyRange::all(), &[], Slice::WHOLE).unwrap();
        assert_eq!(
            d,
            vec![RangeDigest {
                rows: 2,
                sum: expected
            }]
        );
        let split = v
            .checksum(&t, &KeyRange::all(), &[vec![Value::Int(2)]], Slice::WHOLE)
            .unwrap();
        assert_eq!(split[0] + split[1], d[0]);
        assert_eq!(split[0].rows, 1);
    }
}
