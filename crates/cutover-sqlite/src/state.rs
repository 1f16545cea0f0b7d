//! The migration's state in a SQLite file (`_cutover_*` tables, schema and versions from
//! `cutover-state`): the backend of [`StateStore`] for SQLite targets.
//!
//! The sink writes these tables in its data transactions; this reads them for everything
//! outside the sync (`cutover status`), and moves the phase by compare-and-swap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cutover_connector::{
    ConnectorError, ErrorKind, Journal, KeyRange, StateStore, StoredChunk, StoredMismatch,
    StoredStatus,
};
use cutover_model::{decode_row, Position, TableName};
use rusqlite::{Connection, OptionalExtension};

use crate::error::map;
use crate::sink::table_exists;

/// Brings the store in `conn` to this build's version, in the caller's transaction (the sink's
/// `prepare`, or [`SqliteState::migrate`]); returns the version.
pub(crate) fn migrate(conn: &Connection, store: &str) -> Result<u32, ConnectorError> {
    let ctx = || format!("upgrading cutover's state store in {store}");
    let stored = stored_version(conn, store)?;
    let todo = cutover_state::pending(cutover_state::sqlite::MIGRATIONS, stored, store)?;
    for m in todo {
        conn.execute_batch(m.sql).map_err(|e| map(ctx(), e))?;
        tracing::debug!(version = m.version, store, "{}", m.summary);
    }
    let latest = cutover_state::latest(cutover_state::sqlite::MIGRATIONS);
    if stored != Some(latest) {
        conn.execute(cutover_state::sqlite::SET_VERSION, [latest.to_string()])
            .map_err(|e| map(ctx(), e))?;
    }
    Ok(latest)
}

/// The recorded version: `None` without a store; 1 for a store made before versions were
/// recorded (its tables are version 1's).
fn stored_version(conn: &Connection, store: &str) -> Result<Option<u32>, ConnectorError> {
    if !table_exists(conn, "_cutover_state")? {
        return Ok(None);
    }
    let text: Option<String> = conn
        .query_row(cutover_state::sqlite::VERSION, [], |r| r.get(0))
        .optional()
        .map_err(|e| map(format!("reading the state store's version in {store}"), e))?;
    match text {
        None => Ok(Some(1)),
        Some(t) => t.parse().map(Some).map_err(|_| {
            ConnectorError::new(
                ErrorKind::Database,
                format!("the state store in {store} records version {t:?}, not a number"),
            )
        }),
    }
}

/// The state store of a SQLite target.
pub struct SqliteState {
    path: PathBuf,
    /// `None` while the file does not exist: nothing to read, and reading creates nothing.
    file: Option<Connection>,
}

impl SqliteState {
    /// Opens the store in the file at `path`; neither need exist yet ([`StateStore::migrate`]
    /// creates both).
    pub fn open(path: &Path) -> Result<SqliteState, ConnectorError> {
        let file = if path.exists() {
            Some(crate::open_existing(path)?)
        } else {
            None
        };
        Ok(SqliteState {
            path: path.to_owned(),
            file,
        })
    }

    /// The file's connection if the file holds `table`: `None` reads as no state.
    fn holding(&self, table: &str) -> Result<Option<&Connection>, ConnectorError> {
        match &self.file {
            Some(c) if table_exists(c, table)? => Ok(Some(c)),
            _ => Ok(None),
        }
    }

    fn store(&self) -> String {
        self.path.display().to_string()
    }

    /// `_cutover_state`'s entries; `None` without a store.
    fn entries(&self) -> Result<Option<HashMap<String, String>>, ConnectorError> {
        let Some(conn) = self.holding("_cutover_state")? else {
            return Ok(None);
        };
        let ctx = || format!("reading cutover's state in {}", self.store());
        let mut st = conn
            .prepare("SELECT key, value FROM _cutover_state")
            .map_err(|e| map(ctx(), e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| map(ctx(), e))?;
        rows.collect::<Result<_, _>>()
            .map(Some)
            .map_err(|e| map(ctx(), e))
    }
}

impl StateStore for SqliteState {
    fn describe(&self) -> String {
        format!("sqlite://{}", self.store())
    }

    fn version(&mut self) -> Result<Option<u32>, ConnectorError> {
        match &self.file {
            Some(c) => stored_version(c, &self.store()),
            None => Ok(None),
        }
    }

    fn migrate(&mut self) -> Result<u32, ConnectorError> {
        let store = self.store();
        let ctx = || format!("upgrading cutover's state store in {store}");
        let conn = match self.file {
            Some(ref mut c) => c,
            None => self.file.insert(crate::open_target(&self.path)?),
        };
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| map(ctx(), e))?;
        let v = migrate(&tx, &store)?;
        tx.commit().map_err(|e| map(ctx(), e))?;
        Ok(v)
    }

    fn phase(&mut self) -> Result<Option<String>, ConnectorError> {
        Ok(self.entries()?.and_then(|mut e| e.remove("phase")))
    }

    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError> {
        let ctx = || format!("moving the migration's phase in {}", self.store());
        let Some(conn) = self.holding("_cutover_state")? else {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!("{} holds no migration of cutover's", self.store()),
            ));
        };
        // One statement each: SQLite runs it atomically, and a writer holds the file's lock.
        let moved = match from {
            Some(from) => conn.execute(
                "UPDATE _cutover_state SET value = ?2 WHERE key = 'phase' AND value = ?1",
                [from, to],
            ),
            None => conn.execute(
                "INSERT INTO _cutover_state (key, value) VALUES ('phase', ?1)
                 ON CONFLICT (key) DO NOTHING",
                [to],
            ),
        }
        .map_err(|e| map(ctx(), e))?;
        Ok(moved == 1)
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.entries()?
            .and_then(|mut e| e.remove("checkpoint"))
            .map(|t| {
                t.parse().map_err(|_| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "the checkpoint in {} is not a position: {t:?}",
                            self.store()
                        ),
                    )
                })
            })
            .transpose()
    }

    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError> {
        let Some(conn) = self.holding("_cutover_chunks")? else {
            return Ok(Vec::new());
        };
        let store = self.store();
        let ctx = || format!("reading the chunk plan in {store}");
        let mut st = conn
            .prepare(
                "SELECT table_name, chunk, start_key, end_key, done FROM _cutover_chunks
                 ORDER BY table_name, chunk",
            )
            .map_err(|e| map(ctx(), e))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, Option<Vec<u8>>>(3)?,
                    r.get::<_, bool>(4)?,
                ))
            })
            .map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        for r in rows {
            let (table, index, start, end, done) = r.map_err(|e| map(ctx(), e))?;
            let decode = |b: Option<Vec<u8>>| {
                b.map(|b| decode_row(&b)).transpose().map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!("chunk {index} of {table} in {store}: a stored key does not decode: {e}"),
                    )
                })
            };
            out.push(StoredChunk {
                range: KeyRange {
                    start: decode(start)?,
                    end: decode(end)?,
                },
                table: TableName::new(None, &table),
                index: u32::try_from(index).unwrap_or(u32::MAX),
                done,
                rows: None,
            });
        }
        Ok(out)
    }

    fn status(&mut self) -> Result<Option<StoredStatus>, ConnectorError> {
        let Some(mut e) = self.entries()? else {
            return Ok(None);
        };
        let num = |e: &HashMap<String, String>, k: &str| e.get(k).and_then(|v| v.parse().ok());
        let int = |e: &HashMap<String, String>, k: &str| e.get(k).and_then(|v| v.parse().ok());
        Ok(Some(StoredStatus {
            lag_bytes: int(&e, "lag_bytes"),
            lag_changes: int(&e, "lag_changes"),
            committed_at: num(&e, "committed_at"),
            changes_applied: int(&e, "changes_applied"),
            changes_per_sec: num(&e, "changes_per_sec"),
            updated_at: num(&e, "updated_at"),
            applied: e.remove("checkpoint").and_then(|t| t.parse().ok()),
            source: e.remove("source_position").and_then(|t| t.parse().ok()),
        }))
    }

    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        // SQLite has no switch (a file has one writer at a time; nothing to fence).
        Ok(None)
    }

    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError> {
        let Some(conn) = self.holding("_cutover_mismatches")? else {
            return Ok(Vec::new());
        };
        let ctx = || format!("reading verify's mismatches in {}", self.store());
        let mut st = conn
            .prepare(
                "SELECT table_name, key, kind, columns, detail FROM _cutover_mismatches
                 ORDER BY id DESC LIMIT ?1",
            )
            .map_err(|e| map(ctx(), e))?;
        let rows = st
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                ))
            })
            .map_err(|e| map(ctx(), e))?;
        let mut out = Vec::new();
        for r in rows {
            let (table, key, kind, columns, detail) = r.map_err(|e| map(ctx(), e))?;
            out.push(StoredMismatch {
                table: TableName::new(None, &table),
                key,
                kind,
                columns: columns
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                detail,
            });
        }
        Ok(out)
    }
}
