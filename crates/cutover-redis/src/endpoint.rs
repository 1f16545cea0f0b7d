//! Where a Redis server is and how cutover writes to it:
//! `redis://[user:password@]host:port[/db]?prefix=…&format=hash|json&durability=none`.

use std::time::Duration;

use cutover_connector::{percent_decode, runtime, ConnectorError, ErrorKind, OpenOptions};
use redis::aio::MultiplexedConnection;

/// The URL's query parameters cutover understands.
const PARAMS: &str = "prefix, format, durability";

/// How a row is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A hash: one field per column (NULL: the field is absent). The default.
    Hash,
    /// A string holding a JSON object: one member per column, each value a JSON string of the
    /// field's text (bytes as `\x` and hex; NULL: the member is absent).
    Json,
}

/// A Redis server, resolved: the configuration half of the connector.
#[derive(Debug, Clone)]
pub struct RedisEndpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
    /// Put before every key cutover writes (rows, key indexes, `_cutover:` state).
    pub prefix: String,
    pub format: Format,
    /// `durability=none`: write although the server does not keep an append-only file.
    pub(crate) accept_volatile: bool,
}

fn invalid(msg: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorKind::InvalidInput, msg)
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(_)) => {
            let (userinfo, host) = rest.rsplit_once('@').unwrap_or(("", rest));
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

impl RedisEndpoint {
    /// Parses the URL. A missing password is read from `REDISCLI_AUTH` (under the side's
    /// environment prefix, as `NEW_REDISCLI_AUTH`), as `redis-cli` does, so no password needs
    /// to be on the command line. `rediss://` (TLS) is refused: this build has no TLS for Redis.
    pub fn parse(url: &str, opts: &OpenOptions) -> Result<RedisEndpoint, ConnectorError> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| invalid(format!("not a Redis URL: {}", redact(url))))?;
        match scheme.to_ascii_lowercase().as_str() {
            "redis" => {}
            "rediss" => {
                return Err(invalid(
                    "rediss:// (Redis over TLS) is not supported by this build of cutover: reach \
                     the server over a TLS tunnel (stunnel, spiped) and use redis://",
                ))
            }
            _ => {
                return Err(invalid(format!(
                    "not a Redis URL: {}; use redis://host:6379/0",
                    redact(url)
                )))
            }
        }
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
                    Some(percent_decode(u, "user")?).filter(|u| !u.is_empty()),
                    Some(percent_decode(p, "password")?),
                ),
                None => (
                    Some(percent_decode(u, "user")?).filter(|u| !u.is_empty()),
                    None,
                ),
            },
            None => (None, None),
        };
        let password = password.or_else(|| {
            let key = format!("{}REDISCLI_AUTH", opts.env_prefix.as_deref().unwrap_or(""));
            std::env::var(key).ok()
        });
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (
                h.to_owned(),
                p.parse::<u16>()
                    .map_err(|_| invalid(format!("bad port {p:?} in {}", redact(url))))?,
            ),
            None => (hostport.to_owned(), 6379),
        };
        let host = if host.is_empty() {
            "127.0.0.1".to_owned()
        } else {
            host
        };
        let db = match path.trim_matches('/') {
            "" => 0,
            d => d.parse::<i64>().map_err(|_| {
                invalid(format!(
                    "the database of {} must be a number (redis://host:6379/0), not {d:?}",
                    redact(url)
                ))
            })?,
        };
        let mut e = RedisEndpoint {
            host,
            port,
            user,
            password,
            db,
            prefix: String::new(),
            format: Format::Hash,
            accept_volatile: false,
        };
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v, k)?;
            match k {
                "prefix" => e.prefix = v,
                "format" => {
                    e.format = match v.as_str() {
                        "hash" => Format::Hash,
                        "json" => Format::Json,
                        _ => return Err(invalid(format!("format={v}: use format=hash or format=json"))),
                    }
                }
                "durability" => match v.as_str() {
                    "none" => e.accept_volatile = true,
                    "aof" => e.accept_volatile = false,
                    _ => return Err(invalid(format!("durability={v}: use durability=none to accept a server without an append-only file"))),
                },
                _ => {
                    return Err(invalid(format!(
                        "unknown parameter {k:?} in the Redis URL; cutover understands: {PARAMS}"
                    )))
                }
            }
        }
        if e.prefix.contains('\\') {
            return Err(invalid("prefix must not contain `\\`"));
        }
        Ok(e)
    }

    /// Where the server is, without the password.
    pub fn describe(&self) -> String {
        let user = self
            .user
            .as_deref()
            .map(|u| format!("{u}@"))
            .unwrap_or_default();
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!(" (prefix {:?})", self.prefix)
        };
        format!(
            "redis://{user}{}:{}/{}{prefix}",
            self.host, self.port, self.db
        )
    }

    /// The migration's name: the database number and the prefix.
    pub(crate) fn migration_name(&self) -> String {
        format!("redis-db{}{}", self.db, self.prefix)
    }

    /// Opens one connection (on the process's runtime).
    pub(crate) fn connect(&self) -> Result<Conn, ConnectorError> {
        let mut info = redis::RedisConnectionInfo::default().set_db(self.db);
        if let Some(u) = &self.user {
            info = info.set_username(u);
        }
        if let Some(p) = &self.password {
            info = info.set_password(p);
        }
        let addr = redis::ConnectionAddr::Tcp(self.host.clone(), self.port);
        let conn_info = redis::IntoConnectionInfo::into_connection_info(addr)
            .map_err(|e| error(e, &self.describe()))?
            .set_redis_settings(info);
        let client = redis::Client::open(conn_info).map_err(|e| error(e, &self.describe()))?;
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(10)))
            .set_response_timeout(Some(Duration::from_secs(120)));
        let con = runtime::block_on(client.get_multiplexed_async_connection_with_config(&config))
            .map_err(|e| error(e, &format!("connecting to {}", self.describe())))?;
        Ok(Conn { con })
    }
}

/// One connection; every call waits on the calling thread (`runtime::block_on`).
pub(crate) struct Conn {
    con: MultiplexedConnection,
}

impl Conn {
    pub(crate) fn query<T: redis::FromRedisValue>(
        &mut self,
        cmd: &redis::Cmd,
    ) -> Result<T, ConnectorError> {
        runtime::block_on(cmd.query_async(&mut self.con)).map_err(|e| error(e, "redis"))
    }

    pub(crate) fn pipe<T: redis::FromRedisValue>(
        &mut self,
        pipe: &redis::Pipeline,
    ) -> Result<T, ConnectorError> {
        runtime::block_on(pipe.query_async(&mut self.con)).map_err(|e| error(e, "redis"))
    }
}

/// A driver error as a classified `ConnectorError`.
pub(crate) fn error(e: redis::RedisError, context: &str) -> ConnectorError {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        ErrorKind::Connect
    } else if matches!(e.kind(), redis::ErrorKind::AuthenticationFailed) {
        ErrorKind::Auth
    } else if e.code() == Some("BUSY")
        || e.code() == Some("LOADING")
        || e.code() == Some("TRYAGAIN")
    {
        ErrorKind::Busy
    } else if e.code() == Some("OOM") {
        ErrorKind::DiskFull
    } else {
        ErrorKind::Database
    };
    ConnectorError::new(kind, format!("{context}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_url_and_refuses_what_it_cannot_do() {
        let o = OpenOptions::default();
        let e =
            RedisEndpoint::parse("redis://u:p%40ss@h:7000/3?prefix=app:&format=json", &o).unwrap();
        assert_eq!((e.host.as_str(), e.port, e.db), ("h", 7000, 3));
        assert_eq!(
            (e.user.as_deref(), e.password.as_deref()),
            (Some("u"), Some("p@ss"))
        );
        assert_eq!((e.prefix.as_str(), e.format), ("app:", Format::Json));
        assert!(!e.describe().contains("p@ss"));
        let d = RedisEndpoint::parse("redis://localhost", &o).unwrap();
        assert_eq!((d.port, d.db, d.format), (6379, 0, Format::Hash));
        for bad in [
            "rediss://h:1",
            "redis://h:1/x",
            "redis://h:1?format=xml",
            "redis://h:1?nope=1",
        ] {
            let err = RedisEndpoint::parse(bad, &o).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad}");
        }
        assert!(redact("redis://u:secret@h:1").contains("***"));
        assert!(!redact("redis://u:secret@h:1").contains("secret"));
    }
}
