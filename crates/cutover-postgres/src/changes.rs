//! The change stream of a replication slot, read and decoded on a thread of its own so that
//! receiving and decoding overlap with the applier writing the target.
//!
//! [`Decoder`] turns `pgoutput` messages into whole transactions (no I/O; unit-tested).
//! [`ChangeStream`] owns the replication connection on its thread, hands transactions over
//! through a bounded queue (at most [`BUFFER_BYTES`] of values in flight), answers the server's
//! keepalives, asks for the server's position when the stream is idle, and reports what the
//! target has durably applied ([`ChangeStream::release`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use cutover_connector::{ConnectorError, ErrorKind};
use cutover_model::{Change, Column, Position, Row, TableName, TableSchema, Transaction, Value};

use crate::lsn;
use crate::pgoutput::{self, Datum, Message, OldImage};
use crate::pgtext;
use crate::replication::{ReplicationConnection, ReplicationMessage};
use crate::schema::{self, PgColumn, PgTable};

/// A transaction is held in memory only up to this many changes; a larger one is handed over
/// in pieces positioned at its commit record (see [`Decoder`]).
pub(crate) const PIECE_CHANGES: usize = 20_000;

/// Values decoded but not yet taken by the applier, at most.
const BUFFER_BYTES: usize = 64 << 20;

/// How long the stream may be quiet before the server is asked where it is (which moves an
/// idle stream's position on: drains and chunk emissions wait for that).
const IDLE_WAIT: Duration = Duration::from_millis(10);

/// How long the server may send nothing at all, although it was asked for its position, before
/// the connection counts as broken (a network cut leaves a socket that neither answers nor
/// fails). PostgreSQL's own subscribers give up after `wal_receiver_timeout`, 60 s by default;
/// a live server answers within milliseconds, and sends keepalives at least every
/// `wal_sender_timeout / 2`.
const SILENCE: Duration = Duration::from_secs(120);

/// A server that asks this many times within a second for what the target has applied is
/// waiting for it before it can go on: a server shutting down keeps its WAL senders until their
/// clients confirm everything sent, asking again as soon as they answer (otherwise it asks only
/// when it has not heard from the client for half of `wal_sender_timeout`). What it waits for
/// may not be on the target's disk yet, so the stream is closed instead (and opened again
/// later, from the caller's position): a fast shutdown or restart of the source then takes
/// seconds, not as long as it takes sync to give up.
const INSISTENT_PINGS: u32 = 10;

/// A captured table: the catalog's description and the change-capture view of it.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub table: PgTable,
    pub schema: TableSchema,
}

/// What a relation message leaves out, looked up on the source: the table's columns now (for
/// their NOT NULL and defaults, and to tell a dropped column from one added later) and the SQL
/// names of types. A regular connection of the stream's own.
pub(crate) trait Describe: Send {
    fn live_columns(&mut self, relid: u32) -> Result<Vec<PgColumn>, ConnectorError>;
    fn type_names(&mut self, types: &[(u32, i32)]) -> Result<Vec<String>, ConnectorError>;
}

impl Describe for crate::Client {
    fn live_columns(&mut self, relid: u32) -> Result<Vec<PgColumn>, ConnectorError> {
        schema::live_columns(self, relid)
    }
    fn type_names(&mut self, types: &[(u32, i32)]) -> Result<Vec<String>, ConnectorError> {
        schema::format_types(self, types)
    }
}

/// A captured table as the stream describes it now: rows arrive in this shape.
struct Shape {
    table: usize,
    /// (type oid, type name) of each column, in tuple order, for decoding values.
    types: Vec<(u32, String)>,
    /// The columns, with the primary key's positions among them.
    schema: TableSchema,
}

/// A transaction being received.
struct OpenTxn {
    xid: u64,
    /// The position of its commit record (where a piece of it is applied up to).
    commit_lsn: u64,
    committed_at: Option<SystemTime>,
    changes: Vec<Change>,
}

/// Turns pgoutput messages into transactions of the captured tables.
///
/// Large transactions come in pieces: each piece of at most [`PIECE_CHANGES`] changes is
/// positioned at the transaction's commit record, the last at the end of it. A target that
/// applied some pieces and restarts from the commit record receives the whole transaction again;
/// upserts and deletes by key make that harmless.
pub(crate) struct Decoder {
    captured: Arc<Vec<Captured>>,
    by_name: HashMap<TableName, usize>,
    relations: HashMap<u32, Shape>,
    describe: Box<dyn Describe>,
    /// Shapes described between transactions, for the next one.
    described: Vec<Change>,
    open: Option<OpenTxn>,
    /// A full transaction id near the stream's, to widen pgoutput's 32-bit ids.
    xid_reference: u64,
    slot: String,
}

impl Decoder {
    pub(crate) fn new(
        captured: Arc<Vec<Captured>>,
        describe: Box<dyn Describe>,
        xid_reference: u64,
        slot: &str,
    ) -> Decoder {
        let by_name = captured
            .iter()
            .enumerate()
            .map(|(i, c)| (c.table.name.clone(), i))
            .collect();
        Decoder {
            captured,
            by_name,
            relations: HashMap::new(),
            describe,
            described: Vec::new(),
            open: None,
            xid_reference,
            slot: slot.to_owned(),
        }
    }

    /// Inside a transaction (its commit not yet seen).
    pub(crate) fn in_transaction(&self) -> bool {
        self.open.is_some()
    }

    /// Widens a 32-bit transaction id to the full id closest to what the stream saw last.
    fn widen(&mut self, xid: u32) -> u64 {
        let r = self.xid_reference;
        let base = (r & !0xFFFF_FFFF) | u64::from(xid);
        let best = [base.wrapping_sub(1 << 32), base, base.wrapping_add(1 << 32)]
            .into_iter()
            .min_by_key(|c| c.abs_diff(r))
            .unwrap_or(base);
        self.xid_reference = self.xid_reference.max(best);
        best
    }

    /// Decodes one XLogData payload; returns a transaction (or a piece of one) when ready.
    /// `at` is the stream position, for messages.
    pub(crate) fn decode(
        &mut self,
        data: &[u8],
        at: u64,
    ) -> Result<Option<Transaction>, ConnectorError> {
        let m = pgoutput::decode(data).map_err(|e| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("reading the change stream of slot {}: {e}", self.slot),
            )
        })?;
        self.message(m, at)
    }

    fn message(&mut self, m: Message, at: u64) -> Result<Option<Transaction>, ConnectorError> {
        match m {
            Message::Begin {
                xid,
                final_lsn,
                commit_time,
            } => {
                let xid = self.widen(xid);
                self.open = Some(OpenTxn {
                    xid,
                    commit_lsn: final_lsn,
                    committed_at: pg_time(commit_time),
                    changes: std::mem::take(&mut self.described),
                });
                Ok(None)
            }
            Message::Commit {
                end_lsn,
                commit_time,
                ..
            } => {
                let Some(open) = self.open.take() else {
                    return Ok(None);
                };
                Ok(Some(Transaction {
                    position: lsn::position(end_lsn),
                    tag: Some(open.xid),
                    committed_at: pg_time(commit_time).or(open.committed_at),
                    changes: open.changes,
                }))
            }
            Message::Relation(r) => {
                let name = TableName::new(Some(&r.namespace), &r.name);
                let Some(&ti) = self.by_name.get(&name) else {
                    return Ok(None);
                };
                let (shape, current) = self.shape(ti, &r, lsn::position(at))?;
                let change = Change::Schema {
                    table: name,
                    columns: shape.schema.columns.clone(),
                    current: Some(current),
                };
                self.relations.insert(r.id, shape);
                match self.open.as_mut() {
                    Some(open) => open.changes.push(change),
                    None => self.described.push(change),
                }
                Ok(None)
            }
            Message::Insert { relation, new } => {
                let shape = self.relation(relation)?;
                let row = self.row(shape, &new)?.0;
                let table = self.captured[shape.table].table.name.clone();
                self.push(Change::Insert { table, row })
            }
            Message::Update { relation, old, new } => {
                let shape = self.relation(relation)?;
                let (row, unchanged) = self.row(shape, &new)?;
                let (old_key, before) = match old {
                    Some((image, datums)) => {
                        let old_row = self.row(shape, &datums)?.0;
                        let key = shape.schema.key_of(&old_row);
                        (key, (image == OldImage::Full).then_some(old_row))
                    }
                    None => (shape.schema.key_of(&row), None),
                };
                let table = self.captured[shape.table].table.name.clone();
                self.push(Change::Update {
                    table,
                    old_key,
                    before,
                    row,
                    unchanged,
                })
            }
            Message::Delete { relation, old } => {
                let shape = self.relation(relation)?;
                let (image, datums) = old;
                let old_row = self.row(shape, &datums)?.0;
                let change = Change::Delete {
                    table: self.captured[shape.table].table.name.clone(),
                    old_key: shape.schema.key_of(&old_row),
                    before: (image == OldImage::Full).then_some(old_row),
                };
                self.push(change)
            }
            Message::Truncate { relations, .. } => {
                let mut tables = Vec::new();
                for r in relations {
                    let t = self.relation(r)?.table;
                    tables.push(self.captured[t].table.name.clone());
                }
                self.push(Change::Truncate { tables })
            }
            Message::Origin { .. } | Message::Type { .. } | Message::LogicalMessage { .. } => {
                Ok(None)
            }
        }
    }

    fn relation(&self, id: u32) -> Result<&Shape, ConnectorError> {
        self.relations.get(&id).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("the change stream names relation {id} before describing it"),
            )
        })
    }

    /// The shape a relation message describes for captured table `ti`, and the names of the
    /// table's columns on the source now.
    fn shape(
        &mut self,
        ti: usize,
        r: &pgoutput::Relation,
        at: Position,
    ) -> Result<(Shape, Vec<String>), ConnectorError> {
        let live = self.describe.live_columns(r.id)?;
        let known = |c: &pgoutput::RelationColumn| {
            live.iter()
                .find(|l| l.name == c.name && l.type_oid == c.type_oid)
        };
        let unknown: Vec<(u32, i32)> = r
            .columns
            .iter()
            .filter(|c| known(c).is_none())
            .map(|c| (c.type_oid, c.type_modifier))
            .collect();
        let mut named = if unknown.is_empty() {
            Vec::new()
        } else {
            self.describe.type_names(&unknown)?
        }
        .into_iter();
        let mut types = Vec::with_capacity(r.columns.len());
        let mut columns = Vec::with_capacity(r.columns.len());
        for c in &r.columns {
            let column = match known(c) {
                Some(l) => l.model(),
                None => {
                    let type_sql = named
                        .next()
                        .unwrap_or_else(|| format!("oid {}", c.type_oid));
                    Column {
                        name: c.name.clone(),
                        ty: schema::column_type(&type_sql),
                        declared_type: type_sql,
                        nullable: true,
                        default: None,
                    }
                }
            };
            types.push((c.type_oid, column.declared_type.clone()));
            columns.push(column);
        }
        let captured = &self.captured[ti];
        let mut primary_key = Vec::new();
        for k in captured.schema.key_columns() {
            let Some(i) = columns.iter().position(|c| c.name == k.name) else {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "column {} of {}, part of its primary key, is gone from the source's table (seen at {at}); \
                         nothing from that change on was applied. A table's primary key cannot change during sync: \
                         run `cutover cleanup` and sync this table again",
                        k.name, captured.table.name
                    ),
                ));
            };
            primary_key.push(i);
        }
        let shape = Shape {
            table: ti,
            types,
            schema: TableSchema {
                name: captured.table.name.clone(),
                columns,
                primary_key,
                indexes: Vec::new(),
            },
        };
        Ok((shape, live.into_iter().map(|l| l.name).collect()))
    }

    /// A tuple's values; unchanged TOAST columns become NULL placeholders listed apart.
    fn row(&self, shape: &Shape, datums: &[Datum]) -> Result<(Row, Vec<usize>), ConnectorError> {
        let mut unchanged = Vec::new();
        let mut row = Vec::with_capacity(datums.len());
        for (i, (d, (oid, type_sql))) in datums.iter().zip(&shape.types).enumerate() {
            row.push(match d {
                Datum::Null => Value::Null,
                Datum::Unchanged => {
                    unchanged.push(i);
                    Value::Null
                }
                Datum::Text(bytes) | Datum::Binary(bytes) => {
                    let text = std::str::from_utf8(bytes).map_err(|_| {
                        ConnectorError::new(
                            ErrorKind::InvalidInput,
                            format!(
                                "column {} of table {} holds text that is not valid UTF-8; set the source database's encoding to UTF8",
                                shape.schema.columns[i].name, shape.schema.name
                            ),
                        )
                    })?;
                    pgtext::decode(*oid, type_sql, text)
                }
            });
        }
        Ok((row, unchanged))
    }

    /// Adds a change to the open transaction; hands over a piece when it grows large.
    fn push(&mut self, change: Change) -> Result<Option<Transaction>, ConnectorError> {
        let Some(open) = self.open.as_mut() else {
            return Err(ConnectorError::new(
                ErrorKind::Database,
                "the change stream sent a change outside a transaction",
            ));
        };
        open.changes.push(change);
        if open.changes.len() < PIECE_CHANGES {
            return Ok(None);
        }
        Ok(Some(Transaction {
            position: lsn::position(open.commit_lsn),
            tag: Some(open.xid),
            committed_at: open.committed_at,
            changes: std::mem::take(&mut open.changes),
        }))
    }
}

/// pgoutput's commit time (µs since 2000-01-01) as a system time.
fn pg_time(micros: i64) -> Option<SystemTime> {
    let unix = micros.checked_add(946_684_800_000_000)?;
    let unix = u64::try_from(unix).ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_micros(unix))
}

fn txn_bytes(t: &Transaction) -> usize {
    t.changes
        .iter()
        .map(|c| match c {
            Change::Insert { row, .. } | Change::Update { row, .. } => {
                row.iter().map(|v| v.payload_len() + 16).sum::<usize>()
            }
            _ => 64,
        })
        .sum::<usize>()
        + 64
}

type Item = Result<Transaction, ConnectorError>;

/// The stream, read on its own thread. Dropping it stops the thread and closes the connection.
pub(crate) struct ChangeStream {
    rx: Receiver<Item>,
    /// What the target has durably applied, for the thread's status updates.
    flushed: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    buffered: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
    /// The position of the last transaction (or piece) handed out.
    pub delivered: u64,
}

impl ChangeStream {
    /// Starts reading `conn`, which is streaming from `from`; `flushed` is what the target is
    /// known to have durably applied (reported to the server until [`ChangeStream::release`]
    /// says more).
    pub(crate) fn start(
        conn: ReplicationConnection,
        from: u64,
        flushed: u64,
        decoder: Decoder,
    ) -> ChangeStream {
        let (tx, rx) = mpsc::sync_channel(1024);
        let flushed = Arc::new(AtomicU64::new(flushed));
        let stop = Arc::new(AtomicBool::new(false));
        let buffered = Arc::new(AtomicUsize::new(0));
        let mut pump = Pump {
            conn,
            decoder,
            tx,
            received: from,
            sent_upto: from,
            flushed: Arc::clone(&flushed),
            reported: from,
            stop: Arc::clone(&stop),
            buffered: Arc::clone(&buffered),
            reply_requested: false,
            last_status: Instant::now(),
            silent_since: None,
            pings: (Instant::now(), 0),
        };
        let handle = std::thread::Builder::new()
            .name("cutover-pg-stream".into())
            .spawn(move || pump.run())
            .ok();
        ChangeStream {
            rx,
            flushed,
            stop,
            buffered,
            handle,
            delivered: from,
        }
    }

    /// Transactions in commit order: waits a moment for the first, then takes what is there, up
    /// to about `max_changes` changes. Empty when the stream has nothing new.
    pub(crate) fn next_batch(
        &mut self,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        let mut out = Vec::new();
        let mut n = 0;
        let mut next = match self.rx.recv_timeout(IDLE_WAIT) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(ConnectorError::new(
                    ErrorKind::Connect,
                    "the change stream's reader stopped; run the same command again",
                ))
            }
        };
        while let Some(item) = next.take() {
            match item {
                Ok(t) => {
                    self.buffered.fetch_sub(txn_bytes(&t), Ordering::Relaxed);
                    self.delivered = lsn::parse(&t.position).unwrap_or(self.delivered);
                    n += t.changes.len();
                    out.push(t);
                }
                // The error comes after everything received before it.
                Err(e) if out.is_empty() => return Err(e),
                Err(e) => {
                    self.requeue(e);
                    break;
                }
            }
            if n >= max_changes {
                break;
            }
            next = self.rx.try_recv().ok();
        }
        Ok(out)
    }

    /// Keeps an error for the next call: after it, the stream is not read again.
    fn requeue(&mut self, e: ConnectorError) {
        let (tx, rx) = mpsc::sync_channel(1);
        let _ = tx.send(Err(e));
        self.rx = rx;
    }

    /// The target has durably applied everything up to `upto`: the server may free that WAL.
    pub(crate) fn release(&self, upto: u64) {
        self.flushed.fetch_max(upto, Ordering::Relaxed);
    }
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblocks a reader waiting for room in the queue.
        let (_, rx) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Pump {
    conn: ReplicationConnection,
    decoder: Decoder,
    tx: SyncSender<Item>,
    /// The newest WAL position the server reported.
    received: u64,
    /// The position of the last transaction queued.
    sent_upto: u64,
    flushed: Arc<AtomicU64>,
    /// The flushed position last reported to the server.
    reported: u64,
    stop: Arc<AtomicBool>,
    buffered: Arc<AtomicUsize>,
    reply_requested: bool,
    last_status: Instant,
    /// Since when reads of the stream returned nothing at all.
    silent_since: Option<Instant>,
    /// Keepalives that asked for a reply: since when, how many.
    pings: (Instant, u32),
}

impl Pump {
    fn run(&mut self) {
        if let Err(e) = self.read() {
            let _ = self.tx.send(Err(e));
        }
    }

    fn read(&mut self) -> Result<(), ConnectorError> {
        while !self.stop.load(Ordering::Relaxed) {
            self.report(false)?;
            if self.buffered.load(Ordering::Relaxed) > BUFFER_BYTES {
                // The applier is behind: let the server wait (status updates still go out).
                self.silent_since = None;
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let wait = if self.decoder.in_transaction() {
                Duration::from_millis(100)
            } else {
                IDLE_WAIT
            };
            let Some(msg) = self.conn.recv(wait)? else {
                let since = *self.silent_since.get_or_insert_with(Instant::now);
                if since.elapsed() > SILENCE {
                    return Err(ConnectorError::new(
                        ErrorKind::Connect,
                        format!(
                            "reading the change stream: the source sent nothing for {} s although asked \
                             (the network or the server is gone); the stream is opened again",
                            SILENCE.as_secs()
                        ),
                    ));
                }
                if !self.decoder.in_transaction() && !self.reply_requested {
                    // Nothing new: ask where the server is, so the position advances even when
                    // the WAL holds nothing for the captured tables.
                    self.report(true)?;
                    self.reply_requested = true;
                }
                continue;
            };
            self.silent_since = None;
            match msg {
                ReplicationMessage::Keepalive { end, reply } => {
                    self.received = self.received.max(end);
                    if reply {
                        self.insisted(end)?;
                        self.report(true)?;
                    }
                    self.reply_requested = false;
                    // Every transaction that committed before `end` has been sent.
                    if !self.decoder.in_transaction() && end > self.sent_upto {
                        self.send(Transaction {
                            position: lsn::position(end),
                            tag: None,
                            committed_at: None,
                            changes: Vec::new(),
                        })?;
                    }
                }
                ReplicationMessage::XLogData { end, data, .. } => {
                    self.received = self.received.max(end);
                    if let Some(t) = self.decoder.decode(&data, self.received)? {
                        self.send(t)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Counts a keepalive that asked for a reply; fails when the server insists (see
    /// [`INSISTENT_PINGS`]) on a position beyond what the target has made durable.
    fn insisted(&mut self, end: u64) -> Result<(), ConnectorError> {
        let (since, n) = &mut self.pings;
        if since.elapsed() > Duration::from_secs(1) {
            *since = Instant::now();
            *n = 0;
        }
        *n += 1;
        if *n >= INSISTENT_PINGS && self.flushed.load(Ordering::Relaxed) < end {
            return Err(ConnectorError::new(
                ErrorKind::Connect,
                format!(
                    "reading the change stream: the source waits for the target to confirm position {}, \
                     which it has not made durable yet (the source is shutting down?); the stream is \
                     closed to let it go, and opened again",
                    lsn::position(end)
                ),
            ));
        }
        Ok(())
    }

    fn send(&mut self, t: Transaction) -> Result<(), ConnectorError> {
        if let Some(l) = lsn::parse(&t.position) {
            self.sent_upto = self.sent_upto.max(l);
        }
        self.buffered.fetch_add(txn_bytes(&t), Ordering::Relaxed);
        let mut item = Ok(t);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    if self.stop.load(Ordering::Relaxed) {
                        return Ok(());
                    }
                    self.report(false)?;
                    std::thread::sleep(Duration::from_millis(1));
                    item = back;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }

    /// A status update when the flushed position moved, every 10 s anyway (the server drops
    /// silent clients), or with `ask` (to get a keepalive back).
    fn report(&mut self, ask: bool) -> Result<(), ConnectorError> {
        let flushed = self.flushed.load(Ordering::Relaxed);
        if ask || flushed > self.reported || self.last_status.elapsed() > Duration::from_secs(10) {
            self.conn
                .send_status(self.received.max(flushed), flushed, ask)?;
            self.reported = flushed;
            self.last_status = Instant::now();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pgoutput::{Relation, RelationColumn};
    use crate::schema::PgColumn;

    fn captured() -> Arc<Vec<Captured>> {
        let table = PgTable::plain(
            TableName::new(Some("public"), "t"),
            vec![
                PgColumn::plain("id", "bigint", 20),
                PgColumn::plain("doc", "text", 25),
            ],
            &["id"],
        );
        Arc::new(vec![Captured {
            schema: table.model(),
            table,
        }])
    }

    /// The source's catalog as a test wants it: these columns now; types named by oid.
    struct Catalog(Vec<PgColumn>);

    impl Describe for Catalog {
        fn live_columns(&mut self, _: u32) -> Result<Vec<PgColumn>, ConnectorError> {
            Ok(self.0.clone())
        }
        fn type_names(&mut self, types: &[(u32, i32)]) -> Result<Vec<String>, ConnectorError> {
            Ok(types
                .iter()
                .map(|(oid, _)| match oid {
                    20 => "bigint".to_owned(),
                    23 => "integer".to_owned(),
                    25 => "text".to_owned(),
                    other => format!("type{other}"),
                })
                .collect())
        }
    }

    fn decoder(live: &[(&str, &str, u32)], xid_reference: u64) -> Decoder {
        let live = live
            .iter()
            .map(|(n, t, oid)| PgColumn::plain(n, t, *oid))
            .collect();
        Decoder::new(captured(), Box::new(Catalog(live)), xid_reference, "s")
    }

    const LIVE: &[(&str, &str, u32)] = &[("id", "bigint", 20), ("doc", "text", 25)];

    fn relation(cols: &[(&str, u32)]) -> Message {
        Message::Relation(Relation {
            id: 7,
            namespace: "public".into(),
            name: "t".into(),
            replica_identity: b'd',
            columns: cols
                .iter()
                .map(|(n, oid)| RelationColumn {
                    key: *n == "id",
                    name: (*n).into(),
                    type_oid: *oid,
                    type_modifier: -1,
                })
                .collect(),
        })
    }

    fn text(s: &str) -> Datum {
        Datum::Text(s.as_bytes().to_vec())
    }

    #[test]
    fn messages_become_transactions_with_unchanged_values_marked() {
        let mut d = decoder(LIVE, 5_000_000_000);
        assert!(d
            .message(relation(&[("id", 20), ("doc", 25)]), 1)
            .unwrap()
            .is_none());
        let begin = Message::Begin {
            final_lsn: 100,
            commit_time: 0,
            xid: 12,
        };
        assert!(d.message(begin, 1).unwrap().is_none());
        d.message(
            Message::Insert {
                relation: 7,
                new: vec![text("1"), text("a")],
            },
            1,
        )
        .unwrap();
        d.message(
            Message::Update {
                relation: 7,
                old: None,
                new: vec![text("1"), Datum::Unchanged],
            },
            1,
        )
        .unwrap();
        let t = d
            .message(
                Message::Commit {
                    commit_lsn: 100,
                    end_lsn: 120,
                    commit_time: 0,
                },
                1,
            )
            .unwrap()
            .unwrap();
        assert_eq!(t.position, lsn::position(120));
        // 12 widened next to the reference: same epoch (5_000_000_000 >> 32 == 1).
        assert_eq!(t.tag, Some((1 << 32) | 12));
        assert_eq!(t.changes.len(), 3);
        match &t.changes[0] {
            Change::Schema { columns, .. } => assert_eq!(columns.len(), 2),
            other => panic!("{other:?}"),
        }
        match &t.changes[2] {
            Change::Update {
                unchanged, old_key, ..
            } => {
                assert_eq!(unchanged, &vec![1]);
                assert_eq!(old_key, &vec![Value::Int(1)]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_changed_relation_describes_the_new_shape_and_rows_follow_it() {
        // `extra` was added on the source (it is in the catalog now); `doc` is still there.
        let mut d = decoder(
            &[
                ("id", "bigint", 20),
                ("doc", "text", 25),
                ("extra", "integer", 23),
            ],
            0,
        );
        d.message(
            Message::Begin {
                final_lsn: 50,
                commit_time: 0,
                xid: 3,
            },
            1,
        )
        .unwrap();
        d.message(relation(&[("id", 20), ("extra", 23), ("doc", 25)]), 42)
            .unwrap();
        d.message(
            Message::Insert {
                relation: 7,
                new: vec![text("5"), text("9"), text("x")],
            },
            42,
        )
        .unwrap();
        let t = d
            .message(
                Message::Commit {
                    commit_lsn: 50,
                    end_lsn: 60,
                    commit_time: 0,
                },
                43,
            )
            .unwrap()
            .unwrap();
        match &t.changes[0] {
            Change::Schema {
                table,
                columns,
                current,
            } => {
                assert_eq!(table.to_string(), "public.t");
                let names: Vec<&str> = columns.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, ["id", "extra", "doc"]);
                assert_eq!(columns[1].declared_type, "integer");
                assert_eq!(
                    current.as_deref(),
                    Some(&["id".to_owned(), "doc".to_owned(), "extra".to_owned()][..])
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            t.changes[1],
            Change::Insert {
                table: TableName::new(Some("public"), "t"),
                row: vec![Value::Int(5), Value::Int(9), Value::Text("x".into())],
            }
        );
        // A key column missing from the stream's shape stops with table and column.
        let e = d.message(relation(&[("doc", 25)]), 44).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
        assert!(
            e.to_string().contains("public.t") && e.to_string().contains("column id"),
            "{e}"
        );
    }

    #[test]
    fn huge_transactions_come_in_pieces_at_their_commit_record() {
        let mut d = decoder(LIVE, 0);
        d.message(relation(&[("id", 20), ("doc", 25)]), 1).unwrap();
        d.message(
            Message::Begin {
                final_lsn: 500,
                commit_time: 0,
                xid: 3,
            },
            1,
        )
        .unwrap();
        let mut pieces = Vec::new();
        for i in 0..(PIECE_CHANGES * 2 + 10) {
            let m = Message::Insert {
                relation: 7,
                new: vec![text(&i.to_string()), Datum::Null],
            };
            pieces.extend(d.message(m, 1).unwrap());
        }
        pieces.extend(
            d.message(
                Message::Commit {
                    commit_lsn: 500,
                    end_lsn: 530,
                    commit_time: 0,
                },
                1,
            )
            .unwrap(),
        );
        let positions: Vec<Position> = pieces.iter().map(|p| p.position.clone()).collect();
        assert_eq!(
            positions,
            [lsn::position(500), lsn::position(500), lsn::position(530)]
        );
        assert_eq!(
            pieces.iter().map(|p| p.changes.len()).sum::<usize>(),
            PIECE_CHANGES * 2 + 10 + 1 // and the shape, first
        );
    }
}
