//! A blocking session over `mysql_async` on the process's one runtime
//! (`cutover_connector::runtime`): the contracts are synchronous, so every call waits on the
//! caller's thread while the runtime drives the socket. No runtime of its own, no pool.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use cutover_connector::{runtime, ConnectorError, ErrorKind};
use mysql_async::prelude::{FromRow, Queryable};
use mysql_async::{Conn, Params};

use crate::endpoint::MySqlEndpoint;
use crate::error;

/// Statements every session runs first: UTF-8 in full (`utf8mb4`), timestamps in UTC (a
/// `TIMESTAMP` reads as the instant it stores), and strict SQL so that a value the server cannot
/// hold is an error, never a silent truncation; an explicit 0 in an `AUTO_INCREMENT` column
/// stays 0.
pub(crate) const SESSION: &[&str] = &[
    "SET NAMES utf8mb4 COLLATE utf8mb4_bin",
    "SET time_zone = '+00:00'",
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_AUTO_VALUE_ON_ZERO,NO_ENGINE_SUBSTITUTION,\
     ERROR_FOR_DIVISION_BY_ZERO,NO_ZERO_IN_DATE,NO_ZERO_DATE'",
];

/// One session, used from one thread at a time.
pub struct Client {
    conn: Option<Conn>,
    /// Set when a call failed with a connection error: the owner reconnects.
    broken: bool,
    what: String,
}

impl Client {
    /// Connects to the endpoint's database (or to no database, `None`), within the URL's
    /// connect timeout, and runs [`SESSION`].
    pub fn connect(ep: &MySqlEndpoint, database: Option<&str>) -> Result<Client, ConnectorError> {
        let opts = ep.opts(database)?;
        let what = ep.describe();
        let timeout = ep.connect_timeout;
        let conn = runtime::block_on(async move {
            match tokio::time::timeout(timeout, Conn::new(opts)).await {
                Ok(r) => r.map_err(|e| error::map(format!("connecting to {what}"), e)),
                Err(_) => Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    format!(
                        "connecting to {what}: no answer within {} s (raise ?connect-timeout=)",
                        timeout.as_secs()
                    ),
                )),
            }
        })?;
        let mut c = Client {
            conn: Some(conn),
            broken: false,
            what: ep.describe(),
        };
        for s in SESSION {
            c.query_drop(s)?;
        }
        Ok(c)
    }

    /// Whether a call failed because the connection broke (then this client is done).
    pub fn is_broken(&self) -> bool {
        self.broken || self.conn.as_ref().is_none_or(Conn::is_disconnected)
    }

    /// The server's version, `(major, minor, patch)`.
    pub fn server_version(&self) -> (u16, u16, u16) {
        self.conn.as_ref().map_or((0, 0, 0), Conn::server_version)
    }

    /// Whether the server is MariaDB (which shows in its version string).
    pub fn is_mariadb(&mut self) -> bool {
        self.query_first::<String>("SELECT VERSION()")
            .ok()
            .flatten()
            .is_some_and(|v| v.to_ascii_lowercase().contains("mariadb"))
    }

    /// Runs `f` with the connection on the process's runtime and waits for it here.
    pub fn run<'a, T, F>(
        &'a mut self,
        context: impl Display,
        f: impl FnOnce(&'a mut Conn) -> F,
    ) -> Result<T, ConnectorError>
    where
        F: Future<Output = Result<T, mysql_async::Error>> + 'a,
    {
        let Some(conn) = self.conn.as_mut() else {
            return Err(ConnectorError::new(
                ErrorKind::Connect,
                format!("{context}: the session with {} is closed", self.what),
            ));
        };
        let out = runtime::block_on(f(conn));
        out.map_err(|e| {
            let mapped = error::map(&context, e);
            if mapped.kind() == ErrorKind::Connect {
                self.broken = true;
            }
            mapped
        })
    }

    pub fn query_drop(&mut self, sql: &str) -> Result<(), ConnectorError> {
        let ctx = shorten(sql);
        self.run(ctx, |c| c.query_drop(sql))
    }

    pub fn query<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> Result<Vec<T>, ConnectorError> {
        let ctx = shorten(sql);
        self.run(ctx, |c| c.query(sql))
    }

    pub fn query_first<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
    ) -> Result<Option<T>, ConnectorError> {
        let ctx = shorten(sql);
        self.run(ctx, |c| c.query_first(sql))
    }

    pub fn exec_drop(&mut self, sql: &str, params: Params) -> Result<(), ConnectorError> {
        let ctx = shorten(sql);
        self.run(ctx, |c| c.exec_drop(sql, params))
    }

    pub fn exec<T: FromRow + Send + 'static>(
        &mut self,
        sql: &str,
        params: Params,
    ) -> Result<Vec<T>, ConnectorError> {
        let ctx = shorten(sql);
        self.run(ctx, |c| c.exec(sql, params))
    }

    /// The connection itself, for what the methods above do not cover (binlog streams, text
    /// results with column metadata). `None` once closed.
    pub fn conn(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// Closes the session now, telling the server (what dropping does too).
    pub fn close(mut self) {
        self.disconnect();
    }

    fn disconnect(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !conn.is_disconnected() {
                let _ = runtime::block_on(async move {
                    tokio::time::timeout(Duration::from_secs(2), conn.disconnect()).await
                });
            }
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.disconnect();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("what", &self.what).finish()
    }
}

/// A statement as an error's context: `running SELECT …` cut at 80 characters.
pub(crate) fn shorten(sql: &str) -> String {
    let one_line: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 80 {
        format!("running {}…", one_line.chars().take(80).collect::<String>())
    } else {
        format!("running {one_line}")
    }
}

/// `name` as a quoted MySQL identifier: `` `a``b` ``.
pub(crate) fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `db`.`table`.
pub(crate) fn qualified(db: &str, table: &str) -> String {
    format!("{}.{}", ident(db), ident(table))
}

#[allow(dead_code)]
pub(crate) fn server_code(e: &mysql_async::Error) -> Option<u16> {
    error::code(e)
}
