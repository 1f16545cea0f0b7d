//! The configuration half of the PostgreSQL connector: where to connect, which tables, and the
//! names of what change capture creates. Opens sources, sinks and readers, one connection each.

use cutover_connector::{Connect, ConnectorError};

use crate::endpoint::PgEndpoint;
use crate::schema::Selection;
use crate::sink::PgSink;
use crate::source::{CaptureNames, PgRows, PgSource};

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

impl Connect for PgConnect {
    type Source = PgSource;
    type Sink = PgSink;
    type Reader = PgRows;

    fn source(&self) -> Result<PgSource, ConnectorError> {
        PgSource::open(&self.endpoint, &self.selection, &self.names)
    }

    fn sink(&self) -> Result<PgSink, ConnectorError> {
        PgSink::open(
            &self.endpoint,
            self.peer.as_ref(),
            &self.selection,
            &self.names,
            self.truncate,
            self.jobs,
        )
    }

    fn reader(&self) -> Result<PgRows, ConnectorError> {
        PgRows::open(&self.endpoint, &self.selection)
    }

    fn describe(&self) -> String {
        self.endpoint.redacted().to_owned()
    }
}
