//! A connection that sends a whole transaction at once: `BEGIN`, every statement and `COMMIT`
//! go out together and their answers come back together (the protocol's pipelining, which
//! tokio-postgres does when requests are issued concurrently). An apply batch then costs one
//! round trip to the target instead of one per statement, which is most of the replication lag
//! on a busy source. The connection runs as a task on the process's runtime
//! ([`cutover_connector::runtime`]); the calls wait for it with [`runtime::block_on`].

use std::collections::HashMap;

use bytes::BytesMut;
use cutover_connector::{runtime, ConnectorError};
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use crate::endpoint::PgEndpoint;
use crate::error::map;

/// A statement's parameter: a text array (one per column, for `unnest`) or one text value.
#[derive(Debug, Clone)]
pub(crate) enum Param {
    Texts(Vec<Option<String>>),
    Text(Option<String>),
}

impl ToSql for Param {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Param::Texts(v) => v.to_sql(ty, out),
            Param::Text(t) => t.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        <Vec<Option<String>> as ToSql>::accepts(ty) || <Option<String> as ToSql>::accepts(ty)
    }

    to_sql_checked!();
}

/// One statement of a batch, with what to say if it fails.
#[derive(Debug, Clone)]
pub(crate) struct Stmt {
    pub sql: String,
    pub params: Vec<Param>,
    pub what: String,
}

pub(crate) struct Pipelined {
    client: tokio_postgres::Client,
    prepared: HashMap<String, tokio_postgres::Statement>,
}

impl Pipelined {
    /// Connects and runs `setup` (session settings), within the endpoint's connect timeout.
    /// Statements have no timeout (apply batches may rightly take long).
    pub(crate) fn connect(endpoint: &PgEndpoint, setup: &str) -> Result<Pipelined, ConnectorError> {
        let client = runtime::block_on(endpoint.connect_async(setup))?;
        Ok(Pipelined {
            client,
            prepared: HashMap::new(),
        })
    }

    /// Whether the connection is known to be gone (the server closed it, or it failed): then
    /// every statement on it fails, and it must be replaced.
    pub(crate) fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Runs `sql` alone (outside a batch).
    pub(crate) fn execute_simple(&mut self, sql: &str) -> Result<(), tokio_postgres::Error> {
        runtime::block_on(self.client.batch_execute(sql))
    }

    /// Runs `stmts` in one transaction, sent at once. On any error nothing is committed and the
    /// first failing statement's error is returned.
    pub(crate) fn transaction(&mut self, stmts: &[Stmt], ctx: &str) -> Result<(), ConnectorError> {
        if stmts
            .iter()
            .any(|s| s.params.is_empty() && s.sql.starts_with("ALTER "))
        {
            // Statements after a change of a table's columns can only be prepared once it ran.
            return self.one_by_one(stmts, ctx);
        }
        // Statements not seen before are prepared first (once per connection).
        for s in stmts {
            if !self.prepared.contains_key(&s.sql) {
                let p = runtime::block_on(self.client.prepare(&s.sql))
                    .map_err(|e| map(format!("{ctx}: {}", s.what), e))?;
                self.prepared.insert(s.sql.clone(), p);
            }
        }
        let client = &self.client;
        let prepared = &self.prepared;
        let begin_and_writes = async {
            let begin = client.batch_execute("BEGIN");
            let writes = futures_util::future::join_all(stmts.iter().map(|s| {
                let params: Vec<&(dyn ToSql + Sync)> =
                    s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let stmt = &prepared[&s.sql];
                async move { client.execute(stmt, &params).await }
            }));
            futures_util::future::join(begin, writes).await
        };
        #[cfg(not(feature = "failpoints"))]
        let (begin, writes, commit) = runtime::block_on(async {
            let commit = client.batch_execute("COMMIT");
            let ((begin, writes), commit) =
                futures_util::future::join(begin_and_writes, commit).await;
            (begin, writes, commit)
        });
        // With failpoints, the writes are awaited before COMMIT is sent (one more round trip),
        // so that the failpoint falls between them.
        #[cfg(feature = "failpoints")]
        let (begin, writes, commit) = {
            let (begin, writes) = runtime::block_on(begin_and_writes);
            if begin.is_ok() && writes.iter().all(Result::is_ok) {
                if let Err(e) = before_commit() {
                    let _ = self.execute_simple("ROLLBACK");
                    return Err(e);
                }
            }
            let commit = runtime::block_on(self.client.batch_execute("COMMIT"));
            (begin, writes, commit)
        };
        let first_error = begin
            .err()
            .map(|e| map(ctx, e))
            .or_else(|| {
                writes
                    .into_iter()
                    .zip(stmts)
                    .find_map(|(r, s)| r.err().map(|e| map(format!("{ctx}: {}", s.what), e)))
            })
            .or_else(|| commit.err().map(|e| map(ctx, e)));
        match first_error {
            None => Ok(()),
            Some(e) => {
                // A failed statement turned COMMIT into a rollback; make sure no transaction
                // is left open either way.
                let _ = self.execute_simple("ROLLBACK");
                Err(e)
            }
        }
    }

    /// `stmts` in one transaction, one round trip each (batches that change tables: rare).
    fn one_by_one(&mut self, stmts: &[Stmt], ctx: &str) -> Result<(), ConnectorError> {
        let client = &self.client;
        let result = runtime::block_on(async {
            client
                .batch_execute("BEGIN")
                .await
                .map_err(|e| map(ctx, e))?;
            for s in stmts {
                let what = || format!("{ctx}: {}", s.what);
                if s.params.is_empty() {
                    client
                        .batch_execute(&s.sql)
                        .await
                        .map_err(|e| map(what(), e))?;
                    continue;
                }
                let params: Vec<&(dyn ToSql + Sync)> =
                    s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect();
                let stmt = client.prepare(&s.sql).await.map_err(|e| map(what(), e))?;
                client
                    .execute(&stmt, &params)
                    .await
                    .map_err(|e| map(what(), e))?;
            }
            #[cfg(feature = "failpoints")]
            before_commit()?;
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| map(ctx, e))
        });
        if result.is_err() {
            let _ = self.execute_simple("ROLLBACK");
        }
        result
    }
}

/// Crash tests' failpoint `postgres::sink::before-commit`, after a batch's writes and before its
/// `COMMIT` (feature `failpoints`): `panic` ends the apply as a crash would (the server rolls
/// the transaction back when the connection goes), `return` fails it.
#[cfg(feature = "failpoints")]
fn before_commit() -> Result<(), ConnectorError> {
    fail::fail_point!("postgres::sink::before-commit", |_| {
        Err(ConnectorError::new(
            cutover_connector::ErrorKind::Database,
            "failpoint postgres::sink::before-commit",
        ))
    });
    Ok(())
}
