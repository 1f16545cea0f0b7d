//! The migration's state on a PostgreSQL target (the `_cutover` schema; schema and versions
//! from `cutover-state`): the backend of [`StateStore`] for PostgreSQL.
//!
//! The sink and `copy` write these tables in their data transactions; this reads them for
//! everything outside the sync (`cutover status`), and moves the phase by compare-and-swap.

use cutover_connector::{
    ConnectorError, ErrorKind, Journal, KeyRange, StateStore, StoredChunk, StoredMismatch,
    StoredStatus,
};
use cutover_model::{Position, TableName};

use crate::blocking::Client;
use crate::endpoint::PgEndpoint;
use crate::error::map;

/// Whether a store is there at all, and the version it records (stores made before version 2
/// record none).
fn recorded(c: &mut Client) -> Result<(bool, Option<u32>), ConnectorError> {
    let ctx = "reading the state store's version";
    let r = c
        .query_one(
            "SELECT to_regclass('_cutover.store') IS NOT NULL, to_regclass('_cutover.migration') IS NOT NULL",
            &[],
        )
        .map_err(|e| map(ctx, e))?;
    let (store, migration): (bool, bool) = (
        r.try_get(0).map_err(|e| map(ctx, e))?,
        r.try_get(1).map_err(|e| map(ctx, e))?,
    );
    if !store {
        return Ok((migration, None));
    }
    let v: Option<i32> = c
        .query_opt(cutover_state::postgres::VERSION, &[])
        .map_err(|e| map(ctx, e))?
        .map(|r| r.try_get(0))
        .transpose()
        .map_err(|e| map(ctx, e))?;
    Ok((true, v.map(|v| u32::try_from(v).unwrap_or(0))))
}

/// The store's version: `None` without a store; 1 for a store made before versions were
/// recorded.
pub(crate) fn stored_version(c: &mut Client) -> Result<Option<u32>, ConnectorError> {
    let (exists, version) = recorded(c)?;
    Ok(version.or(exists.then_some(1)))
}

/// Creates the store or brings it to the newest version, in a transaction of its own (a
/// savepoint inside the caller's, where the sink, `copy` or a switch create it with their own
/// writes): the migrations it lacks — every one, each idempotent, for a store that records no
/// version — and the version. Refuses a store written by a newer cutover, naming `store`.
pub(crate) fn migrate(c: &mut Client, store: &str) -> Result<u32, ConnectorError> {
    let ctx = "creating or upgrading cutover's state store (schema _cutover)";
    let mut tx = c.transaction().map_err(|e| map(ctx, e))?;
    // One migrating process at a time; the others wait and then find nothing to do.
    tx.batch_execute("SELECT pg_advisory_xact_lock(hashtextextended('cutover-state', 0))")
        .map_err(|e| map(ctx, e))?;
    let (_, version) = recorded(&mut tx)?;
    for m in cutover_state::pending(cutover_state::postgres::MIGRATIONS, version, store)? {
        tx.batch_execute(m.sql).map_err(|e| map(ctx, e))?;
        tracing::debug!(version = m.version, "{}", m.summary);
    }
    let latest = cutover_state::latest(cutover_state::postgres::MIGRATIONS);
    if version != Some(latest) {
        let v = i32::try_from(latest).unwrap_or(i32::MAX);
        tx.execute(cutover_state::postgres::SET_VERSION, &[&v])
            .map_err(|e| map(ctx, e))?;
    }
    tx.commit().map_err(|e| map(ctx, e))?;
    Ok(latest)
}

/// The state store of a PostgreSQL target.
pub struct PgState {
    endpoint: PgEndpoint,
    client: Client,
}

impl PgState {
    pub fn open(endpoint: &PgEndpoint) -> Result<PgState, ConnectorError> {
        Ok(PgState {
            client: endpoint.connect_control()?,
            endpoint: endpoint.clone(),
        })
    }

    fn exists(&mut self, table: &str) -> Result<bool, ConnectorError> {
        let r = self
            .client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table])
            .map_err(|e| map("looking for cutover's state store", e))?;
        r.try_get(0)
            .map_err(|e| map("looking for cutover's state store", e))
    }
}

impl StateStore for PgState {
    fn describe(&self) -> String {
        self.endpoint.redacted().to_owned()
    }

    fn version(&mut self) -> Result<Option<u32>, ConnectorError> {
        stored_version(&mut self.client)
    }

    fn migrate(&mut self) -> Result<u32, ConnectorError> {
        let store = self.describe();
        migrate(&mut self.client, &store)
    }

    fn phase(&mut self) -> Result<Option<String>, ConnectorError> {
        if !self.exists("_cutover.migration")? {
            return Ok(None);
        }
        let ctx = "reading the migration's phase";
        self.client
            .query_opt("SELECT phase FROM _cutover.migration", &[])
            .map_err(|e| map(ctx, e))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| map(ctx, e))
    }

    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError> {
        if !self.exists("_cutover.migration")? {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!("{} holds no migration of cutover's", self.describe()),
            ));
        }
        let ctx = "moving the migration's phase";
        // A migration row always has a phase: `None` (no phase yet) never matches one.
        let Some(from) = from else { return Ok(false) };
        let n = self
            .client
            .execute(
                "UPDATE _cutover.migration SET phase = $2, updated_at = now() WHERE phase = $1",
                &[&from, &to],
            )
            .map_err(|e| map(ctx, e))?;
        Ok(n == 1)
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(self.status()?.and_then(|s| s.applied))
    }

    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError> {
        if !self.exists("_cutover.chunks")? {
            return Ok(Vec::new());
        }
        let ctx = "reading the chunk plan";
        let enc = self.exists("_cutover.store")?;
        let rows = self
            .client
            .query(
                &format!(
                    "SELECT table_schema, table_name, chunk, done, rows, lower_key, upper_key, {}
                       FROM _cutover.chunks ORDER BY table_schema, table_name, chunk",
                    if enc {
                        "lower_key_enc, upper_key_enc"
                    } else {
                        "NULL::bytea, NULL::bytea"
                    }
                ),
                &[],
            )
            .map_err(|e| map(ctx, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |e| map(ctx, e);
            let schema: String = r.try_get(0).map_err(get)?;
            let name: String = r.try_get(1).map_err(get)?;
            let index: i32 = r.try_get(2).map_err(get)?;
            let what = || format!("chunk {index} of {schema}.{name}");
            out.push(StoredChunk {
                range: KeyRange {
                    start: crate::sink::stored_key(
                        r.try_get(7).map_err(get)?,
                        r.try_get(5).map_err(get)?,
                        what,
                    )?,
                    end: crate::sink::stored_key(
                        r.try_get(8).map_err(get)?,
                        r.try_get(6).map_err(get)?,
                        what,
                    )?,
                },
                table: TableName::new(Some(&schema), &name),
                index: u32::try_from(index).unwrap_or(0),
                done: r.try_get(3).map_err(get)?,
                rows: r
                    .try_get::<_, Option<i64>>(4)
                    .map_err(get)?
                    .map(|n| u64::try_from(n).unwrap_or(0)),
            });
        }
        Ok(out)
    }

    fn status(&mut self) -> Result<Option<StoredStatus>, ConnectorError> {
        if !self.exists("_cutover.replication")? {
            return Ok(None);
        }
        let ctx = "reading the sync's status";
        let Some(r) = self
            .client
            .query_opt(
                "SELECT position, source_position, lag_bytes, to_jsonb(r) ->> 'lag_changes',
                        extract(epoch FROM committed_at)::float8, changes_applied, changes_per_sec,
                        extract(epoch FROM updated_at)::float8
                   FROM _cutover.replication r",
                &[],
            )
            .map_err(|e| map(ctx, e))?
        else {
            return Ok(None);
        };
        let get = |e| map(ctx, e);
        let position = |t: Option<String>| t.and_then(|t| t.parse::<Position>().ok());
        let count = |n: Option<i64>| n.map(|n| u64::try_from(n).unwrap_or(0));
        Ok(Some(StoredStatus {
            applied: position(r.try_get(0).map_err(get)?),
            source: position(r.try_get(1).map_err(get)?),
            lag_bytes: count(r.try_get(2).map_err(get)?),
            lag_changes: r
                .try_get::<_, Option<String>>(3)
                .map_err(get)?
                .and_then(|t| t.parse().ok()),
            committed_at: r.try_get(4).map_err(get)?,
            changes_applied: count(r.try_get(5).map_err(get)?),
            changes_per_sec: r.try_get(6).map_err(get)?,
            updated_at: r.try_get(7).map_err(get)?,
        }))
    }

    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        crate::switch::read_journal(&mut self.client)
    }

    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError> {
        if !self.exists("_cutover.mismatches")? {
            return Ok(Vec::new());
        }
        let ctx = "reading verify's mismatches";
        let rows = self
            .client
            .query(
                "SELECT table_schema, table_name, key, kind, columns, detail
                   FROM _cutover.mismatches ORDER BY id DESC LIMIT $1",
                &[&i64::try_from(limit).unwrap_or(i64::MAX)],
            )
            .map_err(|e| map(ctx, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let get = |e| map(ctx, e);
            let schema: Option<String> = r.try_get(0).map_err(get)?;
            let name: String = r.try_get(1).map_err(get)?;
            out.push(StoredMismatch {
                table: TableName::new(schema.as_deref(), &name),
                key: r.try_get(2).map_err(get)?,
                kind: r.try_get(3).map_err(get)?,
                columns: r.try_get(4).map_err(get)?,
                detail: r.try_get(5).map_err(get)?,
            });
        }
        Ok(out)
    }
}
