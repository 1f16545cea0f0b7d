//! Redis as a target: every batch — rows, key-index updates, chunk marks and the checkpoint —
//! in one `MULTI`/`EXEC`.
//!
//! Redis runs a `MULTI` block whole or not at all as far as a crash goes (the AOF holds the
//! block as one unit; a truncated block is refused at load unless `aof-load-truncated` cuts it
//! off whole), but a command that fails *inside* `EXEC` does not undo the others: so every
//! value is encoded and checked (types, NOT NULL, keys) before the block is sent, and the block
//! holds only commands that cannot fail on keys cutover owns.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use cutover_connector::{
    epoch_secs, ApplyOp, ColumnChange, ConnectorError, ErrorKind, KeyRange, PlannedChunk,
    PositionOrder, Progress, Sink,
};
use cutover_model::{
    decode_row, encode_row, Change, Column, Key, Position, TableName, TableSchema, Value,
};

use crate::endpoint::{Conn, RedisEndpoint};
use crate::keys;
use crate::layout::{encode_schema, Layout};

/// How the server keeps what it acknowledged, read at open (`CONFIG GET`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Persistence {
    /// `appendonly yes`, `appendfsync always`: acknowledged is on disk.
    Always,
    /// `appendfsync everysec`: on disk within about a second (2 s are allowed).
    EverySec,
    /// No append-only file, or `appendfsync no`: a restart may lose acknowledged writes.
    Volatile {
        appendonly: String,
        appendfsync: String,
    },
}

impl Persistence {
    pub(crate) fn read(c: &mut Conn) -> Result<Persistence, ConnectorError> {
        let get = |c: &mut Conn, name: &str| -> Result<String, ConnectorError> {
            let pair: Vec<String> =
                c.query(redis::cmd("CONFIG").arg("GET").arg(name))
                    .map_err(|e| {
                        e.context(format_args!(
                            "reading the server's {name} (CONFIG GET) to know what it keeps on \
                         disk; allow CONFIG GET to cutover's user, or add durability=none to the \
                         URL to accept that a Redis restart may lose data"
                        ))
                    })?;
            Ok(pair.get(1).cloned().unwrap_or_default())
        };
        let appendonly = get(c, "appendonly")?;
        let appendfsync = get(c, "appendfsync")?;
        Ok(match (appendonly.as_str(), appendfsync.as_str()) {
            ("yes", "always") => Persistence::Always,
            ("yes", "everysec") => Persistence::EverySec,
            _ => Persistence::Volatile {
                appendonly,
                appendfsync,
            },
        })
    }

    /// The refusal of a server that may lose acknowledged writes.
    pub(crate) fn refusal(&self, e: &RedisEndpoint) -> Option<ConnectorError> {
        match self {
            Persistence::Volatile {
                appendonly,
                appendfsync,
            } => Some(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} keeps no durable append-only file (appendonly {appendonly}, appendfsync \
                     {appendfsync}): after a Redis restart it could lack rows whose change \
                     history the source has already released. Fix: CONFIG SET appendonly yes \
                     and CONFIG SET appendfsync always (or everysec) on the server (and in its \
                     redis.conf), or add durability=none to the URL to accept the risk",
                    e.describe()
                ),
            )),
            _ => None,
        }
    }
}

pub struct RedisSink {
    endpoint: RedisEndpoint,
    conn: Conn,
    layout: Layout,
    persistence: Persistence,
    /// The target's tables as stored (columns after any `Alter`).
    tables: HashMap<TableName, TableSchema>,
    /// Where each value of a row of the table goes in the schema's columns, after an
    /// `ApplyOp::Columns` (none: the schema's order).
    shapes: HashMap<TableName, Vec<usize>>,
    /// Positions applied, with when, for `durable` under `appendfsync everysec`.
    applied: VecDeque<(Instant, Position)>,
    /// The newest position known durable under `everysec`.
    floor: Option<Position>,
    warned: bool,
    last_note: Option<(Instant, u64)>,
}

impl RedisSink {
    pub fn open(endpoint: &RedisEndpoint) -> Result<RedisSink, ConnectorError> {
        let mut conn = endpoint.connect()?;
        let persistence = Persistence::read(&mut conn)?;
        let layout = Layout::of(endpoint);
        let tables = layout
            .tables(&mut conn)?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(RedisSink {
            endpoint: endpoint.clone(),
            conn,
            layout,
            persistence,
            tables,
            shapes: HashMap::new(),
            applied: VecDeque::new(),
            floor: None,
            warned: false,
            last_note: None,
        })
    }

    /// Refuses a server that may lose what it acknowledged, and a state store written by a
    /// newer cutover; returns the store's version (`None`: no store yet).
    fn usable_store(&mut self) -> Result<Option<u32>, ConnectorError> {
        self.check_durability()?;
        let version: Option<u32> = self
            .conn
            .query(redis::cmd("GET").arg(self.layout.control("store_version")))?;
        cutover_state::pending(
            cutover_state::redis::MIGRATIONS,
            version,
            &self.endpoint.describe(),
        )?;
        Ok(version)
    }

    fn check_durability(&mut self) -> Result<(), ConnectorError> {
        if let Some(refusal) = self.persistence.refusal(&self.endpoint) {
            if !self.endpoint.accept_volatile {
                return Err(refusal);
            }
            if !self.warned {
                tracing::warn!(
                    target = %self.endpoint.describe(),
                    "durability=none: {refusal} — a Redis restart loses data the source no longer has"
                );
                self.warned = true;
            }
        }
        Ok(())
    }

    fn table(&self, name: &TableName) -> Result<&TableSchema, ConnectorError> {
        self.tables.get(name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::NotFound,
                format!(
                    "table {name} is not prepared on {}; run the sync again so that it is",
                    self.endpoint.describe()
                ),
            )
        })
    }

    /// A row as sent (in the current shape) in the schema's column order, and which columns it
    /// carries (`None`: all).
    fn full_row(
        &self,
        t: &TableSchema,
        row: &[Value],
        unchanged: &[usize],
    ) -> (Vec<Value>, Option<Vec<bool>>) {
        let shape = self.shapes.get(&t.name);
        let mut full = vec![Value::Null; t.columns.len()];
        let mut carried = vec![false; t.columns.len()];
        for (i, v) in row.iter().enumerate() {
            if unchanged.contains(&i) {
                continue;
            }
            let at = shape.map_or(Some(i), |s| s.get(i).copied());
            if let Some(at) = at.filter(|a| *a < full.len()) {
                full[at] = v.clone();
                carried[at] = true;
            }
        }
        let all = carried.iter().all(|c| *c);
        (full, (!all).then_some(carried))
    }

    fn build(&mut self, ops: &[ApplyOp], pipe: &mut redis::Pipeline) -> Result<(), ConnectorError> {
        // A truncate must also remove the rows this batch wrote before it, which the key index
        // read before the block does not list yet.
        let truncating = ops
            .iter()
            .any(|o| matches!(o, ApplyOp::Change(Change::Truncate { .. })));
        let mut written: HashMap<TableName, Vec<Key>> = HashMap::new();
        for op in ops {
            match op {
                ApplyOp::Upsert { table, row } | ApplyOp::Change(Change::Insert { table, row }) => {
                    let t = self.table(table)?.clone();
                    let (full, carried) = self.full_row(&t, row, &[]);
                    self.layout.put_row(pipe, &t, &full, carried.as_deref())?;
                    if truncating {
                        written
                            .entry(t.name.clone())
                            .or_default()
                            .push(t.key_of(&full));
                    }
                }
                ApplyOp::Change(Change::Update {
                    table,
                    old_key,
                    row,
                    unchanged,
                    ..
                }) => {
                    let t = self.table(table)?.clone();
                    let (full, carried) = self.full_row(&t, row, unchanged);
                    let new_key = t.key_of(&full);
                    let moved = keys::member(&t, old_key)? != keys::member(&t, &new_key)?;
                    if moved {
                        if carried.is_some() {
                            return Err(ConnectorError::new(
                                ErrorKind::UnsupportedType,
                                format!(
                                    "table {}, key {}: an update that moves the key without \
                                     all its columns cannot be applied to Redis",
                                    t.name,
                                    cutover_connector::key_text(old_key)
                                ),
                            ));
                        }
                        self.layout.delete_row(pipe, &t, old_key)?;
                    }
                    self.layout.put_row(pipe, &t, &full, carried.as_deref())?;
                    if truncating {
                        written.entry(t.name.clone()).or_default().push(new_key);
                    }
                }
                ApplyOp::Change(Change::Delete { table, old_key, .. }) => {
                    let t = self.table(table)?.clone();
                    self.layout.delete_row(pipe, &t, old_key)?;
                }
                ApplyOp::Change(Change::Truncate { tables }) => {
                    for name in tables {
                        let t = self.table(name)?.clone();
                        // Read before the block: this sink is the target's one writer.
                        let mut keys_ = written.remove(name).unwrap_or_default();
                        let mut offset = 0;
                        loop {
                            let page = self.layout.members(
                                &mut self.conn,
                                &t,
                                b"-",
                                b"+",
                                offset,
                                crate::layout::PAGE,
                            )?;
                            offset += page.len();
                            for m in &page {
                                keys_.push(keys::key_of_member(&t, m)?);
                            }
                            if page.len() < crate::layout::PAGE {
                                break;
                            }
                        }
                        for k in keys_ {
                            pipe.cmd("DEL")
                                .arg(keys::row_key(&self.layout.prefix, &t, &k)?)
                                .ignore();
                        }
                        pipe.cmd("DEL")
                            .arg(keys::index_key(&self.layout.prefix, &t.name))
                            .ignore();
                    }
                }
                ApplyOp::Change(Change::Schema { table, columns, .. }) => {
                    self.shape(table, columns.iter().map(|c| c.name.clone()).collect())?;
                }
                ApplyOp::Columns { table, columns } => self.shape(table, columns.clone())?,
                ApplyOp::Alter { table, change } => {
                    let mut t = self.table(table)?.clone();
                    alter(&mut t, change);
                    pipe.cmd("SET")
                        .arg(self.layout.per_table("schema", table))
                        .arg(encode_schema(&t))
                        .ignore();
                    self.tables.insert(table.clone(), t);
                }
                ApplyOp::ChunkDone { table, chunk, rows } => {
                    pipe.cmd("HSET")
                        .arg(self.layout.per_table("done", table))
                        .arg(chunk)
                        .arg(rows)
                        .ignore();
                }
                // Only for sinks that ask (`wants_origins`).
                ApplyOp::Origin { .. } => {}
                ApplyOp::Watch { table, keys } => {
                    if !keys.is_empty() {
                        let encoded: Vec<Vec<u8>> = keys.iter().map(|k| encode_row(k)).collect();
                        pipe.cmd("SADD")
                            .arg(self.layout.per_table("watch", table))
                            .arg(encoded)
                            .ignore();
                    }
                }
            }
        }
        Ok(())
    }

    fn shape(&mut self, table: &TableName, columns: Vec<String>) -> Result<(), ConnectorError> {
        let t = self.table(table)?;
        let idx: Vec<usize> = columns
            .iter()
            .map(|c| {
                t.column_index(c).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "table {table}: rows carry column {c}, which the target does not have"
                        ),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        if idx.iter().copied().eq(0..t.columns.len()) {
            self.shapes.remove(table);
        } else {
            self.shapes.insert(table.clone(), idx);
        }
        Ok(())
    }
}

fn alter(t: &mut TableSchema, change: &ColumnChange) {
    match change {
        ColumnChange::Add(c) => {
            if t.column_index(&c.name).is_none() {
                t.columns.push(c.clone());
            }
        }
        ColumnChange::Drop(name) => {
            if let Some(i) = t.column_index(name) {
                if !t.primary_key.contains(&i) {
                    t.columns.remove(i);
                    for p in &mut t.primary_key {
                        if *p > i {
                            *p -= 1;
                        }
                    }
                }
            }
        }
        ColumnChange::Retype(c) => {
            if let Some(i) = t.column_index(&c.name) {
                t.columns[i] = c.clone();
            }
        }
    }
}

fn bound(k: &Option<Key>) -> Value {
    match k {
        None => Value::Null,
        Some(k) => Value::Bytes(encode_row(k)),
    }
}

pub(crate) fn decode_bounds(b: &[u8]) -> Option<KeyRange> {
    let v = decode_row(b).ok()?;
    let key = |v: &Value| match v {
        Value::Null => Some(None),
        Value::Bytes(b) => decode_row(b).ok().map(Some),
        _ => None,
    };
    Some(KeyRange {
        start: key(v.first()?)?,
        end: key(v.get(1)?)?,
    })
}

impl Sink for RedisSink {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let version = self.usable_store()?;
        for t in tables {
            if t.name.name == "_cutover" {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!("table {}: its name is the prefix of cutover's own keys in Redis; leave it out (--exclude-tables) or rename it", t.name),
                ));
            }
            if !t.has_primary_key() {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!("table {} has no primary key: a Redis row is named by its key; add a primary key or leave the table out (--exclude-tables)", t.name),
                ));
            }
            if version.is_none() {
                let n: u64 = self.conn.query(
                    redis::cmd("ZCARD").arg(keys::index_key(&self.layout.prefix, &t.name)),
                )?;
                if n > 0 {
                    return Err(ConnectorError::new(
                        ErrorKind::Conflict,
                        format!(
                            "{} already holds {n} rows of table {} and no migration to resume: use another prefix (?prefix=…) or database, or remove them",
                            self.endpoint.describe(),
                            t.name
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.usable_store()?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.cmd("SET")
            .arg(self.layout.control("store_version"))
            .arg(cutover_state::latest(cutover_state::redis::MIGRATIONS))
            .ignore();
        pipe.cmd("HSETNX")
            .arg(self.layout.control("migration"))
            .arg("phase")
            .arg("copying")
            .ignore();
        pipe.cmd("HSETNX")
            .arg(self.layout.control("migration"))
            .arg("started_at")
            .arg(epoch_secs(SystemTime::now()))
            .ignore();
        for t in tables {
            if t.name.name == "_cutover" || !t.has_primary_key() {
                return self.check(tables);
            }
            let mut part = Vec::new();
            keys::escape(keys::table_part(&t.name).as_bytes(), &mut part);
            pipe.cmd("SADD")
                .arg(self.layout.control("tables"))
                .arg(part)
                .ignore();
            pipe.cmd("SET")
                .arg(self.layout.per_table("schema", &t.name))
                .arg(encode_schema(t))
                .arg("NX")
                .ignore();
        }
        self.conn.pipe::<()>(&pipe)?;
        self.tables = self
            .layout
            .tables(&mut self.conn)?
            .into_iter()
            .map(|t| (t.name.clone(), t))
            .collect();
        Ok(())
    }

    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<KeyRange>, ConnectorError>,
    ) -> Result<Vec<PlannedChunk>, ConnectorError> {
        let key = self.layout.per_table("chunks", &table.name);
        let stored: HashMap<u32, Vec<u8>> = self.conn.query(redis::cmd("HGETALL").arg(&key))?;
        let ranges: Vec<(u32, KeyRange)> = if stored.is_empty() {
            let ranges = plan()?;
            let mut pipe = redis::pipe();
            pipe.atomic();
            pipe.cmd("DEL").arg(&key).ignore();
            for (i, r) in ranges.iter().enumerate() {
                pipe.cmd("HSET")
                    .arg(&key)
                    .arg(i)
                    .arg(encode_row(&[bound(&r.start), bound(&r.end)]))
                    .ignore();
            }
            self.conn.pipe::<()>(&pipe)?;
            ranges
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i as u32, r))
                .collect()
        } else {
            let mut v = stored
                .into_iter()
                .map(|(i, b)| {
                    decode_bounds(&b).map(|r| (i, r)).ok_or_else(|| {
                        ConnectorError::new(
                            ErrorKind::Database,
                            format!("table {}: chunk {i} of the stored plan is not readable; run `cutover cleanup` and sync again", table.name),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            v.sort_by_key(|(i, _)| *i);
            v
        };
        let done: HashMap<u32, u64> = self
            .conn
            .query(redis::cmd("HGETALL").arg(self.layout.per_table("done", &table.name)))?;
        Ok(ranges
            .into_iter()
            .map(|(index, range)| PlannedChunk {
                index,
                range,
                done: done.contains_key(&index),
            })
            .collect())
    }

    fn apply(&mut self, ops: &[ApplyOp], checkpoint: Position) -> Result<(), ConnectorError> {
        let shapes = self.shapes.clone();
        let tables = self.tables.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        let built = self.build(ops, &mut pipe);
        if let Err(e) = built {
            // Nothing was sent: forget what the batch said about shapes and columns.
            self.shapes = shapes;
            self.tables = tables;
            return Err(e);
        }
        pipe.cmd("SET")
            .arg(self.layout.control("checkpoint"))
            .arg(checkpoint.as_str())
            .ignore();
        #[cfg(feature = "failpoints")]
        fail::fail_point!("redis::sink::before-commit", |_| {
            Err(ConnectorError::new(
                ErrorKind::Database,
                "failpoint redis::sink::before-commit",
            ))
        });
        if let Err(e) = self.conn.pipe::<()>(&pipe) {
            self.shapes = shapes;
            self.tables = tables;
            return Err(e);
        }
        self.applied.push_back((Instant::now(), checkpoint));
        Ok(())
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        let p: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.layout.control("checkpoint")))?;
        p.map(|p| {
            Position::new(&p).map_err(|e| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!("the stored checkpoint {p:?}: {e}"),
                )
            })
        })
        .transpose()
    }

    fn columns(&mut self, table: &TableSchema) -> Result<Vec<Column>, ConnectorError> {
        Ok(self
            .tables
            .get(&table.name)
            .map_or_else(|| table.columns.clone(), |t| t.columns.clone()))
    }

    fn finish_tables(&mut self, _tables: &[TableSchema]) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// `appendfsync always`: what is applied is on disk. `everysec`: what was applied at least
    /// 2 s ago. No append-only file (accepted with `durability=none`): what is applied, as
    /// the user chose.
    fn durable(&mut self, applied: Position) -> Result<Option<Position>, ConnectorError> {
        match self.persistence {
            Persistence::EverySec => {
                let cut = Instant::now().checked_sub(Duration::from_secs(2));
                while let Some((at, _)) = self.applied.front() {
                    if cut.is_none_or(|c| *at > c) {
                        break;
                    }
                    self.floor = self.applied.pop_front().map(|(_, p)| p);
                }
                Ok(self.floor.clone())
            }
            _ => {
                self.applied.clear();
                Ok(Some(applied))
            }
        }
    }

    fn set_order(&mut self, _order: &'static dyn PositionOrder) {}

    fn record_recent(&mut self, keys_: &[(TableName, Key)]) -> Result<(), ConnectorError> {
        if keys_.is_empty() {
            return Ok(());
        }
        let key = self.layout.control("recent");
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (t, k) in keys_ {
            let entry = encode_row(&[Value::Text(t.to_string()), Value::Bytes(encode_row(k))]);
            pipe.cmd("LPUSH").arg(&key).arg(entry).ignore();
        }
        pipe.cmd("LTRIM").arg(&key).arg(0).arg(9_999).ignore();
        self.conn.pipe(&pipe)
    }

    fn note(&mut self, progress: &Progress) -> Result<(), ConnectorError> {
        let fields = progress.status_fields(&mut self.last_note);
        let key = self.layout.control("status");
        let mut pipe = redis::pipe();
        for (f, v) in fields {
            match v {
                Some(v) => pipe.cmd("HSET").arg(&key).arg(f).arg(v).ignore(),
                None => pipe.cmd("HDEL").arg(&key).arg(f).ignore(),
            };
        }
        self.conn.pipe(&pipe)
    }

    /// Removes the migration's state (every `{prefix}_cutover:*` key) but the tables' schemas,
    /// which verify and the reader still need; the rows and their key indexes stay.
    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        let pattern = self.layout.control_pattern();
        let keep = self.layout.control("schema:");
        let mut cursor: u64 = 0;
        loop {
            let (next, found): (u64, Vec<Vec<u8>>) = self.conn.query(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000),
            )?;
            let doomed: Vec<&Vec<u8>> = found
                .iter()
                .filter(|k| !k.starts_with(&keep) && **k != self.layout.control("tables"))
                .collect();
            if !doomed.is_empty() {
                self.conn.query::<()>(redis::cmd("DEL").arg(doomed))?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
