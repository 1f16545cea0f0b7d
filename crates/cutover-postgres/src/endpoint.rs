//! Connection settings from a libpq-style URL, with TLS through rustls.

use std::str::FromStr;
use std::sync::Arc;

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
            config.connect_timeout(std::time::Duration::from_secs(10));
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
            async_config.connect_timeout(std::time::Duration::from_secs(10));
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

    /// Opens a connection with `standard_conforming_strings` on and UTC times. Cutover's own
    /// sessions may write where the application is fenced off (`default_transaction_read_only`
    /// set on the database by sync or switch).
    pub fn connect(&self) -> Result<Client, ConnectorError> {
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
            .batch_execute(
                "SET standard_conforming_strings = on; SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; \
                 SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; \
                 SET default_transaction_read_only = off",
            )
            .map_err(|e| map(ctx(), e))?;
        Ok(client)
    }
}

impl PgEndpoint {
    /// Connects with the asynchronous driver; the connection runs as a task on the caller's
    /// runtime.
    pub(crate) async fn connect_async(&self) -> Result<tokio_postgres::Client, ConnectorError> {
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
            .batch_execute(
                "SET standard_conforming_strings = on; SET TIME ZONE 'UTC'; SET DateStyle = 'ISO'; \
                 SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; \
                 SET default_transaction_read_only = off",
            )
            .await
            .map_err(|e| map(ctx(), e))?;
        Ok(client)
    }
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
