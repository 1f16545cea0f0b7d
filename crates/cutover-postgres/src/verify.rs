//! `verify` on PostgreSQL: range checksums computed by the server over each row's canonical
//! text (see `cutover_connector::canonical`), canonical rows of small ranges, exact rows and
//! repairs, the `_cutover.mismatches` table, and the positions `verify --live` waits on.
//!
//! A row's canonical text is `ROW(e1, e2, …)::text`, where each `e` is the column itself or,
//! for types with several spellings of one value, a normalising expression (`trim_scale` for
//! numeric, `::jsonb` for json); the session prints floats shortest (extra_float_digits = 3),
//! times in UTC/ISO and bytea as hex. Large tables are hashed in physical slices (TID range
//! scans, PostgreSQL 14+), each grouped into key buckets with `width_bucket`, so a whole
//! table costs one sequential read per side however many buckets it has.

use std::collections::HashMap;
use std::sync::Arc;

use cutover_connector::{
    CanonicalRow, ConnectorError, ErrorKind, KeyRange, Mismatch, RangeChecksum, RangeDigest, Slice,
};
use cutover_model::{Key, Position, Row, TableName, TableSchema, Value};

use crate::blocking::Client;
use crate::endpoint::PgEndpoint;
use crate::error::map;
use crate::pgtext;
use crate::schema::{self, ident, literal, qualified, PgColumn, PgTable, Selection};

/// How the server hashes a row's canonical text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowHash {
    /// MD5's first 8 bytes: the portable row hash every engine computes the same.
    Md5,
    /// `hash_record_extended` (PostgreSQL 14+) over the columns themselves, without building
    /// their text: about 2.5 times cheaper, PostgreSQL-only; used when both sides are
    /// PostgreSQL and hash a probe row the same. Columns are hashed by PostgreSQL's own
    /// equality where it matches canonical text (integers, text under "C", numeric ignoring
    /// trailing zeros, json as jsonb, times, uuid, bytea) and as text otherwise (floats, so
    /// that -0 ≠ 0; intervals, so that '1 day' ≠ '24:00'; arrays, enums, other types). One
    /// looser spot: numbers inside jsonb compare by value (`1.50` = `1.5`), as jsonb does.
    Native,
}

/// Above this many rows (estimated), whole-table splits sample keys instead of numbering them
/// all.
const EXACT_SPLIT_ROWS: u64 = 200_000;

/// One side of a PostgreSQL verify as every worker shares it: where it is, the tables it holds
/// (the catalog is read once per side, not per connection) and the row hash in use.
#[derive(Clone)]
pub struct PgVerifySide {
    endpoint: PgEndpoint,
    tables: Arc<HashMap<TableName, PgTable>>,
    tid_ranges: bool,
    hash: RowHash,
}

impl PgVerifySide {
    /// Connects once and reads the database's tables.
    pub fn read(endpoint: &PgEndpoint, hash: RowHash) -> Result<PgVerifySide, ConnectorError> {
        let mut client = endpoint.connect_control()?;
        let schema = schema::read(&mut client, &Selection::default())?;
        let version: i32 = client
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .map_err(|e| map(format!("reading the version of {}", endpoint.redacted()), e))?
            .get(0);
        Ok(PgVerifySide {
            endpoint: endpoint.clone(),
            tables: Arc::new(
                schema
                    .tables
                    .into_iter()
                    .filter(PgTable::has_data)
                    .map(|t| (t.name.clone(), t))
                    .collect(),
            ),
            tid_ranges: version >= 140_000,
            hash,
        })
    }

    pub fn set_hash(&mut self, hash: RowHash) {
        self.hash = hash;
    }

    pub fn endpoint(&self) -> &PgEndpoint {
        &self.endpoint
    }

    /// The tables that hold rows (partitions, not their parents), ordered by name.
    pub fn tables(&self) -> Vec<TableSchema> {
        let mut t: Vec<TableSchema> = self.tables.values().map(PgTable::model).collect();
        t.sort_by(|a, b| a.name.cmp(&b.name));
        t
    }

    /// Opens a connection for one worker.
    pub fn open(&self) -> Result<PgVerifier, ConnectorError> {
        // Checksums of whole tables and row reads: no statement timeout.
        let mut client = self.endpoint.connect_bulk()?;
        client
            .batch_execute(
                "SET search_path = pg_catalog; SET bytea_output = 'hex'; SET jit = off; \
                 SET application_name = 'cutover verify'",
            )
            .map_err(|e| {
                map(
                    format!("preparing to verify {}", self.endpoint.redacted()),
                    e,
                )
            })?;
        Ok(PgVerifier {
            client,
            side: self.clone(),
            pages: HashMap::new(),
            describe: self.endpoint.redacted().to_owned(),
        })
    }

    /// The native hash of a fixed row, `None` where the server has no `hash_record_extended`
    /// (before PostgreSQL 14). Equal on both sides ⇒ [`RowHash::Native`] hashes rows the same
    /// on both.
    pub fn hash_probe(&self) -> Option<i64> {
        self.endpoint
            .connect_control()
            .ok()?
            .query_one(
                "SELECT hash_record_extended(ROW(1::int, 'a b'::text COLLATE \"C\", 1.50::numeric, \
                 '{\"b\": [1, \"x\"]}'::jsonb, '\\x00ff'::bytea, '2026-01-01 00:00:00+00'::timestamptz, \
                 'd3b07384-d9a0-4c9b-8a0d-6f9e3c2b1a00'::uuid, '-0'::float8::text), 0)",
                &[],
            )
            .ok()
            .map(|r| r.get(0))
    }
}

/// One worker's connection to one side of a PostgreSQL verify.
pub struct PgVerifier {
    client: Client,
    side: PgVerifySide,
    pages: HashMap<TableName, i64>,
    /// Where it is connected, password removed, for messages.
    describe: String,
}

impl PgVerifier {
    /// Connects and reads the database's tables (one-off use; workers share a [`PgVerifySide`]).
    pub fn open(endpoint: &PgEndpoint, hash: RowHash) -> Result<PgVerifier, ConnectorError> {
        PgVerifySide::read(endpoint, hash)?.open()
    }

    /// The tables that hold rows (partitions, not their parents), ordered by name.
    pub fn tables(&self) -> Vec<TableSchema> {
        self.side.tables()
    }

    fn table(&self, t: &TableSchema) -> Result<&PgTable, ConnectorError> {
        // A table named without a schema (by SQLite) is where the neutral schema put it.
        self.side
            .tables
            .get(&crate::applier::target_name(&t.name))
            .ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::NotFound,
                format!(
                    "table {} does not exist on {}: create it (cutover copy does), or leave it out with --exclude-tables",
                    t.name,
                    self.describe
                ),
            )
        })
    }

    fn pages(&mut self, name: &TableName) -> Result<i64, ConnectorError> {
        if let Some(p) = self.pages.get(name) {
            return Ok(*p);
        }
        let p: i64 = self
            .client
            .query_one(
                "SELECT pg_relation_size($1::text::regclass) / current_setting('block_size')::bigint",
                &[&qualified(name)],
            )
            .map_err(|e| map(format!("sizing table {name}"), e))?
            .get(0);
        self.pages.insert(name.clone(), p);
        Ok(p)
    }

    /// The SQL that restricts a scan to `slice`, or `None` if this slice is empty.
    fn slice_predicate(
        &mut self,
        name: &TableName,
        slice: Slice,
    ) -> Result<Option<String>, ConnectorError> {
        if slice.of <= 1 {
            return Ok(Some("true".to_owned()));
        }
        if !self.side.tid_ranges {
            return Ok((slice.index == 0).then(|| "true".to_owned()));
        }
        let pages = self.pages(name)?;
        let (i, n) = (i64::from(slice.index), i64::from(slice.of));
        let from = pages * i / n;
        let to = pages * (i + 1) / n;
        let mut p = if i == 0 {
            "true".to_owned()
        } else {
            format!("ctid >= '({from},0)'::tid")
        };
        // The last slice is open-ended: it also reads pages added since the table was sized.
        if i + 1 < n {
            p.push_str(&format!(" AND ctid < '({to},0)'::tid"));
        }
        Ok(Some(p))
    }
}

/// Trailing fractional zeros of every element of a `numeric[]`'s text (`{1.50,2.0,10}` →
/// `{1.5,2,10}`): `trim_scale` element by element, keeping dimensions and bounds. numeric
/// elements are never quoted and never use exponents, so each ends at `,` or `}`.
const TRIM_NUMERIC_ELEMENTS: (&str, &str) = (r"(\.[0-9]*[1-9])0+(?=[,}])", r"\.0+(?=[,}])");

/// The canonical expression of one column (see the module docs and `docs/CANONICAL.md`).
/// Arrays print as `array_out` prints them, which is canonical once their elements are:
/// `numeric[]` has its elements' trailing zeros trimmed, `json[]` is cast to `jsonb[]`
/// (element by element, dimensions and bounds kept).
fn canonical_expr(c: &PgColumn) -> String {
    let col = ident(&c.name);
    let (ty, array) = match c.type_sql.strip_suffix("[]") {
        Some(element) => (element, true),
        None => (c.type_sql.as_str(), false),
    };
    let base = ty.split('(').next().unwrap_or(ty).trim();
    match (base, array) {
        ("numeric", false) => format!("trim_scale({col})"),
        ("json", false) => format!("{col}::jsonb"),
        ("numeric", true) => {
            let (fraction, zeros) = TRIM_NUMERIC_ELEMENTS;
            format!(
                "regexp_replace(regexp_replace({col}::text, {}, '\\1', 'g'), {}, '', 'g')",
                literal(fraction),
                literal(zeros)
            )
        }
        ("json", true) => format!("{col}::jsonb[]"),
        // `boolean::text` is `true`/`false`; its output (and the spec) is `t`/`f`.
        ("boolean", false) => format!("CASE WHEN {col} THEN 't' WHEN NOT {col} THEN 'f' END"),
        _ => col,
    }
}

/// A column's canonical text on its own: its type's output, as in the row's record text
/// (`format('%s', …)`), not a cast to text, which differs for some types (`char(n)` loses its
/// padding, `inet` gains a mask); NULL stays NULL.
fn column_text_expr(expr: &str) -> String {
    // `num_nulls`, not `IS NULL`: a composite whose fields are all NULL is not NULL itself.
    format!("CASE WHEN num_nulls({expr}) = 1 THEN NULL ELSE format('%s', {expr}) END")
}

fn row_text_expr(t: &PgTable) -> String {
    let parts: Vec<String> = t.columns.iter().map(canonical_expr).collect();
    format!("ROW({})::text", parts.join(", "))
}

const NATIVE_SEED: i64 = 0x5eed_c0de_2026;

/// A column as [`RowHash::Native`] hashes it (see there).
fn native_expr(c: &PgColumn) -> String {
    let col = ident(&c.name);
    let base = c.type_sql.split('(').next().unwrap_or(&c.type_sql).trim();
    match base {
        "smallint"
        | "integer"
        | "bigint"
        | "numeric"
        | "boolean"
        | "date"
        | "uuid"
        | "bytea"
        | "oid"
        | "timestamp without time zone"
        | "timestamp with time zone"
        | "time without time zone" => col,
        "text" | "character varying" => format!("{col} COLLATE \"C\""),
        // An empty jsonb object or array hashes to the seed whatever its kind: say which.
        "jsonb" => format!("{col}, jsonb_typeof({col})"),
        "json" => format!("{col}::jsonb, json_typeof({col})"),
        // Arrays as their canonical text (numeric[] trimmed, json[] as jsonb[]).
        _ if c.type_sql.ends_with("[]") => format!("({})::text", canonical_expr(c)),
        _ => format!("{col}::text"),
    }
}

fn hash_expr(t: &PgTable, hash: RowHash) -> String {
    match hash {
        RowHash::Md5 => format!(
            "('x' || left(md5({}), 16))::bit(64)::bigint",
            row_text_expr(t)
        ),
        RowHash::Native => {
            let parts: Vec<String> = t.columns.iter().map(native_expr).collect();
            // NULL fields hash to 0, and some empty values to the seed (or the seed - 1):
            // a seed far from 0 keeps them apart.
            format!(
                "hash_record_extended(ROW({}), {NATIVE_SEED})",
                parts.join(", ")
            )
        }
    }
}

fn key_columns(t: &PgTable) -> Vec<&PgColumn> {
    match &t.primary_key {
        Some((_, cols)) => cols
            .iter()
            .filter_map(|k| t.columns.iter().find(|c| &c.name == k))
            .collect(),
        None => Vec::new(),
    }
}

/// `'42'::bigint`: a key value as a typed literal of its column (its exact text, which
/// PostgreSQL reads back as the same value).
fn key_literal(v: &Value, c: &PgColumn) -> String {
    let text = crate::pgtext::encode(v).unwrap_or_default();
    format!("{}::{}", literal(&text), c.type_sql)
}

/// `(a, b)` or `a` for the key columns, and the same shape for a key's literals.
fn key_tuple(cols: &[&PgColumn]) -> String {
    let names: Vec<String> = cols.iter().map(|c| ident(&c.name)).collect();
    if names.len() == 1 {
        names[0].clone()
    } else {
        format!("ROW({})", names.join(", "))
    }
}

fn key_value_tuple(key: &Key, cols: &[&PgColumn]) -> String {
    let lits: Vec<String> = key
        .iter()
        .zip(cols)
        .map(|(v, c)| key_literal(v, c))
        .collect();
    if lits.len() == 1 {
        lits[0].clone()
    } else {
        format!("ROW({})", lits.join(", "))
    }
}

fn range_predicate(range: &KeyRange, cols: &[&PgColumn]) -> String {
    if cols.is_empty() {
        return "true".to_owned();
    }
    let lhs = key_tuple(cols);
    let mut conds = Vec::new();
    if let Some(s) = &range.start {
        conds.push(format!("{lhs} >= {}", key_value_tuple(s, cols)));
    }
    if let Some(e) = &range.end {
        conds.push(format!("{lhs} < {}", key_value_tuple(e, cols)));
    }
    if conds.is_empty() {
        "true".to_owned()
    } else {
        conds.join(" AND ")
    }
}

fn keys_predicate(keys: &[Key], cols: &[&PgColumn]) -> String {
    let list: Vec<String> = keys.iter().map(|k| key_value_tuple(k, cols)).collect();
    format!("{} IN ({})", key_tuple(cols), list.join(", "))
}

/// Describes a range for error messages.
fn range_text(range: &KeyRange) -> String {
    let side = |k: &Option<Key>, none: &str| {
        k.as_ref()
            .map_or(none.to_owned(), |k| cutover_connector::key_text(k))
    };
    format!(
        "keys {} to {}",
        side(&range.start, "start"),
        side(&range.end, "end")
    )
}

/// A key column's text as a key value: integers as numbers, the rest as their text.
/// A key value read as text, typed by its column (a UUID key as a UUID, a bigint as an
/// integer): keys go to the other side of verify, which may be another engine.
fn key_value(text: String, c: &PgColumn) -> Value {
    pgtext::decode(c.type_oid, &c.type_sql, &text)
}

impl PgVerifier {
    fn select_canonical(
        &mut self,
        table: &TableSchema,
        predicate: &str,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let t = self.table(table)?.clone();
        let cols = key_columns(&t);
        let mut select: Vec<String> = cols
            .iter()
            .map(|c| format!("{}::text", ident(&c.name)))
            .collect();
        select.extend(
            t.columns
                .iter()
                .map(|c| column_text_expr(&canonical_expr(c))),
        );
        let order = if cols.is_empty() {
            String::new()
        } else {
            format!(
                " ORDER BY {}",
                cols.iter()
                    .map(|c| ident(&c.name))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {predicate}{order}",
            select.join(", "),
            qualified(&t.name)
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| map(format!("reading rows of table {}", t.name), e))?;
        let nk = cols.len();
        let mut out: Vec<CanonicalRow> = rows
            .iter()
            .map(|r| CanonicalRow {
                key: cols
                    .iter()
                    .enumerate()
                    .map(|(i, c)| key_value(r.get(i), c))
                    .collect(),
                values: (0..t.columns.len()).map(|i| r.get(nk + i)).collect(),
            })
            .collect();
        if cols.is_empty() {
            out.sort_by(|a, b| a.values.cmp(&b.values));
        }
        Ok(out)
    }
}

impl RangeChecksum for PgVerifier {
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        let t = self.table(table)?.clone();
        if t.rows_estimate > 0 || self.pages(&t.name)? == 0 {
            return Ok(t.rows_estimate);
        }
        // Never analyzed: count once.
        let n: i64 = self
            .client
            .query_one(
                &format!("SELECT count(*) FROM ONLY {}", qualified(&t.name)),
                &[],
            )
            .map_err(|e| map(format!("counting the rows of table {}", t.name), e))?
            .get(0);
        Ok(n.max(0) as u64)
    }

    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        bounds: &[Key],
        slice: Slice,
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let t = self.table(table)?.clone();
        let mut out = vec![RangeDigest::default(); bounds.len() + 1];
        let Some(slice_pred) = self.slice_predicate(&t.name, slice)? else {
            return Ok(out);
        };
        let cols = key_columns(&t);
        let bucket = if bounds.is_empty() || cols.is_empty() {
            "0".to_owned()
        } else {
            let list: Vec<String> = bounds.iter().map(|k| key_value_tuple(k, &cols)).collect();
            format!(
                "width_bucket({}, ARRAY[{}])",
                key_tuple(&cols),
                list.join(", ")
            )
        };
        let sql = format!(
            "SELECT {bucket}, count(*), sum({})::text FROM ONLY {} WHERE {} AND {slice_pred} GROUP BY 1",
            hash_expr(&t, self.side.hash),
            qualified(&t.name),
            range_predicate(range, &cols),
        );
        let rows = self.client.query(&sql, &[]).map_err(|e| {
            map(
                format!(
                    "hashing table {} ({}) on {}",
                    t.name,
                    range_text(range),
                    self.describe
                ),
                e,
            )
        })?;
        for r in &rows {
            let b: i32 = r.get(0);
            let rows: i64 = r.get(1);
            let sum: Option<String> = r.get(2);
            let sum = sum
                .as_deref()
                .and_then(|s| s.parse::<i128>().ok())
                .unwrap_or(0);
            if let Some(d) = usize::try_from(b).ok().and_then(|b| out.get_mut(b)) {
                *d = RangeDigest {
                    rows: rows.max(0) as u64,
                    sum: sum as u64,
                };
            }
        }
        Ok(out)
    }

    fn split(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        parts: usize,
    ) -> Result<Vec<Key>, ConnectorError> {
        let t = self.table(table)?.clone();
        let cols = key_columns(&t);
        if cols.is_empty() || parts < 2 {
            return Ok(Vec::new());
        }
        let names: Vec<String> = cols.iter().map(|c| ident(&c.name)).collect();
        let texts: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c}::text AS cutover_k{i}"))
            .collect();
        let (names, texts) = (names.join(", "), texts.join(", "));
        let whole = range.start.is_none() && range.end.is_none();
        let ctx = || format!("splitting table {} ({})", t.name, range_text(range));
        let keys: Vec<Key> = if whole && t.rows_estimate > EXACT_SPLIT_ROWS {
            // Sample about 20 keys per part (single rows: whole pages would cluster the
            // bounds), sorted, and take every 20th.
            let pct = ((parts as f64 * 20.0) / t.rows_estimate as f64 * 100.0).clamp(0.0001, 100.0);
            let sql = format!(
                "SELECT {texts} FROM ONLY {} TABLESAMPLE BERNOULLI ({pct}) ORDER BY {names}",
                qualified(&t.name)
            );
            let sample = self.client.query(&sql, &[]).map_err(|e| map(ctx(), e))?;
            let step = (sample.len() / parts).max(1);
            sample
                .iter()
                .enumerate()
                .filter(|(i, _)| *i > 0 && i % step == 0)
                .map(|(_, r)| {
                    cols.iter()
                        .enumerate()
                        .map(|(i, c)| key_value(r.get(i), c))
                        .collect()
                })
                .collect()
        } else {
            let sql = format!(
                "SELECT {texts} FROM (SELECT {names}, row_number() OVER (ORDER BY {names}) AS cutover_rn, \
                 count(*) OVER () AS cutover_n FROM ONLY {} WHERE {}) s \
                 WHERE cutover_rn > 1 AND ((cutover_rn - 1) * $1) / cutover_n > ((cutover_rn - 2) * $1) / cutover_n \
                 ORDER BY {names}",
                qualified(&t.name),
                range_predicate(range, &cols)
            );
            let parts = parts as i64;
            self.client
                .query(&sql, &[&parts])
                .map_err(|e| map(ctx(), e))?
                .iter()
                .map(|r| {
                    cols.iter()
                        .enumerate()
                        .map(|(i, c)| key_value(r.get(i), c))
                        .collect()
                })
                .collect()
        };
        let mut keys = keys;
        keys.dedup();
        Ok(keys)
    }

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let cols = key_columns(self.table(table)?);
        let predicate = range_predicate(range, &cols);
        self.select_canonical(table, &predicate)
    }

    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let cols = key_columns(self.table(table)?);
        let predicate = keys_predicate(keys, &cols);
        self.select_canonical(table, &predicate)
    }

    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let t = self.table(table)?.clone();
        let cols = key_columns(&t);
        if keys.is_empty() || cols.is_empty() {
            return Ok(Vec::new());
        }
        let select: Vec<String> = t
            .columns
            .iter()
            .map(|c| format!("{}::text", ident(&c.name)))
            .collect();
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {}",
            select.join(", "),
            qualified(&t.name),
            keys_predicate(keys, &cols)
        );
        let rows = self
            .client
            .query(&sql, &[])
            .map_err(|e| map(format!("reading rows of table {} to repair", t.name), e))?;
        Ok(rows
            .iter()
            .map(|r| {
                t.columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| match r.get::<_, Option<String>>(i) {
                        Some(text) => Value::Raw {
                            type_name: c.type_sql.clone(),
                            text,
                        },
                        None => Value::Null,
                    })
                    .collect()
            })
            .collect())
    }

    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Key],
    ) -> Result<(), ConnectorError> {
        let t = self.table(table)?.clone();
        let cols = key_columns(&t);
        if cols.is_empty() {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "table {} has no primary key: cutover cannot tell which row to repair; fix it by hand",
                    t.name
                ),
            ));
        }
        let ctx = || {
            format!(
                "repairing table {} on {} (nothing of this batch was written)",
                t.name, self.describe
            )
        };
        let written: Vec<(usize, &PgColumn)> = t
            .columns
            .iter()
            .enumerate()
            .filter(|(_, c)| c.generated.is_none())
            .collect();
        let names: Vec<String> = written.iter().map(|(_, c)| ident(&c.name)).collect();
        let params: Vec<String> = written
            .iter()
            .enumerate()
            .map(|(i, (_, c))| format!("${}::text::{}", i + 1, c.type_sql))
            .collect();
        let updates: Vec<String> = written
            .iter()
            .filter(|(_, c)| !cols.iter().any(|k| k.name == c.name))
            .map(|(_, c)| format!("{0} = EXCLUDED.{0}", ident(&c.name)))
            .collect();
        let key_names: Vec<String> = cols.iter().map(|c| ident(&c.name)).collect();
        let on_conflict = if updates.is_empty() {
            "DO NOTHING".to_owned()
        } else {
            format!("DO UPDATE SET {}", updates.join(", "))
        };
        let overriding = if t.columns.iter().any(|c| c.identity == Some('a')) {
            " OVERRIDING SYSTEM VALUE"
        } else {
            ""
        };
        let upsert = format!(
            "INSERT INTO {} ({}){overriding} VALUES ({}) ON CONFLICT ({}) {on_conflict}",
            qualified(&t.name),
            names.join(", "),
            params.join(", "),
            key_names.join(", ")
        );
        let mut tx = self.client.transaction().map_err(|e| map(ctx(), e))?;
        if !deletes.is_empty() {
            tx.batch_execute(&format!(
                "DELETE FROM ONLY {} WHERE {}",
                qualified(&t.name),
                keys_predicate(deletes, &cols)
            ))
            .map_err(|e| map(ctx(), e))?;
        }
        if !rows.is_empty() {
            let stmt = tx.prepare(&upsert).map_err(|e| map(ctx(), e))?;
            for row in rows {
                let values: Vec<Option<String>> = written
                    .iter()
                    .map(|(i, _)| match row.get(*i) {
                        None | Some(Value::Null) => None,
                        Some(other) => crate::pgtext::encode(other),
                    })
                    .collect();
                let refs: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = values
                    .iter()
                    .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                tx.execute(&stmt, &refs).map_err(|e| map(ctx(), e))?;
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
                "recording mismatches in _cutover.mismatches on {}",
                self.describe
            )
        };
        let mut tx = self.client.transaction().map_err(|e| map(ctx(), e))?;
        tx.batch_execute(cutover_state::postgres::MISMATCHES)
            .map_err(|e| map(ctx(), e))?;
        let stmt = tx
            .prepare(
                "INSERT INTO _cutover.mismatches (table_schema, table_name, key, kind, columns, detail)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .map_err(|e| map(ctx(), e))?;
        for m in found {
            tx.execute(
                &stmt,
                &[
                    &m.table.schema,
                    &m.table.name,
                    &m.key,
                    &m.kind,
                    &m.columns,
                    &m.detail,
                ],
            )
            .map_err(|e| map(ctx(), e))?;
        }
        tx.commit().map_err(|e| map(ctx(), e))
    }

    fn positions(&self) -> Option<&'static dyn cutover_connector::PositionOrder> {
        Some(&crate::lsn::LSNS)
    }

    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        let lsn: String = self
            .client
            .query_one(crate::source::COMMITTED_POSITION_SQL, &[])
            .map_err(|e| map(format!("reading the WAL position of {}", self.describe), e))?
            .get(0);
        parse_position(&format!("lsn:{lsn}")).map(Some)
    }

    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        let ctx = || format!("reading the applied position on {}", self.describe);
        let exists: bool = self
            .client
            .query_one(
                "SELECT to_regclass('_cutover.replication') IS NOT NULL",
                &[],
            )
            .map_err(|e| map(ctx(), e))?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let row = self
            .client
            .query_opt(
                "SELECT position FROM _cutover.replication WHERE id = 1",
                &[],
            )
            .map_err(|e| map(ctx(), e))?;
        match row.and_then(|r| r.get::<_, Option<String>>(0)) {
            Some(p) => parse_position(&p).map(Some),
            None => Ok(None),
        }
    }
}

fn parse_position(text: &str) -> Result<Position, ConnectorError> {
    text.parse().map_err(|e| {
        ConnectorError::new(
            ErrorKind::Database,
            format!("{e}: the stored position is corrupt; run sync again to rewrite it"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, ty: &str) -> PgColumn {
        PgColumn::plain(name, ty, 0)
    }

    #[test]
    fn arrays_are_normalised_element_by_element() {
        assert_eq!(canonical_expr(&col("a", "integer[]")), "\"a\"");
        assert_eq!(canonical_expr(&col("j", "json[]")), "\"j\"::jsonb[]");
        assert_eq!(
            canonical_expr(&col("n", "numeric(6,2)[]")),
            "regexp_replace(regexp_replace(\"n\"::text, '(\\.[0-9]*[1-9])0+(?=[,}])', '\\1', 'g'), \
             '\\.0+(?=[,}])', '', 'g')"
        );
        assert_eq!(native_expr(&col("j", "json[]")), "(\"j\"::jsonb[])::text");
    }

    #[test]
    fn columns_with_several_spellings_are_normalised() {
        assert_eq!(
            canonical_expr(&col("n", "numeric(6,2)")),
            "trim_scale(\"n\")"
        );
        assert_eq!(canonical_expr(&col("j", "json")), "\"j\"::jsonb");
        assert_eq!(canonical_expr(&col("jb", "jsonb")), "\"jb\"");
    }

    #[test]
    fn the_native_hash_keeps_what_postgresql_equality_would_blur() {
        assert_eq!(native_expr(&col("f", "double precision")), "\"f\"::text");
        assert_eq!(native_expr(&col("i", "interval")), "\"i\"::text");
        assert_eq!(
            native_expr(&col("j", "json")),
            "\"j\"::jsonb, json_typeof(\"j\")"
        );
        assert_eq!(
            native_expr(&col("jb", "jsonb")),
            "\"jb\", jsonb_typeof(\"jb\")"
        );
        assert_eq!(
            native_expr(&col("s", "character varying(20)")),
            "\"s\" COLLATE \"C\""
        );
        assert_eq!(native_expr(&col("n", "numeric(6,2)")), "\"n\"");
    }

    #[test]
    fn key_ranges_become_typed_row_comparisons() {
        let (a, b) = (col("a", "bigint"), col("b", "text"));
        let cols = vec![&a, &b];
        let range = KeyRange {
            start: Some(vec![Value::Int(1), Value::Text("it's".into())]),
            end: None,
        };
        assert_eq!(
            range_predicate(&range, &cols),
            "ROW(\"a\", \"b\") >= ROW('1'::bigint, 'it''s'::text)"
        );
        assert_eq!(
            keys_predicate(&[vec![Value::Int(7)]], &[&a]),
            "\"a\" IN ('7'::bigint)"
        );
        assert_eq!(range_predicate(&KeyRange::all(), &cols), "true");
    }
}
