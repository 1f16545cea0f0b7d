//! MySQL 8 and MariaDB 10.6+ for cutover: a source (key-range chunks in consistent snapshots,
//! row-based binlog capture), a target (tables from the neutral schema, batches with their
//! checkpoint in one InnoDB transaction, the migration's state in `_cutover_*` tables) and a
//! side of verify (range checksums computed in the server).
//!
//! Every session is a blocking [`client::Client`] over `mysql_async` on the process's one
//! runtime.

mod binlog;
mod client;
mod endpoint;
mod error;
mod position;
mod reader;
mod schema;
mod source;
pub mod value;

pub use client::Client;
pub use endpoint::{redact, MySqlEndpoint, ZeroDate};
pub use position::{BinlogPos, BinlogPositions, BINLOG_POSITIONS};
pub use reader::MySqlReader;
pub use schema::read_tables;
pub use source::MySqlSource;
