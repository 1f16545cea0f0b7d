//! Connection settings from a libpq-style URL, with TLS through rustls.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cutover_connector::{ConnectorError, ErrorKind};
use postgres::Client;

use crate::error::map;

/// How to use TLS, from the URL's `sslmode` (libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, without checking its certificate (`prefer`, libpq's default).
    Prefer,
    /// TLS or fail, without checking the certificate (`require`).
    Require,
    /// TLS with the certificate checked against the web's root authorities (`verify-ca`,
    /// `verify-full`).
    Verify,
}

/// A PostgreSQL database to connect to: the configuration half of the connector.
#[derive(Clone)]
pub struct PgEndpoint {
    config: postgres::Config,
    async_config: tokio_postgres::Config,
    tls: TlsMode,
    redacted: String,
}

impl std::fmt::Debug for PgEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => authority.to_owned(),
        },
        None => authority.to_owned(),
    };
    // `password=` may also appear as a query parameter.
    let tail: String = match tail.split_once('?') {
        Some((path, query)) => {
            let q: Vec<String> = query
                .split('&')
                .map(|kv| {
                    if kv.to_ascii_lowercase().starts_with("password=") {
                        "password=***".to_owned()
                    } else {
                        kv.to_owned()
                    }
                })
                .collect();
            format!("{path}?{}", q.join("&"))
        }
        None => tail.to_owned(),
    };
    format!("{scheme}://{authority}{tail}")
}

impl PgEndpoint {
    /// Parses `postgres://user:pass@host:port/db?sslmode=…` (or `postgresql://`).
    pub fn from_url(url: &str) -> Result<PgEndpoint, ConnectorError> {
        let redacted = redact(url);
        // tokio-postgres knows disable/prefer/require; take verify-* out and handle it here.
        let mut tls = TlsMode::Prefer;
        let mut kept = Vec::new();
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        for kv in query.into_iter().flat_map(|q| q.split('&')) {
            match kv.split_once('=') {
                Some(("sslmode", v)) => {
                    tls = match v {
                        "disable" | "allow" => TlsMode::Disable,
                        "prefer" => TlsMode::Prefer,
                        "require" => TlsMode::Require,
                        "verify-ca" | "verify-full" => TlsMode::Verify,
                        other => {
                            return Err(ConnectorError::new(
                                ErrorKind::InvalidInput,
                                format!("sslmode={other} in {redacted} is not one of disable, prefer, require, verify-ca, verify-full"),
                            ))
                        }
                    }
                }
                _ => kept.push(kv),
            }
        }
        let rebuilt = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        let mut config = postgres::Config::from_str(&rebuilt).map_err(|e| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!("{redacted} is not a valid PostgreSQL URL: {e} (expected postgres://user:password@host:port/database)"),
            )
        })?;
        if config.get_dbname().is_none() {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!("{redacted} names no database: add /DBNAME after the host"),
            ));
        }
        config.application_name("cutover");
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // A peer that vanished without closing (network cut, host down) is noticed after
        // about 90 s instead of the system's 2 hours, unless the URL says otherwise.
        if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        // The same settings for the asynchronous driver (pipelined apply batches).
        let mut async_config = tokio_postgres::Config::from_str(&rebuilt).map_err(|e| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!("{redacted} is not a valid PostgreSQL URL: {e}"),
            )
        })?;
        async_config.application_name("cutover");
        if async_config.get_connect_timeout().is_none() {
            async_config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        if async_config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
            async_config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if async_config.get_keepalives_interval().is_none() {
            async_config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if async_config.get_keepalives_retries().is_none() {
            async_config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        Ok(PgEndpoint {
            config,
            async_config,
            tls,
            redacted,
        })
    }

    /// The URL without its password.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub(crate) fn config(&self) -> &postgres::Config {
        &self.config
    }

    pub(crate) fn tls(&self) -> TlsMode {
        self.tls
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// How long opening a connection may take in all, handshake and session setup included:
    /// the URL's `connect_timeout` (10 s by default) for each of its hosts.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        let per_host = self
            .config
            .get_connect_timeout()
            .copied()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        per_host.saturating_mul(self.config.get_hosts().len().max(1) as u32)
    }

    /// `host:port` as the URL names it, for messages.
    fn host_port(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            #[cfg(unix)]
            Some(postgres::config::Host::Unix(dir)) => {
                format!("{}/.s.PGSQL.{port}", dir.display())
            }
            None => format!("port {port}"),
        }
    }

    /// The error for a connection that did not complete within `waited`.
    pub(crate) fn handshake_timed_out(&self, waited: Duration) -> ConnectorError {
        ConnectorError::new(
            ErrorKind::Timeout,
            format!(
                "connecting to {}: the server at {} did not complete the connection within {:.1} s \
                 (no answer: is it overloaded or hung, or is something other than PostgreSQL listening there?). \
                 Check the host and port, or allow longer with connect_timeout=SECONDS in the URL",
                self.redacted,
                self.host_port(),
                waited.as_secs_f64()
            ),
        )
    }

    /// Opens a connection with `standard_conforming_strings` on and UTC times. Cutover's own
    /// sessions may write where the application is fenced off (`default_transaction_read_only`
    /// set on the database by sync or switch). Statements run under the server's own
    /// `statement_timeout`; see [`PgEndpoint::connect_control`] and
    /// [`PgEndpoint::connect_bulk`] for sessions that set their own.
    ///
    /// The whole of it (TCP, TLS, authentication, session settings) takes at most
    /// [`PgEndpoint::handshake_timeout`], or fails with [`ErrorKind::Timeout`].
    pub fn connect(&self) -> Result<Client, ConnectorError> {
        self.open(Statements::Inherit)
    }

    /// A session for control and catalog work (the control store, positions, slot state,
    /// catalog reads): every statement is cancelled by the server after
    /// [`CONTROL_STATEMENT_TIMEOUT`], so a lock that is never granted cannot hang cutover (it
    /// fails as [`ErrorKind::Timeout`], which is retried). Long statements on such a session
    /// (creating a slot, sampling a table) lift it for themselves.
    pub fn connect_control(&self) -> Result<Client, ConnectorError> {
        self.open(Statements::Control)
    }

    /// A session for bulk work that may rightly run for a long time (COPY streams, index
    /// builds, checksums of whole tables): no statement timeout, whatever the server's default
    /// (as `pg_dump` does).
    pub fn connect_bulk(&self) -> Result<Client, ConnectorError> {
        self.open(Statements::Unbounded)
    }

    /// The blocking driver cannot bound its own handshake (its `connect_timeout` covers the TCP
    /// connect only), so it runs on a thread of its own that is waited for at most
    /// [`PgEndpoint::handshake_timeout`]. After a timeout the thread is left to end by itself
    /// when the server answers or closes; it then drops the connection it made.
    fn open(&self, statements: Statements) -> Result<Client, ConnectorError> {
        let wait = self.handshake_timeout();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let endpoint = self.clone();
        std::thread::Builder::new()
            .name("cutover-pg-connect".into())
            .spawn(move || {
                let _ = tx.send(endpoint.open_now(statements));
            })
            .map_err(|e| {
                ConnectorError::new(
                    ErrorKind::Database,
                    format!(
                        "connecting to {}: cannot start a thread: {e}",
                        self.redacted
                    ),
                )
            })?;
        match rx.recv_timeout(wait) {
            Ok(result) => result,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(self.handshake_timed_out(wait)),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Err(ConnectorError::new(
                ErrorKind::Database,
                format!(
                    "connecting to {}: the connecting thread failed",
                    self.redacted
                ),
            )),
        }
    }

    fn open_now(&self, statements: Statements) -> Result<Client, ConnectorError> {
        let ctx = || format!("connecting to {}", self.redacted);
        let mut client = match self.tls {
            TlsMode::Disable => self.config.connect(postgres::NoTls),
            mode => {
                let mut cfg = self.config.clone();
                cfg.ssl_mode(if mode == TlsMode::Prefer {
                    postgres::config::SslMode::Prefer
                } else {
                    postgres::config::SslMode::Require
                });
                cfg.connect(tls_connector(mode))
            }
        }
        .map_err(|e| map(ctx(), e))?;
        client
            .batch_execute(&statements.session_sql())
            .map_err(|e| map(ctx(), e))?;
        Ok(client)
    }
}

impl PgEndpoint {
    /// Connects with the asynchronous driver and runs the session settings and then `setup`,
    /// all within [`PgEndpoint::handshake_timeout`]; the connection runs as a task on the
    /// caller's runtime (which needs its time driver). Statements have no timeout: this
    /// connection carries apply batches.
    pub(crate) async fn connect_async(
        &self,
        setup: &str,
    ) -> Result<tokio_postgres::Client, ConnectorError> {
        let wait = self.handshake_timeout();
        match tokio::time::timeout(wait, self.connect_async_now(setup)).await {
            Ok(result) => result,
            Err(_) => Err(self.handshake_timed_out(wait)),
        }
    }

    async fn connect_async_now(
        &self,
        setup: &str,
    ) -> Result<tokio_postgres::Client, ConnectorError> {
        let ctx = || format!("connecting to {}", self.redacted);
        let client = match self.tls {
            TlsMode::Disable => {
                let (client, conn) = self
                    .async_config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| map(ctx(), e))?;
                tokio::spawn(conn);
                client
            }
            mode => {
                let mut cfg = self.async_config.clone();
                cfg.ssl_mode(if mode == TlsMode::Prefer {
                    tokio_postgres::config::SslMode::Prefer
                } else {
                    tokio_postgres::config::SslMode::Require
                });
                let (client, conn) = cfg
                    .connect(tls_connector(mode))
                    .await
                    .map_err(|e| map(ctx(), e))?;
                tokio::spawn(conn);
                client
            }
        };
        client
            .batch_execute(&Statements::Unbounded.session_sql())
            .await
            .map_err(|e| map(ctx(), e))?;
        client
            .batch_execute(setup)
            .await
            .map_err(|e| map(format!("preparing a session on {}", self.redacted), e))?;
        Ok(client)
    }
}

/// The server-side limit on each statement of a control session ([`PgEndpoint::connect_control`]).
pub const CONTROL_STATEMENT_TIMEOUT: &str = "60s";

/// The URL's `connect_timeout` when it has none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The driver's default idle time before TCP keepalives (the system's: 2 hours) …
const DRIVER_KEEPALIVES_IDLE: Duration = Duration::from_secs(2 * 60 * 60);
/// … and cutover's, with the interval and count of probes before a silent peer counts as gone.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(60);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;

/// Which statement timeout a session runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statements {
    /// The server's (or the database's, or the role's) default.
    Inherit,
    Control,
    Unbounded,
}

impl Statements {
    fn session_sql(self) -> String {
        let base =
            "SET standard_conforming_strings = on; SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; \
                    SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; \
                    SET default_transaction_read_only = off";
        match self {
            Statements::Inherit => base.to_owned(),
            Statements::Control => {
                format!("{base}; SET statement_timeout = '{CONTROL_STATEMENT_TIMEOUT}'")
            }
            Statements::Unbounded => format!("{base}; SET statement_timeout = 0"),
        }
    }
}

/// Runs `f` on `client` with no statement timeout, then puts the session's timeout back: for
/// the long statements of a control session (creating a replication slot waits for every
/// running transaction; counting or sampling a large table).
pub(crate) fn without_statement_timeout<T>(
    client: &mut Client,
    f: impl FnOnce(&mut Client) -> Result<T, ConnectorError>,
) -> Result<T, ConnectorError> {
    let before: String = client
        .query_one("SELECT current_setting('statement_timeout')", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| map("reading the session's statement timeout", e))?;
    client
        .batch_execute("SET statement_timeout = 0")
        .map_err(|e| map("lifting the session's statement timeout", e))?;
    let result = f(client);
    if !client.is_closed() {
        let restore = format!(
            "SET statement_timeout = {}",
            crate::schema::literal(&before)
        );
        if let Err(e) = client.batch_execute(&restore) {
            // Then the session goes on without one: never shorter than intended.
            tracing::debug!(error = %e, "could not restore the session's statement timeout");
        }
    }
    result
}

fn tls_connector(mode: TlsMode) -> tokio_postgres_rustls::MakeRustlsConnect {
    tokio_postgres_rustls::MakeRustlsConnect::new((*tls_config(mode)).clone())
}

/// The TLS client settings for `mode`: checked certificates for `verify-*`, any certificate
/// otherwise (libpq's `require`/`prefer`).
pub(crate) fn tls_config(mode: TlsMode) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("TLS 1.3 is supported by the ring provider")
        });
    let config = if mode == TlsMode::Verify {
        let roots =
            rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification))
            .with_no_client_auth()
    };
    Arc::new(config)
}

/// `sslmode=require`/`prefer`: encrypt, but accept any certificate (libpq's behaviour).
#[derive(Debug)]
struct NoVerification;

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_survive_redaction() {
        assert_eq!(
            redact("postgres://bob:s3cr%40t@db.example:5432/app?sslmode=require"),
            "postgres://bob:***@db.example:5432/app?sslmode=require"
        );
        assert_eq!(
            redact("postgres://db/app?user=bob&password=hunter2"),
            "postgres://db/app?user=bob&password=***"
        );
        assert_eq!(redact("postgres://bob@db/app"), "postgres://bob@db/app");
    }

    #[test]
    fn urls_parse_with_sslmodes() {
        let e = PgEndpoint::from_url("postgres://u:p@127.0.0.1:5/app?sslmode=verify-full").unwrap();
        assert_eq!(e.tls, TlsMode::Verify);
        assert_eq!(e.dbname(), "app");
        assert!(!format!("{e:?}").contains(":p@"));
        assert!(PgEndpoint::from_url("postgres://u@h/app?sslmode=bogus").is_err());
        let err = PgEndpoint::from_url("postgres://u:secret@h:5432").unwrap_err();
        assert!(err.to_string().contains("names no database"));
        assert!(!err.to_string().contains("secret"));
    }
}
