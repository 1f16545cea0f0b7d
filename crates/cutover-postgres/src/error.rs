//! PostgreSQL errors (SQLSTATE) → cutover's portable error kinds.

use cutover_connector::{ConnectorError, ErrorKind};
use postgres::error::SqlState;

/// Maps a driver error to a [`ConnectorError`] whose message starts with `context` and ends with
/// the fix where there is an obvious one.
pub(crate) fn map(context: impl std::fmt::Display, e: postgres::Error) -> ConnectorError {
    let (kind, fix) = match e.code() {
        Some(code) => classify(code),
        // No SQLSTATE: the connection failed or broke (I/O, TLS, closed), or cutover itself
        // sent something wrong.
        None if is_connection_error(&e) => (
            ErrorKind::Connect,
            " (is the server running and reachable at that host and port? check the URL, the network and sslmode)",
        ),
        None => (ErrorKind::Database, ""),
    };
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut s = db.message().to_owned();
            if let Some(d) = db.detail() {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(w) = db.where_() {
                s.push_str(&format!(" [{w}]"));
            }
            s
        }
        None => e.to_string(),
    };
    ConnectorError::new(kind, format!("{context}: {detail}{fix}")).with_source(e)
}

/// An error the server sent on a connection cutover drives itself (the replication protocol).
pub(crate) fn server_error(
    context: impl std::fmt::Display,
    code: &str,
    message: &str,
    detail: Option<&str>,
) -> ConnectorError {
    let (kind, fix) = classify(&SqlState::from_code(code));
    let detail = detail.map(|d| format!(" ({d})")).unwrap_or_default();
    ConnectorError::new(kind, format!("{context}: {message}{detail}{fix}"))
}

fn is_connection_error(e: &postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<std::io::Error>() {
            return true;
        }
        source = s.source();
    }
    // Connection-phase failures (refused, timeout, TLS) come without an io source on some paths.
    let text = e.to_string();
    text.contains("connect") || text.contains("timed out") || text.contains("tls")
}

fn classify(code: &SqlState) -> (ErrorKind, &'static str) {
    let c = code.code();
    match c {
        _ if c.starts_with("08") => (ErrorKind::Connect, " (the connection failed or broke: run the same command again)"),
        _ if c.starts_with("28") => (
            ErrorKind::Auth,
            " (check the user name and password in the URL, and pg_hba.conf on the server)",
        ),
        "42501" => (ErrorKind::Permission, " (grant the user the needed privileges, or connect as the table's owner)"),
        "42P01" | "3F000" | "3D000" | "42704" => (ErrorKind::NotFound, ""),
        "53100" => (
            ErrorKind::DiskFull,
            " (the target's disk is full: free space, then run the same command again; chunks already copied are kept)",
        ),
        "40001" | "40P01" | "55P03" => (ErrorKind::Busy, ""),
        // A replication slot still held by a connection that is going away.
        "55006" => (ErrorKind::Busy, " (another session holds it; if no other sync runs, try again in a moment)"),
        "57014" => (ErrorKind::Timeout, ""),
        "57P01" | "57P02" | "57P03" | "53300" => (ErrorKind::Connect, " (the server is shutting down or out of connections: retry)"),
        _ if c.starts_with("22") => (
            ErrorKind::LossyConversion,
            " (the target refuses this value: compare the column's type and constraints on both sides)",
        ),
        _ if c.starts_with("23") => (ErrorKind::Conflict, ""),
        _ if c.starts_with("42") => (ErrorKind::SchemaMismatch, ""),
        _ => (ErrorKind::Database, ""),
    }
}

/// An I/O error while streaming COPY data between the two servers.
pub(crate) fn io(context: impl std::fmt::Display, e: std::io::Error) -> ConnectorError {
    // The driver wraps server errors raised mid-COPY in io::Error; unwrap them to classify.
    let inner = e
        .get_ref()
        .and_then(|r| r.downcast_ref::<postgres::Error>())
        .and_then(|pe| pe.code().cloned());
    let (kind, fix) = match inner {
        Some(code) => classify(&code),
        None => (
            ErrorKind::Connect,
            " (the connection broke while streaming: run the same command again)",
        ),
    };
    ConnectorError::new(kind, format!("{context}: {e}{fix}")).with_source(e)
}
