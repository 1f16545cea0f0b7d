//! `verify` on MySQL/MariaDB: range digests computed in the server, so only counts and sums
//! cross the network.
//!
//! Each column's canonical text (`docs/CANONICAL.md`) is a SQL expression of this side's own
//! column type ([`canonical_sql`]): integers as digits, booleans `t`/`f`, decimals without
//! trailing fractional zeros, text as it is, bytes as `\x` hex, dates and times formatted and
//! trimmed, `timestamp` with `+00`, `bit(n)` as its digits. The row text quotes each value as
//! `record_out` does, and the row hash is the first 16 hex digits of its MD5 as an unsigned
//! 64-bit number; the digest is `COUNT(*)` and the exact `SUM` of the hashes (a DECIMAL; its low
//! 64 bits are the canonical sum, the same modulo 2^64 as the signed sum the spec names).
//!
//! Two kinds of column have no canonical text in MySQL's SQL: floating point (the spec's
//! shortest round-trip form) and JSON (sorted keys, re-escaped strings). A table with one of
//! them is hashed here instead, from its rows read in key order and canonicalised by
//! `cutover_connector::canonical` (the reference implementation): correct, but every row
//! crosses the network. MySQL cannot slice a table physically: slice 0 reads everything.

use std::collections::HashMap;

use cutover_connector::canonical::{row_hash, row_text, value_text};
use cutover_connector::{
    key_text, CanonicalRow, ConnectorError, ErrorKind, KeyRange, Mismatch, PositionOrder,
    RangeChecksum, RangeDigest, Slice,
};
use cutover_model::{Column, ColumnType, Key, Position, Row, TableSchema, Value};
use mysql_async::{Params, Value as My};

use crate::client::{ident, Client};
use crate::encode::encode;
use crate::endpoint::MySqlEndpoint;
use crate::reader::{decode_row, key_condition, order_by_key, params, select_range};
use crate::value::{bit_width, decode};

/// Rows read per query where a table is hashed here rather than in the server.
const PAGE: usize = 5_000;

/// The canonical text of column `c` (this side's own type) as a MySQL expression that is NULL
/// exactly when the value is; `None` where MySQL's SQL cannot produce it.
pub(crate) fn canonical_sql(c: &Column) -> Option<String> {
    let col = ident(&c.name);
    let trim = |e: String| format!("TRIM(TRAILING '.' FROM TRIM(TRAILING '0' FROM {e}))");
    Some(match &c.ty {
        // `YEAR` prints four digits (`0000`); its value, as read, is the number (`0`).
        ColumnType::Int { .. } if c.declared_type.starts_with("year") => {
            format!("CAST({col} + 0 AS CHAR)")
        }
        ColumnType::Int { .. } => format!("CAST({col} AS CHAR)"),
        ColumnType::Bool => {
            format!("CASE {col} WHEN 0 THEN 'f' WHEN 1 THEN 't' ELSE CAST({col} AS CHAR) END")
        }
        ColumnType::Decimal { scale, .. } => {
            if scale.unwrap_or(0) == 0 {
                format!("CAST({col} AS CHAR)")
            } else {
                // 1.50 → 1.5, 0.00 → 0, -0.50 → -0.5; a zero never keeps its sign.
                let t = trim(format!("CAST({col} AS CHAR)"));
                format!("IF({col} = 0, '0', {t})")
            }
        }
        ColumnType::Text { .. } => format!("CONVERT({col} USING utf8mb4)"),
        ColumnType::Bytes { .. } => format!("CONCAT('\\\\x', LOWER(HEX({col})))"),
        ColumnType::Date => format!("DATE_FORMAT({col}, '%Y-%m-%d')"),
        ColumnType::Time { zoned: false } => trim(format!("TIME_FORMAT({col}, '%H:%i:%s.%f')")),
        ColumnType::Timestamp { zoned } => {
            let t = trim(format!("DATE_FORMAT({col}, '%Y-%m-%d %H:%i:%s.%f')"));
            if *zoned {
                format!("CONCAT({t}, '+00')")
            } else {
                t
            }
        }
        ColumnType::Uuid => format!("LOWER(CAST({col} AS CHAR))"),
        ColumnType::Other { name } if name.starts_with("bit") => {
            format!("LPAD(BIN({col} + 0), {}, '0')", bit_width(&c.declared_type))
        }
        ColumnType::Other { .. } => format!("CONVERT({col} USING utf8mb4)"),
        ColumnType::Float { .. }
        | ColumnType::Json { .. }
        | ColumnType::Time { zoned: true }
        | ColumnType::Interval
        | ColumnType::Array(_) => return None,
    })
}

/// A value's place in the row text: nothing for NULL, quoted (with `"` and `\` doubled) when
/// empty or holding `"`, `\`, `(`, `)`, `,` or white space, else as it is.
fn quoted(e: &str) -> String {
    format!(
        "IF({e} IS NULL, '', IF(LENGTH({e}) = 0 OR {e} REGEXP '[\",\\\\\\\\()[:space:]]', \
         CONCAT('\"', REPLACE(REPLACE({e}, '\\\\', '\\\\\\\\'), '\"', '\"\"'), '\"'), {e}))"
    )
}

/// The row hash of `t`'s row as a MySQL expression (unsigned), columns in `t`'s order.
fn hash_sql(exprs: &[String]) -> String {
    let parts: Vec<String> = exprs.iter().map(|e| quoted(e)).collect();
    format!(
        "CAST(CONV(LEFT(MD5(CONCAT('(', {}, ')')), 16), 16, 10) AS UNSIGNED)",
        parts.join(", ',', ")
    )
}

/// One side of a MySQL verify.
pub struct MySqlVerifier {
    client: Client,
    ep: MySqlEndpoint,
    /// This side's own tables, by name: values are canonical by this side's column types,
    /// whatever engine described the table to verify.
    own: HashMap<String, TableSchema>,
}

impl MySqlVerifier {
    pub fn open(ep: &MySqlEndpoint) -> Result<MySqlVerifier, ConnectorError> {
        let mut client = Client::connect(ep, Some(&ep.database))?;
        let own = crate::schema::read_tables(&mut client, ep)?
            .into_iter()
            .map(|t| (t.name.name.clone(), t))
            .collect();
        Ok(MySqlVerifier {
            client,
            ep: ep.clone(),
            own,
        })
    }

    /// This side's tables.
    pub fn tables(&self) -> Vec<TableSchema> {
        let mut v: Vec<TableSchema> = self.own.values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// `table` with this side's own columns, in `table`'s column order and key.
    fn local(&self, table: &TableSchema) -> Result<TableSchema, ConnectorError> {
        let own = self.own.get(&table.name.name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::NotFound,
                format!("table {} is not in {}", table.name.name, self.ep.describe()),
            )
        })?;
        let columns = table
            .columns
            .iter()
            .map(|c| {
                own.columns
                    .iter()
                    .find(|o| o.name == c.name)
                    .cloned()
                    .ok_or_else(|| {
                        ConnectorError::new(
                            ErrorKind::SchemaMismatch,
                            format!(
                                "table {} in {} has no column {}",
                                own.name,
                                self.ep.describe(),
                                c.name
                            ),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableSchema {
            name: own.name.clone(),
            columns,
            primary_key: table.primary_key.clone(),
            indexes: Vec::new(),
        })
    }

    fn live(&mut self) -> Result<&mut Client, ConnectorError> {
        if self.client.is_broken() {
            self.client = Client::connect(&self.ep, Some(&self.ep.database))?;
        }
        Ok(&mut self.client)
    }

    /// `WHERE` for keys in `[start, end)` with its parameters.
    fn range_where(t: &TableSchema, start: Option<&Key>, end: Option<&Key>) -> (String, Vec<My>) {
        let mut conds = Vec::new();
        let mut ps = Vec::new();
        if let Some(k) = start {
            let (c, p) = key_condition(t, k, ">", true);
            conds.push(c);
            ps.extend(p);
        }
        if let Some(k) = end {
            let (c, p) = key_condition(t, k, "<", false);
            conds.push(c);
            ps.extend(p);
        }
        if conds.is_empty() {
            (String::new(), ps)
        } else {
            (format!(" WHERE {}", conds.join(" AND ")), ps)
        }
    }

    /// Digests of the buckets `[edges[i], edges[i+1])`, in the server.
    fn digests_in_server(
        &mut self,
        t: &TableSchema,
        exprs: &[String],
        range: &KeyRange,
        bounds: &[Key],
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let mut ps = Vec::new();
        let bucket = if bounds.is_empty() || !t.has_primary_key() {
            "0".to_owned()
        } else {
            let mut whens = Vec::new();
            for (i, b) in bounds.iter().enumerate() {
                let (c, p) = key_condition(t, b, "<", false);
                whens.push(format!("WHEN {c} THEN {i}"));
                ps.extend(p);
            }
            format!("CASE {} ELSE {} END", whens.join(" "), bounds.len())
        };
        let (filter, p) = Self::range_where(t, range.start.as_ref(), range.end.as_ref());
        ps.extend(p);
        // Grouped over a derived table whose only columns are the bucket and the hash: MySQL
        // resolves a GROUP BY name against the table's columns before the select list's
        // aliases, so a column named like the bucket's alias would be grouped by instead.
        let sql = format!(
            "SELECT x.b, COUNT(*), CAST(SUM(x.h) AS CHAR) FROM (SELECT {bucket} AS b, {} AS h \
             FROM {}{filter}) AS x GROUP BY x.b",
            hash_sql(exprs),
            ident(&t.name.name)
        );
        let rows: Vec<(u64, u64, Option<String>)> = self
            .live()?
            .exec(&sql, params(ps))
            .map_err(|e| e.context(format!("hashing table {} in the server", t.name)))?;
        let mut out = vec![RangeDigest::default(); bounds.len() + 1];
        for (b, n, sum) in rows {
            let sum: u128 = sum.as_deref().unwrap_or("0").parse().map_err(|_| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!(
                        "the server's sum of row hashes of {} is not a number",
                        t.name
                    ),
                )
            })?;
            if let Some(d) = out.get_mut(b as usize) {
                *d = RangeDigest {
                    rows: n,
                    sum: sum as u64,
                };
            }
        }
        Ok(out)
    }

    /// Rows of `[start, end)` in key order (the first `max` of them, if given and the table has
    /// a key), a page at a time, each given to `each`.
    fn for_each_row(
        &mut self,
        t: &TableSchema,
        start: Option<&Key>,
        end: Option<&Key>,
        max: Option<usize>,
        mut each: impl FnMut(&TableSchema, Row) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        let db = self.ep.database.clone();
        let zero = self.ep.zero_date;
        let mut left = max;
        let mut after: Option<(Key, bool)> = start.map(|k| (k.clone(), true));
        loop {
            let limit = t
                .has_primary_key()
                .then(|| left.map_or(PAGE, |l| l.min(PAGE)));
            if limit == Some(0) {
                return Ok(());
            }
            let (sql, p) = select_range(&db, t, after.as_ref().map(|(k, i)| (k, *i)), end, limit);
            let rows: Vec<mysql_async::Row> = self.live()?.exec(&sql, params(p))?;
            let n = rows.len();
            let mut last = None;
            for r in &rows {
                let row = decode_row(t, r, zero)?;
                last = Some(t.key_of(&row));
                each(t, row)?;
            }
            if let Some(l) = left.as_mut() {
                *l -= n.min(*l);
            }
            match (limit, last) {
                (Some(l), Some(k)) if n == l => after = Some((k, false)),
                _ => return Ok(()),
            }
        }
    }

    /// The canonical texts of a decoded row, naming table, column and key on failure.
    fn canonical_values(t: &TableSchema, row: &Row) -> Result<Vec<Option<String>>, ConnectorError> {
        row.iter()
            .zip(&t.columns)
            .map(|(v, c)| value_text(v).map_err(|e| e.at(&t.name, &c.name, &t.key_of(row))))
            .collect()
    }

    /// [`RangeChecksum::canonical_rows`], of the first `max` rows of the range if given (and
    /// the table has a key).
    fn canonical_rows_upto(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        max: Option<usize>,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let t = self.local(table)?;
        let pushed: Vec<Option<String>> = t.columns.iter().map(canonical_sql).collect();
        if pushed.iter().all(Option::is_none) || !t.has_primary_key() {
            let mut out = Vec::new();
            let (start, end) = (range.start.as_ref(), range.end.as_ref());
            self.for_each_row(&t, start, end, max, |t, row| {
                out.push(CanonicalRow {
                    key: t.key_of(&row),
                    values: Self::canonical_values(t, &row)?,
                });
                Ok(())
            })?;
            if !t.has_primary_key() {
                out.sort_by(|a, b| a.values.cmp(&b.values));
            }
            return Ok(out);
        }
        // Key columns as values, then each column's canonical text where the server makes it
        // (the same expressions as the digests), or the column to canonicalise here.
        let keys: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        let cols: Vec<String> = t
            .columns
            .iter()
            .zip(&pushed)
            .map(|(c, p)| p.clone().unwrap_or_else(|| ident(&c.name)))
            .collect();
        let (filter, p) = Self::range_where(&t, range.start.as_ref(), range.end.as_ref());
        let limit = max.map_or(String::new(), |n| format!(" LIMIT {n}"));
        let sql = format!(
            "SELECT {}, {} FROM {}{filter}{}{limit}",
            keys.join(", "),
            cols.join(", "),
            ident(&t.name.name),
            order_by_key(&t)
        );
        let rows: Vec<mysql_async::Row> = self.live()?.exec(&sql, params(p))?;
        let nk = keys.len();
        let key_cols: Vec<Column> = t.key_columns().cloned().collect();
        let zero = self.ep.zero_date;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let key = key_cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    decode(r.as_ref(i).unwrap_or(&My::NULL), c, zero).map_err(|e| {
                        ConnectorError::new(
                            e.kind(),
                            format!("table {}, column {}: {e}", t.name, c.name),
                        )
                    })
                })
                .collect::<Result<Key, _>>()?;
            let mut values = Vec::with_capacity(t.columns.len());
            for (i, (c, p)) in t.columns.iter().zip(&pushed).enumerate() {
                let raw = r.as_ref(nk + i).unwrap_or(&My::NULL);
                let text = match (p, raw) {
                    (_, My::NULL) => None,
                    (Some(_), My::Bytes(b)) => {
                        Some(String::from_utf8(b.clone()).map_err(|_| {
                            ConnectorError::new(
                                ErrorKind::UnsupportedType,
                                format!(
                                    "table {}, column {}, key {}: not valid UTF-8",
                                    t.name,
                                    c.name,
                                    key_text(&key)
                                ),
                            )
                        })?)
                    }
                    (Some(_), other) => Some(other.as_sql(true).trim_matches('\'').to_owned()),
                    (None, raw) => {
                        let v = decode(raw, c, zero).map_err(|e| {
                            ConnectorError::new(
                                e.kind(),
                                format!(
                                    "table {}, column {}, key {}: {e}",
                                    t.name,
                                    c.name,
                                    key_text(&key)
                                ),
                            )
                        })?;
                        value_text(&v).map_err(|e| e.at(&t.name, &c.name, &key))?
                    }
                };
                values.push(text);
            }
            out.push(CanonicalRow { key, values });
        }
        Ok(out)
    }
}

impl RangeChecksum for MySqlVerifier {
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        let t = self.local(table)?;
        let n: Option<u64> = self
            .live()?
            .query_first(&format!("SELECT COUNT(*) FROM {}", ident(&t.name.name)))?;
        Ok(n.unwrap_or(0))
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
        let t = self.local(table)?;
        let exprs: Option<Vec<String>> = t.columns.iter().map(canonical_sql).collect();
        if let Some(exprs) = exprs {
            return self.digests_in_server(&t, &exprs, range, bounds);
        }
        let mut edges: Vec<Option<&Key>> = vec![range.start.as_ref()];
        edges.extend(bounds.iter().map(Some));
        edges.push(range.end.as_ref());
        let mut out = Vec::with_capacity(bounds.len() + 1);
        for w in edges.windows(2) {
            let mut d = RangeDigest::default();
            self.for_each_row(&t, w[0], w[1], None, |t, row| {
                let values = Self::canonical_values(t, &row)?;
                let h = row_hash(&row_text(values.iter().map(|v| v.as_deref())));
                d = d + RangeDigest {
                    rows: 1,
                    sum: h as u64,
                };
                Ok(())
            })?;
            out.push(d);
        }
        Ok(out)
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
        let t = self.local(table)?;
        let (filter, p) = Self::range_where(&t, range.start.as_ref(), range.end.as_ref());
        let rows: Option<u64> = self
            .live()?
            .exec(
                &format!("SELECT COUNT(*) FROM {}{filter}", ident(&t.name.name)),
                params(p),
            )?
            .into_iter()
            .next();
        let rows = rows.unwrap_or(0);
        let step = (rows / parts as u64).max(1);
        let keys: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        let key_cols: Vec<Column> = t.key_columns().cloned().collect();
        let mut out = Vec::new();
        let mut at = step;
        while at < rows && out.len() + 1 < parts {
            // The key `at` rows into the range (OFFSET over the key's index only).
            let (filter, p) = Self::range_where(&t, range.start.as_ref(), range.end.as_ref());
            let sql = format!(
                "SELECT {} FROM {}{filter}{} LIMIT 1 OFFSET {at}",
                keys.join(", "),
                ident(&t.name.name),
                order_by_key(&t)
            );
            let found: Vec<mysql_async::Row> = self.live()?.exec(&sql, params(p))?;
            let Some(r) = found.first() else { break };
            let key = key_cols
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    decode(r.as_ref(i).unwrap_or(&My::NULL), c, self.ep.zero_date).map_err(|e| {
                        ConnectorError::new(
                            e.kind(),
                            format!("splitting {}: column {}: {e}", t.name, c.name),
                        )
                    })
                })
                .collect::<Result<Key, _>>()?;
            if range.start.as_ref() != Some(&key) {
                out.push(key);
            }
            at += step;
        }
        Ok(out)
    }

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        self.canonical_rows_upto(table, range, None)
    }

    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let mut out = Vec::new();
        for k in keys {
            // A range of exactly one key: [k, k] is [k, k) ∪ {k}; ask for k ≤ key < k⁺ by
            // reading the first row of [k, ∞) (one row, not the rest of the table) and keeping
            // it if it is k.
            let rows = self.canonical_rows_upto(
                table,
                &KeyRange {
                    start: Some(k.clone()),
                    end: None,
                },
                Some(1),
            )?;
            if let Some(first) = rows.into_iter().next() {
                if &first.key == k {
                    out.push(first);
                }
            }
        }
        Ok(out)
    }

    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let t = self.local(table)?;
        let db = self.ep.database.clone();
        let zero = self.ep.zero_date;
        let mut out = Vec::new();
        for k in keys {
            let (sql, p) = select_range(&db, &t, Some((k, true)), None, Some(1));
            let rows: Vec<mysql_async::Row> = self.live()?.exec(&sql, params(p))?;
            for r in &rows {
                let row = decode_row(&t, r, zero)?;
                if &t.key_of(&row) == k {
                    out.push(row);
                }
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
        let t = self.local(table)?;
        let name = ident(&t.name.name);
        let cols: Vec<String> = t.columns.iter().map(|c| ident(&c.name)).collect();
        let updates: Vec<String> = cols.iter().map(|c| format!("{c} = VALUES({c})")).collect();
        let upsert = format!(
            "INSERT INTO {name} ({}) VALUES ({}) ON DUPLICATE KEY UPDATE {}",
            cols.join(", "),
            vec!["?"; cols.len()].join(", "),
            updates.join(", ")
        );
        let key_match: Vec<String> = t
            .key_columns()
            .map(|c| format!("{} = ?", ident(&c.name)))
            .collect();
        let delete = format!("DELETE FROM {name} WHERE {}", key_match.join(" AND "));
        let encode_all = |values: &[Value], columns: &mut dyn Iterator<Item = &Column>| {
            values
                .iter()
                .zip(columns)
                .map(|(v, c)| {
                    encode(v, &c.ty).map_err(|why| {
                        ConnectorError::new(
                            ErrorKind::LossyConversion,
                            format!("repairing {}: column {}: {why}", t.name, c.name),
                        )
                    })
                })
                .collect::<Result<Vec<My>, _>>()
        };
        let mut statements = Vec::new();
        for r in rows {
            statements.push((upsert.clone(), encode_all(r, &mut t.columns.iter())?));
        }
        for k in deletes {
            statements.push((delete.clone(), encode_all(k, &mut t.key_columns())?));
        }
        let ctx = format!(
            "repairing table {} in {} (nothing of this batch was written)",
            t.name,
            self.ep.describe()
        );
        let c = self.live()?;
        c.query_drop("START TRANSACTION")?;
        for (sql, ps) in statements {
            if let Err(e) = c.exec_drop(&sql, Params::Positional(ps)) {
                let _ = c.query_drop("ROLLBACK");
                return Err(e.context(&ctx));
            }
        }
        c.query_drop("COMMIT").map_err(|e| e.context(&ctx))
    }

    fn record_mismatches(&mut self, found: &[Mismatch]) -> Result<(), ConnectorError> {
        if found.is_empty() {
            return Ok(());
        }
        let ctx = format!(
            "recording mismatches in _cutover_mismatches of {}",
            self.ep.describe()
        );
        let c = self.live()?;
        c.query_drop(cutover_state::mysql::MISMATCHES)
            .map_err(|e| e.context(&ctx))?;
        for m in found {
            c.exec_drop(
                "INSERT INTO `_cutover_mismatches` (`table_name`, `key`, `kind`, `columns`, \
                 `detail`) VALUES (?, ?, ?, ?, ?)",
                Params::Positional(vec![
                    m.table.to_string().into(),
                    m.key.clone().into(),
                    m.kind.into(),
                    m.columns.join(",").into(),
                    m.detail.clone().into(),
                ]),
            )
            .map_err(|e| e.context(&ctx))?;
        }
        Ok(())
    }

    fn positions(&self) -> Option<&'static dyn PositionOrder> {
        Some(&crate::BINLOG_POSITIONS)
    }

    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        let rows: Vec<mysql_async::Row> = self.live()?.query("SHOW MASTER STATUS")?;
        Ok(rows.first().and_then(|r| {
            let file: Option<String> = r.get(0);
            let pos: Option<u64> = r.get(1);
            Some(crate::BinlogPos::new(file?, pos?).position())
        }))
    }

    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        let c = self.live()?;
        if !crate::state::table_exists(c, "_cutover_state")? {
            return Ok(None);
        }
        let text: Option<String> =
            c.query_first("SELECT `value` FROM `_cutover_state` WHERE `key` = 'checkpoint'")?;
        Ok(text.and_then(|t| t.parse().ok()))
    }
}
