//! SQLite, cutover's embedded default: a source with trigger-based change capture, a target,
//! and a reader for verify.
//!
//! ```text
//! SqliteEndpoint (path) ──source()──▶ SqliteSource   chunks + _cutover_log change capture
//!                       ──sink()────▶ SqliteSink     tables + _cutover_* control store
//!                       ──reader()──▶ SqliteReader   ordered scans, pinned snapshots
//! SqliteVerifier::open(path)           SqliteVerifier range checksums in SQL, repairs (verify)
//! ```

mod checksum;
mod error;
mod reader;
mod schema;
mod sink;
mod source;
mod sql;
mod types;
mod value;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cutover_connector::{Connect, ConnectorError, ErrorKind};
use rusqlite::{Connection, OpenFlags};

pub use checksum::SqliteVerifier;
pub use reader::SqliteReader;
pub use sink::SqliteSink;
pub use source::SqliteSource;

/// How long a statement waits for another connection's write lock before failing as `Busy`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// A SQLite database file: the configuration half of the connector.
#[derive(Debug, Clone)]
pub struct SqliteEndpoint {
    path: PathBuf,
}

impl SqliteEndpoint {
    pub fn new(path: impl Into<PathBuf>) -> SqliteEndpoint {
        SqliteEndpoint { path: path.into() }
    }

    /// Parses `sqlite://PATH`, `sqlite:PATH` or a plain path.
    pub fn from_url(url: &str) -> SqliteEndpoint {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        SqliteEndpoint::new(path)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Connect for SqliteEndpoint {
    type Source = SqliteSource;
    type Sink = SqliteSink;
    type Reader = SqliteReader;

    fn source(&self) -> Result<SqliteSource, ConnectorError> {
        SqliteSource::open(&self.path)
    }
    fn sink(&self) -> Result<SqliteSink, ConnectorError> {
        SqliteSink::open(&self.path)
    }
    fn reader(&self) -> Result<SqliteReader, ConnectorError> {
        SqliteReader::open(&self.path)
    }
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

fn tune(conn: &Connection, path: &Path) -> Result<(), ConnectorError> {
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| error::map(format!("configuring {}", path.display()), e))?;
    conn.set_prepared_statement_cache_capacity(256);
    Ok(())
}

/// Opens a database that must already exist and be SQLite. Errors name the path and the fix.
pub(crate) fn open_existing(path: &Path) -> Result<Connection, ConnectorError> {
    if path.is_dir() {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a directory, not a SQLite database file",
                path.display()
            ),
        ));
    }
    if !path.exists() {
        return Err(ConnectorError::new(
            ErrorKind::NotFound,
            format!("no SQLite database at {}: check the path", path.display()),
        ));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| error::map(format!("opening {}", path.display()), e))?;
    tune(&conn, path)?;
    // Opening is lazy: the first read finds out whether this is a database at all.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| error::map(format!("reading {}", path.display()), e))?;
    Ok(conn)
}

/// Opens or creates a target database, in WAL mode so verify can read while changes apply.
pub(crate) fn open_target(path: &Path) -> Result<Connection, ConnectorError> {
    if path.is_dir() {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} is a directory, not a SQLite database file",
                path.display()
            ),
        ));
    }
    let conn =
        Connection::open(path).map_err(|e| error::map(format!("opening {}", path.display()), e))?;
    tune(&conn, path)?;
    conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0))
        .map_err(|e| error::map(format!("reading {}", path.display()), e))?;
    conn.execute_batch("PRAGMA synchronous = NORMAL")
        .map_err(|e| error::map(format!("configuring {}", path.display()), e))?;
    Ok(conn)
}

pub mod demo;
