//! PostgreSQL errors (SQLSTATE) → cutover's portable error kinds.

use cutover_connector::{ConnectorError, ErrorKind};
use tokio_postgres::error::SqlState;

/// Maps a driver error to a [`ConnectorError`] whose message starts with `context` and ends with
/// the fix where there is an obvious one.
pub(crate) fn map(context: impl std::fmt::Display, e: tokio_postgres::Error) -> ConnectorError {
    if let Some(refused) = tls_refusal(&e) {
        return ConnectorError::new(ErrorKind::Auth, format!("{context}: {refused}"))
            .with_source(e);
    }
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

/// A TLS handshake that failed because a certificate was refused (the server's by cutover, or
/// cutover's by the server): the message, with what to change. Found by the rustls error among
/// the sources (also inside an `io::Error`). Not retried: it fails the same way again.
pub(crate) fn tls_refusal(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as T};
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let found = err.downcast_ref::<T>().or_else(|| {
            err.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<T>())
        });
        if let Some(t) = found {
            let fix = match t {
                T::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => {
                    "sslmode=verify-full checks that the server's certificate names the host connected to:                      connect by a name the certificate carries, or use sslmode=verify-ca to check only                      that the certificate is signed by sslrootcert's CA"
                }
                T::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
                    "the server's certificate is not signed by a CA in sslrootcert: give your provider's                      CA bundle (sslrootcert=FILE), or sslrootcert=system for a public CA"
                }
                T::InvalidCertificate(C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. }) => {
                    "the server's certificate is outside its validity period (check the clocks, or renew it)"
                }
                T::InvalidCertificate(_) => "the server's certificate cannot be trusted",
                T::AlertReceived(A::BadCertificate | A::CertificateRequired | A::UnknownCA | A::CertificateUnknown | A::AccessDenied) => {
                    "the server refused the client certificate (sslcert/sslkey): check that its CA is the server's ssl_ca_file and its CN is the user name"
                }
                _ => return None,
            };
            return Some(format!("TLS: {t} ({fix})"));
        }
        cur = err.source();
    }
    None
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

/// Whether an error without SQLSTATE means the connection failed or broke, decided from the
/// error's structure (never its text): the driver reports a closed connection as such, and
/// every socket failure (refused, reset, timed out, TLS over a broken socket) carries an
/// `io::Error` among its sources. What remains (a malformed message, a value cutover could not
/// convert, a TLS or authentication setting the server refuses) is not cured by trying again.
fn is_connection_error(e: &tokio_postgres::Error) -> bool {
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
    false
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
        // Terminated by an administrator, crash of another backend, starting up, too many
        // connections; a session ended by an idle timeout.
        "57P01" | "57P02" | "57P03" | "53300" | "25P03" | "57P05" => (ErrorKind::Connect, " (the server is shutting down, restarting or out of connections: retry)"),
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
        .and_then(|r| r.downcast_ref::<tokio_postgres::Error>())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_kinds_that_decide_retries() {
        let cases = [
            ("57P01", ErrorKind::Connect), // terminated by an administrator
            ("57P02", ErrorKind::Connect), // crash shutdown
            ("57P03", ErrorKind::Connect), // the database system is starting up
            ("08006", ErrorKind::Connect), // connection failure
            ("08001", ErrorKind::Connect),
            ("53300", ErrorKind::Connect), // too many connections
            ("40001", ErrorKind::Busy),    // serialization failure
            ("40P01", ErrorKind::Busy),    // deadlock
            ("55P03", ErrorKind::Busy),    // lock not available
            ("57014", ErrorKind::Timeout), // statement timeout
            ("28P01", ErrorKind::Auth),
            ("42501", ErrorKind::Permission),
            ("23505", ErrorKind::Conflict),
            ("42P01", ErrorKind::NotFound),
            ("53100", ErrorKind::DiskFull),
            ("XX000", ErrorKind::Database),
        ];
        for (code, kind) in cases {
            assert_eq!(classify(&SqlState::from_code(code)).0, kind, "{code}");
            assert_eq!(server_error("x", code, "m", None).kind(), kind, "{code}");
        }
        for code in [
            "57P01", "57P03", "08006", "53300", "40001", "55P03", "57014",
        ] {
            assert!(
                classify(&SqlState::from_code(code)).0.is_retryable(),
                "{code}"
            );
        }
    }

    #[test]
    fn a_broken_stream_is_a_connection_error() {
        let e = io(
            "copying",
            std::io::Error::from(std::io::ErrorKind::ConnectionReset),
        );
        assert_eq!(e.kind(), ErrorKind::Connect);
    }
}
