//! PostgreSQL as a change-capture source: chunk reads that know their snapshot, and the
//! `pgoutput` change stream of a logical replication slot that cutover creates and names.
//!
//! Positions are WAL locations ([`crate::lsn`]): a transaction's position is the end of its
//! commit record, which is also where streaming resumes after it. The slot's confirmed position
//! only moves when [`Source::release`] is called, and the pipeline calls it only with positions
//! the target has durably applied, so the source keeps every change the target may still need.

use std::collections::HashMap;
use std::sync::Arc;

use cutover_connector::{
    ChunkRows, ConnectorError, ErrorKind, KeyRange, PositionOrder, ReadView, Source, TableEstimate,
};
use cutover_model::{Key, Position, Row, TableName, TableSchema, Transaction, Value};
use tokio_postgres::SimpleQueryMessage;

use crate::blocking::Client;
use crate::changes::{Captured, ChangeStream, Decoder};
use crate::copy::{chunk_bounds, range_predicate, row_count};
use crate::endpoint::{without_statement_timeout, PgEndpoint};
use crate::error::map;
use crate::lsn;
use crate::pgtext;
use crate::replication::ReplicationConnection;
use crate::schema::{self, ident, literal, qualified, PgColumn, PgTable, Selection};

/// The names of what change capture creates on the source: a replication slot and a
/// publication, both `cutover_<migration>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureNames {
    pub slot: String,
    pub publication: String,
}

impl CaptureNames {
    /// Names for migration `name` (letters, digits and `_` kept, lowercased; at most 63 bytes,
    /// PostgreSQL's limit for slot names).
    pub fn for_migration(name: &str) -> CaptureNames {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let mut slot = format!("cutover_{clean}");
        slot.truncate(63);
        CaptureNames {
            publication: slot.clone(),
            slot,
        }
    }
}

/// Keeps a slot's exported snapshot usable: drop it when every reader has joined the snapshot.
pub struct CaptureSnapshot {
    _conn: ReplicationConnection,
}

/// Reads chunks and the change stream of one PostgreSQL database. The stream is read on a thread
/// of its own ([`ChangeStream`]); large transactions come in pieces (see [`crate::changes`]).
pub struct PgSource {
    endpoint: PgEndpoint,
    /// A control session ([`PgEndpoint::connect_control`]), replaced when it breaks.
    client: Client,
    /// The last call failed with a connection error: the next one reconnects first.
    broken: bool,
    selection: Selection,
    names: CaptureNames,
    captured: Arc<Vec<Captured>>,
    by_name: HashMap<TableName, usize>,
    stream: Option<ChangeStream>,
    /// `start_capture` created the slot (rather than finding it).
    created_slot: bool,
}

impl PgSource {
    pub fn open(
        endpoint: &PgEndpoint,
        selection: &Selection,
        names: &CaptureNames,
    ) -> Result<PgSource, ConnectorError> {
        Ok(PgSource {
            endpoint: endpoint.clone(),
            client: endpoint.connect_control()?,
            broken: false,
            selection: selection.clone(),
            names: names.clone(),
            captured: Arc::new(Vec::new()),
            by_name: HashMap::new(),
            stream: None,
            created_slot: false,
        })
    }

    /// Runs one [`Source`] call: first replaces the connection if it is known to be broken
    /// (closed, or the last call failed with a connection error), then notes whether this
    /// call broke it. Nothing else needs setting up again: the change stream restarts from
    /// the caller's position on its own connection.
    fn session<T>(
        &mut self,
        call: impl FnOnce(&mut PgSource) -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        if self.broken || self.client.is_closed() {
            self.client = self.endpoint.connect_control()?;
            self.broken = false;
            tracing::info!(source = %self.endpoint.redacted(), "reconnected to the source");
        }
        let result = call(self);
        if result
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Connect)
        {
            self.broken = true;
        }
        result
    }

    fn load(&mut self) -> Result<(), ConnectorError> {
        let schema = schema::read(&mut self.client, &self.selection)?;
        self.captured = Arc::new(
            schema
                .tables
                .iter()
                .filter(|t| t.has_data())
                .map(|t| Captured {
                    schema: captured_schema(t),
                    table: t.clone(),
                })
                .collect(),
        );
        self.by_name = self
            .captured
            .iter()
            .enumerate()
            .map(|(i, c)| (c.table.name.clone(), i))
            .collect();
        Ok(())
    }

    /// The index of a captured table (reading the catalog once, on first use).
    fn index(&mut self, table: &TableSchema) -> Result<usize, ConnectorError> {
        if self.captured.is_empty() {
            self.load()?;
        }
        self.by_name.get(&table.name).copied().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::NotFound,
                format!(
                    "table {} is not among the captured tables (dropped on the source, or not selected)",
                    table.name
                ),
            )
        })
    }

    fn captured(&self, table: &TableSchema) -> Result<&Captured, ConnectorError> {
        self.by_name
            .get(&table.name)
            .map(|&i| &self.captured[i])
            .ok_or_else(|| {
                ConnectorError::new(
                    ErrorKind::NotFound,
                    format!("table {} is not among the captured tables", table.name),
                )
            })
    }

    fn slot_state(&mut self) -> Result<Option<(Option<u64>, String, bool)>, ConnectorError> {
        let row = self
            .client
            .query_opt(
                "SELECT confirmed_flush_lsn::text, coalesce(wal_status, ''), active
                   FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()",
                &[&self.names.slot],
            )
            .map_err(|e| map("reading the replication slot's state", e))?;
        Ok(row.map(|r| {
            (
                r.get::<_, Option<String>>(0)
                    .and_then(|s| lsn::parse_text(&s)),
                r.get::<_, String>(1),
                r.get::<_, bool>(2),
            )
        }))
    }

    /// (Re)starts streaming from `after`, first checking that the slot still has everything
    /// after it.
    fn start_stream(&mut self, after: u64) -> Result<(), ConnectorError> {
        self.stream = None;
        let slot = self.names.slot.clone();
        let at = lsn::position(after);
        let lost = |why: String| {
            ConnectorError::new(
                ErrorKind::HistoryLost,
                format!(
                    "{why}: the changes after position {at}, where the target stands, can no longer be read. \
                     The target cannot be brought up to date by replication: run `cutover cleanup` and sync again from the start"
                ),
            )
        };
        let state = self.slot_state()?;
        // What the stream reports as applied until the caller releases more: what the slot
        // already has, not `after` (applied, but perhaps not yet durable on the target).
        let confirmed = state
            .as_ref()
            .and_then(|(c, _, _)| *c)
            .map_or(after, |c| c.min(after));
        match state {
            None => {
                return Err(lost(format!(
                    "the replication slot {slot} no longer exists on the source (dropped?)"
                )))
            }
            Some((_, status, _)) if status == "lost" => {
                return Err(lost(format!(
                    "the replication slot {slot} was invalidated by the source (max_slot_wal_keep_size reached: the WAL it needed was removed)"
                )))
            }
            Some((Some(confirmed), _, _)) if confirmed > after => {
                return Err(lost(format!(
                    "the replication slot {slot} has already moved past the target, to {} (recreated, or advanced by someone else)",
                    lsn::position(confirmed)
                )))
            }
            Some(_) => {}
        }
        let reference: String = self
            .client
            .query_one("SELECT pg_snapshot_xmax(pg_current_snapshot())::text", &[])
            .map_err(|e| map("reading the source's transaction counter", e))?
            .get(0);
        let mut conn = ReplicationConnection::connect(&self.endpoint)?;
        conn.start_logical(&slot, after, &self.names.publication)
            .map_err(|e| {
                if e.kind() == ErrorKind::NotFound {
                    lost(format!("the replication slot {slot} is gone ({e})"))
                } else {
                    e
                }
            })?;
        // The decoder's own connection, to describe tables whose columns change.
        let mut describe = self.endpoint.connect_control()?;
        describe
            .batch_execute("SET search_path = pg_catalog")
            .map_err(|e| map("preparing the change stream's catalog session", e))?;
        let decoder = Decoder::new(
            Arc::clone(&self.captured),
            Box::new(describe),
            reference.parse().unwrap_or(0),
            &slot,
        );
        self.stream = Some(ChangeStream::start(conn, after, confirmed, decoder));
        Ok(())
    }

    /// Refuses, without changing anything, what change capture cannot do: a table without a
    /// key or with REPLICA IDENTITY NOTHING, `wal_level` other than logical, a user without the
    /// REPLICATION attribute, no free replication slot; with `fresh`, a slot of this migration
    /// that already exists (a copy with capture must start one).
    pub fn check_capture(&mut self, fresh: bool) -> Result<(), ConnectorError> {
        if self.captured.is_empty() {
            self.load()?;
        }
        let mut refuse = Vec::new();
        for c in self.captured.iter() {
            match (c.table.primary_key.is_some(), c.table.replica_identity) {
                (false, _) => refuse.push(format!(
                    "{} has no primary key (add one, or leave it out with --exclude-tables {})",
                    c.table.name, c.table.name
                )),
                (true, 'n') => refuse.push(format!(
                    "{} has REPLICA IDENTITY NOTHING, so the source would refuse its updates and deletes once published \
                     (run ALTER TABLE {} REPLICA IDENTITY DEFAULT, or leave it out with --exclude-tables)",
                    c.table.name,
                    qualified(&c.table.name)
                )),
                _ => {}
            }
        }
        if !refuse.is_empty() {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "change capture needs a primary key on every table; nothing was changed on either side: {}",
                    refuse.join("; ")
                ),
            ));
        }
        let ctx = "checking that the source can capture changes";
        let r = self
            .client
            .query_one(
                "SELECT current_setting('wal_level'),
                        (SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user),
                        current_setting('max_replication_slots')::int - (SELECT count(*) FROM pg_replication_slots)::int,
                        EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&self.names.slot],
            )
            .map_err(|e| map(ctx, e))?;
        let get = |e| map(ctx, e);
        let wal_level: String = r.try_get(0).map_err(get)?;
        let replication: bool = r.try_get(1).map_err(get)?;
        let free_slots: i32 = r.try_get(2).map_err(get)?;
        let slot_exists: bool = r.try_get(3).map_err(get)?;
        if wal_level != "logical" {
            return Err(ConnectorError::new(
                ErrorKind::Permission,
                format!(
                    "the source runs with wal_level = {wal_level}; change capture needs wal_level = logical \
                     (ALTER SYSTEM SET wal_level = logical, then restart the source server); nothing was changed on either side"
                ),
            ));
        }
        if !replication {
            return Err(ConnectorError::new(
                ErrorKind::Permission,
                "the source's user has neither the REPLICATION attribute nor superuser, which change capture needs \
                 (ALTER ROLE … REPLICATION); nothing was changed on either side",
            ));
        }
        if fresh && slot_exists {
            return Err(ConnectorError::new(
                ErrorKind::Conflict,
                format!(
                    "replication slot {} already exists on the source: a sync of this migration ran before. \
                     Follow it with `cutover sync`, or remove it with `cutover cleanup` to copy again; nothing was changed",
                    self.names.slot
                ),
            ));
        }
        if !slot_exists && free_slots <= 0 {
            return Err(ConnectorError::new(
                ErrorKind::Permission,
                "the source has no free replication slot (max_replication_slots is reached): raise it (a restart) or drop an unused slot; nothing was changed on either side",
            ));
        }
        Ok(())
    }

    /// Checks that every table can be captured (see [`PgSource::check_capture`]) and creates or
    /// updates the publication. Refuses before changing anything on the source.
    fn publish(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.check_capture(false)?;
        let leaves: Vec<String> = tables
            .iter()
            .map(|t| self.captured(t).map(|c| qualified(&c.table.name)))
            .collect::<Result<_, _>>()?;
        let publication = self.names.publication.clone();
        let ctx = |what: &str| format!("{what} on the source");
        let exists: bool = self
            .client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)",
                &[&publication],
            )
            .map_err(|e| map(ctx("inspecting publications"), e))?
            .get(0);
        let list = leaves.join(", ");
        let sql = if exists {
            format!("ALTER PUBLICATION {} SET TABLE {list}", ident(&publication))
        } else {
            format!(
                "CREATE PUBLICATION {} FOR TABLE {list}",
                ident(&publication)
            )
        };
        self.client
            .batch_execute(&sql)
            .map_err(|e| map(ctx(&format!("creating publication {publication}")), e))?;
        Ok(())
    }

    /// Starts change capture for a copy that reads in the returned snapshot (`cutover copy
    /// --capture`): the publication, then the slot created through a replication connection
    /// with its snapshot exported. Every transaction committed after the snapshot is in the
    /// slot's stream, so a later sync continues from `consistent point` without copying again.
    /// The snapshot can be used while the returned connection stays open and idle.
    pub fn capture_with_snapshot(
        &mut self,
    ) -> Result<(CaptureSnapshot, Position, String), ConnectorError> {
        let tables = self.tables()?;
        self.publish(&tables)?;
        if self.slot_state()?.is_some() {
            return Err(ConnectorError::new(
                ErrorKind::Conflict,
                format!(
                    "replication slot {} already exists on the source: a sync of this migration ran before. \
                     Follow it with `cutover sync`, or remove it with `cutover cleanup` to copy again",
                    self.names.slot
                ),
            ));
        }
        let mut conn = ReplicationConnection::connect(&self.endpoint)?;
        let rows = creating_slot(&self.endpoint, &self.names.slot, || {
            conn.command(&format!(
                "CREATE_REPLICATION_SLOT {} LOGICAL pgoutput EXPORT_SNAPSHOT",
                ident(&self.names.slot)
            ))
        })?;
        let row = rows.first().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::Database,
                "CREATE_REPLICATION_SLOT returned no row",
            )
        })?;
        let at = row
            .get(1)
            .and_then(|v| v.as_deref())
            .and_then(lsn::parse_text)
            .ok_or_else(|| {
                ConnectorError::new(
                    ErrorKind::Database,
                    "CREATE_REPLICATION_SLOT returned no position",
                )
            })?;
        let snapshot = row.get(2).and_then(|v| v.clone()).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::Database,
                "CREATE_REPLICATION_SLOT exported no snapshot",
            )
        })?;
        tracing::info!(slot = %self.names.slot, position = %lsn::position(at), "change capture started with an exported snapshot");
        Ok((CaptureSnapshot { _conn: conn }, lsn::position(at), snapshot))
    }

    /// Rows of `c` read with a simple query (every value in its text form).
    fn select(
        client: &mut Client,
        t: &PgTable,
        sql: &str,
        ctx: &dyn Fn() -> String,
    ) -> Result<Vec<Row>, ConnectorError> {
        let messages = client.simple_query(sql).map_err(|e| map(ctx(), e))?;
        Ok(rows_of(messages, t))
    }
}

/// The rows of a simple query's answer, as values of `t`'s copied columns.
fn rows_of(messages: Vec<SimpleQueryMessage>, t: &PgTable) -> Vec<Row> {
    let cols: Vec<&PgColumn> = t.copied_columns().collect();
    rows_in(messages, &cols)
}

/// The rows of a simple query's answer, as values of `cols`.
fn rows_in(messages: Vec<SimpleQueryMessage>, cols: &[&PgColumn]) -> Vec<Row> {
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                cols.iter()
                    .enumerate()
                    .map(|(i, col)| match r.get(i) {
                        None => Value::Null,
                        Some(text) => pgtext::decode(col.type_oid, &col.type_sql, text),
                    })
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The change-capture view of a table: its copied (not generated) columns.
fn captured_schema(t: &PgTable) -> TableSchema {
    let mut s = t.model();
    let keep: Vec<bool> = t.columns.iter().map(|c| c.generated.is_none()).collect();
    let names: Vec<String> = s.columns.iter().map(|c| c.name.clone()).collect();
    let mut i = 0;
    s.columns.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    let key_names: Vec<&String> = s.primary_key.iter().filter_map(|&k| names.get(k)).collect();
    s.primary_key = key_names
        .iter()
        .filter_map(|n| s.columns.iter().position(|c| &c.name == *n))
        .collect();
    s
}

/// `ORDER BY "a", "b"` for a table's key.
fn key_order(t: &PgTable) -> String {
    match &t.primary_key {
        Some((_, cols)) => cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
        None => "1".to_owned(),
    }
}

fn column_list(t: &PgTable) -> String {
    t.copied_columns()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text forms of a key's values, for SQL built by [`range_predicate`].
fn key_texts(key: &Key) -> Vec<String> {
    key.iter()
        .map(|v| pgtext::encode(v).unwrap_or_default())
        .collect()
}

/// `'1'::bigint, 'x'::text`: a key's values as typed SQL literals.
fn key_values_sql(t: &PgTable, texts: &[String]) -> String {
    let Some((_, cols)) = &t.primary_key else {
        return String::new();
    };
    texts
        .iter()
        .zip(cols)
        .map(|(v, k)| {
            let ty = t
                .columns
                .iter()
                .find(|c| &c.name == k)
                .map_or("text", |c| c.type_sql.as_str());
            format!("{}::{ty}", literal(v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `("a", "b") IN (('1'::int, 'x'::text), …)` for a list of keys.
fn keys_predicate(t: &PgTable, keys: &[Key]) -> String {
    let Some((_, cols)) = &t.primary_key else {
        return "false".to_owned();
    };
    let lhs = format!(
        "({})",
        cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
    );
    let tuples: Vec<String> = keys
        .iter()
        .map(|k| format!("({})", key_values_sql(t, &key_texts(k))))
        .collect();
    if tuples.is_empty() {
        return "false".to_owned();
    }
    format!("{lhs} IN ({})", tuples.join(", "))
}

impl Source for PgSource {
    fn positions(&self) -> &'static dyn PositionOrder {
        &lsn::LSNS
    }

    fn check_capture(&mut self, _tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.session(|s| PgSource::check_capture(s, false))
    }

    fn abandon_capture(&mut self) -> Result<(), ConnectorError> {
        if !self.created_slot {
            return Ok(());
        }
        self.created_slot = false;
        self.stop_capture(&[])
    }

    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        self.session(|s| s.tables_now())
    }

    fn estimate(&mut self, table: &TableSchema) -> Result<TableEstimate, ConnectorError> {
        self.session(|s| s.estimate_now(table))
    }

    fn plan_chunks(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<KeyRange>, ConnectorError> {
        self.session(|s| s.plan_chunks_now(table, rows_per_chunk))
    }

    fn read_chunk(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<ChunkRows, ConnectorError> {
        self.session(|s| s.read_chunk_now(table, range))
    }

    fn start_capture(&mut self, tables: &[TableSchema]) -> Result<Position, ConnectorError> {
        self.session(|s| s.start_capture_now(tables))
    }

    fn current_position(&mut self) -> Result<Position, ConnectorError> {
        self.session(|s| s.current_position_now())
    }

    fn read_changes(
        &mut self,
        tables: &[TableSchema],
        after: Position,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        self.session(|s| s.read_changes_now(tables, after, max_changes))
    }

    fn release(&mut self, upto: Position) -> Result<(), ConnectorError> {
        self.session(|s| s.release_now(upto))
    }

    fn fetch_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        self.session(|s| s.fetch_rows_now(table, keys))
    }

    fn history_bytes(&mut self) -> Result<Option<u64>, ConnectorError> {
        self.session(|s| s.history_bytes_now())
    }

    fn stop_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.session(|s| s.stop_capture_now(tables))
    }
}

impl PgSource {
    fn tables_now(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        self.load()?;
        Ok(self.captured.iter().map(|c| c.schema.clone()).collect())
    }

    fn estimate_now(&mut self, table: &TableSchema) -> Result<TableEstimate, ConnectorError> {
        let i = self.index(table)?;
        let t = self.captured[i].table.clone();
        let rows = row_count(&mut self.client, &t)?;
        Ok(TableEstimate {
            rows,
            avg_row_bytes: t.bytes.checked_div(rows).unwrap_or(64).max(1),
        })
    }

    fn plan_chunks_now(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<KeyRange>, ConnectorError> {
        let i = self.index(table)?;
        let t = self.captured[i].table.clone();
        let rows = row_count(&mut self.client, &t)?;
        let chunks = rows.div_ceil(rows_per_chunk.max(1)).max(1);
        let bounds = chunk_bounds(&mut self.client, &t, rows, chunks)?;
        // Bounds come back as the key values' text: typed by the key columns' types, so that
        // the plan a target stores (of any engine) holds them as the values they are.
        let key_types: Vec<(u32, String)> = t
            .primary_key
            .as_ref()
            .map(|(_, cols)| {
                cols.iter()
                    .map(|k| {
                        t.columns
                            .iter()
                            .find(|c| &c.name == k)
                            .map_or((25, "text".to_owned()), |c| {
                                (c.type_oid, c.type_sql.clone())
                            })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let key = |b: &Vec<String>| -> Key {
            b.iter()
                .enumerate()
                .map(|(i, s)| match key_types.get(i) {
                    Some((oid, name)) => crate::pgtext::decode(*oid, name, s),
                    None => Value::Text(s.clone()),
                })
                .collect()
        };
        let mut ranges = Vec::with_capacity(bounds.len() + 1);
        let mut start: Option<Key> = None;
        for b in &bounds {
            ranges.push(KeyRange {
                start: start.take(),
                end: Some(key(b)),
            });
            start = Some(key(b));
        }
        ranges.push(KeyRange { start, end: None });
        Ok(ranges)
    }

    fn read_chunk_now(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<ChunkRows, ConnectorError> {
        let i = self.index(table)?;
        let c = &self.captured[i];
        let lower = range.start.as_ref().map(key_texts);
        let upper = range.end.as_ref().map(key_texts);
        let predicate = range_predicate(&c.table, lower.as_deref(), upper.as_deref());
        let order = key_order(&c.table);
        let name = c.table.name.clone();
        let ctx = || format!("reading a chunk of table {name}");
        let mut tx = self.client.transaction().map_err(|e| map(ctx(), e))?;
        tx.batch_execute(&format!(
            "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; \
             SET LOCAL statement_timeout = 0; LOCK TABLE ONLY {} IN ACCESS SHARE MODE",
            qualified(&name)
        ))
        .map_err(|e| map(ctx(), e))?;
        // The lock comes before the snapshot: a table rewrite (ALTER TABLE … TYPE) committed
        // after the snapshot would otherwise make the table look empty to it. Under the lock the
        // columns cannot change until the rows are read. The next statement takes the snapshot.
        let r = tx
            .query_one(
                "SELECT pg_current_snapshot()::text, pg_current_wal_insert_lsn()::text, $1::text::regclass::oid",
                &[&qualified(&name)],
            )
            .map_err(|e| map(ctx(), e))?;
        let snapshot = lsn::TxSnapshot::parse(&r.get::<_, String>(0));
        let low = lsn::parse_text(&r.get::<_, String>(1)).unwrap_or(0);
        let relid: u32 = r.get(2);
        let live = schema::live_columns(&mut tx, relid)?;
        let live_refs: Vec<&PgColumn> = live.iter().collect();
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {predicate} ORDER BY {order}",
            live.iter()
                .map(|c| ident(&c.name))
                .collect::<Vec<_>>()
                .join(", "),
            qualified(&name),
        );
        let messages = tx.simple_query(&sql).map_err(|e| map(ctx(), e))?;
        let rows = rows_in(messages, &live_refs);
        tx.commit().map_err(|e| map(ctx(), e))?;
        let read_columns: Vec<cutover_model::Column> = live.iter().map(PgColumn::model).collect();
        let columns = (read_columns != table.columns).then_some(read_columns);
        // The high watermark: a WAL record after every transaction the snapshot saw. Once the
        // stream has passed it, those transactions have all been applied. Emitted in a tiny
        // transaction that flushes the WAL (locally: a synchronous standby is not waited for),
        // since the stream only reads flushed WAL: otherwise each chunk would wait for the WAL
        // writer (up to wal_writer_delay, 200 ms by default) on a source that is not busy.
        let high = self
            .client
            .simple_query(
                "BEGIN; SET LOCAL synchronous_commit = local; \
                 SELECT pg_logical_emit_message(true, 'cutover', 'chunk')::text; COMMIT",
            )
            .ok()
            .and_then(|messages| {
                messages.into_iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).and_then(lsn::parse_text),
                    _ => None,
                })
            });
        let high = match high {
            Some(h) => h,
            None => {
                // A failed emit leaves the transaction aborted.
                let _ = self.client.batch_execute("ROLLBACK");
                let r = self
                    .client
                    .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
                    .map_err(|e| map(ctx(), e))?;
                lsn::parse_text(&r.get::<_, String>(0)).unwrap_or(low)
            }
        };
        Ok(ChunkRows {
            rows,
            low: lsn::position(low),
            high: lsn::position(high.max(low)),
            view: snapshot.map(|s| Arc::new(s) as Arc<dyn ReadView>),
            columns,
        })
    }

    fn start_capture_now(&mut self, tables: &[TableSchema]) -> Result<Position, ConnectorError> {
        self.publish(tables)?;
        let slot = self.names.slot.clone();
        let ctx = |what: &str| format!("{what} on the source");
        if let Some((confirmed, _, _)) = self.slot_state()? {
            return Ok(lsn::position(confirmed.unwrap_or(0)));
        }
        // Creating a slot waits for every transaction running on the server to end; meanwhile
        // the user hears which.
        let endpoint = self.endpoint.clone();
        let r = without_statement_timeout(&mut self.client, |c| {
            creating_slot(&endpoint, &slot, || {
                c.query_one(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&slot],
                )
                .map_err(|e| {
                    map(
                        ctx(&format!(
                            "creating replication slot {slot} (needs the REPLICATION attribute and a free slot: max_replication_slots)"
                        )),
                        e,
                    )
                })
            })
        })?;
        let at = lsn::parse_text(
            &r.try_get::<_, String>(0)
                .map_err(|e| map("reading the new slot's position", e))?,
        )
        .unwrap_or(0);
        self.created_slot = true;
        tracing::info!(slot, position = %lsn::position(at), "change capture started");
        Ok(lsn::position(at))
    }

    fn current_position_now(&mut self) -> Result<Position, ConnectorError> {
        Ok(lsn::position(committed_position(&mut self.client)?))
    }

    fn read_changes_now(
        &mut self,
        _tables: &[TableSchema],
        after: Position,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        let after = lsn::of(&after)?;
        if self.captured.is_empty() {
            self.load()?;
        }
        let continuing = self.stream.as_ref().is_some_and(|s| s.delivered == after);
        if !continuing {
            self.start_stream(after)?;
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Vec::new());
        };
        let result = stream.next_batch(max_changes.max(1));
        if result.is_err() {
            // The next call starts a fresh stream from where the caller stands.
            self.stream = None;
        }
        result
    }

    fn release_now(&mut self, upto: Position) -> Result<(), ConnectorError> {
        let upto = lsn::of(&upto)?;
        match &self.stream {
            Some(s) => s.release(upto),
            None => {
                // Not streaming: move the slot on with SQL (only ever forward); a logical slot
                // decodes the WAL it skips, which can take a while.
                let slot = self.names.slot.clone();
                without_statement_timeout(&mut self.client, |c| {
                    c.query_one(
                        "SELECT 1 FROM pg_replication_slot_advance($1, $2::text::pg_lsn)",
                        &[&slot, &format!("{:X}/{:X}", upto >> 32, upto & 0xFFFF_FFFF)],
                    )
                    .map_err(|e| map("releasing applied changes on the source", e))
                })?;
            }
        }
        Ok(())
    }

    fn fetch_rows_now(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let mut i = self.index(table)?;
        // The rows in the columns asked for (the caller's shape of the table), typed by the
        // catalog; read again once if the table changed since it was read.
        let mut cols: Option<Vec<PgColumn>> = None;
        for attempt in 0..2 {
            let t = &self.captured[i].table;
            let found: Option<Vec<PgColumn>> = table
                .columns
                .iter()
                .map(|c| t.columns.iter().find(|x| x.name == c.name).cloned())
                .collect();
            if found.is_some() || attempt == 1 {
                cols = found;
                break;
            }
            self.load()?;
            i = self.index(table)?;
        }
        let Some(cols) = cols else {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "table {} no longer has all of the columns {} on the source",
                    table.name,
                    table
                        .columns
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let refs: Vec<&PgColumn> = cols.iter().collect();
        let list = cols
            .iter()
            .map(|c| ident(&c.name))
            .collect::<Vec<_>>()
            .join(", ");
        let mut rows = Vec::new();
        for batch in keys.chunks(500) {
            let c = &self.captured[i];
            let sql = format!(
                "SELECT {list} FROM ONLY {} WHERE {}",
                qualified(&c.table.name),
                keys_predicate(&c.table, batch)
            );
            let name = c.table.name.clone();
            let messages = self
                .client
                .simple_query(&sql)
                .map_err(|e| map(format!("re-reading rows of {name} by key"), e))?;
            rows.extend(rows_in(messages, &refs));
        }
        Ok(rows)
    }

    fn history_bytes_now(&mut self) -> Result<Option<u64>, ConnectorError> {
        retained_wal(&mut self.client, &self.names.slot)
    }

    fn stop_capture_now(&mut self, _tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.stream = None;
        let slot = self.names.slot.clone();
        if let Some((_, _, mut active)) = self.slot_state()? {
            // A sync that just stopped leaves its WAL sender exiting for a moment.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while active && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(100));
                active = self.slot_state()?.is_some_and(|(_, _, a)| a);
            }
            if active {
                return Err(ConnectorError::new(
                    ErrorKind::Busy,
                    format!("the replication slot {slot} is in use (a sync is still running?): stop it first, then clean up"),
                ));
            }
            self.client
                .query_one("SELECT pg_drop_replication_slot($1)::text", &[&slot])
                .map_err(|e| map(format!("dropping replication slot {slot}"), e))?;
        }
        self.client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                ident(&self.names.publication)
            ))
            .map_err(|e| map("dropping the publication", e))?;
        Ok(())
    }
}

/// Runs `create` (which creates replication slot `slot` on `endpoint`'s server) and meanwhile
/// says, every ten seconds after the first two, which transactions it waits for: a logical slot
/// can only start once every transaction running when it was asked for has ended, anywhere on
/// the server, and without a word the command would just sit there.
pub(crate) fn creating_slot<T>(
    endpoint: &PgEndpoint,
    slot: &str,
    create: impl FnOnce() -> Result<T, ConnectorError>,
) -> Result<T, ConnectorError> {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut next = std::time::Instant::now() + std::time::Duration::from_secs(2);
            let mut client = None;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(100));
                if std::time::Instant::now() < next {
                    continue;
                }
                next = std::time::Instant::now() + std::time::Duration::from_secs(10);
                if client.is_none() {
                    client = endpoint.connect().ok();
                }
                let Some(c) = client.as_mut() else { continue };
                let Ok(rows) = c.query(
                    "SELECT pid, coalesce(datname, ''), extract(epoch FROM now() - xact_start)::bigint,
                            coalesce(state, ''), coalesce(application_name, '')
                       FROM pg_stat_activity
                      WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid()
                        AND coalesce(application_name, '') NOT LIKE 'cutover%'
                      ORDER BY xact_start LIMIT 5",
                    &[],
                ) else {
                    continue;
                };
                let blockers: Vec<String> = rows
                    .iter()
                    .filter_map(|r| {
                        let pid: i32 = r.try_get(0).ok()?;
                        let db: String = r.try_get(1).ok()?;
                        let age: i64 = r.try_get(2).ok()?;
                        let state: String = r.try_get(3).ok()?;
                        let app: String = r.try_get(4).ok()?;
                        Some(format!(
                            "pid {pid} (database {db}, open {age} s, {state}{})",
                            if app.is_empty() { String::new() } else { format!(", application {app}") }
                        ))
                    })
                    .collect();
                if !blockers.is_empty() {
                    tracing::warn!(
                        slot,
                        "creating replication slot {slot} waits for transactions open on the source server to end: {}. \
                         Change capture can start only once they end (commit or roll back, or SELECT pg_terminate_backend(pid))",
                        blockers.join("; ")
                    );
                }
            }
        });
        let result = create();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        result
    })
}

/// SQL for the position every committed transaction's commit record lies before: the WAL
/// *insert* position (the write position can lag behind asynchronous commits that are already
/// visible). When it sits just after a page header, the header's start is returned instead, as
/// the position a caught-up change stream reports there (no record ends inside a header).
pub const COMMITTED_POSITION_SQL: &str =
    "SELECT (CASE WHEN (l - '0/0') % 16777216 = 40 THEN l - 40 \
     WHEN (l - '0/0') % 8192 = 24 THEN l - 24 ELSE l END)::text FROM pg_current_wal_insert_lsn() l";

/// The position every transaction committed so far lies before (see [`COMMITTED_POSITION_SQL`]).
pub(crate) fn committed_position(client: &mut Client) -> Result<u64, ConnectorError> {
    let r = client
        .query_one(COMMITTED_POSITION_SQL, &[])
        .map_err(|e| map("reading the WAL position", e))?;
    lsn::parse_text(&r.get::<_, String>(0)).ok_or_else(|| {
        ConnectorError::new(
            ErrorKind::Database,
            "unreadable WAL position from the server",
        )
    })
}

/// How far behind the slot keeps the source's WAL: bytes between its restart position and
/// the current WAL position (what the source cannot recycle because of this migration).
pub fn retained_wal(client: &mut Client, slot: &str) -> Result<Option<u64>, ConnectorError> {
    let r = client
        .query_opt(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .map_err(|e| map("measuring the WAL the slot retains", e))?;
    Ok(r.and_then(|r| r.get::<_, Option<i64>>(0))
        .map(|b| b.max(0) as u64))
}

/// Reads a PostgreSQL table in key order (keyset pagination), for verify.
pub struct PgRows {
    client: Client,
    selection: Selection,
    tables: HashMap<TableName, PgTable>,
}

impl PgRows {
    pub fn open(endpoint: &PgEndpoint, selection: &Selection) -> Result<PgRows, ConnectorError> {
        Ok(PgRows {
            // Pages of whole tables, for verify: no statement timeout.
            client: endpoint.connect_bulk()?,
            selection: selection.clone(),
            tables: HashMap::new(),
        })
    }
}

impl cutover_connector::TableReader for PgRows {
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError> {
        if !self.tables.contains_key(&table.name) {
            let schema = schema::read(&mut self.client, &self.selection)?;
            self.tables = schema
                .tables
                .into_iter()
                .map(|t| (t.name.clone(), t))
                .collect();
        }
        let t = self.tables.get(&table.name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::NotFound,
                format!("table {} does not exist here", table.name),
            )
        })?;
        let lhs = key_order(t);
        let mut conds = vec!["true".to_owned()];
        if let Some(k) = after {
            conds.push(format!("({lhs}) > ({})", key_values_sql(t, &key_texts(k))));
        }
        if let Some(k) = before {
            conds.push(format!("({lhs}) < ({})", key_values_sql(t, &key_texts(k))));
        }
        let range = conds.join(" AND ");
        let sql = format!(
            "SELECT {} FROM ONLY {} WHERE {range} ORDER BY {} LIMIT {limit}",
            column_list(t),
            qualified(&t.name),
            key_order(t)
        );
        let name = t.name.clone();
        PgSource::select(&mut self.client, t, &sql, &|| {
            format!("reading table {name} in key order")
        })
    }
}
