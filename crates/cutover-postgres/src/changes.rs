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
use cutover_model::{Change, Position, Row, TableName, TableSchema, Transaction, Value};

use crate::pgoutput::{self, Datum, Message, OldImage};
use crate::pgtext;
use crate::replication::{ReplicationConnection, ReplicationMessage};
use crate::schema::PgTable;

/// A transaction is held in memory only up to this many changes; a larger one is handed over
/// in pieces positioned at its commit record (see [`Decoder`]).
pub(crate) const PIECE_CHANGES: usize = 20_000;

/// Values decoded but not yet taken by the applier, at most.
const BUFFER_BYTES: usize = 64 << 20;

/// How long the stream may be quiet before the server is asked where it is (which moves an
/// idle stream's position on: drains and chunk emissions wait for that).
const IDLE_WAIT: Duration = Duration::from_millis(10);

/// A captured table: the catalog's description and the change-capture view of it.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub table: PgTable,
    pub schema: TableSchema,
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
    relations: HashMap<u32, usize>,
    open: Option<OpenTxn>,
    /// A full transaction id near the stream's, to widen pgoutput's 32-bit ids.
    xid_reference: u64,
    slot: String,
}

impl Decoder {
    pub(crate) fn new(captured: Arc<Vec<Captured>>, xid_reference: u64, slot: &str) -> Decoder {
        let by_name = captured
            .iter()
            .enumerate()
            .map(|(i, c)| (c.table.name.clone(), i))
            .collect();
        Decoder {
            captured,
            by_name,
            relations: HashMap::new(),
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
                    changes: Vec::new(),
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
                    position: Position::Lsn(end_lsn),
                    xid: Some(open.xid),
                    committed_at: pg_time(commit_time).or(open.committed_at),
                    changes: open.changes,
                }))
            }
            Message::Relation(r) => {
                let name = TableName::new(Some(&r.namespace), &r.name);
                let Some(&ti) = self.by_name.get(&name) else {
                    return Ok(None);
                };
                check_relation(&self.captured[ti].table, &r, Position::Lsn(at))?;
                self.relations.insert(r.id, ti);
                Ok(None)
            }
            Message::Insert { relation, new } => {
                let t = self.relation(relation)?;
                let row = self.row(t, &new)?.0;
                self.push(Change::Insert {
                    table: self.captured[t].table.name.clone(),
                    row,
                })
            }
            Message::Update { relation, old, new } => {
                let t = self.relation(relation)?;
                let (row, unchanged) = self.row(t, &new)?;
                let (old_key, before) = match old {
                    Some((image, datums)) => {
                        let old_row = self.row(t, &datums)?.0;
                        let key = self.captured[t].schema.key_of(&old_row);
                        (key, (image == OldImage::Full).then_some(old_row))
                    }
                    None => (self.captured[t].schema.key_of(&row), None),
                };
                self.push(Change::Update {
                    table: self.captured[t].table.name.clone(),
                    old_key,
                    before,
                    row,
                    unchanged,
                })
            }
            Message::Delete { relation, old } => {
                let t = self.relation(relation)?;
                let (image, datums) = old;
                let old_row = self.row(t, &datums)?.0;
                self.push(Change::Delete {
                    table: self.captured[t].table.name.clone(),
                    old_key: self.captured[t].schema.key_of(&old_row),
                    before: (image == OldImage::Full).then_some(old_row),
                })
            }
            Message::Truncate { relations, .. } => {
                let mut tables = Vec::new();
                for r in relations {
                    tables.push(self.captured[self.relation(r)?].table.name.clone());
                }
                self.push(Change::Truncate { tables })
            }
            Message::Origin { .. } | Message::Type { .. } | Message::LogicalMessage { .. } => {
                Ok(None)
            }
        }
    }

    fn relation(&self, id: u32) -> Result<usize, ConnectorError> {
        self.relations.get(&id).copied().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("the change stream names relation {id} before describing it"),
            )
        })
    }

    /// A tuple's values; unchanged TOAST columns become NULL placeholders listed apart.
    fn row(&self, t: usize, datums: &[Datum]) -> Result<(Row, Vec<usize>), ConnectorError> {
        let c = &self.captured[t];
        let mut unchanged = Vec::new();
        let mut row = Vec::with_capacity(datums.len());
        for (i, (d, col)) in datums.iter().zip(c.table.copied_columns()).enumerate() {
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
                                col.name, c.table.name
                            ),
                        )
                    })?;
                    pgtext::decode(col.type_oid, &col.type_sql, text)
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
            position: Position::Lsn(open.commit_lsn),
            xid: Some(open.xid),
            committed_at: open.committed_at,
            changes: std::mem::take(&mut open.changes),
        }))
    }
}

/// Stops with the table and column named when the source's table no longer matches what is
/// being captured (a column added, dropped or retyped during sync).
fn check_relation(t: &PgTable, r: &pgoutput::Relation, at: Position) -> Result<(), ConnectorError> {
    let expected: Vec<(&str, u32)> = t
        .copied_columns()
        .map(|c| (c.name.as_str(), c.type_oid))
        .collect();
    let got: Vec<(&str, u32)> = r
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid))
        .collect();
    if expected == got {
        return Ok(());
    }
    let what = if let Some((name, _)) = got
        .iter()
        .find(|(n, _)| !expected.iter().any(|(e, _)| e == n))
    {
        format!("column {name} was added")
    } else if let Some((name, _)) = expected
        .iter()
        .find(|(n, _)| !got.iter().any(|(g, _)| g == n))
    {
        format!("column {name} was dropped")
    } else if let Some((name, _)) = got.iter().find(|g| !expected.contains(g)) {
        format!("column {name} changed its type")
    } else {
        "its columns were reordered".to_owned()
    };
    Err(ConnectorError::new(
        ErrorKind::SchemaMismatch,
        format!(
            "table {} changed on the source during sync: {what} (seen at {at}); nothing from that change on was applied. \
             Make the same change on the target (ALTER TABLE …, in a session with SET default_transaction_read_only = off: cutover keeps the target read-only for others until the switch), then run the same command again to continue",
            t.name
        ),
    ))
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
    /// Starts reading `conn`, which is streaming from `from`.
    pub(crate) fn start(conn: ReplicationConnection, from: u64, decoder: Decoder) -> ChangeStream {
        let (tx, rx) = mpsc::sync_channel(1024);
        let flushed = Arc::new(AtomicU64::new(from));
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
                    self.delivered = match t.position {
                        Position::Lsn(l) => l,
                        Position::Sequence(s) => s,
                    };
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
                std::thread::sleep(Duration::from_millis(2));
                continue;
            }
            let wait = if self.decoder.in_transaction() {
                Duration::from_millis(100)
            } else {
                IDLE_WAIT
            };
            let Some(msg) = self.conn.recv(wait)? else {
                if !self.decoder.in_transaction() && !self.reply_requested {
                    // Nothing new: ask where the server is, so the position advances even when
                    // the WAL holds nothing for the captured tables.
                    self.report(true)?;
                    self.reply_requested = true;
                }
                continue;
            };
            match msg {
                ReplicationMessage::Keepalive { end, reply } => {
                    self.received = self.received.max(end);
                    if reply {
                        self.report(true)?;
                    }
                    self.reply_requested = false;
                    // Every transaction that committed before `end` has been sent.
                    if !self.decoder.in_transaction() && end > self.sent_upto {
                        self.send(Transaction {
                            position: Position::Lsn(end),
                            xid: None,
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

    fn send(&mut self, t: Transaction) -> Result<(), ConnectorError> {
        if let Position::Lsn(l) = t.position {
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
        let mut d = Decoder::new(captured(), 5_000_000_000, "s");
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
        assert_eq!(t.position, Position::Lsn(120));
        // 12 widened next to the reference: same epoch (5_000_000_000 >> 32 == 1).
        assert_eq!(t.xid, Some((1 << 32) | 12));
        assert_eq!(t.changes.len(), 2);
        match &t.changes[1] {
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
    fn a_changed_relation_stops_with_table_and_column() {
        let mut d = Decoder::new(captured(), 0, "s");
        let e = d
            .message(relation(&[("id", 20), ("doc", 25), ("extra", 23)]), 42)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::SchemaMismatch);
        assert!(
            e.to_string().contains("public.t") && e.to_string().contains("extra was added"),
            "{e}"
        );
        let e = d
            .message(relation(&[("id", 20), ("doc", 17)]), 42)
            .unwrap_err();
        assert!(e.to_string().contains("doc changed its type"), "{e}");
    }

    #[test]
    fn huge_transactions_come_in_pieces_at_their_commit_record() {
        let mut d = Decoder::new(captured(), 0, "s");
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
        let positions: Vec<Position> = pieces.iter().map(|p| p.position).collect();
        assert_eq!(
            positions,
            [Position::Lsn(500), Position::Lsn(500), Position::Lsn(530)]
        );
        assert_eq!(
            pieces.iter().map(|p| p.changes.len()).sum::<usize>(),
            PIECE_CHANGES * 2 + 10
        );
    }
}
