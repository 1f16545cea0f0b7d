//! Change capture from the row-based binary log.
//!
//! One binlog stream (`COM_BINLOG_DUMP` through `mysql_async`'s `binlog` feature) is read on a
//! thread of the source's own and turned into whole transactions in commit order — the binlog
//! is in commit order, one transaction after another — which wait in a bounded queue for
//! `read_changes`. A transaction starts at `BEGIN` (or MariaDB's GTID event, type 162, which the
//! stream carries once the connection says `@mariadb_slave_capability = 4`) and ends at its XID
//! event (InnoDB) or a `COMMIT` query (non-transactional engines); its position is the end of
//! that event. Row events of tables outside the capture are skipped; a commit with nothing
//! captured still moves the position (sent as an empty transaction when the stream idles, so
//! the applier sees where the stream stands). `TRUNCATE` of a captured table becomes
//! [`Change::Truncate`]; any other DDL naming a captured table stops the stream with
//! `SchemaMismatch`, and nothing past it is returned.
//!
//! Seen on MariaDB 10.11 with `@mariadb_slave_capability = 4`: a stream starts with an
//! artificial rotate (flag 0x20, position 0) and the file's format description (position 0);
//! every transaction begins with a GTID event (162; standalone flag for DDL, which follows as a
//! query event with no commit after it); row events are the version 1 ones (23–25) after a
//! table map (19); InnoDB transactions end with an XID event (16), MyISAM/Aria ones with a
//! `COMMIT` query. No annotate-rows events (160) unless asked for.
//!
//! Binlog values are raw: [`binlog_value`] puts them into the driver's forms where they differ
//! (enum and set indexes → labels, `TIMESTAMP` seconds → an instant, `YEAR`, signedness from
//! the schema, `BINARY(n)` padding) and decodes them like chunk reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use cutover_connector::{runtime, ConnectorError, ErrorKind};
use cutover_model::{Change, Column, ColumnType, Row, TableName, TableSchema, Transaction, Value};
use futures_util::StreamExt;
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::value::BinlogValue;
use mysql_async::prelude::Queryable;
use mysql_async::{BinlogStreamRequest, Conn, Value as My};

use crate::endpoint::{MySqlEndpoint, ZeroDate};
use crate::error;
use crate::position::{compare, BinlogPos};
use crate::reader::row_of;
use crate::value::{decode, labels, DecodeError};

/// How long `next_batch` waits for the first transaction when none is ready.
const IDLE_WAIT: Duration = Duration::from_millis(10);
/// Transactions waiting for `read_changes` (the queue's bound)…
const QUEUE: usize = 1024;
/// …and the bytes of their values (a few huge transactions fill memory before 1024 do).
const BUFFER_BYTES: usize = 64 << 20;
/// A stream that sends nothing (not even a heartbeat, asked for every second) for this long is
/// taken for broken.
const SILENCE: Duration = Duration::from_secs(30);
/// Commits of nothing captured are reported at most this often.
const SKIP_EVERY: Duration = Duration::from_millis(200);

/// MariaDB's event types that `mysql_common` does not know.
const MARIADB_ANNOTATE_ROWS: u8 = 160;
const MARIADB_GTID: u8 = 162;
/// An event the server made up for the stream (the rotate it starts with).
const LOG_EVENT_ARTIFICIAL: u16 = 0x20;
/// Events that stand between transactions: stop, rotate, format description, MySQL's previous
/// GTIDs, MariaDB's binlog checkpoint and GTID list.
const BETWEEN_TRANSACTIONS: &[u8] = &[3, 4, 15, 35, 161, 163];
/// MySQL's compressed transaction (`binlog_transaction_compression`).
const TRANSACTION_PAYLOAD: u8 = 40;
/// MariaDB's compressed query and row events (`log_bin_compress`), which mysql_common does not
/// read: skipping them would lose changes.
const MARIADB_COMPRESSED: std::ops::RangeInclusive<u8> = 165..=171;
/// MariaDB's GTID event flag: the transaction is one statement with no XID or COMMIT after it.
const MARIADB_FL_STANDALONE: u8 = 1;

/// What the stream captures: the tables (by name, in the endpoint's database) and how values
/// are decoded.
#[derive(Debug, Clone)]
pub(crate) struct Captured {
    pub database: String,
    pub tables: HashMap<String, TableSchema>,
    pub zero_date: ZeroDate,
}

impl Captured {
    pub(crate) fn new(database: &str, tables: &[TableSchema], zero_date: ZeroDate) -> Captured {
        Captured {
            database: database.to_owned(),
            tables: tables
                .iter()
                .map(|t| (t.name.name.clone(), t.clone()))
                .collect(),
            zero_date,
        }
    }
}

/// A binlog value of column `col` as cutover's value, exactly as a chunk read would give it.
pub(crate) fn binlog_value(
    bv: BinlogValue<'_>,
    col: &Column,
    zero_date: ZeroDate,
) -> Result<Value, DecodeError> {
    let v = match bv {
        BinlogValue::Value(v) => v,
        BinlogValue::Jsonb(_) => My::try_from(bv).map_err(|e| DecodeError::Unexpected {
            expected: "JSON".into(),
            got: e.to_string(),
        })?,
        BinlogValue::JsonDiff(_) => {
            return Err(DecodeError::Unexpected {
                expected: "a whole JSON value".into(),
                got: "a partial JSON update (binlog_row_value_options=PARTIAL_JSON): \
                      SET GLOBAL binlog_row_value_options='' on the source"
                    .into(),
            })
        }
    };
    if let My::NULL = v {
        return Ok(Value::Null);
    }
    let declared = col.declared_type.to_ascii_lowercase();
    match (&col.ty, &v) {
        // TIMESTAMP2: seconds since the epoch (and microseconds) as text; TIMESTAMP: seconds.
        (ColumnType::Timestamp { zoned: true }, My::Bytes(b)) => {
            let t = std::str::from_utf8(b).map_err(|_| DecodeError::NotUtf8)?;
            let (s, us) = t.split_once('.').unwrap_or((t, "0"));
            let (Ok(s), Ok(us)) = (s.parse::<i64>(), format!("{us:0<6}").parse::<i64>()) else {
                return Err(DecodeError::Unexpected {
                    expected: col.declared_type.clone(),
                    got: format!("{} bytes", b.len()),
                });
            };
            epoch_instant(s, us, col, zero_date)
        }
        (ColumnType::Timestamp { zoned: true }, My::Int(s)) => epoch_instant(*s, 0, col, zero_date),
        (
            ColumnType::Int {
                bits: 24,
                unsigned: false,
            },
            My::Int(n),
        ) => {
            // mysql_common (0.37) reads a signed MEDIUMINT's three bytes without extending the
            // sign (-8388608 comes as 8388608): extend it here.
            Ok(Value::Int(i64::from(((*n as i32) << 8) >> 8)))
        }
        (ColumnType::Int { .. }, My::Bytes(b)) if declared.starts_with("year") => {
            // YEAR: 1900 + the stored byte; 0 is the year 0000.
            let y: i64 = std::str::from_utf8(b)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            Ok(Value::Int(if y == 1900 { 0 } else { y }))
        }
        (ColumnType::Text { .. }, My::Int(i)) if declared.starts_with("enum") => {
            // The label's 1-based index; 0 is the empty string of an invalid value.
            let l = labels(&col.declared_type);
            let i = usize::try_from(*i).unwrap_or(0);
            Ok(Value::Text(if i == 0 {
                String::new()
            } else {
                l.get(i - 1)
                    .cloned()
                    .ok_or_else(|| DecodeError::Unexpected {
                        expected: col.declared_type.clone(),
                        got: format!("label number {i}"),
                    })?
            }))
        }
        (ColumnType::Text { .. }, My::Bytes(b)) if declared.starts_with("set(") => {
            // A little-endian bit mask of the labels, in definition order.
            let l = labels(&col.declared_type);
            let chosen: Vec<&str> = l
                .iter()
                .enumerate()
                .filter(|(i, _)| b.get(i / 8).is_some_and(|byte| byte >> (i % 8) & 1 == 1))
                .map(|(_, s)| s.as_str())
                .collect();
            Ok(Value::Text(chosen.join(",")))
        }
        (ColumnType::Bytes { max_len: Some(n) }, My::Bytes(b))
            if declared.starts_with("binary") =>
        {
            // BINARY(n) is logged without its trailing zero bytes; reads give all n.
            let mut b = b.clone();
            if b.len() < *n as usize {
                b.resize(*n as usize, 0);
            }
            Ok(Value::Bytes(b))
        }
        (ColumnType::Uuid, My::Bytes(b)) if b.len() <= 16 => {
            // MariaDB logs a UUID as its 16 bytes in text order (seen on 10.11, for version 1
            // and 7 UUIDs alike), without trailing zero bytes, as BINARY(16).
            let mut u = [0u8; 16];
            u[..b.len()].copy_from_slice(b);
            Ok(Value::Uuid(u))
        }
        _ => decode(&v, col, zero_date),
    }
}

fn epoch_instant(
    secs: i64,
    us: i64,
    col: &Column,
    zero_date: ZeroDate,
) -> Result<Value, DecodeError> {
    if secs == 0 && us == 0 {
        return match zero_date {
            ZeroDate::Null => Ok(Value::Null),
            ZeroDate::Error => Err(DecodeError::ZeroDate("0000-00-00 00:00:00".into())),
        };
    }
    secs.checked_mul(1_000_000)
        .and_then(|m| m.checked_add(us))
        .and_then(cutover_model::Timestamp::from_unix_micros)
        .map(Value::TimestampTz)
        .ok_or_else(|| DecodeError::Unexpected {
            expected: col.declared_type.clone(),
            got: format!("{secs} seconds since 1970"),
        })
}

/// What a statement in the binlog does to the captured tables.
#[derive(Debug, PartialEq)]
pub(crate) enum Statement {
    /// Nothing captured is touched (or it is transaction control).
    Nothing,
    Begin,
    Commit,
    Rollback,
    Truncate(Vec<TableName>),
    /// DDL naming a captured table.
    Touches(String),
    /// A change of a captured table logged as a statement (a session not in ROW format).
    Logged(String),
}

/// Tokens of a statement: identifiers (`` `quoted` `` or bare words, as written), `.`, and
/// anything else as single characters; comments and string literals left out.
fn tokens(sql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '`' => {
                let mut s = String::new();
                while let Some(c) = chars.next() {
                    if c == '`' {
                        if chars.peek() == Some(&'`') {
                            chars.next();
                            s.push('`');
                        } else {
                            break;
                        }
                    } else {
                        s.push(c);
                    }
                }
                out.push(format!("`{s}"));
            }
            '\'' | '"' => {
                while let Some(d) = chars.next() {
                    if d == '\\' {
                        chars.next();
                    } else if d == c {
                        if chars.peek() == Some(&c) {
                            chars.next();
                        } else {
                            break;
                        }
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut prev = ' ';
                for d in chars.by_ref() {
                    if prev == '*' && d == '/' {
                        break;
                    }
                    prev = d;
                }
            }
            '#' => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                for d in chars.by_ref() {
                    if d == '\n' {
                        break;
                    }
                }
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' => {
                let mut s = String::from(c);
                while let Some(&d) = chars.peek() {
                    if d.is_alphanumeric() || d == '_' || d == '$' {
                        s.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                out.push(s);
            }
            c if c.is_whitespace() => {}
            other => out.push(other.to_string()),
        }
    }
    out
}

/// The name a token stands for (backquotes removed).
fn name(token: &str) -> &str {
    token.strip_prefix('`').unwrap_or(token)
}

/// What `sql`, run with default database `schema`, does to the tables of `cap`.
pub(crate) fn classify(sql: &str, schema: &str, cap: &Captured) -> Statement {
    let toks = tokens(sql);
    let word = |i: usize| {
        toks.get(i)
            .filter(|t| !t.starts_with('`'))
            .map(|t| t.to_ascii_uppercase())
            .unwrap_or_default()
    };
    let first = word(0);
    match first.as_str() {
        "BEGIN" | "XA" | "SAVEPOINT" | "RELEASE" => {
            return if first == "BEGIN" {
                Statement::Begin
            } else {
                Statement::Nothing
            }
        }
        "COMMIT" => return Statement::Commit,
        "ROLLBACK" if word(1) == "TO" => return Statement::Nothing,
        "ROLLBACK" => return Statement::Rollback,
        _ => {}
    }
    // Every table reference: `db`.`t` or a bare name in the default database.
    let mut named = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        let is_ident = t.starts_with('`')
            || t.chars()
                .next()
                .is_some_and(|c| c.is_alphanumeric() || c == '_');
        if is_ident {
            if toks.get(i + 1).map(String::as_str) == Some(".") {
                if let Some(next) = toks.get(i + 2) {
                    if name(t) == cap.database && cap.tables.contains_key(name(next)) {
                        named.push(name(next).to_owned());
                    }
                    i += 3;
                    continue;
                }
            }
            if schema == cap.database && cap.tables.contains_key(name(t)) {
                named.push(name(t).to_owned());
            }
        }
        i += 1;
    }
    let Some(table) = named.first().cloned() else {
        return Statement::Nothing;
    };
    match first.as_str() {
        "TRUNCATE" => {
            named.dedup();
            Statement::Truncate(named.iter().map(|n| TableName::bare(n)).collect())
        }
        // Statements that change nothing's shape or rows.
        "ANALYZE" | "OPTIMIZE" | "CHECK" | "CHECKSUM" | "REPAIR" | "GRANT" | "REVOKE" | "FLUSH"
        | "SELECT" | "SET" | "USE" => Statement::Nothing,
        // CREATE TABLE … LIKE / AS SELECT a captured table creates another one; CREATE TRIGGER,
        // VIEW, … change nothing captured. CREATE INDEX does (the brief of capture: stop).
        "CREATE" if !toks.iter().any(|t| t.eq_ignore_ascii_case("INDEX")) => Statement::Nothing,
        "INSERT" | "UPDATE" | "DELETE" | "REPLACE" | "LOAD" | "WITH" => Statement::Logged(table),
        _ => Statement::Touches(table),
    }
}

/// Turns binlog events into transactions of the captured tables.
pub(crate) struct Decoder {
    cap: Arc<Captured>,
    /// The binlog file being read.
    file: String,
    /// The changes of the transaction being read, once it began.
    open: Option<Vec<Change>>,
    /// The open transaction is one statement (MariaDB's standalone GTID event: DDL).
    standalone: bool,
    /// The position last given out (at first: where the stream started).
    last: BinlogPos,
    /// The end of the MySQL transaction payload whose events are being read.
    payload_end: Option<u32>,
}

/// What one event completed.
#[derive(Debug)]
pub(crate) enum Decoded {
    /// A transaction with captured changes.
    Transaction(Transaction),
    /// A transaction that changed nothing captured ended here.
    Skip(BinlogPos),
}

impl Decoder {
    pub(crate) fn new(cap: Arc<Captured>, from: &BinlogPos) -> Decoder {
        Decoder {
            cap,
            file: from.file.clone(),
            open: None,
            standalone: false,
            last: from.clone(),
            payload_end: None,
        }
    }

    /// A transaction begins; one still open with captured changes never ended, which the
    /// binlog does not do: an error, never a silent loss.
    fn begin(&mut self, at: &BinlogPos) -> Result<(), ConnectorError> {
        if self.open.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(ConnectorError::new(
                ErrorKind::Database,
                format!(
                    "reading the binlog: a transaction begins at {} before the one before it \
                     ended; nothing past {} was applied",
                    at.position(),
                    self.last.position()
                ),
            ));
        }
        self.open = Some(Vec::new());
        Ok(())
    }

    /// Where `ev` ends: its header's position, or for the events inside a MySQL transaction
    /// payload (compressed: their headers say 0), the payload event's.
    fn pos_of(&self, ev: &Event) -> u64 {
        match (ev.header().log_pos(), self.payload_end) {
            (0, Some(end)) => u64::from(end),
            (p, _) => u64::from(p),
        }
    }

    fn end(&mut self, ev: &Event) -> Decoded {
        let pos = BinlogPos::new(self.file.clone(), self.pos_of(ev));
        self.standalone = false;
        let changes = self.open.take().unwrap_or_default();
        if changes.is_empty() {
            return Decoded::Skip(pos);
        }
        let committed_at = SystemTime::UNIX_EPOCH
            .checked_add(Duration::from_secs(u64::from(ev.header().timestamp())));
        Decoded::Transaction(Transaction {
            position: pos.position(),
            tag: None,
            committed_at,
            changes,
        })
    }

    /// The event's effect: `Some` when it ended a transaction, or when it stands between
    /// transactions (a new file's header events, MariaDB's GTID list and binlog checkpoint):
    /// then the stream stands past it, and an idle stream reaches positions such as a snapshot's
    /// taken right after a rotation. Never a position at or before one already given (a stream
    /// that starts mid-file sends the file's format description event first).
    pub(crate) fn event(
        &mut self,
        ev: &Event,
        table_map: &dyn Fn(u64) -> Option<TableMapEvent<'static>>,
    ) -> Result<Option<Decoded>, ConnectorError> {
        let raw = ev.header().event_type_raw();
        if raw == TRANSACTION_PAYLOAD {
            // MySQL's compressed transaction: its events follow, decompressed by the driver.
            self.payload_end = Some(ev.header().log_pos());
            return Ok(None);
        }
        if ev.header().log_pos() != 0 {
            self.payload_end = None;
        }
        if MARIADB_COMPRESSED.contains(&raw) {
            return Err(ConnectorError::new(
                ErrorKind::UnsupportedType,
                format!(
                    "the binlog at {} holds a compressed event (MariaDB's log_bin_compress is \
                     ON), which cutover cannot read: SET GLOBAL log_bin_compress = OFF (and in \
                     the option file), then migrate again from a position after it",
                    BinlogPos::new(self.file.clone(), self.pos_of(ev)).position()
                ),
            ));
        }
        let here = BinlogPos::new(self.file.clone(), self.pos_of(ev));
        let was_open = self.open.is_some();
        let between = BETWEEN_TRANSACTIONS.contains(&raw)
            && ev.header().log_pos() > 0
            && ev.header().flags_raw() & LOG_EVENT_ARTIFICIAL == 0;
        let out = match self.apply(ev, table_map)? {
            Some(d) => d,
            None if between && !was_open && self.open.is_none() => Decoded::Skip(here),
            None => return Ok(None),
        };
        let at = match &out {
            Decoded::Skip(p) => p.clone(),
            Decoded::Transaction(t) => BinlogPos::of(&t.position)?,
        };
        if compare(&at, &self.last) != Some(std::cmp::Ordering::Greater) {
            if let Decoded::Transaction(t) = &out {
                // Never dropped in silence: a binlog whose positions do not advance is one
                // cutover does not understand.
                return Err(ConnectorError::new(
                    ErrorKind::Database,
                    format!(
                        "reading the binlog: a transaction ends at {}, not after {}: the stream's \
                         positions do not advance; nothing past {} was applied",
                        t.position,
                        self.last.position(),
                        self.last.position()
                    ),
                ));
            }
            return Ok(None);
        }
        self.last = at;
        Ok(Some(out))
    }

    fn apply(
        &mut self,
        ev: &Event,
        table_map: &dyn Fn(u64) -> Option<TableMapEvent<'static>>,
    ) -> Result<Option<Decoded>, ConnectorError> {
        let raw = ev.header().event_type_raw();
        let at = BinlogPos::new(self.file.clone(), self.pos_of(ev));
        let here = || at.clone();
        let bad = |e: std::io::Error| {
            ConnectorError::new(
                ErrorKind::Database,
                format!(
                    "reading the binlog at {}: an event cannot be decoded: {e}",
                    at.position()
                ),
            )
        };
        if raw == MARIADB_GTID {
            self.begin(&at)?;
            // flags: after the 8-byte sequence number and 4-byte domain id.
            self.standalone = ev
                .data()
                .get(12)
                .is_some_and(|f| f & MARIADB_FL_STANDALONE != 0);
            return Ok(None);
        }
        if raw == MARIADB_ANNOTATE_ROWS {
            return Ok(None);
        }
        let Some(data) = ev.read_data().map_err(bad)? else {
            // Another event type mysql_common does not know (MariaDB's binlog checkpoint, GTID
            // list, start encryption): nothing to capture.
            return Ok(None);
        };
        match data {
            EventData::RotateEvent(r) => {
                let name = r.name().into_owned();
                let artificial = ev.header().log_pos() == 0
                    || ev.header().flags_raw() & LOG_EVENT_ARTIFICIAL != 0;
                if artificial && name.starts_with(&self.file) {
                    // The rotate a stream starts with comes before the format description
                    // event, so its checksum is read as part of the name: the file is the one
                    // asked for.
                    return Ok(None);
                }
                if !valid_file_name(&name) {
                    return Err(ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "reading the binlog after {}: a rotate event names a file cutover \
                             cannot read ({:?})",
                            here().position(),
                            name.chars().take(80).collect::<String>()
                        ),
                    ));
                }
                self.file = name;
                Ok(None)
            }
            EventData::XidEvent(_) => Ok(Some(self.end(ev))),
            EventData::XaPrepareLogEvent(_) => {
                if self.open.as_ref().is_some_and(|c| !c.is_empty()) {
                    return Err(ConnectorError::new(
                        ErrorKind::UnsupportedType,
                        format!(
                            "an XA transaction changed captured tables (prepared at binlog \
                             position {}): cutover cannot tell yet whether it commits; nothing \
                             past it was applied. Avoid XA transactions on the captured tables \
                             (XA COMMIT … ONE PHASE is fine), and migrate again",
                            here().position()
                        ),
                    ));
                }
                Ok(Some(self.end(ev)))
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let schema = q.schema();
                match classify(&sql, &schema, &self.cap) {
                    Statement::Begin => {
                        // MySQL: after its GTID event (which began nothing here).
                        self.begin(&here())?;
                        self.standalone = false;
                        Ok(None)
                    }
                    Statement::Commit => Ok(Some(self.end(ev))),
                    Statement::Rollback => {
                        self.open = None;
                        self.standalone = false;
                        Ok(Some(Decoded::Skip(here())))
                    }
                    Statement::Nothing => {
                        if self.open.is_none() || self.standalone {
                            // A statement of its own (DDL of another table).
                            return Ok(Some(self.end(ev)));
                        }
                        Ok(None)
                    }
                    Statement::Truncate(tables) => {
                        // DDL: a transaction of its own (it commits implicitly).
                        self.open
                            .get_or_insert_with(Vec::new)
                            .push(Change::Truncate { tables });
                        Ok(Some(self.end(ev)))
                    }
                    Statement::Logged(table) => Err(ConnectorError::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "table {table} was changed by a statement logged as SQL, not as rows \
                             (`{}` at binlog position {}): the session that ran it did not use \
                             binlog_format=ROW, and its rows cannot be known. Set \
                             binlog_format=ROW globally (SET GLOBAL binlog_format='ROW', and in \
                             the option file), make the sessions reconnect, and migrate the \
                             table again",
                            shorten(&sql),
                            here().position()
                        ),
                    )),
                    Statement::Touches(table) => Err(ConnectorError::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "table {table} was changed on the source by `{}` at binlog position {}: \
                             change capture cannot go on past a change of a captured table's \
                             definition, and nothing past it was applied. Migrate the table \
                             again (`cutover cleanup`, then sync into an empty target)",
                            shorten(&sql),
                            here().position()
                        ),
                    )),
                }
            }
            EventData::RowsEvent(rows) => {
                let tme = table_map(rows.table_id()).ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "reading the binlog at {}: a row event names table id {} with no \
                             table map before it",
                            here().position(),
                            rows.table_id()
                        ),
                    )
                })?;
                if tme.database_name() != self.cap.database.as_str() {
                    return Ok(None);
                }
                let Some(table) = self.cap.tables.get(tme.table_name().as_ref()) else {
                    return Ok(None);
                };
                let changes = self.rows(&rows, &tme, table, &here())?;
                self.open.get_or_insert_with(Vec::new).extend(changes);
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn rows(
        &self,
        rows: &RowsEventData<'_>,
        tme: &TableMapEvent<'_>,
        table: &TableSchema,
        at: &BinlogPos,
    ) -> Result<Vec<Change>, ConnectorError> {
        let n = tme.columns_count() as usize;
        if n != table.columns.len() {
            return Err(ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "table {} has {n} columns in the binlog at {} but had {} when capture began: \
                     it was altered; migrate it again (`cutover cleanup`, then sync into an empty target)",
                    table.name,
                    at.position(),
                    table.columns.len()
                ),
            ));
        }
        let decode_row = |r: mysql_async::binlog::row::BinlogRow| -> Result<Row, ConnectorError> {
            if r.len() != n {
                return Err(ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!(
                        "table {}: a row in the binlog at {} lacks columns (binlog_row_image is \
                         not FULL): SET GLOBAL binlog_row_image=FULL on the source",
                        table.name,
                        at.position()
                    ),
                ));
            }
            // Names, where the binlog carries them (binlog_row_metadata=FULL): a renamed or
            // reordered column is a changed table.
            for (c, col) in r.columns_ref().iter().zip(&table.columns) {
                let name = c.name_str();
                if !name.starts_with('@') && name != col.name.as_str() {
                    return Err(ConnectorError::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "table {}: the binlog at {} has column {name} where capture began with \
                             column {}: the table was altered; migrate it again",
                            table.name,
                            at.position(),
                            col.name
                        ),
                    ));
                }
            }
            let zero_date = self.cap.zero_date;
            let values = r
                .unwrap()
                .into_iter()
                .zip(&table.columns)
                .map(|(v, col)| binlog_value(v, col, zero_date));
            row_of(
                table,
                values,
                &format!(" (binlog position {})", at.position()),
            )
        };
        let mut out = Vec::new();
        for r in rows.rows(tme) {
            let (before, after) = r.map_err(|e| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!(
                        "reading the binlog at {}: a row of table {} cannot be decoded: {e}",
                        at.position(),
                        table.name
                    ),
                )
            })?;
            let name = table.name.clone();
            let change = match (before, after) {
                (None, Some(a)) => Change::Insert {
                    table: name,
                    row: decode_row(a)?,
                },
                (Some(b), Some(a)) => {
                    let before = decode_row(b)?;
                    Change::Update {
                        table: name,
                        old_key: table.key_of(&before),
                        before: Some(before),
                        row: decode_row(a)?,
                        unchanged: Vec::new(),
                    }
                }
                (Some(b), None) => {
                    let before = decode_row(b)?;
                    Change::Delete {
                        table: name,
                        old_key: table.key_of(&before),
                        before: Some(before),
                    }
                }
                (None, None) => continue,
            };
            out.push(change);
        }
        Ok(out)
    }
}

/// A binlog file's name: printable ASCII ending in `.` and digits.
fn valid_file_name(name: &str) -> bool {
    name.bytes().all(|b| b.is_ascii_graphic()) && crate::position::sequence(name).is_some()
}

fn shorten(sql: &str) -> String {
    let one: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.chars().count() > 120 {
        format!("{}…", one.chars().take(120).collect::<String>())
    } else {
        one
    }
}

type Item = Result<Transaction, ConnectorError>;

/// Roughly the bytes a transaction holds.
fn txn_bytes(t: &Transaction) -> usize {
    let row = |r: &[Value]| r.iter().map(|v| 16 + v.payload_len()).sum::<usize>();
    t.changes
        .iter()
        .map(|c| match c {
            Change::Insert { row: r, .. } => row(r),
            Change::Update { row: r, before, .. } => row(r) + before.as_deref().map_or(0, row),
            Change::Delete { before, .. } => before.as_deref().map_or(0, row),
            _ => 64,
        })
        .sum::<usize>()
        + 64
}

/// The binlog stream, read on its own thread. Dropping it stops the thread and closes the
/// connection.
pub(crate) struct ChangeStream {
    rx: Receiver<Item>,
    stop: Arc<AtomicBool>,
    /// Bytes of the values of the transactions in the queue.
    buffered: Arc<AtomicUsize>,
    handle: Option<JoinHandle<()>>,
    /// The position of the last transaction handed out (where the next read continues).
    pub delivered: BinlogPos,
    /// The stream ended with an error (already handed out): it must be opened again.
    pub failed: bool,
}

impl ChangeStream {
    /// Starts reading the binlog right after `from` (a transaction boundary).
    pub(crate) fn start(
        ep: &MySqlEndpoint,
        server_id: u32,
        from: BinlogPos,
        cap: Arc<Captured>,
    ) -> ChangeStream {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let buffered = Arc::new(AtomicUsize::new(0));
        let pump = Pump {
            ep: ep.clone(),
            server_id,
            from: from.clone(),
            cap,
            tx,
            stop: Arc::clone(&stop),
            buffered: Arc::clone(&buffered),
        };
        let handle = std::thread::Builder::new()
            .name("cutover-mysql-binlog".into())
            .spawn(move || pump.run())
            .ok();
        ChangeStream {
            rx,
            stop,
            buffered,
            handle,
            delivered: from,
            failed: false,
        }
    }

    /// Transactions in commit order: waits a moment for the first, then takes what is there,
    /// up to about `max_changes` changes. Empty when the stream has nothing new.
    pub(crate) fn next_batch(
        &mut self,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        let mut out: Vec<Transaction> = Vec::new();
        let mut n = 0;
        let mut next = match self.rx.recv_timeout(IDLE_WAIT) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.failed = true;
                return Err(ConnectorError::new(
                    ErrorKind::Connect,
                    "the binlog reader stopped; the stream is opened again",
                ));
            }
        };
        while let Some(item) = next.take() {
            match item {
                Ok(t) => {
                    self.buffered.fetch_sub(txn_bytes(&t), Ordering::Relaxed);
                    if let Some(p) = BinlogPos::parse(&t.position) {
                        self.delivered = p;
                    }
                    n += t.changes.len();
                    // Consecutive empty transactions: only the last one's position matters.
                    if t.changes.is_empty() && out.last().is_some_and(|l| l.changes.is_empty()) {
                        out.pop();
                    }
                    out.push(t);
                }
                Err(e) if out.is_empty() => {
                    self.failed = true;
                    return Err(e);
                }
                Err(e) => {
                    // The error comes after everything received before it.
                    let (tx, rx) = mpsc::sync_channel(1);
                    let _ = tx.send(Err(e));
                    self.rx = rx;
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
}

impl Drop for ChangeStream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let (_, rx) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.rx, rx));
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

struct Pump {
    ep: MySqlEndpoint,
    server_id: u32,
    from: BinlogPos,
    cap: Arc<Captured>,
    tx: SyncSender<Item>,
    stop: Arc<AtomicBool>,
    buffered: Arc<AtomicUsize>,
}

impl Pump {
    fn run(self) {
        let tx = self.tx.clone();
        let stop = Arc::clone(&self.stop);
        if let Err(e) = runtime::block_on(self.read()) {
            if !stop.load(Ordering::Relaxed) {
                let _ = tx.send(Err(e));
            }
        }
    }

    async fn connect(&self) -> Result<Conn, ConnectorError> {
        let what = format!("opening the binlog stream of {}", self.ep.describe());
        // In the database (it shows in the process list as the reader's).
        let opts = self.ep.opts(Some(&self.cap.database))?;
        let conn = tokio::time::timeout(self.ep.connect_timeout, Conn::new(opts))
            .await
            .map_err(|_| ConnectorError::new(ErrorKind::Timeout, format!("{what}: no answer")))?
            .map_err(|e| error::map(&what, e))?;
        let mut conn = conn;
        // MariaDB: send GTID events as they are (not as BEGIN queries), and a heartbeat every
        // second while the binlog is idle (both servers), so a silent stream is a broken one.
        for s in [
            "SET @mariadb_slave_capability = 4",
            "SET @master_heartbeat_period = 1000000000",
        ] {
            conn.query_drop(s).await.map_err(|e| error::map(&what, e))?;
        }
        Ok(conn)
    }

    async fn read(self) -> Result<(), ConnectorError> {
        let conn = self.connect().await?;
        let file = self.from.file.clone();
        let request = BinlogStreamRequest::new(self.server_id)
            .with_filename(file.as_bytes())
            .with_pos(self.from.offset);
        let mut stream = conn.get_binlog_stream(request).await.map_err(|e| {
            history(
                error::map(
                    format!("opening the binlog stream at {}", self.from.position()),
                    e,
                ),
                &self.from,
            )
        })?;
        let mut decoder = Decoder::new(Arc::clone(&self.cap), &self.from);
        let mut skip: Option<BinlogPos> = None;
        let mut last_skip_sent = Instant::now();
        let mut heard = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
            let ev = match next {
                Err(_) => {
                    if heard.elapsed() > SILENCE {
                        return Err(ConnectorError::new(
                            ErrorKind::Connect,
                            format!(
                                "reading the binlog: the source sent nothing for {} s (not even \
                                 a heartbeat); the stream is opened again",
                                SILENCE.as_secs()
                            ),
                        ));
                    }
                    if let Some(p) = skip.take() {
                        self.send(empty(&p)).await?;
                        last_skip_sent = Instant::now();
                    }
                    continue;
                }
                Ok(None) => {
                    return Err(ConnectorError::new(
                        ErrorKind::Connect,
                        "reading the binlog: the source ended the stream; it is opened again",
                    ))
                }
                Ok(Some(Err(e))) => {
                    let at = decoder.last.clone();
                    return Err(history(error::map("reading the binlog", e), &at));
                }
                Ok(Some(Ok(ev))) => ev,
            };
            heard = Instant::now();
            let tables = |id: u64| stream.get_tme(id).cloned();
            match decoder.event(&ev, &tables)? {
                None => {}
                Some(Decoded::Skip(p)) => {
                    skip = Some(p);
                    if last_skip_sent.elapsed() > SKIP_EVERY {
                        if let Some(p) = skip.take() {
                            self.send(empty(&p)).await?;
                        }
                        last_skip_sent = Instant::now();
                    }
                }
                Some(Decoded::Transaction(t)) => {
                    skip = None;
                    self.send(t).await?;
                }
            }
        }
        Ok(())
    }

    async fn send(&self, t: Transaction) -> Result<(), ConnectorError> {
        // The applier is behind by more than the byte budget: the server waits (its socket
        // is simply not read), as it waits for a slow replica.
        while self.buffered.load(Ordering::Relaxed) > BUFFER_BYTES {
            if self.stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
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
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    item = back;
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.stop.store(true, Ordering::Relaxed);
                    return Ok(());
                }
            }
        }
    }
}

fn empty(p: &BinlogPos) -> Transaction {
    Transaction {
        position: p.position(),
        tag: None,
        committed_at: None,
        changes: Vec::new(),
    }
}

/// A binlog the server no longer has (error 1236) said in cutover's words.
fn history(e: ConnectorError, at: &BinlogPos) -> ConnectorError {
    if e.kind() == ErrorKind::HistoryLost {
        ConnectorError::new(
            ErrorKind::HistoryLost,
            format!(
                "the source no longer has the binlog the migration needs (from {}, file {}): it \
                 was purged (binlog_expire_logs_seconds / expire_logs_days, or PURGE BINARY LOGS). \
                 The changes since then are gone: start the migration again with an empty target \
                 (`cutover cleanup`, then sync). {e}",
                at.position(),
                at.file
            ),
        )
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::Column;

    fn cap() -> Captured {
        let t = TableSchema {
            name: TableName::bare("orders"),
            columns: vec![Column {
                name: "id".into(),
                ty: ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
                declared_type: "int(11)".into(),
                nullable: false,
                default: None,
            }],
            primary_key: vec![0],
            indexes: vec![],
        };
        Captured::new("shop", &[t], ZeroDate::Error)
    }

    #[test]
    fn statements_are_classified_by_what_they_do_to_captured_tables() {
        let c = cap();
        assert_eq!(classify("BEGIN", "shop", &c), Statement::Begin);
        assert_eq!(classify("COMMIT", "shop", &c), Statement::Commit);
        assert_eq!(
            classify("TRUNCATE TABLE `orders`", "shop", &c),
            Statement::Truncate(vec![TableName::bare("orders")])
        );
        assert_eq!(
            classify("truncate shop.orders", "other", &c),
            Statement::Truncate(vec![TableName::bare("orders")])
        );
        assert_eq!(classify("TRUNCATE orders", "other", &c), Statement::Nothing);
        assert_eq!(
            classify("ALTER TABLE orders ADD COLUMN x int", "shop", &c),
            Statement::Touches("orders".into())
        );
        assert_eq!(
            classify(
                "/* hi */ DROP TABLE IF EXISTS `shop`.`orders` /* generated by server */",
                "x",
                &c
            ),
            Statement::Touches("orders".into())
        );
        assert_eq!(
            classify("RENAME TABLE a TO b, orders TO orders_old", "shop", &c),
            Statement::Touches("orders".into())
        );
        assert_eq!(
            classify("CREATE INDEX i ON orders (id)", "shop", &c),
            Statement::Touches("orders".into())
        );
        assert_eq!(
            classify("CREATE TABLE copy LIKE orders", "shop", &c),
            Statement::Nothing
        );
        assert_eq!(
            classify(
                "ALTER TABLE customers ADD COLUMN note text DEFAULT 'orders'",
                "shop",
                &c
            ),
            Statement::Nothing
        );
        assert_eq!(
            classify("INSERT INTO orders VALUES (1)", "shop", &c),
            Statement::Logged("orders".into())
        );
    }

    /// Decoding bytes from the network never panics: arbitrary statements through the
    /// classifier, arbitrary raw values through every column type.
    #[test]
    fn arbitrary_statements_and_values_never_panic() {
        let c = cap();
        let alphabet = b"`'\"#-/* .;()abTRUNCATEorders\n\\";
        for _ in 0..5000 {
            let n = fastrand::usize(0..40);
            let sql: String = (0..n)
                .map(|_| char::from(alphabet[fastrand::usize(..alphabet.len())]))
                .collect();
            let _ = classify(&sql, "shop", &c);
        }
        let types = [
            ("tinyint(1)", ColumnType::Bool),
            (
                "mediumint",
                ColumnType::Int {
                    bits: 24,
                    unsigned: false,
                },
            ),
            (
                "bigint unsigned",
                ColumnType::Int {
                    bits: 64,
                    unsigned: true,
                },
            ),
            (
                "year",
                ColumnType::Int {
                    bits: 16,
                    unsigned: false,
                },
            ),
            (
                "decimal(10,2)",
                ColumnType::Decimal {
                    precision: Some(10),
                    scale: Some(2),
                },
            ),
            ("float", ColumnType::Float { bits: 32 }),
            ("enum('a','b')", ColumnType::Text { max_len: None }),
            ("set('a','b')", ColumnType::Text { max_len: None }),
            ("binary(4)", ColumnType::Bytes { max_len: Some(4) }),
            ("date", ColumnType::Date),
            ("time(6)", ColumnType::Time { zoned: false }),
            ("datetime(6)", ColumnType::Timestamp { zoned: false }),
            ("timestamp(6)", ColumnType::Timestamp { zoned: true }),
            ("bit(10)", ColumnType::Other { name: "bit".into() }),
            ("uuid", ColumnType::Uuid),
            ("json", ColumnType::Json { binary: false }),
        ];
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..fastrand::usize(0..20))
                .map(|_| fastrand::u8(..))
                .collect();
            let values = [
                My::Bytes(bytes),
                My::Int(fastrand::i64(..)),
                My::UInt(fastrand::u64(..)),
                My::Float(f32::from_bits(fastrand::u32(..))),
                My::Double(f64::from_bits(fastrand::u64(..))),
                My::Date(
                    fastrand::u16(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u32(..),
                ),
                My::Time(
                    fastrand::bool(),
                    fastrand::u32(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u8(..),
                    fastrand::u32(..),
                ),
            ];
            for (declared, ty) in &types {
                let col = Column {
                    name: "c".into(),
                    ty: ty.clone(),
                    declared_type: (*declared).into(),
                    nullable: true,
                    default: None,
                };
                for v in &values {
                    let _ = binlog_value(BinlogValue::Value(v.clone()), &col, ZeroDate::Error);
                }
            }
        }
    }

    /// An event of type `ty` ending at `log_pos`, with `data` after its header.
    fn event(ty: u8, log_pos: u32, data: &[u8]) -> Event {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.push(ty);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&(19 + data.len() as u32).to_le_bytes());
        b.extend_from_slice(&log_pos.to_le_bytes());
        b.extend_from_slice(&0u16.to_le_bytes());
        b.extend_from_slice(data);
        let fde = mysql_async::binlog::events::FormatDescriptionEvent::new(
            mysql_async::binlog::BinlogVersion::Version4,
        );
        Event::read(&fde, &b[..]).unwrap()
    }

    #[test]
    fn compressed_events_are_refused_and_positions_never_go_back() {
        let from = BinlogPos::new("binlog.000001", 1000);
        let mut d = Decoder::new(Arc::new(cap()), &from);
        let none = |_: u64| None;
        // A GTID event (MariaDB), then a compressed row event: an error, not a skip.
        assert!(d
            .event(&event(MARIADB_GTID, 1050, &[0; 13]), &none)
            .unwrap()
            .is_none());
        let err = d.event(&event(169, 1100, &[0; 8]), &none).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnsupportedType);
        assert!(err.to_string().contains("log_bin_compress"), "{err}");
        // An event between transactions before the start (as a stream starting mid-file
        // sends the file's header events): no position from it.
        let mut d = Decoder::new(Arc::new(cap()), &from);
        assert!(d.event(&event(3, 256, &[]), &none).unwrap().is_none());
        // A binlog checkpoint after it: the stream stands there.
        match d.event(&event(161, 1200, &[0; 8]), &none).unwrap() {
            Some(Decoded::Skip(p)) => assert_eq!(p, BinlogPos::new("binlog.000001", 1200)),
            other => panic!("{other:?}"),
        }
    }
}
