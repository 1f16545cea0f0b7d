//! MySQL/MariaDB as a source: chunks read in consistent snapshots whose binlog position the
//! server tells (MariaDB: `binlog_snapshot_file`/`_position`, so `low == high`; MySQL: the
//! position before and after the snapshot began), and change capture from the row-based binlog
//! ([`crate::binlog`]), which installs nothing on the source: the server's binlog retention
//! decides how long the history is kept.

use std::collections::HashMap;
use std::sync::Arc;

use cutover_connector::{
    key_text, ChunkRows, ConnectorError, ErrorKind, KeyRange, PositionOrder, Source, TableEstimate,
};
use cutover_model::{ColumnType, Key, Position, TableSchema, Transaction};
use mysql_async::{Params, Row};

use crate::binlog::{Captured, ChangeStream};
use crate::client::{ident, qualified, Client};
use crate::endpoint::MySqlEndpoint;
use crate::position::{BinlogPos, BINLOG_POSITIONS};
use crate::reader::{decode_row, key_condition, order_by_key, params, select_range};
use crate::schema::{non_utf8_columns, read_tables, text};
use crate::value::decode;

/// The refusal of a server that cannot tell a snapshot's binlog position (MySQL itself, as
/// opposed to MariaDB and Percona Server). Bracketing the snapshot by the positions before and
/// after it is not enough: MySQL writes a transaction to the binlog before InnoDB makes it
/// visible, so one logged before `low` can still be invisible to the snapshot, and the
/// watermark rule would lose it. Closing that window needs a global read lock per chunk
/// (mysqldump's FLUSH TABLES WITH READ LOCK), which a live primary should not pay; until a
/// MySQL 8 server is tested, cutover refuses rather than risk a lost row.
pub(crate) fn no_snapshot_position(ctx: &str) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::UnsupportedType,
        format!(
            "{ctx}: this server does not tell a snapshot's binlog position \
             (Binlog_snapshot_position), so a chunk read cannot be placed exactly in the change \
             stream and a row could be lost; MariaDB 10.6+ and Percona Server tell it. MySQL 8 as \
             a source is not supported yet (it is as a target)"
        ),
    )
}

/// Reads a MySQL/MariaDB database and its binlog.
pub struct MySqlSource {
    endpoint: MySqlEndpoint,
    client: Option<Client>,
    stream: Option<ChangeStream>,
    /// The tables the stream captures, to notice a call with others.
    streamed: Vec<TableSchema>,
    server_id: u32,
    /// Whether the server is MariaDB, once asked.
    mariadb: Option<bool>,
    /// Stream failures in a row (a broken connection is opened again this many times before
    /// `read_changes` reports it).
    failures: u32,
}

/// Broken streams opened again without a word before `read_changes` reports the error.
const QUIET_RESTARTS: u32 = 3;

impl std::fmt::Debug for MySqlSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlSource")
            .field("endpoint", &self.endpoint.describe())
            .finish()
    }
}

/// A server id for the binlog reader: the URL's `server-id`, or one drawn at random from a
/// range servers rarely use (two readers with one id would cut each other off).
fn reader_server_id(ep: &MySqlEndpoint) -> u32 {
    if let Some(id) = ep.server_id {
        return id;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    0x4000_0000 | (h.finish() as u32 & 0x3fff_ffff)
}

impl MySqlSource {
    pub fn open(endpoint: &MySqlEndpoint) -> Result<MySqlSource, ConnectorError> {
        let client = Client::connect(endpoint, Some(&endpoint.database))?;
        Ok(MySqlSource {
            server_id: reader_server_id(endpoint),
            endpoint: endpoint.clone(),
            client: Some(client),
            stream: None,
            streamed: Vec::new(),
            mariadb: None,
            failures: 0,
        })
    }

    /// The session, connected again if the last one broke.
    fn client(&mut self) -> Result<&mut Client, ConnectorError> {
        if self.client.as_ref().is_none_or(Client::is_broken) {
            self.client = None;
            self.client = Some(Client::connect(
                &self.endpoint,
                Some(&self.endpoint.database),
            )?);
        }
        self.client
            .as_mut()
            .ok_or_else(|| ConnectorError::new(ErrorKind::Connect, "the source session is closed"))
    }

    fn is_mariadb(&mut self) -> Result<bool, ConnectorError> {
        if let Some(m) = self.mariadb {
            return Ok(m);
        }
        let m = self.client()?.is_mariadb();
        self.mariadb = Some(m);
        Ok(m)
    }

    /// The binlog position of the newest commit.
    fn binlog_position(&mut self) -> Result<BinlogPos, ConnectorError> {
        let mariadb = self.is_mariadb()?;
        let client = self.client()?;
        // MySQL 8.4 renamed SHOW MASTER STATUS (untested here: no MySQL server at hand).
        let sql = if !mariadb && client.server_version() >= (8, 4, 0) {
            "SHOW BINARY LOG STATUS"
        } else {
            "SHOW MASTER STATUS"
        };
        let rows: Vec<Row> = client.query(sql)?;
        let row = rows.first().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} has no binary log (log_bin is OFF): change capture reads the binlog; \
                     start the server with log_bin (MySQL: --log-bin; MariaDB: log_bin=ON in \
                     its option file) and binlog_format=ROW",
                    self.endpoint.describe()
                ),
            )
        })?;
        match (text(row, 0), text(row, 1).and_then(|p| p.parse().ok())) {
            (Some(file), Some(offset)) if !file.is_empty() => Ok(BinlogPos::new(file, offset)),
            _ => Err(ConnectorError::new(
                ErrorKind::Database,
                format!("{sql} gave no binlog file and position"),
            )),
        }
    }

    /// The server's capture settings, by name (`None` where it has no such variable).
    fn settings(&mut self) -> Result<Settings, ConnectorError> {
        let client = self.client()?;
        let mut s = HashMap::new();
        for name in [
            "log_bin",
            "binlog_format",
            "binlog_row_image",
            "server_id",
            "binlog_expire_logs_seconds",
            "expire_logs_days",
            "binlog_row_value_options",
            "log_bin_compress",
        ] {
            let v: Option<Option<String>> =
                match client.query_first(&format!("SELECT CAST(@@GLOBAL.{name} AS CHAR)")) {
                    Ok(v) => v,
                    // An unknown variable (a version without it).
                    Err(e) if e.kind() != ErrorKind::Connect => None,
                    Err(e) => return Err(e),
                };
            if let Some(Some(v)) = v {
                s.insert(name.to_owned(), v);
            }
        }
        let grants: Vec<String> = client
            .query::<Row>("SHOW GRANTS")?
            .iter()
            .filter_map(|r| text(r, 0))
            .collect();
        Ok(Settings { values: s, grants })
    }

    fn key_of_row(&self, table: &TableSchema, row: &Row) -> Result<Key, ConnectorError> {
        table
            .key_columns()
            .enumerate()
            .map(|(i, col)| {
                let v = row.as_ref(i).unwrap_or(&mysql_async::Value::NULL);
                decode(v, col, self.endpoint.zero_date).map_err(|e| {
                    ConnectorError::new(
                        e.kind(),
                        format!("table {}, key column {}: {e}", table.name, col.name),
                    )
                })
            })
            .collect()
    }
}

/// The global settings and grants that change capture depends on.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    pub values: HashMap<String, String>,
    pub grants: Vec<String>,
}

/// What keeps change capture from working, each with its fix; empty when nothing does.
pub(crate) fn capture_problems(s: &Settings) -> Vec<String> {
    let get = |k: &str| s.values.get(k).map(|v| v.to_ascii_uppercase());
    let mut out = Vec::new();
    if !matches!(get("log_bin").as_deref(), Some("1" | "ON")) {
        out.push(
            "log_bin is OFF: start the server with the binary log on (MySQL: --log-bin, on by \
             default since 8.0; MariaDB: log_bin in the option file) — a restart is needed"
                .to_owned(),
        );
    }
    match get("binlog_format").as_deref() {
        Some("ROW") => {}
        other => out.push(format!(
            "binlog_format is {}, not ROW: SET GLOBAL binlog_format = 'ROW' (and \
             binlog_format=ROW in the option file); sessions already open keep the old format \
             until they reconnect",
            other.unwrap_or("unknown")
        )),
    }
    match get("binlog_row_image").as_deref() {
        Some("FULL") => {}
        other => out.push(format!(
            "binlog_row_image is {}, not FULL: SET GLOBAL binlog_row_image = 'FULL' (and in the \
             option file)",
            other.unwrap_or("unknown")
        )),
    }
    if get("binlog_row_value_options").is_some_and(|v| v.contains("PARTIAL_JSON")) {
        out.push(
            "binlog_row_value_options is PARTIAL_JSON (MySQL): JSON updates are logged as \
             patches cutover cannot apply; SET GLOBAL binlog_row_value_options = ''"
                .to_owned(),
        );
    }
    if matches!(get("log_bin_compress").as_deref(), Some("1" | "ON")) {
        out.push(
            "log_bin_compress is ON (MariaDB): cutover cannot read compressed binlog events; \
             SET GLOBAL log_bin_compress = OFF (and in the option file)"
                .to_owned(),
        );
    }
    if matches!(get("server_id").as_deref(), None | Some("0")) {
        out.push(
            "server_id is 0: set server_id to a number above 0 in the option file (a binlog \
             needs one) and restart"
                .to_owned(),
        );
    }
    let grants: Vec<String> = s.grants.iter().map(|g| g.to_ascii_uppercase()).collect();
    let global = |p: &str| {
        grants
            .iter()
            .any(|g| g.contains(" ON *.* ") && (g.contains("ALL PRIVILEGES") || g.contains(p)))
    };
    // Privileges through roles are not expanded here: with a role granted, the server decides.
    let has_roles = grants
        .iter()
        .any(|g| !g.contains(" ON ") && g.starts_with("GRANT "));
    if !has_roles {
        if !global("REPLICATION SLAVE") && !global("REPLICATION REPLICA") {
            out.push(
                "the user lacks REPLICATION SLAVE (to read the binlog): GRANT REPLICATION SLAVE \
                 ON *.* TO the user"
                    .to_owned(),
            );
        }
        if !global("REPLICATION CLIENT") && !global("BINLOG MONITOR") && !global("SUPER") {
            out.push(
                "the user lacks REPLICATION CLIENT (MariaDB: BINLOG MONITOR; to read the binlog \
                 position): GRANT REPLICATION CLIENT ON *.* TO the user (MariaDB 10.5+: GRANT \
                 BINLOG MONITOR ON *.* TO the user)"
                    .to_owned(),
            );
        }
    }
    out
}

/// Seconds of binlog the server keeps, where it says (0: forever).
fn retention_seconds(s: &Settings) -> Option<u64> {
    let secs = s
        .values
        .get("binlog_expire_logs_seconds")
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > 0);
    let days = s
        .values
        .get("expire_logs_days")
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|&d| d > 0.0)
        .map(|d| (d * 86_400.0) as u64);
    match (secs, days) {
        (Some(s), _) => Some(s),
        (None, Some(d)) => Some(d),
        (None, None) => Some(0),
    }
}

impl Source for MySqlSource {
    fn positions(&self) -> &'static dyn PositionOrder {
        &BINLOG_POSITIONS
    }

    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        let ep = self.endpoint.clone();
        read_tables(self.client()?, &ep)
    }

    fn estimate(&mut self, table: &TableSchema) -> Result<TableEstimate, ConnectorError> {
        let db = self.endpoint.database.clone();
        let rows: Vec<Row> = self.client()?.exec(
            "SELECT TABLE_ROWS, AVG_ROW_LENGTH FROM information_schema.TABLES \
             WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?",
            Params::Positional(vec![db.into(), table.name.name.clone().into()]),
        )?;
        let num = |r: &Row, i| text(r, i).and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
        Ok(rows
            .first()
            .map_or(TableEstimate::default(), |r| TableEstimate {
                rows: num(r, 0),
                avg_row_bytes: num(r, 1).max(1),
            }))
    }

    fn plan_chunks(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<KeyRange>, ConnectorError> {
        if !table.has_primary_key() {
            return Ok(vec![KeyRange::all()]);
        }
        // Walk the key index: each boundary is the key `n` places after the one before, found
        // by the server (only the boundaries cross the network), so the chunks follow the
        // key's actual distribution.
        let n = rows_per_chunk.max(1);
        let db = self.endpoint.database.clone();
        let cols: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
        let mut boundaries: Vec<Key> = Vec::new();
        loop {
            let mut sql = format!(
                "SELECT {} FROM {}",
                cols.join(", "),
                qualified(&db, &table.name.name)
            );
            let mut p = Vec::new();
            if let Some(last) = boundaries.last() {
                // Everything from the last boundary on.
                let (cond, lp) = key_condition(table, last, ">", true);
                sql.push_str(" WHERE ");
                sql.push_str(&cond);
                p = lp;
            }
            sql.push_str(&order_by_key(table));
            sql.push_str(&format!(" LIMIT 1 OFFSET {n}"));
            let rows: Vec<Row> = self
                .client()?
                .exec(&sql, params(p))
                .map_err(|e| e.context(format!("planning chunks of table {}", table.name)))?;
            let Some(row) = rows.first() else {
                break;
            };
            boundaries.push(self.key_of_row(table, row)?);
        }
        let mut ranges = Vec::with_capacity(boundaries.len() + 1);
        let mut start = None;
        for b in boundaries {
            ranges.push(KeyRange {
                start: start.take(),
                end: Some(b.clone()),
            });
            start = Some(b);
        }
        ranges.push(KeyRange { start, end: None });
        Ok(ranges)
    }

    fn read_chunk(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<ChunkRows, ConnectorError> {
        let ctx = format!(
            "reading table {} keys {} to {}",
            table.name,
            range.start.as_deref().map_or("start".into(), key_text),
            range.end.as_deref().map_or("end".into(), key_text)
        );
        let mariadb = self.is_mariadb()?;
        let db = self.endpoint.database.clone();
        let zero_date = self.endpoint.zero_date;
        // MySQL (untested here) tells no snapshot position: the positions before and after the
        // snapshot began bracket it. A known gap, to close on a MySQL server: a transaction is
        // written to the binlog before InnoDB commits it, so one at or before `before` may not
        // be visible yet to the snapshot (group commit's window), and the watermark rule would
        // take the chunk's rows for newer than it. mysqldump closes the window with FLUSH TABLES
        // WITH READ LOCK around START TRANSACTION … and SHOW MASTER STATUS.
        let before = if mariadb {
            None
        } else {
            Some(self.binlog_position()?)
        };
        let (sql, p) = select_range(
            &db,
            table,
            range.start.as_ref().map(|k| (k, true)),
            range.end.as_ref(),
            None,
        );
        let client = self.client()?;
        client.query_drop("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")?;
        client.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")?;
        let read = (|| -> Result<(Vec<Row>, Option<BinlogPos>), ConnectorError> {
            // MariaDB and Percona Server tell the snapshot's binlog position; MySQL does not.
            let snapshot = {
                let rows: Vec<Row> = client.query("SHOW STATUS LIKE 'binlog_snapshot_%'")?;
                let get = |name: &str| {
                    rows.iter()
                        .find(|r| text(r, 0).as_deref() == Some(name))
                        .and_then(|r| text(r, 1))
                };
                match (get("Binlog_snapshot_file"), get("Binlog_snapshot_position")) {
                    (Some(f), Some(p)) if !f.is_empty() => Some(BinlogPos::new(
                        f,
                        p.parse().map_err(|_| {
                            ConnectorError::new(
                                ErrorKind::Database,
                                format!("the server's binlog_snapshot_position is {p:?}"),
                            )
                        })?,
                    )),
                    _ => None,
                }
            };
            let rows: Vec<Row> = client.exec(&sql, params(p))?;
            Ok((rows, snapshot))
        })();
        let (rows, snapshot) = match read {
            Ok(r) => {
                client.query_drop("COMMIT")?;
                r
            }
            Err(e) => {
                let _ = client.query_drop("ROLLBACK");
                return Err(e.context(&ctx));
            }
        };
        let (low, high) = match (snapshot, before) {
            (Some(s), _) => (s.clone(), s),
            (None, Some(_)) => return Err(no_snapshot_position(&ctx)),
            (None, None) => {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{ctx}: the server gave no binlog position for the snapshot (log_bin is \
                         OFF?): turn the binary log on"
                    ),
                ))
            }
        };
        let rows = rows
            .iter()
            .map(|r| decode_row(table, r, zero_date))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(ChunkRows {
            rows,
            low: low.position(),
            high: high.position(),
            view: None,
            columns: None,
        })
    }

    fn check_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let settings = self.settings()?;
        let mut problems = capture_problems(&settings);
        for t in tables.iter().filter(|t| !t.has_primary_key()) {
            problems.push(format!(
                "table {} has no primary key: change capture cannot apply its updates and \
                 deletes; add a PRIMARY KEY to it, or leave it out of the migration",
                t.name
            ));
        }
        for t in tables {
            for c in &t.columns {
                if let ColumnType::Other { name } = &c.ty {
                    if name != "bit" {
                        problems.push(format!(
                            "table {}, column {} has type {}, which cutover copies as text but \
                             cannot decode from the binlog; leave the table out of the \
                             migration or change the column's type",
                            t.name, c.name, c.declared_type
                        ));
                    }
                }
            }
        }
        let known: Vec<Row> = self
            .client()?
            .query("SHOW STATUS LIKE 'Binlog_snapshot_position'")?;
        if known.is_empty() {
            problems.push(no_snapshot_position("reading chunks").to_string());
        }
        let db = self.endpoint.database.clone();
        for (t, c, cs) in non_utf8_columns(self.client()?, &db, tables)? {
            problems.push(format!(
                "table {t}, column {c} is in character set {cs}: the binlog carries its bytes \
                 as they are, which cutover only reads as UTF-8; convert it: ALTER TABLE {} \
                 CONVERT TO CHARACTER SET utf8mb4",
                qualified(&db, &t)
            ));
        }
        if !problems.is_empty() {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "change capture from {} cannot start:\n  - {}",
                    self.endpoint.describe(),
                    problems.join("\n  - ")
                ),
            ));
        }
        if let Some(secs) = retention_seconds(&settings).filter(|&s| s > 0 && s < 86_400) {
            tracing::warn!(
                retention_seconds = secs,
                "the source keeps its binlog for less than a day: a migration that falls behind \
                 longer than that must start again (raise binlog_expire_logs_seconds)"
            );
        }
        Ok(())
    }

    fn start_capture(&mut self, tables: &[TableSchema]) -> Result<Position, ConnectorError> {
        self.check_capture(tables)?;
        // Nothing to install: the binlog is the server's own. Capture starts here.
        let at = self.binlog_position()?;
        tracing::debug!(tables = tables.len(), position = %at.position(), "binlog capture starts");
        Ok(at.position())
    }

    fn current_position(&mut self) -> Result<Position, ConnectorError> {
        Ok(self.binlog_position()?.position())
    }

    fn read_changes(
        &mut self,
        tables: &[TableSchema],
        after: Position,
        max_changes: usize,
    ) -> Result<Vec<Transaction>, ConnectorError> {
        let from = BinlogPos::of(&after)?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("mysql::source::read_changes", |_| Err(ConnectorError::new(
            ErrorKind::Connect,
            "failpoint mysql::source::read_changes"
        )));
        let reuse = self.stream.as_ref().is_some_and(|s| {
            !s.failed && s.delivered == from && self.streamed.as_slice() == tables
        });
        if !reuse {
            // After a restart or a retry (or other tables): the stream goes on from `after`,
            // and the same changes come again.
            self.stream = None;
            let cap = Arc::new(Captured::new(
                &self.endpoint.database,
                tables,
                self.endpoint.zero_date,
            ));
            self.stream = Some(ChangeStream::start(
                &self.endpoint,
                self.server_id,
                from,
                cap,
            ));
            self.streamed = tables.to_vec();
        }
        let Some(stream) = self.stream.as_mut() else {
            return Ok(Vec::new());
        };
        match stream.next_batch(max_changes.max(1)) {
            Ok(batch) => {
                if !batch.is_empty() {
                    self.failures = 0;
                }
                Ok(batch)
            }
            // A broken connection: the stream is opened again from where it stood at the next
            // call, a few times in a row before the caller hears of it (then its retry policy
            // decides).
            Err(e) if e.kind() == ErrorKind::Connect && self.failures < QUIET_RESTARTS => {
                self.failures += 1;
                tracing::warn!(error = %e, attempt = self.failures, "the binlog stream broke; opening it again");
                self.stream = None;
                Ok(Vec::new())
            }
            Err(e) => {
                self.failures = 0;
                Err(e)
            }
        }
    }

    fn release(&mut self, upto: Position) -> Result<(), ConnectorError> {
        // The server's binlog retention decides what it keeps; nothing is held for cutover.
        BinlogPos::of(&upto).map(|_| ())
    }

    fn stop_capture(&mut self, _tables: &[TableSchema]) -> Result<(), ConnectorError> {
        // Nothing was installed on the source.
        self.stream = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)], grants: &[&str]) -> Settings {
        Settings {
            values: pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            grants: grants.iter().map(|g| (*g).to_owned()).collect(),
        }
    }

    const GOOD: &[(&str, &str)] = &[
        ("log_bin", "1"),
        ("binlog_format", "ROW"),
        ("binlog_row_image", "FULL"),
        ("server_id", "1"),
    ];

    #[test]
    fn a_source_moves_between_threads() {
        fn send<T: Send>() {}
        send::<MySqlSource>();
        send::<crate::MySqlReader>();
    }

    #[test]
    fn capture_settings_are_listed_with_their_fix() {
        let all = ["GRANT ALL PRIVILEGES ON *.* TO `root`@`localhost` WITH GRANT OPTION"];
        assert!(capture_problems(&settings(GOOD, &all)).is_empty());
        let p = capture_problems(&settings(
            &[
                ("log_bin", "0"),
                ("binlog_format", "STATEMENT"),
                ("binlog_row_image", "MINIMAL"),
                ("server_id", "0"),
                ("log_bin_compress", "ON"),
            ],
            &["GRANT SELECT ON *.* TO `app`@`%`"],
        ));
        let text = p.join("\n");
        assert_eq!(p.len(), 7, "{text}");
        assert!(text.contains("log_bin_compress is ON"));
        assert!(
            text.contains("binlog_format is STATEMENT, not ROW: SET GLOBAL binlog_format = 'ROW'")
        );
        assert!(text.contains("binlog_row_image is MINIMAL"));
        assert!(text.contains("log_bin is OFF"));
        assert!(text.contains("server_id is 0"));
        assert!(text.contains("GRANT REPLICATION SLAVE"));
        assert!(text.contains("BINLOG MONITOR"));
        // MariaDB's names for the privileges.
        let maria = ["GRANT SELECT, REPLICATION SLAVE, BINLOG MONITOR ON *.* TO `cdc`@`%`"];
        assert!(capture_problems(&settings(GOOD, &maria)).is_empty());
        assert_eq!(
            retention_seconds(&settings(&[("binlog_expire_logs_seconds", "3600")], &[])),
            Some(3600)
        );
        assert_eq!(
            retention_seconds(&settings(&[("expire_logs_days", "0.5")], &[])),
            Some(43_200)
        );
    }
}
