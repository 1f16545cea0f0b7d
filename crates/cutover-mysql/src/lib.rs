//! MySQL 8 and MariaDB 10.6+ for cutover: a source (key-range chunks in consistent snapshots,
//! row-based binlog capture), a target (tables from the neutral schema, batches with their
//! checkpoint in one InnoDB transaction, the migration's state in `_cutover_*` tables) and a
//! side of verify (range checksums computed in the server).
//!
//! Every session is a blocking [`client::Client`] over `mysql_async` on the process's one
//! runtime.

mod binlog;
mod client;
pub mod ddl;
mod encode;
mod endpoint;
mod error;
mod position;
mod reader;
mod schema;
mod sink;
mod source;
mod state;
pub mod value;
mod verify;

pub use client::Client;
pub use endpoint::{redact, MySqlEndpoint, ZeroDate};
pub use position::{BinlogPos, BinlogPositions, BINLOG_POSITIONS};
pub use reader::MySqlReader;
pub use schema::read_tables;
pub use sink::MySqlSink;
pub use source::MySqlSource;
pub use state::MySqlState;
pub use verify::MySqlVerifier;

use std::any::Any;

use cutover_connector::{
    ConnectorError, Engine, OpenOptions, RangeChecksum, Sink, Source, SourceFactory, StateStore,
    TableReader, TargetFactory, VerifyFactory,
};

/// A MySQL/MariaDB database as either side: sources and readers, sinks and the state store it
/// hosts as a target.
#[derive(Debug, Clone)]
pub struct MySqlConnect {
    endpoint: MySqlEndpoint,
    /// The source is MySQL too ([`TargetFactory::pair`]): declared types kept as they are.
    native: bool,
}

impl MySqlConnect {
    pub fn new(endpoint: MySqlEndpoint) -> MySqlConnect {
        MySqlConnect {
            endpoint,
            native: false,
        }
    }

    pub fn endpoint(&self) -> &MySqlEndpoint {
        &self.endpoint
    }
}

impl SourceFactory for MySqlConnect {
    fn source(&self) -> Result<Box<dyn Source + Send>, ConnectorError> {
        Ok(Box::new(MySqlSource::open(&self.endpoint)?))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(MySqlReader::open(&self.endpoint)?))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl TargetFactory for MySqlConnect {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        Ok(Box::new(MySqlSink::open(&self.endpoint, self.native)?))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(MySqlReader::open(&self.endpoint)?))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    /// The target database's name, as PostgreSQL's.
    fn migration_name(&self) -> Option<String> {
        Some(self.endpoint.database.clone())
    }
    fn pair(&mut self, source: &dyn SourceFactory) -> Result<(), ConnectorError> {
        self.native = source.as_any().is::<MySqlConnect>();
        Ok(())
    }
    fn state(&self) -> Result<Option<Box<dyn StateStore>>, ConnectorError> {
        Ok(Some(Box::new(MySqlState::open(&self.endpoint))))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// One side of a MySQL verify: the database's tables, hashed by [`MySqlVerifier`].
#[derive(Debug, Clone)]
pub struct MySqlVerifySide {
    endpoint: MySqlEndpoint,
}

impl VerifyFactory for MySqlVerifySide {
    fn tables(&self) -> Result<Vec<cutover_model::TableSchema>, ConnectorError> {
        Ok(MySqlVerifier::open(&self.endpoint)?.tables())
    }
    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError> {
        Ok(Box::new(MySqlVerifier::open(&self.endpoint)?))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    /// `--live` waits on a source's change-stream position; for MySQL that is written
    /// (`current_position`, `applied_position`) but not tested yet, so it is not offered.
    fn live(&self) -> bool {
        false
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// MySQL and MariaDB as the binary registers them: `mysql://…` and `mariadb://…`.
pub fn engine() -> Engine {
    Engine {
        name: "MySQL/MariaDB",
        schemes: &["mysql", "mariadb"],
        plain_paths: false,
        claims: None,
        example: "mysql://user@host:3306/db",
        source: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(MySqlConnect::new(MySqlEndpoint::parse(
                url, opts,
            )?)))
        }),
        target: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(MySqlConnect::new(MySqlEndpoint::parse(
                url, opts,
            )?)))
        }),
        verify: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(MySqlVerifySide {
                endpoint: MySqlEndpoint::parse(url, opts)?,
            }))
        }),
    }
}
