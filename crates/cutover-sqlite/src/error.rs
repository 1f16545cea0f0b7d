//! SQLite result codes → cutover's portable error kinds.

use cutover_connector::{ConnectorError, ErrorKind};
use rusqlite::ffi::ErrorCode;

/// Maps a rusqlite error to a [`ConnectorError`] whose message starts with `context`.
pub(crate) fn map(context: impl std::fmt::Display, e: rusqlite::Error) -> ConnectorError {
    let kind = match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ErrorKind::Busy,
            ErrorCode::NotADatabase => ErrorKind::InvalidInput,
            ErrorCode::CannotOpen => ErrorKind::NotFound,
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => ErrorKind::Permission,
            ErrorCode::DiskFull => ErrorKind::DiskFull,
            ErrorCode::ConstraintViolation => ErrorKind::Conflict,
            _ => ErrorKind::Database,
        },
        rusqlite::Error::InvalidColumnType(..) | rusqlite::Error::FromSqlConversionFailure(..) => {
            ErrorKind::UnsupportedType
        }
        _ => ErrorKind::Database,
    };
    let fix = match kind {
        ErrorKind::InvalidInput => " (the file is not a SQLite database: check the path)",
        ErrorKind::Busy => " (another process holds a write lock for too long: retry)",
        ErrorKind::DiskFull => " (free disk space on the target, then run the same command again: nothing committed is lost)",
        _ => "",
    };
    ConnectorError::new(kind, format!("{context}: {e}{fix}")).with_source(e)
}

/// Quotes an identifier for SQLite: `a"b` → `"a""b"`.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
