//! MySQL 8 and MariaDB 10.6+ for cutover: a source (key-range chunks in consistent snapshots,
//! row-based binlog capture), a target (tables from the neutral schema, batches with their
//! checkpoint in one InnoDB transaction, the migration's state in `_cutover_*` tables) and a
//! side of verify (range checksums computed in the server).
//!
//! Every session is a blocking [`client::Client`] over `mysql_async` on the process's one
//! runtime.

mod client;
pub mod ddl;
mod encode;
mod endpoint;
mod error;
mod sink;
mod state;

pub use client::Client;
pub use endpoint::{redact, MySqlEndpoint, ZeroDate};
pub use sink::MySqlSink;
pub use state::MySqlState;

use std::any::Any;

use cutover_connector::{
    ConnectorError, Engine, ErrorKind, OpenOptions, Sink, SourceFactory, StateStore, TableReader,
    TargetFactory,
};

/// A MySQL/MariaDB target: opens sinks on the database and the state store it hosts.
#[derive(Debug, Clone)]
pub struct MySqlTarget {
    endpoint: MySqlEndpoint,
    /// The source is MySQL too ([`TargetFactory::pair`]): declared types kept as they are.
    native: bool,
}

impl MySqlTarget {
    pub fn new(endpoint: MySqlEndpoint) -> MySqlTarget {
        MySqlTarget {
            endpoint,
            native: false,
        }
    }

    pub fn endpoint(&self) -> &MySqlEndpoint {
        &self.endpoint
    }
}

impl TargetFactory for MySqlTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        Ok(Box::new(MySqlSink::open(&self.endpoint, self.native)?))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Err(ConnectorError::new(
            ErrorKind::UnsupportedType,
            "reading a MySQL target in key order is not in this build yet",
        ))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    /// The target database's name, as PostgreSQL's.
    fn migration_name(&self) -> Option<String> {
        Some(self.endpoint.database.clone())
    }
    fn pair(&mut self, source: &dyn SourceFactory) -> Result<(), ConnectorError> {
        self.native = source.as_any().is::<MySqlTarget>();
        Ok(())
    }
    fn state(&self) -> Result<Option<Box<dyn StateStore>>, ConnectorError> {
        Ok(Some(Box::new(MySqlState::open(&self.endpoint))))
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
        source: None,
        target: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(MySqlTarget::new(MySqlEndpoint::parse(url, opts)?)))
        }),
        verify: None,
    }
}
