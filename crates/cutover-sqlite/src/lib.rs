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
mod state;
mod types;
mod value;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::any::Any;

use cutover_connector::{
    ConnectorError, Engine, ErrorKind, RangeChecksum, Sink, Source, SourceFactory, TableReader,
    TargetFactory, VerifyFactory,
};
use rusqlite::{Connection, OpenFlags};

pub use checksum::SqliteVerifier;
pub use reader::SqliteReader;
pub use sink::SqliteSink;
pub use source::SqliteSource;
pub use state::SqliteState;

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

impl SourceFactory for SqliteEndpoint {
    fn source(&self) -> Result<Box<dyn Source + Send>, ConnectorError> {
        Ok(Box::new(SqliteSource::open(&self.path)?))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(SqliteReader::open(&self.path)?))
    }
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl TargetFactory for SqliteEndpoint {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        Ok(Box::new(SqliteSink::open(&self.path)?))
    }
    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        Ok(Some(Box::new(SqliteState::open(&self.path)?)))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    /// The file's name without its extension (`app` of `data/app.db`).
    fn migration_name(&self) -> Option<String> {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(SqliteReader::open(&self.path)?))
    }
    fn describe(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}

/// One side of a SQLite verify: the file's tables, hashed by [`SqliteVerifier`].
#[derive(Debug, Clone)]
pub struct SqliteVerifySide {
    endpoint: SqliteEndpoint,
}

impl VerifyFactory for SqliteVerifySide {
    fn tables(&self) -> Result<Vec<cutover_model::TableSchema>, ConnectorError> {
        SqliteVerifier::open(self.endpoint.path())?.tables()
    }
    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError> {
        Ok(Box::new(SqliteVerifier::open(self.endpoint.path())?))
    }
    fn describe(&self) -> String {
        SourceFactory::describe(&self.endpoint)
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// SQLite as the binary registers it: `sqlite://PATH`, `file://PATH` or a plain path; both
/// sides and verify.
pub fn engine() -> Engine {
    Engine {
        name: "SQLite",
        schemes: &["sqlite", "file"],
        plain_paths: true,
        claims: None,
        example: "sqlite://PATH",
        source: Some(|url, _| {
            let e = endpoint(url)?;
            // Opening checks existence, file type and that it really is SQLite.
            SqliteReader::open(e.path())?;
            Ok(Box::new(e))
        }),
        target: Some(|url, _| {
            let e = endpoint(url)?;
            check_target_path(e.path())?;
            Ok(Box::new(e))
        }),
        verify: Some(|url, _| {
            let e = endpoint(url)?;
            SqliteReader::open(e.path())?;
            Ok(Box::new(SqliteVerifySide { endpoint: e }))
        }),
    }
}

/// A SQLite URL (`sqlite://PATH`, `file://PATH`) or path, refused if it names no file.
fn endpoint(url: &str) -> Result<SqliteEndpoint, ConnectorError> {
    let e = SqliteEndpoint::from_url(url.strip_prefix("file://").unwrap_or(url));
    if e.path().as_os_str().is_empty() {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!("empty database path in {url:?}: use sqlite://PATH"),
        ));
    }
    Ok(e)
}

/// A target is created if missing: its folder must exist, and a file already there must be
/// SQLite.
fn check_target_path(path: &Path) -> Result<(), ConnectorError> {
    if path.is_dir() {
        return Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "target {} is a directory; give a database file path",
                path.display()
            ),
        ));
    }
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(p) = parent {
        if !p.is_dir() {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!(
                    "the target's folder {} does not exist; create it first",
                    p.display()
                ),
            ));
        }
    }
    if path.exists() {
        SqliteReader::open(path)?;
    }
    Ok(())
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
