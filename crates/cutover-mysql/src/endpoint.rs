//! Where a MySQL or MariaDB database is and how to reach it: `mysql://user:pass@host:port/db`
//! (also `mariadb://`), with cutover's options as query parameters.

use std::collections::HashMap;
use std::time::Duration;

use cutover_connector::{percent_decode, ConnectorError, ErrorKind, OpenOptions};
use mysql_async::{Opts, OptsBuilder, SslOpts};

/// The URL's query parameters cutover understands.
const PARAMS: &str = "ssl-mode, ssl-ca, connect-timeout, server-id, zero-date, tinyint1";

/// What a zero date (`0000-00-00`, or a date with a zero month or day) becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ZeroDate {
    /// Refused, naming table, column and key (the default: no value is changed silently).
    #[default]
    Error,
    /// Carried as NULL (`?zero-date=null`): the user's choice, documented.
    Null,
}

/// A MySQL/MariaDB database, resolved: the configuration half of the connector.
#[derive(Debug, Clone)]
pub struct MySqlEndpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: String,
    pub(crate) password: Option<String>,
    pub(crate) database: String,
    pub(crate) ssl: SslMode,
    pub(crate) ssl_ca: Option<String>,
    pub(crate) connect_timeout: Duration,
    /// The server id cutover's binlog reader registers with (`?server-id=`); `None`: one
    /// derived from the migration's name.
    pub(crate) server_id: Option<u32>,
    pub(crate) zero_date: ZeroDate,
    /// Whether `tinyint(1)` columns are booleans (the default) or integers (`?tinyint1=int`).
    pub(crate) tinyint1_bool: bool,
    /// The migration's name (names nothing on a MySQL source; the target's state is in the
    /// target database).
    #[allow(dead_code)] // read by the target side (branch `mysql`)
    pub(crate) name: Option<String>,
    pub(crate) tables: Vec<String>,
    pub(crate) exclude: Vec<String>,
    #[allow(dead_code)] // read by the target side (branch `mysql`)
    pub(crate) truncate: bool,
    #[allow(dead_code)] // read by the target side (branch `mysql`)
    pub(crate) jobs: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SslMode {
    Disabled,
    Preferred,
    Required,
    VerifyCa,
    VerifyIdentity,
}

fn invalid(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, msg)
}

impl MySqlEndpoint {
    /// Parses `mysql://[user[:password]@]host[:port]/database[?param=value&…]` (or
    /// `mariadb://`). A missing password is read from `MYSQL_PWD` (under the side's
    /// environment prefix, as `OLD_MYSQL_PWD`), so no password needs to be on the command line.
    pub fn parse(url: &str, opts: &OpenOptions) -> Result<MySqlEndpoint, ConnectorError> {
        let env = |name: &str| {
            let key = format!("{}{name}", opts.env_prefix.as_deref().unwrap_or(""));
            std::env::var(key).ok()
        };
        let rest = url
            .split_once("://")
            .filter(|(s, _)| matches!(s.to_ascii_lowercase().as_str(), "mysql" | "mariadb"))
            .map(|(_, r)| r)
            .ok_or_else(|| {
                invalid(format!(
                    "not a MySQL URL: {}; use mysql://user@host:3306/database",
                    redact(url)
                ))
            })?;
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (user, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((u, p)) => (
                    percent_decode(u, "user")?,
                    Some(percent_decode(p, "password")?),
                ),
                None => (percent_decode(u, "user")?, None),
            },
            None => (env("USER").unwrap_or_else(|| "root".to_owned()), None),
        };
        let password = password.or_else(|| env("MYSQL_PWD"));
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => {
                let port = p.parse::<u16>().map_err(|_| {
                    invalid(format!("the port {p:?} in {} is not a number", redact(url)))
                })?;
                (h.to_owned(), port)
            }
            _ => (hostport.to_owned(), 3306),
        };
        let host = if host.is_empty() {
            "localhost".to_owned()
        } else {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        };
        let database = percent_decode(path.trim_end_matches('/'), "database")?;
        if database.is_empty() {
            return Err(invalid(format!(
                "{} names no database: add it after the host, mysql://user@host:3306/DATABASE",
                redact(url)
            )));
        }
        let mut params: HashMap<String, String> = HashMap::new();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = k.to_ascii_lowercase().replace('_', "-");
            params.insert(k, percent_decode(v, "parameters")?);
        }
        let mut e = MySqlEndpoint {
            host,
            port,
            user,
            password,
            database,
            ssl: SslMode::Preferred,
            ssl_ca: None,
            connect_timeout: Duration::from_secs(10),
            server_id: None,
            zero_date: ZeroDate::Error,
            tinyint1_bool: true,
            name: opts.name.clone(),
            tables: opts.tables.clone(),
            exclude: opts.exclude.clone(),
            truncate: opts.truncate,
            jobs: opts.jobs.max(1),
        };
        for (k, v) in params {
            match k.as_str() {
                "ssl-mode" | "sslmode" => {
                    e.ssl = match v.to_ascii_lowercase().replace('-', "_").as_str() {
                        "disabled" | "disable" => SslMode::Disabled,
                        "preferred" | "prefer" => SslMode::Preferred,
                        "required" | "require" => SslMode::Required,
                        "verify_ca" => SslMode::VerifyCa,
                        "verify_identity" | "verify_full" => SslMode::VerifyIdentity,
                        other => {
                            return Err(invalid(format!(
                                "ssl-mode={other} is not one of DISABLED, PREFERRED, REQUIRED, \
                                 VERIFY_CA, VERIFY_IDENTITY"
                            )))
                        }
                    }
                }
                "ssl-ca" => e.ssl_ca = Some(v),
                "connect-timeout" => {
                    let secs = v.parse::<u64>().map_err(|_| {
                        invalid(format!("connect-timeout={v} is not a number of seconds"))
                    })?;
                    e.connect_timeout = Duration::from_secs(if secs == 0 { 86_400 } else { secs });
                }
                "server-id" => {
                    e.server_id =
                        Some(v.parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| {
                            invalid(format!("server-id={v} is not a positive 32-bit number"))
                        })?)
                }
                "zero-date" => {
                    e.zero_date = match v.to_ascii_lowercase().as_str() {
                        "error" => ZeroDate::Error,
                        "null" => ZeroDate::Null,
                        other => {
                            return Err(invalid(format!(
                                "zero-date={other} is not one of error (the default), null"
                            )))
                        }
                    }
                }
                "tinyint1" => {
                    e.tinyint1_bool = match v.to_ascii_lowercase().as_str() {
                        "bool" | "boolean" => true,
                        "int" | "integer" => false,
                        other => {
                            return Err(invalid(format!(
                                "tinyint1={other} is not one of bool (the default), int"
                            )))
                        }
                    }
                }
                other => {
                    return Err(invalid(format!(
                        "unknown parameter {other:?} in {}; cutover understands {PARAMS}",
                        redact(url)
                    )))
                }
            }
        }
        if e.ssl_ca.is_some() && matches!(e.ssl, SslMode::Preferred) {
            e.ssl = SslMode::VerifyCa;
        }
        Ok(e)
    }

    /// `mysql://user@host:port/database`, without the password.
    pub fn describe(&self) -> String {
        format!(
            "mysql://{}@{}:{}/{}",
            self.user, self.host, self.port, self.database
        )
    }

    pub fn database(&self) -> &str {
        &self.database
    }

    /// The driver's options for a session on this database (`database`: `None` for one that
    /// is not in the database, to create it).
    pub(crate) fn opts(&self, database: Option<&str>) -> Result<Opts, ConnectorError> {
        let mut b = OptsBuilder::default()
            .ip_or_hostname(self.host.clone())
            .tcp_port(self.port)
            .user(Some(self.user.clone()))
            .pass(self.password.clone())
            .db_name(database.map(str::to_owned))
            .prefer_socket(false)
            .stmt_cache_size(64)
            .max_allowed_packet(Some(64 << 20));
        let ssl = match self.ssl {
            SslMode::Disabled | SslMode::Preferred => None,
            SslMode::Required => Some(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            SslMode::VerifyCa => Some(SslOpts::default().with_danger_skip_domain_validation(true)),
            SslMode::VerifyIdentity => Some(SslOpts::default()),
        };
        let ssl = match (ssl, &self.ssl_ca) {
            (Some(s), Some(ca)) => Some(
                s.with_root_certs(vec![std::path::PathBuf::from(ca).into()])
                    .with_disable_built_in_roots(true),
            ),
            (s, _) => s,
        };
        b = b.ssl_opts(ssl);
        Ok(b.into())
    }
}

/// `url` with any password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (authority, tail) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let masked = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{masked}@{host}{tail}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_options_and_refuse_what_they_cannot_mean() {
        let o = OpenOptions::default();
        let e = MySqlEndpoint::parse(
            "mysql://app:p%40ss@db.example:3307/shop?ssl-mode=REQUIRED",
            &o,
        )
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.user.as_str()),
            ("db.example", 3307, "app")
        );
        assert_eq!(e.password.as_deref(), Some("p@ss"));
        assert_eq!(e.database, "shop");
        assert_eq!(e.ssl, SslMode::Required);
        assert_eq!(e.describe(), "mysql://app@db.example:3307/shop");
        let e = MySqlEndpoint::parse("mariadb://root@127.0.0.1/x?zero-date=null", &o).unwrap();
        assert_eq!((e.port, e.zero_date), (3306, ZeroDate::Null));
        assert!(e.tinyint1_bool);
        let e = MySqlEndpoint::parse("mysql://root@h/x?tinyint1=int", &o).unwrap();
        assert!(!e.tinyint1_bool);
        let err = MySqlEndpoint::parse("mysql://root@h/", &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("names no database"), "{err}");
        let err = MySqlEndpoint::parse("mysql://root:secret@h/db?sslmode=verify-full&x=1", &o)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("unknown parameter \"x\"") && !err.contains("secret"),
            "{err}"
        );
        let err = MySqlEndpoint::parse("mysql://h:port/db", &o)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a number"), "{err}");
        assert_eq!(redact("mysql://u:pw@h:1/d?a=b"), "mysql://u:***@h:1/d?a=b");
    }
}
