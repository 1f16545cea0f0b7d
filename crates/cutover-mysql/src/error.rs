//! MySQL/MariaDB errors → [`ConnectorError`], classified by error code and error type, never by
//! message text.

use cutover_connector::{ConnectorError, ErrorKind};
use mysql_async::{DriverError, Error};

/// The portable kind of a driver error.
pub(crate) fn kind(e: &Error) -> ErrorKind {
    match e {
        Error::Io(_) => ErrorKind::Connect,
        Error::Driver(DriverError::ConnectionClosed | DriverError::PacketOutOfOrder) => {
            ErrorKind::Connect
        }
        Error::Driver(_) => ErrorKind::Database,
        Error::Url(_) => ErrorKind::InvalidInput,
        Error::Other(_) => ErrorKind::Database,
        Error::Server(s) => server_kind(s.code),
    }
}

/// Server error codes (`ER_*`, MySQL's and MariaDB's alike unless noted).
pub(crate) fn server_kind(code: u16) -> ErrorKind {
    match code {
        // ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR is a permission on one database
        1045 | 1698 => ErrorKind::Auth,
        1044 | 1142 | 1143 | 1227 | 1370 => ErrorKind::Permission,
        // ER_LOCK_DEADLOCK, ER_LOCK_WAIT_TIMEOUT, ER_LOCK_NOWAIT
        1213 | 1205 | 3572 => ErrorKind::Busy,
        // ER_QUERY_TIMEOUT (MySQL), ER_STATEMENT_TIMEOUT (MariaDB)
        3024 | 1969 => ErrorKind::Timeout,
        // ER_BAD_DB_ERROR, ER_NO_SUCH_TABLE, ER_BAD_FIELD_ERROR
        1049 | 1146 | 1054 => ErrorKind::NotFound,
        // ER_DUP_ENTRY
        1062 => ErrorKind::Conflict,
        // ER_CON_COUNT_ERROR, ER_SERVER_SHUTDOWN, ER_TOO_MANY_USER_CONNECTIONS, lost/gone
        1040 | 1053 | 1203 | 2006 | 2013 | 1927 => ErrorKind::Connect,
        // ER_RECORD_FILE_FULL, ER_DISK_FULL
        1114 | 1021 => ErrorKind::DiskFull,
        // ER_TRUNCATED_WRONG_VALUE*, ER_WARN_DATA_OUT_OF_RANGE, ER_DATA_TOO_LONG
        1292 | 1366 | 1264 | 1406 => ErrorKind::LossyConversion,
        // ER_MASTER_FATAL_ERROR_READING_BINLOG: the binlog asked for is gone
        1236 => ErrorKind::HistoryLost,
        _ => ErrorKind::Database,
    }
}

/// `context: what the server said (MySQL error N, SQLSTATE S)`; other driver errors become the
/// source of `context`.
pub(crate) fn map(context: impl std::fmt::Display, e: Error) -> ConnectorError {
    let kind = kind(&e);
    match &e {
        // The server's message is the whole story; no source to repeat it.
        Error::Server(s) => ConnectorError::new(
            kind,
            format!(
                "{context}: {} (MySQL error {}, SQLSTATE {})",
                s.message, s.code, s.state
            ),
        ),
        // The driver's error follows as the source (`context: cause`).
        _ => ConnectorError::new(kind, context.to_string()).with_source(e),
    }
}

/// The server's error code, if `e` is a server error.
pub(crate) fn code(e: &Error) -> Option<u16> {
    match e {
        Error::Server(s) => Some(s.code),
        _ => None,
    }
}
