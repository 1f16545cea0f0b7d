//! `verify` on SQLite: the canonical text and row hash of `cutover_connector::canonical`,
//! computed inside SQLite by functions registered on the connection (so a range's digest is
//! one aggregate query), plus canonical rows, repairs and `_cutover_mismatches`.
//!
//! SQLite's storage classes map to canonical text directly: INTEGER as digits, REAL in the
//! shortest round-trip form, TEXT as it is (as canonical JSON in columns declared JSON), BLOB
//! as `\x` hex (`docs/CANONICAL.md`). TEXT that is not valid UTF-8 (SQLite stores whatever
//! bytes it is given) and JSON nested deeper than `canonical::MAX_JSON_DEPTH` have no canonical
//! text: the registered functions fail the query, and verify then finds the first such value
//! and names its table, column and key. SQLite cannot slice a table physically: slice 0 reads
//! everything. It has no change stream verify can wait on, so `--live` is for PostgreSQL.

use std::path::Path;

use std::collections::HashMap;

use cutover_connector::canonical::{
    bytes_text, float64_text, json_text, row_hash, row_text, text_from_bytes, value_text,
    CanonicalError,
};
use cutover_connector::{
    CanonicalRow, ConnectorError, KeyRange, Mismatch, RangeChecksum, RangeDigest, Slice,
};
use cutover_model::{ColumnType, Key, Position, Row, TableSchema, Value};
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
    /// Each column's declared type here, by table and column name: values are canonical by
    /// this side's own type map, whatever engine described the table to verify.
    declared: HashMap<(String, String), String>,
}

impl SqliteVerifier {
    pub fn open(path: &Path) -> Result<SqliteVerifier, ConnectorError> {
        let conn = crate::open_existing(path)?;
        register(&conn).map_err(|e| map(format!("preparing {} for verify", path.display()), e))?;
        let declared = crate::schema::read_tables(&conn)?
            .into_iter()
            .flat_map(|t| {
                t.columns
                    .into_iter()
                    .map(move |c| ((t.name.name.clone(), c.name), c.declared_type))
            })
            .collect();
        Ok(SqliteVerifier {
            conn,
            path: path.display().to_string(),
            declared,
        })
    }

    /// The column as the canonical functions take it: `cutover_json("c")` for JSON columns,
    /// `cutover_typed("c", 'DECLARED')` for a type this side stores in another form than its
    /// canonical text (booleans as 0/1, UUIDs as 16 bytes, decimals and times as text, 32-bit
    /// floats as REAL: the SQLite type map), the column itself otherwise.
    fn column_expr(&self, t: &TableSchema, i: usize) -> String {
        let c = &t.columns[i];
        let declared = self
            .declared
            .get(&(t.name.name.clone(), c.name.clone()))
            .map_or(c.declared_type.as_str(), String::as_str);
        if declared.to_ascii_uppercase().contains("JSON") {
            format!("cutover_json({})", ident(&c.name))
        } else if typed_kind(&crate::schema::column_type(declared)) {
            format!(
                "cutover_typed({}, '{}')",
                ident(&c.name),
                declared.replace('\'', "''")
            )
        } else {
            ident(&c.name)
        }
    }

    /// A value read from `column` as the SQLite reader reads it (`types::typed`): keys and
    /// rows that go to the other side of verify in their typed values (a UUID key as a UUID,
    /// not 16 bytes).
    /// This side's type of each of `columns` of `t` (`None`: not declared here), looked up once
    /// per query, not per row.
    fn types_of<'c>(
        &self,
        t: &TableSchema,
        columns: impl Iterator<Item = &'c cutover_model::Column>,
    ) -> Vec<Option<ColumnType>> {
        columns
            .map(|c| {
                self.declared
                    .get(&(t.name.name.clone(), c.name.clone()))
                    .map(|d| crate::schema::column_type(d))
            })
            .collect()
    }

    fn hash_expr(&self, t: &TableSchema) -> String {
        let cols: Vec<String> = (0..t.columns.len())
            .map(|i| self.column_expr(t, i))
            .collect();
        format!("cutover_row_hash({})", cols.join(", "))
    }

    /// The database's tables (cutover's own left out).
    pub fn tables(&self) -> Result<Vec<TableSchema>, ConnectorError> {
        crate::schema::read_tables(&self.conn)
    }
}

/// A stored value's canonical text; `json`: the column is declared JSON, so text is canonical
/// JSON (text that is not JSON stays as it is).
fn canonical(v: ValueRef<'_>, json: bool) -> Result<Option<String>, CanonicalError> {
    Ok(match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(float64_text(f)),
        ValueRef::Text(t) => {
            let t = text_from_bytes(t)?;
            if json {
                Some(json_text(t)?.unwrap_or_else(|| t.to_owned()))
            } else {
                Some(t.to_owned())
            }
        }
        ValueRef::Blob(b) => Some(bytes_text(b)),
    })
}

/// A canonical-text error as the registered function's error (SQLite then fails the query).
fn function_error(e: CanonicalError) -> rusqlite::Error {
    rusqlite::Error::UserFunctionError(Box::new(e))
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
    // The row's values, each already canonical (JSON columns through `cutover_json`).
    conn.create_scalar_function("cutover_row_hash", -1, flags, |ctx| {
        let values: Vec<Option<String>> = (0..ctx.len())
            .map(|i| canonical(ctx.get_raw(i), false))
            .collect::<Result<_, _>>()
            .map_err(function_error)?;
        Ok(row_hash(&row_text(values.iter().map(|v| v.as_deref()))))
    })?;
    conn.create_scalar_function("cutover_canon", 1, flags, |ctx| {
        canonical(ctx.get_raw(0), false).map_err(function_error)
    })?;
    conn.create_scalar_function("cutover_json", 1, flags, |ctx| {
        canonical(ctx.get_raw(0), true).map_err(function_error)
    })?;
    // A value by its column's declared type (the second argument, constant per statement):
    // read as the SQLite reader reads it (`types::typed`), then its canonical text.
    conn.create_scalar_function("cutover_typed", 2, flags, |ctx| {
        let ty = ctx.get_or_create_aux(1, |v| -> rusqlite::Result<ColumnType> {
            Ok(crate::schema::column_type(v.as_str().unwrap_or("")))
        })?;
        let raw = ctx.get_raw(0);
        let Some(value) = from_ref(raw) else {
            // Not UTF-8: `canonical` says so.
            return canonical(raw, false).map_err(function_error);
        };
        let typed = crate::types::typed(&ty, value);
        value_text(&typed).map_err(function_error)
    })?;
    conn.create_aggregate_function("cutover_sum64", 1, flags, Sum64)
}

/// Whether the canonical text of the column's text is canonical JSON.
fn is_json(c: &cutover_model::Column) -> bool {
    c.declared_type.to_ascii_uppercase().contains("JSON")
}

/// A value of a row read back, or an error naming the table, column and key if SQLite holds
/// text that is not UTF-8 there.
fn read_value(
    t: &TableSchema,
    r: &rusqlite::Row<'_>,
    at: usize,
    column: &str,
    key: &[Value],
) -> Result<Value, ConnectorError> {
    let v = r
        .get_ref(at)
        .map_err(|e| map(format!("reading table {}", t.name), e))?;
    from_ref(v).ok_or_else(|| {
        let valid_up_to = match v {
            ValueRef::Text(b) => std::str::from_utf8(b).err().map_or(0, |e| e.valid_up_to()),
            _ => 0,
        };
        CanonicalError::InvalidUtf8 { valid_up_to }.at(&t.name, column, key)
    })
}

/// A key as messages show it even when its text is not UTF-8 (then as bytes).
fn key_for_message(r: &rusqlite::Row<'_>, t: &TableSchema) -> Key {
    (0..t.primary_key.len())
        .map(|i| match r.get_ref(i) {
            Ok(v) => from_ref(v).unwrap_or_else(|| match v {
                ValueRef::Text(b) => Value::Bytes(b.to_vec()),
                _ => Value::Null,
            }),
            Err(_) => Value::Null,
        })
        .collect()
}

/// `v` as the SQLite reader reads a value of `ty` (`types::typed`); as stored without a type.
fn typed(ty: &Option<ColumnType>, v: Value) -> Value {
    match ty {
        Some(ty) => crate::types::typed(ty, v),
        None => v,
    }
}

/// Whether values of `ty` are stored in another form than their canonical text, so that
/// `cutover_typed` must read them by the type first (`types::typed`).
fn typed_kind(ty: &ColumnType) -> bool {
    matches!(
        ty,
        ColumnType::Bool
            | ColumnType::Float { bits: 32 }
            | ColumnType::Uuid
            | ColumnType::Decimal { .. }
            | ColumnType::Date
            | ColumnType::Time { .. }
            | ColumnType::Timestamp { .. }
            | ColumnType::Interval
            | ColumnType::Array(_)
    )
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
            self.hash_expr(t),
            ident(&t.name.name)
        );
        let ctx = || format!("hashing table {} in {}", t.name, self.path);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let (rows, sum): (i64, i64) = stmt
            .query_row(params_from_iter(params.iter().map(|v| Param(v))), |r| {
                Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0)))
            })
            .map_err(|e| self.explain(t, &filter, &params, map(ctx(), e)))?;
        Ok(RangeDigest {
            rows: rows.max(0) as u64,
            sum: sum as u64,
        })
    }

    /// `failed`, a query over the canonical functions, unless a value in the rows it read
    /// (`sql_tail`, `params`) has no canonical text: then an error naming that value's table,
    /// column and key, and the fix.
    fn explain(
        &self,
        t: &TableSchema,
        sql_tail: &str,
        params: &[&Value],
        failed: ConnectorError,
    ) -> ConnectorError {
        let nk = t.primary_key.len();
        let mut cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        cols.extend(t.columns.iter().map(|c| ident(&c.name)));
        let sql = format!(
            "SELECT {} FROM {} {sql_tail}",
            cols.join(", "),
            ident(&t.name.name)
        );
        let found = (|| -> rusqlite::Result<Option<ConnectorError>> {
            let mut stmt = self.conn.prepare(&sql)?;
            let mut rows = stmt.query(params_from_iter(params.iter().map(|v| Param(v))))?;
            while let Some(r) = rows.next()? {
                for (i, c) in t.columns.iter().enumerate() {
                    if let Err(e) = canonical(r.get_ref(nk + i)?, is_json(c)) {
                        return Ok(Some(e.at(&t.name, &c.name, &key_for_message(r, t))));
                    }
                }
            }
            Ok(None)
        })();
        match found {
            Ok(Some(e)) => e,
            _ => failed,
        }
    }

    fn select_canonical(
        &self,
        t: &TableSchema,
        sql_tail: &str,
        params: &[&Value],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let nk = t.primary_key.len();
        let mut cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        cols.extend(
            (0..t.columns.len()).map(|i| format!("cutover_canon({})", self.column_expr(t, i))),
        );
        let sql = format!(
            "SELECT {} FROM {} {sql_tail}",
            cols.join(", "),
            ident(&t.name.name)
        );
        let ctx = || format!("reading rows of table {} in {}", t.name, self.path);
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let explain = |e| self.explain(t, sql_tail, params, map(ctx(), e));
        let mut rows = stmt
            .query(params_from_iter(params.iter().map(|v| Param(v))))
            .map_err(explain)?;
        let mut out = Vec::new();
        let key_types = self.types_of(t, t.key_columns());
        while let Some(r) = rows.next().map_err(explain)? {
            let shown = key_for_message(r, t);
            let key: Key = t
                .key_columns()
                .enumerate()
                .map(|(i, c)| read_value(t, r, i, &c.name, &shown).map(|v| typed(&key_types[i], v)))
                .collect::<Result<_, _>>()?;
            let values: Vec<Option<String>> = (0..t.columns.len())
                .map(|i| r.get::<_, Option<String>>(nk + i))
                .collect::<Result<_, _>>()
                .map_err(|e| map(ctx(), e))?;
            out.push(CanonicalRow { key, values });
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
        let key_types = self.types_of(table, table.key_columns());
        while let Some(r) = rs.next().map_err(|e| map(ctx(), e))? {
            if seen > 0 && seen.is_multiple_of(step) && out.len() + 1 < parts {
                let shown = key_for_message(r, table);
                let key: Key = table
                    .key_columns()
                    .enumerate()
                    .map(|(i, c)| {
                        read_value(table, r, i, &c.name, &shown).map(|v| typed(&key_types[i], v))
                    })
                    .collect::<Result<_, _>>()?;
                out.push(key);
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
        let types = self.types_of(table, table.columns.iter());
        for k in keys {
            let mut rows = stmt
                .query(params_from_iter(k.iter().map(Param)))
                .map_err(|e| map(ctx(), e))?;
            while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
                let row: Row = table
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| read_value(table, r, i, &c.name, k).map(|v| typed(&types[i], v)))
                    .collect::<Result<_, _>>()?;
                out.push(row);
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
        tx.execute_batch(cutover_state::sqlite::MISMATCHES)
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
    use cutover_verify::bisect::{self, Options, VerifyProgress};

    /// Two databases, the same but for what `second` inserts, verified with bisection.
    fn verify_pair(schema: &str, first: &str, second: &str) -> Result<usize, ConnectorError> {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
        for (path, rows) in [(&a, first), (&b, second)] {
            Connection::open(path)
                .unwrap()
                .execute_batch(&format!("{schema} {rows}"))
                .unwrap();
        }
        let tables = SqliteVerifier::open(&a).unwrap().tables().unwrap();
        let report = bisect::verify(
            &|| SqliteVerifier::open(&a),
            &|| SqliteVerifier::open(&b),
            &tables,
            &Options::default(),
            &VerifyProgress::default(),
        )?;
        Ok(report.differences() as usize)
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error_not_equal() {
        // Both sides would read "a\u{fffd}" if invalid bytes were replaced.
        let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT); \
                      INSERT INTO t VALUES (1, 'ok'), (2, 'fine');";
        let err = verify_pair(
            schema,
            "INSERT INTO t VALUES (3, CAST(x'61ff' AS TEXT));",
            "INSERT INTO t VALUES (3, CAST(x'61fe' AS TEXT));",
        )
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            err.kind(),
            cutover_connector::ErrorKind::InvalidInput,
            "{msg}"
        );
        for part in ["table t", "column s", "key (3)", "not valid UTF-8", "BLOB"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        // The same bytes as BLOBs compare, and differ.
        let differences = verify_pair(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, s BLOB);",
            "INSERT INTO t VALUES (3, x'61ff');",
            "INSERT INTO t VALUES (3, x'61fe');",
        )
        .unwrap();
        assert_eq!(differences, 1);
    }

    #[test]
    fn leaf_reads_name_the_row_whose_text_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.db");
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "CREATE TABLE t (k TEXT PRIMARY KEY, s TEXT);
                 INSERT INTO t VALUES ('a', 'x'), ('b', CAST(x'ff' AS TEXT)), (CAST(x'c0' AS TEXT), 'y');",
            )
            .unwrap();
        let mut v = SqliteVerifier::open(&path).unwrap();
        let t = v.tables().unwrap().remove(0);
        let err = v
            .canonical_rows(&t, &KeyRange::all())
            .unwrap_err()
            .to_string();
        assert!(err.contains("column s, key ('b')"), "{err}");
        // A key that is not UTF-8 is named as bytes.
        let after_b = KeyRange {
            start: Some(vec![Value::Text("c".into())]),
            end: None,
        };
        let err = v.canonical_rows(&t, &after_b).unwrap_err().to_string();
        assert!(err.contains("column k, key (<1 bytes>)"), "{err}");
        let err = v
            .exact_rows(&t, &[vec![Value::Text("b".into())]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("column s, key ('b')"), "{err}");
    }

    #[test]
    fn json_nested_too_deep_is_an_error_naming_the_row() {
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let schema = "CREATE TABLE t (id INTEGER PRIMARY KEY, j JSON);";
        let row = format!("INSERT INTO t VALUES (7, '{deep}');");
        let err = verify_pair(schema, &row, &row).unwrap_err();
        let msg = err.to_string();
        assert_eq!(
            err.kind(),
            cutover_connector::ErrorKind::UnsupportedType,
            "{msg}"
        );
        for part in ["table t", "column j", "key (7)", "deeper than 1000 levels"] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
    }

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
