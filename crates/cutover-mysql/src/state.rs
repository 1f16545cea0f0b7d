//! The migration's state in a MySQL/MariaDB target database (`_cutover_*` tables, schema and
//! versions from `cutover_state::mysql`): the backend of [`StateStore`] for MySQL targets.
//!
//! The sink writes these tables in its data transactions (InnoDB); this reads them for
//! everything outside the sync (`cutover status`) and moves the phase by compare-and-swap.

use std::collections::HashMap;

use cutover_connector::{
    ConnectorError, ErrorKind, Journal, KeyRange, StateStore, StoredChunk, StoredMismatch,
    StoredStatus,
};
use cutover_model::{decode_row, Position, TableName};
use mysql_async::Params;

use crate::client::Client;
use crate::endpoint::MySqlEndpoint;

/// Whether the target database holds table `name`.
pub(crate) fn table_exists(c: &mut Client, name: &str) -> Result<bool, ConnectorError> {
    let found: Option<u8> = c
        .exec(
            "SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() \
             AND TABLE_NAME = ?",
            Params::Positional(vec![name.into()]),
        )?
        .into_iter()
        .next();
    Ok(found.is_some())
}

/// The recorded version: `None` without a store.
fn stored_version(c: &mut Client, store: &str) -> Result<Option<u32>, ConnectorError> {
    if !table_exists(c, "_cutover_state")? {
        return Ok(None);
    }
    let text: Option<String> = c.query_first(cutover_state::mysql::VERSION)?;
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

/// Brings the store in the session's database to this build's version; returns it. MySQL
/// commits each DDL statement on its own: every migration statement is idempotent, and the
/// version is recorded last.
pub(crate) fn migrate(c: &mut Client, store: &str) -> Result<u32, ConnectorError> {
    let stored = stored_version(c, store)?;
    let todo = cutover_state::pending(cutover_state::mysql::MIGRATIONS, stored, store)?;
    for m in todo {
        for stmt in m.sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            c.query_drop(stmt)
                .map_err(|e| e.context(format!("upgrading cutover's state store in {store}")))?;
        }
        tracing::debug!(version = m.version, store, "{}", m.summary);
    }
    let latest = cutover_state::latest(cutover_state::mysql::MIGRATIONS);
    if stored != Some(latest) {
        c.exec_drop(
            cutover_state::mysql::SET_VERSION,
            Params::Positional(vec![latest.to_string().into()]),
        )?;
    }
    Ok(latest)
}

/// The state store of a MySQL target.
pub struct MySqlState {
    ep: MySqlEndpoint,
    client: Option<Client>,
}

impl MySqlState {
    /// Opens the store in the endpoint's database (connecting on first use).
    pub fn open(ep: &MySqlEndpoint) -> MySqlState {
        MySqlState {
            ep: ep.clone(),
            client: None,
        }
    }

    fn client(&mut self) -> Result<&mut Client, ConnectorError> {
        if self.client.as_ref().is_some_and(Client::is_broken) {
            self.client = None;
        }
        match self.client {
            Some(ref mut c) => Ok(c),
            None => {
                let c = Client::connect(&self.ep, Some(&self.ep.database))?;
                Ok(self.client.insert(c))
            }
        }
    }

    /// The client if the database holds `table`: `None` reads as no state.
    fn holding(&mut self, table: &str) -> Result<Option<&mut Client>, ConnectorError> {
        let c = self.client()?;
        if table_exists(c, table)? {
            Ok(Some(c))
        } else {
            Ok(None)
        }
    }

    fn entries(&mut self) -> Result<Option<HashMap<String, String>>, ConnectorError> {
        let Some(c) = self.holding("_cutover_state")? else {
            return Ok(None);
        };
        let rows: Vec<(String, String)> = c.query("SELECT `key`, `value` FROM `_cutover_state`")?;
        Ok(Some(rows.into_iter().collect()))
    }
}

impl StateStore for MySqlState {
    fn describe(&self) -> String {
        self.ep.describe()
    }

    fn version(&mut self) -> Result<Option<u32>, ConnectorError> {
        let store = self.ep.describe();
        stored_version(self.client()?, &store)
    }

    fn migrate(&mut self) -> Result<u32, ConnectorError> {
        let store = self.ep.describe();
        migrate(self.client()?, &store)
    }

    fn phase(&mut self) -> Result<Option<String>, ConnectorError> {
        Ok(self.entries()?.and_then(|mut e| e.remove("phase")))
    }

    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError> {
        let store = self.ep.describe();
        let Some(c) = self.holding("_cutover_state")? else {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!("{store} holds no migration of cutover's"),
            ));
        };
        // One statement each: InnoDB's row lock makes it atomic against another swapper.
        match from {
            Some(from) => c.exec_drop(
                "UPDATE `_cutover_state` SET `value` = ? WHERE `key` = 'phase' AND `value` = ?",
                Params::Positional(vec![to.into(), from.into()]),
            )?,
            None => c.exec_drop(
                "INSERT IGNORE INTO `_cutover_state` (`key`, `value`) VALUES ('phase', ?)",
                Params::Positional(vec![to.into()]),
            )?,
        }
        let moved = c.conn().map_or(0, |c| c.affected_rows());
        Ok(moved == 1)
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        let store = self.ep.describe();
        self.entries()?
            .and_then(|mut e| e.remove("checkpoint"))
            .map(|t| {
                t.parse().map_err(|_| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!("the checkpoint in {store} is not a position: {t:?}"),
                    )
                })
            })
            .transpose()
    }

    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError> {
        let store = self.ep.describe();
        let Some(c) = self.holding("_cutover_chunks")? else {
            return Ok(Vec::new());
        };
        type ChunkRow = (
            String,
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            i64,
            Option<i64>,
        );
        let rows: Vec<ChunkRow> = c.query(
            "SELECT `table_name`, `chunk`, `start_key`, `end_key`, `done`, `rows_copied` \
             FROM `_cutover_chunks` ORDER BY `table_name`, `chunk`",
        )?;
        let mut out = Vec::with_capacity(rows.len());
        for (table, index, start, end, done, rows) in rows {
            let decode = |b: Option<Vec<u8>>| {
                b.map(|b| decode_row(&b)).transpose().map_err(|e| {
                    ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "chunk {index} of {table} in {store}: a stored key does not decode: {e}"
                        ),
                    )
                })
            };
            out.push(StoredChunk {
                range: KeyRange {
                    start: decode(start)?,
                    end: decode(end)?,
                },
                table: TableName::bare(&table),
                index: u32::try_from(index).unwrap_or(u32::MAX),
                done: done != 0,
                rows: rows.and_then(|r| u64::try_from(r).ok()),
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
        // No switch involving MySQL yet: nothing is ever journaled.
        Ok(None)
    }

    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError> {
        let Some(c) = self.holding("_cutover_mismatches")? else {
            return Ok(Vec::new());
        };
        let rows: Vec<(String, String, String, String, String)> = c.exec(
            "SELECT `table_name`, `key`, `kind`, `columns`, `detail` FROM `_cutover_mismatches` \
             ORDER BY `id` DESC LIMIT ?",
            Params::Positional(vec![(limit as u64).into()]),
        )?;
        Ok(rows
            .into_iter()
            .map(|(table, key, kind, columns, detail)| StoredMismatch {
                table: TableName::bare(&table),
                key,
                kind,
                columns: columns
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                detail,
            })
            .collect())
    }
}
