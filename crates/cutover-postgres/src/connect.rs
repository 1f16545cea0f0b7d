//! The configuration half of the PostgreSQL connector: where to connect, which tables, and the
//! names of what change capture creates. Opens sources, sinks and readers, one connection each;
//! [`engine`] registers it with the binary.

use std::any::Any;

use cutover_connector::{
    BulkCopy, BulkCopyOptions, BulkCopyReport, CancellationToken, ConnectorError, Engine,
    OpenOptions, Progress, RangeChecksum, Sink, Source, SourceFactory, Switchover, TableReader,
    TargetFactory, VerifyFactory,
};

use crate::endpoint::PgEndpoint;
use crate::schema::Selection;
use crate::sink::PgSink;
use crate::source::{CaptureNames, PgRows, PgSource};
use crate::verify::{PgVerifySide, RowHash};

/// One PostgreSQL side of a migration. `peer` is the other side when it is PostgreSQL too: as a
/// target, this side then takes its schema from the peer's catalog (enums, domains, partitions,
/// extension types, sequences). `None`: the other side is another engine, and as a target this
/// side creates the tables from the source's neutral schemas through the type map
/// (`applier`).
#[derive(Debug, Clone)]
pub struct PgConnect {
    pub endpoint: PgEndpoint,
    pub peer: Option<PgEndpoint>,
    pub selection: Selection,
    pub names: CaptureNames,
    /// As a target: empty tables that already exist instead of refusing.
    pub truncate: bool,
    /// Parallel index builds after the copy.
    pub jobs: usize,
}

impl PgConnect {
    /// A side opened with the migration's options; the capture names come from `opts.name`,
    /// else from this database's name (`Engines::pair` gives the source the target's).
    pub fn with_options(endpoint: PgEndpoint, opts: &OpenOptions) -> PgConnect {
        let default_name = default_name(&endpoint);
        PgConnect {
            selection: Selection {
                tables: opts.tables.clone(),
                exclude: opts.exclude.clone(),
                skip_foreign_keys: opts.skip_foreign_keys,
                grants: opts.grants,
            },
            names: CaptureNames::for_migration(opts.name.as_deref().unwrap_or(&default_name)),
            truncate: opts.truncate,
            jobs: opts.jobs.max(1),
            peer: None,
            endpoint,
        }
    }

    fn sink_now(&self) -> Result<PgSink, ConnectorError> {
        PgSink::open(
            &self.endpoint,
            self.peer.as_ref(),
            &self.selection,
            &self.names,
            self.truncate,
            self.jobs,
        )
    }
}

impl SourceFactory for PgConnect {
    fn source(&self) -> Result<Box<dyn Source + Send>, ConnectorError> {
        Ok(Box::new(PgSource::open(
            &self.endpoint,
            &self.selection,
            &self.names,
        )?))
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(PgRows::open(&self.endpoint, &self.selection)?))
    }

    fn describe(&self) -> String {
        self.endpoint.redacted().to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl TargetFactory for PgConnect {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        Ok(Box::new(self.sink_now()?))
    }

    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        Ok(Some(Box::new(crate::PgState::open(&self.endpoint)?)))
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(PgRows::open(&self.endpoint, &self.selection)?))
    }

    fn describe(&self) -> String {
        self.endpoint.redacted().to_owned()
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
    /// The database's name: it names the source's slot and publication (`cutover_<name>`).
    fn migration_name(&self) -> Option<String> {
        Some(default_name(&self.endpoint))
    }

    /// Binary `COPY` in one exported snapshot (the slot's, with capture), resumable by chunk.
    fn bulk_copy(&self, source: &dyn SourceFactory) -> Option<Box<dyn BulkCopy + '_>> {
        let source = source.as_any().downcast_ref::<PgConnect>()?;
        Some(Box::new(PgBulkCopy {
            source: source.clone(),
            target: self,
        }))
    }

    /// Two PostgreSQL databases trade places: fences, drain by LSN, the way back's slot.
    fn switchover(&self, source: &dyn SourceFactory) -> Option<Box<dyn Switchover + '_>> {
        let source = source.as_any().downcast_ref::<PgConnect>()?;
        Some(Box::new(crate::PgSwitchover {
            source: source.clone(),
            target: self.clone(),
        }))
    }

    /// A PostgreSQL source becomes the peer whose catalog the target's tables are created
    /// from.
    fn pair(&mut self, source: &dyn SourceFactory) -> Result<(), ConnectorError> {
        if let Some(pg) = source.as_any().downcast_ref::<PgConnect>() {
            self.peer = Some(pg.endpoint.clone());
        }
        Ok(())
    }
}

impl VerifyFactory for PgVerifySide {
    fn tables(&self) -> Result<Vec<cutover_model::TableSchema>, ConnectorError> {
        Ok(PgVerifySide::tables(self))
    }

    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError> {
        Ok(Box::new(PgVerifySide::open(self)?))
    }

    fn describe(&self) -> String {
        self.endpoint().redacted().to_owned()
    }

    fn live(&self) -> bool {
        true
    }

    /// Two PostgreSQL servers that hash a probe row alike use the native row hash.
    fn negotiate(&mut self, peer: &dyn VerifyFactory) {
        let Some(peer) = peer.as_any().downcast_ref::<PgVerifySide>() else {
            return;
        };
        if let (Some(a), Some(b)) = (self.hash_probe(), peer.hash_probe()) {
            if a == b {
                self.set_hash(RowHash::Native);
            }
        }
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The migration's name when none is given: the database's name in `url`.
/// The PostgreSQL → PostgreSQL bulk copy ([`crate::copy::copy`]) as a capability of the pair.
struct PgBulkCopy<'a> {
    source: PgConnect,
    target: &'a PgConnect,
}

impl BulkCopy for PgBulkCopy<'_> {
    fn describe(&self) -> String {
        "binary COPY between the two PostgreSQL databases".to_owned()
    }

    /// No control store on the target yet, or a `copy --capture` (of this migration's slot)
    /// that has not reached its end.
    fn pending_for_sync(&self) -> Result<bool, ConnectorError> {
        let ctx = "reading the target's control store";
        let mut c = self.target.endpoint.connect()?;
        let (migration, replication): (bool, bool) = c
            .query_one(
                "SELECT to_regclass('_cutover.migration') IS NOT NULL, to_regclass('_cutover.replication') IS NOT NULL",
                &[],
            )
            .and_then(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .map_err(|e| crate::error::map(ctx, e))?;
        if !migration {
            return Ok(true);
        }
        if !replication {
            return Ok(false);
        }
        let unfinished: Option<bool> = c
            .query_opt(
                "SELECT m.mode = 'copy' AND m.phase IS DISTINCT FROM 'copied'
                        AND EXISTS (SELECT 1 FROM _cutover.replication r WHERE r.slot = $1 AND r.position IS NOT NULL)
                   FROM _cutover.migration m",
                &[&self.source.names.slot],
            )
            .map_err(|e| crate::error::map(ctx, e))?
            .map(|r| r.try_get(0))
            .transpose()
            .map_err(|e| crate::error::map(ctx, e))?;
        // A store without a migration row is one a sync or copy began to create: its own
        // preparation finishes it.
        Ok(unfinished.unwrap_or(false))
    }

    fn run(
        &self,
        opts: &BulkCopyOptions,
        progress: &Progress,
        stop: &CancellationToken,
    ) -> Result<BulkCopyReport, ConnectorError> {
        let defaults = crate::copy::CopyOptions::default();
        let copy = crate::copy::CopyOptions {
            jobs: opts.jobs.max(1),
            chunk_bytes: opts.chunk_bytes.unwrap_or(defaults.chunk_bytes).max(1),
            max_rows_per_sec: opts.max_rows_per_sec,
            truncate: opts.truncate,
            selection: self.source.selection.clone(),
            consistent_snapshot: opts.consistent_snapshot || opts.capture,
            capture: opts.capture.then(|| self.source.names.clone()),
            ..defaults
        };
        crate::copy::copy(
            &self.source.endpoint,
            &self.target.endpoint,
            &copy,
            progress,
            stop,
        )
    }
}

fn default_name(endpoint: &PgEndpoint) -> String {
    endpoint.dbname().to_owned()
}

/// PostgreSQL as the binary registers it (`postgres://`, `postgresql://`, a keyword/value
/// string such as `host=db dbname=app`, or an empty string: all from `PG*` variables and the
/// service file): both sides and verify. Each side reads the variables under its
/// [`OpenOptions::env_prefix`]. A PostgreSQL target paired with a PostgreSQL source copies its
/// schema natively.
pub fn engine() -> Engine {
    Engine {
        name: "PostgreSQL",
        schemes: &["postgres", "postgresql"],
        plain_paths: false,
        claims: Some(crate::conninfo::claims),
        example: "postgres://user@host:5432/db",
        source: Some(|url, opts| {
            let e = PgEndpoint::from_env_prefix(url, opts.env_prefix.as_deref())?;
            Ok(Box::new(PgConnect::with_options(e, opts)))
        }),
        target: Some(|url, opts| {
            let e = PgEndpoint::from_env_prefix(url, opts.env_prefix.as_deref())?;
            Ok(Box::new(PgConnect::with_options(e, opts)))
        }),
        verify: Some(|url, opts| {
            let e = PgEndpoint::from_env_prefix(url, opts.env_prefix.as_deref())?;
            Ok(Box::new(PgVerifySide::read(&e, RowHash::Md5)?))
        }),
    }
}
