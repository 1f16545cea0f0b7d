//! Connection settings as libpq takes them (URLs, keyword/value strings, `PG*` variables, the
//! service and password files; see [`crate::conninfo`]), with TLS through rustls.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use cutover_connector::{runtime, ConnectorError, ErrorKind};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::blocking::Client;
use crate::conninfo::{self, Environment, Params};
use crate::error::map;

/// How to use TLS, from `sslmode` (libpq's meanings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS (`disable`; also `allow`, which would only use TLS if the server insisted).
    Disable,
    /// TLS when the server offers it, without checking its certificate (`prefer`, libpq's default).
    Prefer,
    /// TLS or fail, without checking the certificate (`require`; with an `sslrootcert` given,
    /// checked as `verify-ca`, as libpq does).
    Require,
    /// TLS with the server's certificate chain checked against `sslrootcert`, its host name not
    /// (`verify-ca`).
    VerifyCa,
    /// TLS with the chain and the host name checked (`verify-full`).
    VerifyFull,
}

/// A PostgreSQL database to connect to: the configuration half of the connector.
#[derive(Clone)]
pub struct PgEndpoint {
    config: tokio_postgres::Config,
    tls: TlsMode,
    /// The TLS client settings (`None` for `disable`): roots, client certificate, verifier.
    tls_config: Option<Arc<rustls::ClientConfig>>,
    /// The handshake's limit per host; `None`: `connect_timeout=0`, wait as long as it takes.
    connect_timeout: Option<Duration>,
    redacted: String,
}

impl std::fmt::Debug for PgEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted)
    }
}

/// The connection string with any password replaced by `***`, for messages and logs: a URL's
/// user info and `password=` parameter, a keyword/value string's `password=` value.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return redact_keywords(url);
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

/// A keyword/value string with its password hidden; one that cannot be parsed is not shown.
fn redact_keywords(s: &str) -> String {
    match conninfo::parse(s) {
        Ok(params) if params.is_empty() => "(settings from the environment)".to_owned(),
        Ok(params) => params
            .iter()
            .map(|(k, v)| {
                if k == "password" {
                    "password=***".to_owned()
                } else {
                    format!("{k}={}", quote(v))
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(a connection string that cannot be parsed)".to_owned(),
    }
}

/// A value quoted for a keyword/value string, as the driver reads it.
fn quote(v: &str) -> String {
    if !v.is_empty() && !v.contains([' ', '\'', '\\', '\t', '\n']) {
        return v.to_owned();
    }
    let mut q = String::with_capacity(v.len() + 2);
    q.push('\'');
    for c in v.chars() {
        if c == '\'' || c == '\\' {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('\'');
    q
}

/// Keywords handed to the driver as they are (its spelling is libpq's).
const DRIVER_KEYWORDS: &[&str] = &[
    "host",
    "hostaddr",
    "port",
    "dbname",
    "user",
    "password",
    "options",
    "application_name",
    "tcp_user_timeout",
    "keepalives",
    "keepalives_idle",
    "keepalives_interval",
    "target_session_attrs",
    "channel_binding",
    "load_balance_hosts",
];

/// Keywords libpq knows that ask for something cutover cannot do yet: refused when set.
const UNSUPPORTED: &[&str] = &[
    "sslpassword",
    "sslcrl",
    "sslcrldir",
    "requirepeer",
    "require_auth",
    "gssdelegation",
    "replication",
];

fn invalid(what: &str, message: impl std::fmt::Display) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, format!("{what}: {message}"))
}

impl PgEndpoint {
    /// Parses a connection string (`postgres://user@host:port/db?sslmode=…`, `host=… dbname=…`,
    /// or empty) and completes it from the process's `PG*` variables, the service file and the
    /// password file, as libpq does.
    pub fn from_url(url: &str) -> Result<PgEndpoint, ConnectorError> {
        PgEndpoint::resolve(url, &Environment::process(None))
    }

    /// [`PgEndpoint::from_url`] with the variables under `prefix` (`OLD_` → `OLD_PGHOST`, …)
    /// instead of the plain ones.
    pub fn from_env_prefix(url: &str, prefix: Option<&str>) -> Result<PgEndpoint, ConnectorError> {
        PgEndpoint::resolve(url, &Environment::process(prefix))
    }

    /// A connection string completed in `env` (libpq's order: the string, the service file, the
    /// variables, the defaults; the password file for a missing password). Files it names
    /// (certificates, keys, root certificates) are read now, so a wrong path fails here.
    pub fn resolve(conn: &str, env: &Environment) -> Result<PgEndpoint, ConnectorError> {
        let given = if conninfo::is_url(conn) {
            redact(conn)
        } else {
            redact_keywords(conn)
        };
        let what = if conninfo::is_url(conn) {
            format!("the PostgreSQL URL {given}")
        } else if conn.trim().is_empty() {
            "the PostgreSQL connection settings from the environment".to_owned()
        } else {
            "the PostgreSQL connection string".to_owned()
        };
        let resolved = conninfo::resolve(conn, env).map_err(|e| invalid(&what, e))?;
        for warning in &resolved.warnings {
            tracing::warn!("{warning}");
        }
        let params = resolved.params;
        for k in UNSUPPORTED {
            if params.get(*k).is_some_and(|v| !v.is_empty()) {
                return Err(invalid(
                    &what,
                    format!("{k} is not supported by cutover yet; leave it out"),
                ));
            }
        }
        if params.get("gssencmode").is_some_and(|v| v == "require") {
            return Err(invalid(
                &what,
                "gssencmode=require: cutover has no GSSAPI encryption; use TLS (sslmode)",
            ));
        }
        if params.get("client_encoding").is_some_and(|v| {
            !matches!(
                v.to_ascii_lowercase().as_str(),
                "utf8" | "utf-8" | "unicode" | "auto"
            )
        }) {
            return Err(invalid(
                &what,
                "client_encoding: cutover always talks UTF8 to the server",
            ));
        }
        if params
            .get("sslnegotiation")
            .is_some_and(|v| v != "postgres")
        {
            return Err(invalid(
                &what,
                "sslnegotiation: only `postgres` (the SSLRequest handshake) is supported",
            ));
        }
        let tls = tls_mode(&params).map_err(|e| invalid(&what, e))?;
        let tls_config = tls_setup(tls, &params, env).map_err(|e| invalid(&what, e))?;
        let tls = match (tls, &tls_config) {
            // libpq: `require` with a root certificate checks the chain as `verify-ca`.
            (TlsMode::Require, Some(t)) if t.1 => TlsMode::VerifyCa,
            (mode, _) => mode,
        };
        let tls_config = tls_config.map(|t| t.0);

        // Everything the driver understands goes to it in one keyword/value string.
        let mut driver: Vec<String> = Vec::new();
        for k in DRIVER_KEYWORDS {
            if let Some(v) = params.get(*k).filter(|v| !v.is_empty()) {
                driver.push(format!("{k}={}", quote(v)));
            }
        }
        if let Some(v) = params.get("keepalives_count").filter(|v| !v.is_empty()) {
            driver.push(format!("keepalives_retries={}", quote(v)));
        }
        if params.get("application_name").is_none_or(|v| v.is_empty()) {
            let name = params
                .get("fallback_application_name")
                .filter(|v| !v.is_empty())
                .map(String::as_str)
                .unwrap_or("cutover");
            driver.push(format!("application_name={}", quote(name)));
        }
        let connect_timeout = match params.get("connect_timeout").filter(|v| !v.is_empty()) {
            None => Some(DEFAULT_CONNECT_TIMEOUT),
            Some(v) => match v.trim().parse::<i64>() {
                // libpq: zero or less waits indefinitely; 1 s is taken as 2.
                Ok(n) if n <= 0 => None,
                Ok(n) => Some(Duration::from_secs(n.max(2) as u64)),
                Err(_) => {
                    return Err(invalid(
                        &what,
                        format!("connect_timeout={v:?} is not a whole number of seconds"),
                    ))
                }
            },
        };
        let mut config =
            tokio_postgres::Config::from_str(&driver.join(" ")).map_err(|e| invalid(&what, e))?;
        if let Some(t) = connect_timeout {
            config.connect_timeout(t);
        }
        // A peer that vanished without closing (network cut, host down) is noticed after
        // about 90 s instead of the system's 2 hours, unless the string says otherwise.
        if config.get_keepalives_idle() == DRIVER_KEEPALIVES_IDLE {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        config.ssl_mode(match tls {
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
            TlsMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        });
        let redacted = if conninfo::is_url(conn) {
            given
        } else {
            describe(&params)
        };
        if let Some(from) = &resolved.password_from {
            tracing::debug!(endpoint = %redacted, "password from {from}");
        }
        Ok(PgEndpoint {
            config,
            tls,
            tls_config,
            connect_timeout,
            redacted,
        })
    }

    /// Where this connects, without any password: the URL as given, or the resolved
    /// `host=… port=… dbname=… user=…` of a keyword/value string or the environment.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    pub(crate) fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// How this endpoint uses TLS (after libpq's rules: `require` with a root certificate is
    /// `verify-ca`).
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// The TLS client settings, `None` for `sslmode=disable`.
    pub(crate) fn tls_client(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.tls_config.clone()
    }

    /// The driver's TLS connector, `None` for `sslmode=disable`.
    fn tls_connector(&self) -> Option<tokio_postgres_rustls::MakeRustlsConnect> {
        self.tls_config
            .as_ref()
            .map(|c| tokio_postgres_rustls::MakeRustlsConnect::new((**c).clone()))
    }

    pub fn dbname(&self) -> &str {
        self.config.get_dbname().unwrap_or("")
    }

    /// How long opening a connection may take in all, handshake and session setup included:
    /// the URL's `connect_timeout` (10 s by default; `0`: a day) for each of its hosts.
    pub(crate) fn handshake_timeout(&self) -> Duration {
        let per_host = self.connect_timeout.unwrap_or(UNBOUNDED_CONNECT);
        per_host.saturating_mul(self.config.get_hosts().len().max(1) as u32)
    }

    /// `host:port` as the URL names it, for messages.
    fn host_port(&self) -> String {
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => format!("{h}:{port}"),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(dir)) => {
                format!("{}/.s.PGSQL.{port}", dir.display())
            }
            None => format!("port {port}"),
        }
    }

    /// A failed connection attempt: the driver's error, except that a failure other than the
    /// server's or the network's when no password is known is the missing password (the
    /// driver only says "invalid configuration").
    fn connect_error(&self, ctx: String, e: tokio_postgres::Error) -> ConnectorError {
        let driver_side = e.as_db_error().is_none()
            && !e.is_closed()
            && crate::error::tls_refusal(&e).is_none()
            && !std::iter::successors(std::error::Error::source(&e), |s| s.source())
                .any(|s| s.is::<std::io::Error>());
        if driver_side && self.config.get_password().is_none() {
            return ConnectorError::new(ErrorKind::Auth, format!("{ctx}: {}", no_password()))
                .with_source(e);
        }
        map(ctx, e)
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

    /// The driver's own `connect_timeout` covers each TCP connect only; the whole of it runs
    /// under one [`PgEndpoint::handshake_timeout`] on the process's runtime, waited for on this
    /// thread. A connection that times out is dropped there and then.
    fn open(&self, statements: Statements) -> Result<Client, ConnectorError> {
        runtime::block_on(self.within_handshake_timeout(self.open_now(statements)))
    }

    async fn open_now(&self, statements: Statements) -> Result<Client, ConnectorError> {
        let ctx = || format!("connecting to {}", self.redacted);
        let mut client = match self.tls_connector() {
            None => Client::connect(&self.config, tokio_postgres::NoTls).await,
            Some(tls) => Client::connect(&self.config, tls).await,
        }
        .map_err(|e| self.connect_error(ctx(), e))?;
        client
            .batch_execute_async(&statements.session_sql())
            .await
            .map_err(|e| map(ctx(), e))?;
        Ok(client)
    }
}

impl PgEndpoint {
    /// Connects with the asynchronous driver and runs the session settings and then `setup`,
    /// all within [`PgEndpoint::handshake_timeout`]; the connection runs as a task on the
    /// caller's runtime (the process's, [`runtime::handle`]; it needs its time driver).
    /// Statements have no timeout: this connection carries apply batches.
    pub(crate) async fn connect_async(
        &self,
        setup: &str,
    ) -> Result<tokio_postgres::Client, ConnectorError> {
        self.within_handshake_timeout(self.connect_async_now(setup))
            .await
    }

    /// `connecting`, or [`ErrorKind::Timeout`] if it takes longer than
    /// [`PgEndpoint::handshake_timeout`] (then it is dropped: nothing is left connecting).
    async fn within_handshake_timeout<T>(
        &self,
        connecting: impl std::future::Future<Output = Result<T, ConnectorError>>,
    ) -> Result<T, ConnectorError> {
        let wait = self.handshake_timeout();
        tokio::time::timeout(wait, connecting)
            .await
            .unwrap_or_else(|_| Err(self.handshake_timed_out(wait)))
    }

    async fn connect_async_now(
        &self,
        setup: &str,
    ) -> Result<tokio_postgres::Client, ConnectorError> {
        let ctx = || format!("connecting to {}", self.redacted);
        let client = match self.tls_connector() {
            None => {
                let (client, conn) = self
                    .config
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(|e| self.connect_error(ctx(), e))?;
                tokio::spawn(conn);
                client
            }
            Some(tls) => {
                let (client, conn) = self
                    .config
                    .connect(tls)
                    .await
                    .map_err(|e| self.connect_error(ctx(), e))?;
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

/// What to say when the server wants a password and none was found anywhere.
pub(crate) fn no_password() -> &'static str {
    "the server asks for a password and none was given: set PGPASSWORD (or PREFIX_PGPASSWORD with \
     --source-env-prefix/--target-env-prefix), add a line to ~/.pgpass (or the file PGPASSFILE names), \
     or put password= in the service's section of pg_service.conf; cutover never needs it on the command line"
}

/// The server-side limit on each statement of a control session ([`PgEndpoint::connect_control`]).
pub const CONTROL_STATEMENT_TIMEOUT: &str = "60s";

/// The URL's `connect_timeout` when it has none.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `connect_timeout=0` ("wait indefinitely") waits.
const UNBOUNDED_CONNECT: Duration = Duration::from_secs(24 * 60 * 60);
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

/// `host=… port=… dbname=… user=…` (and the service) of resolved settings, for messages.
fn describe(params: &Params) -> String {
    let mut parts = Vec::new();
    for k in [
        "service", "host", "hostaddr", "port", "dbname", "user", "sslmode",
    ] {
        if let Some(v) = params.get(k).filter(|v| !v.is_empty()) {
            parts.push(format!("{k}={}", quote(v)));
        }
    }
    parts.join(" ")
}

/// `sslmode`, or libpq's default: `verify-full` with `sslrootcert=system`, `require` with the
/// old `requiressl=1`, else `prefer`.
fn tls_mode(params: &Params) -> Result<TlsMode, String> {
    let system = params.get("sslrootcert").is_some_and(|r| r == "system");
    let mode = match params
        .get("sslmode")
        .map(String::as_str)
        .filter(|m| !m.is_empty())
    {
        Some("disable") | Some("allow") => TlsMode::Disable,
        Some("prefer") => TlsMode::Prefer,
        Some("require") => TlsMode::Require,
        Some("verify-ca") => TlsMode::VerifyCa,
        Some("verify-full") => TlsMode::VerifyFull,
        Some(other) => {
            return Err(format!(
            "sslmode={other} is not one of disable, allow, prefer, require, verify-ca, verify-full"
        ))
        }
        None if system => TlsMode::VerifyFull,
        None if params.get("requiressl").is_some_and(|v| v.starts_with('1')) => TlsMode::Require,
        None => TlsMode::Prefer,
    };
    if system && mode != TlsMode::VerifyFull {
        return Err(format!(
            "weak sslmode \"{}\" may not be used with sslrootcert=system (use \"verify-full\")",
            params.get("sslmode").map(String::as_str).unwrap_or("")
        ));
    }
    Ok(mode)
}

/// A file named by a setting, `~` meaning the home directory.
fn setting_path(value: &str, env: &Environment) -> std::path::PathBuf {
    match value.strip_prefix("~/") {
        Some(rest) => env
            .home_file(rest)
            .unwrap_or_else(|| std::path::PathBuf::from(value)),
        None => std::path::PathBuf::from(value),
    }
}

/// The TLS client settings for `mode` and whether they verify the server's chain: roots from
/// `sslrootcert` (a PEM file of one or more CA certificates, or `system`) or
/// `~/.postgresql/root.crt`; a client certificate from `sslcert`/`sslkey` or
/// `~/.postgresql/postgresql.{crt,key}`; `sslsni`; `ssl_min_protocol_version`/
/// `ssl_max_protocol_version`. As libpq: once roots are found, every mode checks the chain.
fn tls_setup(
    mode: TlsMode,
    params: &Params,
    env: &Environment,
) -> Result<Option<(Arc<rustls::ClientConfig>, bool)>, String> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let get = |k: &str| params.get(k).map(String::as_str).filter(|v| !v.is_empty());

    // Roots.
    let roots: Option<rustls::RootCertStore> = match get("sslrootcert") {
        Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let mut store = rustls::RootCertStore::empty();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "sslrootcert=system: no trusted root certificates found on this system{} (install ca-certificates, or set SSL_CERT_FILE)",
                    found
                        .errors
                        .first()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                ));
            }
            Some(store)
        }
        Some(file) => {
            let path = setting_path(file, env);
            match std::fs::read(&path) {
                Ok(pem) => Some(root_store(&pem, &path)?),
                Err(e)
                    if e.kind() == std::io::ErrorKind::NotFound
                        && !matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) =>
                {
                    None
                }
                Err(e) => {
                    return Err(format!(
                        "cannot read the root certificate file \"{}\" (sslrootcert): {e}",
                        path.display()
                    ))
                }
            }
        }
        None => match env.home_file(".postgresql/root.crt") {
            Some(path) if path.is_file() => {
                let pem = std::fs::read(&path).map_err(|e| {
                    format!(
                        "cannot read the root certificate file \"{}\": {e}",
                        path.display()
                    )
                })?;
                Some(root_store(&pem, &path)?)
            }
            _ => None,
        },
    };
    if roots.is_none() && matches!(mode, TlsMode::VerifyCa | TlsMode::VerifyFull) {
        return Err(format!(
            "sslmode={} needs the certificate authority to check the server against, and there is no \
             ~/.postgresql/root.crt: give sslrootcert=FILE (your provider's CA bundle, e.g. RDS's \
             global-bundle.pem), sslrootcert=system for the system's trusted roots, or sslmode=require \
             to encrypt without checking",
            if mode == TlsMode::VerifyCa { "verify-ca" } else { "verify-full" }
        ));
    }

    // Client certificate.
    let (cert_path, cert_given) = match get("sslcert") {
        Some(f) => (Some(setting_path(f, env)), true),
        None => (env.home_file(".postgresql/postgresql.crt"), false),
    };
    let client = match cert_path {
        Some(path) if path.is_file() => {
            let pem = std::fs::read(&path).map_err(|e| {
                format!(
                    "cannot read the client certificate \"{}\": {e}",
                    path.display()
                )
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!(
                        "the client certificate \"{}\" is not PEM: {e}",
                        path.display()
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "the client certificate \"{}\" holds no certificate",
                    path.display()
                ));
            }
            let key_path = match get("sslkey") {
                Some(f) => setting_path(f, env),
                None => env
                    .home_file(".postgresql/postgresql.key")
                    .unwrap_or_else(|| path.with_extension("key")),
            };
            let key = read_private_key(&key_path)?;
            Some((certs, key))
        }
        Some(path) if cert_given => {
            return Err(format!(
                "the client certificate file \"{}\" (sslcert) does not exist",
                path.display()
            ))
        }
        _ => None,
    };

    let mut versions: Vec<&'static rustls::SupportedProtocolVersion> =
        vec![&rustls::version::TLS13, &rustls::version::TLS12];
    match get("ssl_min_protocol_version") {
        None | Some("TLSv1") | Some("TLSv1.1") | Some("TLSv1.2") => {}
        Some("TLSv1.3") => versions.retain(|v| v.version == rustls::ProtocolVersion::TLSv1_3),
        Some(v) => {
            return Err(format!(
                "ssl_min_protocol_version={v} is not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"
            ))
        }
    }
    match get("ssl_max_protocol_version") {
        None | Some("TLSv1.3") => {}
        Some("TLSv1.2") => versions.retain(|v| v.version == rustls::ProtocolVersion::TLSv1_2),
        Some(v) => {
            return Err(format!(
                "ssl_max_protocol_version={v}: cutover speaks TLSv1.2 and TLSv1.3 only"
            ))
        }
    }
    if versions.is_empty() {
        return Err("ssl_min_protocol_version is above ssl_max_protocol_version".to_owned());
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&versions)
        .map_err(|e| format!("TLS settings: {e}"))?;
    let verified = roots.is_some();
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match roots {
        Some(store) => {
            let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(store),
                Arc::clone(&provider),
            )
            .build()
            .map_err(|e| format!("TLS settings: {e}"))?;
            if mode == TlsMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
        None => Arc::new(NoVerification),
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some((certs, key)) => builder.with_client_auth_cert(certs, key).map_err(|e| {
            format!("the client certificate and key (sslcert, sslkey) do not fit together: {e}")
        })?,
        None => builder.with_no_client_auth(),
    };
    config.enable_sni = get("sslsni") != Some("0");
    Ok(Some((Arc::new(config), verified)))
}

/// The CA certificates of a PEM file.
fn root_store(pem: &[u8], path: &std::path::Path) -> Result<rustls::RootCertStore, String> {
    let mut store = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| {
            format!(
                "the root certificate file \"{}\" is not PEM: {e}",
                path.display()
            )
        })?;
        store.add(cert).map_err(|e| {
            format!(
                "the root certificate file \"{}\" holds a certificate that cannot be used: {e}",
                path.display()
            )
        })?;
    }
    if store.is_empty() {
        return Err(format!(
            "the root certificate file \"{}\" holds no certificate",
            path.display()
        ));
    }
    Ok(store)
}

/// A client's private key, refused (as libpq does) when others may read it: at most 0600, or
/// 0640 when owned by root.
fn read_private_key(path: &std::path::Path) -> Result<PrivateKeyDer<'static>, String> {
    let meta = std::fs::metadata(path).map_err(|e| {
        format!(
            "certificate present, but not the private key file \"{}\" (sslkey): {e}",
            path.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let mode = meta.permissions().mode();
        let ok = mode & 0o077 == 0 || (meta.uid() == 0 && mode & 0o037 == 0);
        if !ok {
            return Err(format!(
                "private key file \"{}\" has group or world access; it must be u=rw (0600) or less if owned by you, or u=rw,g=r (0640) or less if owned by root",
                path.display()
            ));
        }
    }
    let _ = meta;
    let pem = std::fs::read(path).map_err(|e| {
        format!(
            "cannot read the private key file \"{}\": {e}",
            path.display()
        )
    })?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "the private key file \"{}\" holds no PEM private key (PKCS#8, PKCS#1 or SEC1; encrypted keys are not supported): {e}",
            path.display()
        )
    })
}

/// `verify-ca`: the chain must lead to a trusted root; the host name is not checked.
#[derive(Debug)]
struct ChainOnly(Arc<rustls::client::WebPkiServerVerifier>);

impl rustls::client::danger::ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        // webpki checks the chain before the name: a name error means the chain is good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            Err(rustls::Error::InvalidCertificate(
                NotValidForName | NotValidForNameContext { .. },
            )) => Ok(rustls::client::danger::ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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

    fn env() -> Environment {
        Environment::new(None, [], None, Some("me".to_owned()))
    }

    #[test]
    fn urls_parse_with_sslmodes() {
        let e = PgEndpoint::resolve(
            "postgres://u:p@127.0.0.1:5/app?sslmode=require&application_name=x",
            &env(),
        )
        .unwrap();
        assert_eq!(e.tls, TlsMode::Require);
        assert_eq!(e.dbname(), "app");
        assert_eq!(e.config.get_application_name(), Some("x"));
        assert!(!format!("{e:?}").contains(":p@"));
        assert!(PgEndpoint::resolve("postgres://u@h/app?sslmode=bogus", &env()).is_err());
        // libpq: the database defaults to the user's name.
        let e = PgEndpoint::resolve("postgres://u:secret@h:5432", &env()).unwrap();
        assert_eq!(e.dbname(), "u");
        assert_eq!(e.config.get_application_name(), Some("cutover"));
        // verify-* needs a CA to check against.
        let err = PgEndpoint::resolve("postgres://u:secret@h/app?sslmode=verify-full", &env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslrootcert=system"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        let err = PgEndpoint::resolve("host=h sslrootcert=system sslmode=require", &env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("weak sslmode"), "{err}");
    }

    #[test]
    fn keyword_strings_and_their_errors() {
        let e = PgEndpoint::resolve(
            "host=db port=6543 dbname='my db' user=bob password='s e' connect_timeout=0 keepalives_count=5",
            &env(),
        )
        .unwrap();
        assert_eq!(e.dbname(), "my db");
        assert_eq!(e.config.get_ports(), &[6543]);
        assert_eq!(e.config.get_password(), Some(&b"s e"[..]));
        assert_eq!(e.config.get_keepalives_retries(), Some(5));
        assert_eq!(e.connect_timeout, None);
        assert_eq!(e.redacted(), "host=db port=6543 dbname='my db' user=bob");
        let err = PgEndpoint::resolve("host=db dbname", &env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the PostgreSQL connection string: missing \"=\" after \"dbname\""),
            "{err}"
        );
        let err = PgEndpoint::resolve("host=db sslcrl=x.crl", &env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("sslcrl is not supported"), "{err}");
        assert_eq!(
            redact("host=db password='a b' user=x"),
            "host=db password=*** user=x"
        );
    }
}
