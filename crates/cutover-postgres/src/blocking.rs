//! A blocking PostgreSQL client over tokio-postgres, on the process's one runtime.
//!
//! Modelled on the `postgres` crate, without its runtime per connection: each call waits for
//! its request on the calling thread with [`runtime::block_on`], polling the connection (its
//! socket registered with the shared runtime's I/O driver) together with the request. Requests
//! are written and answers read on the calling thread; the runtime's driver only wakes it when
//! the socket is ready, and no message passes through a task of its own. Between calls nothing
//! polls the connection: what the server sends meanwhile waits in the socket, as with
//! `postgres`.
//!
//! Only what cutover uses is here: statements, transactions (nested ones as savepoints), and
//! COPY in and out as [`std::io::Write`] and [`std::io::Read`]. Errors are the driver's
//! ([`tokio_postgres::Error`]), rows its [`Row`]s. Notices from the server go to `tracing` at
//! debug level; notifications are dropped (cutover listens to none).

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use cutover_connector::runtime;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::types::ToSql;
use tokio_postgres::{
    AsyncMessage, CopyInSink, CopyOutStream, Error, Row, SimpleQueryMessage, Socket, Statement,
    ToStatement,
};

/// A connection's half that talks to the socket, whatever its TLS stream.
trait Driver: Send {
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage, Error>>>;
}

impl<S, T> Driver for tokio_postgres::Connection<S, T>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
    T: AsyncRead + AsyncWrite + Unpin + Send,
{
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage, Error>>> {
        tokio_postgres::Connection::poll_message(self, cx)
    }
}

/// What a [`Connection`] holds once it was handed to the runtime to close.
struct Closed;

impl Driver for Closed {
    fn poll_message(&mut self, _: &mut Context<'_>) -> Poll<Option<Result<AsyncMessage, Error>>> {
        Poll::Ready(None)
    }
}

/// The connection: reads the server's answers into the requests waiting for them and writes
/// the requests out, whenever it is polled.
struct Connection {
    driver: Box<dyn Driver>,
}

/// Does what the connection can without waiting. `Ready(Err)`: the connection failed (the
/// error every waiting request gets); `Ready(Ok)`: it closed; `Pending`: it waits for the socket
/// or for requests.
fn poll(driver: &mut dyn Driver, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
    loop {
        match driver.poll_message(cx) {
            Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                tracing::debug!(
                    severity = notice.severity(),
                    code = notice.code().code(),
                    "server notice: {}",
                    notice.message()
                );
            }
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
            Poll::Ready(None) => return Poll::Ready(Ok(())),
            Poll::Pending => return Poll::Pending,
        }
    }
}

impl Connection {
    /// `request`, with the connection polled alongside so that it makes progress.
    async fn drive<F, T>(&mut self, request: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        let mut request = pin!(request);
        std::future::poll_fn(|cx| {
            if let Poll::Ready(Err(e)) = poll(self.driver.as_mut(), cx) {
                return Poll::Ready(Err(e));
            }
            request.as_mut().poll(cx)
        })
        .await
    }

    /// Waits on this thread for `request` (see [`runtime::block_on`]).
    fn block_on<F, T>(&mut self, request: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, Error>>,
    {
        runtime::block_on(self.drive(request))
    }
}

impl Drop for Connection {
    /// The client is gone (it is dropped first), so the connection sends `Terminate` and ends
    /// once no answer is outstanding; a task on the runtime sees to it, so that dropping a
    /// client never blocks (nor needs a thread that may block).
    fn drop(&mut self) {
        let mut driver = std::mem::replace(&mut self.driver, Box::new(Closed));
        let close = async move {
            // A failure now has no one to tell: the session is over either way.
            let _ = std::future::poll_fn(|cx| poll(driver.as_mut(), cx)).await;
        };
        if runtime::is_local() {
            // This thread drives its own I/O (the bulk copy): nobody else would run a task, so
            // the goodbye is said here, waiting at most a second for the socket.
            runtime::block_on(async {
                let _ = tokio::time::timeout(std::time::Duration::from_secs(1), close).await;
            });
        } else {
            runtime::handle().spawn(close);
        }
    }
}

/// A connection to PostgreSQL whose calls block until the server answered.
pub struct Client {
    // Dropped before `connection`: closing the request channel is what makes the connection
    // send `Terminate` and end.
    client: tokio_postgres::Client,
    connection: Connection,
    /// How many [`Transaction`]s are open on it (the outer one and its savepoints).
    depth: u32,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a connection (TCP or Unix socket, TLS, authentication) as `config` says.
    pub(crate) async fn connect<T>(config: &tokio_postgres::Config, tls: T) -> Result<Client, Error>
    where
        T: MakeTlsConnect<Socket>,
        T::Stream: Send + 'static,
        <T::TlsConnect as TlsConnect<Socket>>::Future: Send,
    {
        let (client, connection) = config.connect(tls).await?;
        Ok(Client {
            client,
            connection: Connection {
                driver: Box::new(connection),
            },
            depth: 0,
        })
    }

    /// [`Client::batch_execute`] from async code (a connection's session setup).
    pub(crate) async fn batch_execute_async(&mut self, query: &str) -> Result<(), Error> {
        self.connection
            .drive(self.client.batch_execute(query))
            .await
    }

    /// Runs one statement; returns the number of rows it changed.
    pub fn execute<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<u64, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.connection.block_on(self.client.execute(query, params))
    }

    /// Runs one statement; returns its rows.
    pub fn query<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.connection.block_on(self.client.query(query, params))
    }

    /// Runs one statement that returns exactly one row.
    pub fn query_one<T>(&mut self, query: &T, params: &[&(dyn ToSql + Sync)]) -> Result<Row, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.connection
            .block_on(self.client.query_one(query, params))
    }

    /// Runs one statement that returns at most one row.
    pub fn query_opt<T>(
        &mut self,
        query: &T,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, Error>
    where
        T: ?Sized + ToStatement,
    {
        self.connection
            .block_on(self.client.query_opt(query, params))
    }

    /// Prepares a statement (for [`Client::execute`] and the like).
    pub fn prepare(&mut self, query: &str) -> Result<Statement, Error> {
        self.connection.block_on(self.client.prepare(query))
    }

    /// Runs statements separated by semicolons with the simple query protocol: rows as text.
    pub fn simple_query(&mut self, query: &str) -> Result<Vec<SimpleQueryMessage>, Error> {
        self.connection.block_on(self.client.simple_query(query))
    }

    /// Runs statements separated by semicolons, without parameters or results.
    pub fn batch_execute(&mut self, query: &str) -> Result<(), Error> {
        self.connection.block_on(self.client.batch_execute(query))
    }

    /// Whether the connection is known to be closed.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Starts a transaction (`BEGIN`), or a savepoint inside the one open (`sp_1`, `sp_2`, …
    /// by depth, as tokio-postgres names them).
    pub(crate) fn transaction(&mut self) -> Result<Transaction<'_>, Error> {
        let savepoint = (self.depth > 0).then(|| format!("sp_{}", self.depth));
        match &savepoint {
            None => self.batch_execute("BEGIN")?,
            Some(sp) => self.batch_execute(&format!("SAVEPOINT {sp}"))?,
        }
        self.depth += 1;
        Ok(Transaction {
            client: self,
            savepoint,
            done: false,
        })
    }

    /// Starts `COPY … FROM STDIN`; the data goes through the returned writer.
    pub(crate) fn copy_in<T>(&mut self, query: &T) -> Result<CopyInWriter<'_>, Error>
    where
        T: ?Sized + ToStatement,
    {
        let sink = self.connection.block_on(self.client.copy_in(query))?;
        Ok(CopyInWriter {
            connection: &mut self.connection,
            sink: Box::pin(sink),
            buf: BytesMut::new(),
        })
    }

    /// Starts `COPY … TO STDOUT`; the data comes out of the returned reader.
    pub(crate) fn copy_out<T>(&mut self, query: &T) -> Result<CopyOutReader<'_>, Error>
    where
        T: ?Sized + ToStatement,
    {
        let stream = self.connection.block_on(self.client.copy_out(query))?;
        Ok(CopyOutReader {
            connection: &mut self.connection,
            stream: Box::pin(stream),
            cur: Bytes::new(),
            ended: false,
            failed: None,
        })
    }
}

/// A transaction on a [`Client`]: `BEGIN` … `COMMIT`, or a savepoint when the client is in a
/// transaction already. It rolls back (to its savepoint) when dropped without
/// [`Transaction::commit`]. Statements run on it as on the client it borrows (`Deref`), so a
/// function that takes `&mut Client` runs inside the caller's transaction when handed one, and
/// a transaction it starts there is a savepoint.
pub(crate) struct Transaction<'a> {
    client: &'a mut Client,
    /// `None` for the transaction itself, the savepoint's name for a nested one.
    savepoint: Option<String>,
    done: bool,
}

impl Transaction<'_> {
    /// Commits (or releases the savepoint).
    pub(crate) fn commit(mut self) -> Result<(), Error> {
        self.end(true)
    }

    fn end(&mut self, commit: bool) -> Result<(), Error> {
        self.done = true;
        self.client.depth -= 1;
        let sql = match (&self.savepoint, commit) {
            (None, true) => "COMMIT".to_owned(),
            (None, false) => "ROLLBACK".to_owned(),
            (Some(sp), true) => format!("RELEASE {sp}"),
            (Some(sp), false) => format!("ROLLBACK TO {sp}"),
        };
        self.client.batch_execute(&sql)
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Nothing to report it to; a broken connection fails the next statement anyway.
            let _ = self.end(false);
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Client;

    fn deref(&self) -> &Client {
        self.client
    }
}

impl std::ops::DerefMut for Transaction<'_> {
    fn deref_mut(&mut self) -> &mut Client {
        self.client
    }
}

/// The data of a `COPY … FROM STDIN`, sent in CopyData messages of about 4 KB, or of what one
/// `write` gives when that is larger (a `BufWriter` in front makes them larger).
pub(crate) struct CopyInWriter<'a> {
    connection: &'a mut Connection,
    sink: Pin<Box<CopyInSink<Bytes>>>,
    buf: BytesMut,
}

impl CopyInWriter<'_> {
    /// Sends what is left and ends the COPY; returns the number of rows the server took.
    /// Dropped without it, the COPY fails (and its transaction with it).
    pub(crate) fn finish(mut self) -> Result<u64, Error> {
        self.flush_inner()?;
        self.connection.block_on(self.sink.as_mut().finish())
    }

    fn flush_inner(&mut self) -> Result<(), Error> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = self.buf.split().freeze();
        self.connection.block_on(self.sink.send(data))
    }
}

impl io::Write for CopyInWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.buf.len() > 4096 {
            self.flush()?;
        }
        self.buf.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_inner().map_err(io::Error::other)
    }
}

/// The data of a `COPY … TO STDOUT`, as it arrives. A server error mid-stream is an
/// [`io::Error`] holding the driver's [`Error`].
///
/// The server sends a CopyData message per row: one `read` takes every message already
/// received that fits in its buffer, so that waiting on the connection (a `block_on`, the
/// driver's poll) is paid per socket read, not per row. Measured: per row, that wait was most of
/// what the copy's own process spent (BENCHMARKS.md, "Where the row-heavy time went").
pub(crate) struct CopyOutReader<'a> {
    connection: &'a mut Connection,
    stream: Pin<Box<CopyOutStream>>,
    /// The rest of the last CopyData message, when it did not fit in the reader's buffer.
    cur: Bytes,
    /// The stream ended (it is not polled again).
    ended: bool,
    /// An error that came after data this reader handed over: the next `read` returns it.
    failed: Option<Error>,
}

impl io::Read for CopyOutReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.cur.has_remaining() {
            let n = buf.len().min(self.cur.len());
            buf[..n].copy_from_slice(&self.cur[..n]);
            self.cur.advance(n);
            return Ok(n);
        }
        if let Some(e) = self.failed.take() {
            self.ended = true;
            return Err(io::Error::other(e));
        }
        if self.ended {
            return Ok(0);
        }
        let (stream, cur) = (&mut self.stream, &mut self.cur);
        let (ended, failed) = (&mut self.ended, &mut self.failed);
        let mut n = 0;
        let filled = std::future::poll_fn(|cx| loop {
            match stream.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(mut data))) => {
                    let take = (buf.len() - n).min(data.len());
                    buf[n..n + take].copy_from_slice(&data[..take]);
                    n += take;
                    data.advance(take);
                    if data.has_remaining() || n == buf.len() {
                        *cur = data;
                        return Poll::Ready(Ok(n));
                    }
                }
                Poll::Ready(Some(Err(e))) if n == 0 => {
                    *ended = true;
                    return Poll::Ready(Err(e));
                }
                // What came before the error first; the next read returns the error.
                Poll::Ready(Some(Err(e))) => {
                    *failed = Some(e);
                    return Poll::Ready(Ok(n));
                }
                Poll::Ready(None) => {
                    *ended = true;
                    return Poll::Ready(Ok(n));
                }
                Poll::Pending if n > 0 => return Poll::Ready(Ok(n)),
                Poll::Pending => return Poll::Pending,
            }
        });
        self.connection.block_on(filled).map_err(io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use cutover_testkit::Postgres;

    use super::*;
    use crate::PgEndpoint;

    fn client(pg: &Postgres, db: &str) -> Client {
        PgEndpoint::from_url(&pg.url(db))
            .unwrap()
            .connect()
            .unwrap()
    }

    fn one(c: &mut Client, sql: &str) -> i64 {
        c.query_one(sql, &[]).unwrap().get(0)
    }

    #[test]
    fn a_client_works_on_any_thread_and_inside_tasks_and_drops_anywhere() {
        let pg = Postgres::shared().unwrap();
        let db = pg.fresh_database("blocking_threads").unwrap();
        let mut c = client(pg, &db);
        assert_eq!(one(&mut c, "SELECT 1::bigint"), 1);
        // Another plain thread: no runtime there, the shared one is found.
        let mut c = std::thread::spawn(move || {
            assert_eq!(one(&mut c, "SELECT 2::bigint"), 2);
            c
        })
        .join()
        .unwrap();
        // A runtime of the caller's own: on its blocking threads, and inside one of its tasks
        // (the wait moves off the worker), where it is also dropped.
        let rt = cutover_connector::runtime::build(2).unwrap();
        let mut c = rt
            .block_on(rt.spawn_blocking(move || {
                assert_eq!(one(&mut c, "SELECT 3::bigint"), 3);
                c
            }))
            .unwrap();
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        rt.block_on(rt.spawn(async move {
            assert_eq!(one(&mut c, "SELECT 4::bigint"), 4);
            drop(c);
        }))
        .unwrap();
        // A client opened inside a task works there too.
        rt.block_on(rt.spawn({
            let url = pg.url(&db);
            async move {
                let mut c = PgEndpoint::from_url(&url).unwrap().connect().unwrap();
                assert_eq!(one(&mut c, "SELECT 5::bigint"), 5);
            }
        }))
        .unwrap();
        // The dropped client's session ends (Terminate sent by the runtime, not the dropper).
        let mut other = client(pg, &db);
        let gone = (0..100).any(|_| {
            let n = one(
                &mut other,
                &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}"),
            );
            n == 0 || {
                std::thread::sleep(std::time::Duration::from_millis(50));
                false
            }
        });
        assert!(gone, "the dropped client's session is still there");
    }

    #[test]
    fn transactions_commit_roll_back_when_dropped_and_nest_as_savepoints() {
        let pg = Postgres::shared().unwrap();
        let db = pg.fresh_database("blocking_tx").unwrap();
        let mut c = client(pg, &db);
        c.batch_execute("CREATE TABLE t (id int PRIMARY KEY)")
            .unwrap();
        {
            let mut tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (1)", &[]).unwrap();
            {
                let mut sp = tx.transaction().unwrap();
                sp.execute("INSERT INTO t VALUES (2)", &[]).unwrap();
                // Dropped: back to the savepoint, the outer transaction goes on.
            }
            let mut sp = tx.transaction().unwrap();
            sp.execute("INSERT INTO t VALUES (3)", &[]).unwrap();
            {
                let mut inner = sp.transaction().unwrap();
                assert!(inner.batch_execute("INSERT INTO t VALUES (1)").is_err());
            }
            sp.execute("INSERT INTO t VALUES (4)", &[]).unwrap();
            sp.commit().unwrap();
            tx.commit().unwrap();
        }
        {
            let mut tx = c.transaction().unwrap();
            tx.execute("INSERT INTO t VALUES (5)", &[]).unwrap();
            // Dropped without commit: rolled back.
        }
        let ids: Vec<i32> = c
            .query("SELECT id FROM t ORDER BY id", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(ids, [1, 3, 4]);
        let open: String = c
            .query_one("SELECT pg_current_xact_id_if_assigned()::text IS NULL", &[])
            .map(|r| r.get::<_, bool>(0).to_string())
            .unwrap();
        assert_eq!(open, "true", "no transaction left open");
    }

    #[test]
    fn copy_streams_both_ways_and_server_errors_keep_their_sqlstate() {
        let pg = Postgres::shared().unwrap();
        let db = pg.fresh_database("blocking_copy").unwrap();
        let mut src = client(pg, &db);
        let mut dst = client(pg, &db);
        dst.batch_execute("CREATE TABLE t (id bigint, v text)")
            .unwrap();
        let mut out = src
            .copy_out(
                "COPY (SELECT i::bigint, repeat('x', i % 300) FROM generate_series(1, 20000) i) TO STDOUT (FORMAT binary)",
            )
            .unwrap();
        let mut tx = dst.transaction().unwrap();
        let writer = tx.copy_in("COPY t FROM STDIN (FORMAT binary)").unwrap();
        let mut writer = std::io::BufWriter::with_capacity(1 << 16, writer);
        let bytes = std::io::copy(&mut out, &mut writer).unwrap();
        assert!(bytes > 20000 * 10, "{bytes} bytes");
        let rows = writer
            .into_inner()
            .map_err(|e| e.into_error())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(rows, 20000);
        tx.commit().unwrap();
        assert_eq!(
            one(&mut dst, "SELECT sum(id)::bigint FROM t"),
            20000 * 20001 / 2
        );

        // A server error in the middle of COPY TO: an io::Error holding the driver's error.
        let mut out = src
            .copy_out("COPY (SELECT 1 / (i - 5000) FROM generate_series(1, 10000) i) TO STDOUT")
            .unwrap();
        let mut sink = Vec::new();
        let err = out.read_to_end(&mut sink).unwrap_err();
        // Every row before the error is handed over first.
        assert_eq!(sink.iter().filter(|&&b| b == b'\n').count(), 4999);
        let code = err
            .get_ref()
            .and_then(|e| e.downcast_ref::<Error>())
            .and_then(|e| e.code().cloned());
        assert_eq!(code.as_ref().map(|c| c.code()), Some("22012"), "{err}");
        // Malformed COPY FROM data fails at finish; the session goes on.
        let mut tx = dst.transaction().unwrap();
        let mut w = tx.copy_in("COPY t FROM STDIN").unwrap();
        w.write_all(b"not a number\tx\n").unwrap();
        let err = w.finish().unwrap_err();
        assert_eq!(err.code().map(|c| c.code()), Some("22P02"), "{err}");
        drop(tx);
        assert_eq!(one(&mut src, "SELECT 7::bigint"), 7);
        assert_eq!(one(&mut dst, "SELECT count(*) FROM t"), 20000);
    }

    #[test]
    fn copy_out_gives_the_same_bytes_whatever_the_reads_size() {
        let pg = Postgres::shared().unwrap();
        let db = pg.fresh_database("blocking_copy_reads").unwrap();
        let mut c = client(pg, &db);
        let sql = "COPY (SELECT i, repeat('y', i % 97) FROM generate_series(1, 5000) i) TO STDOUT (FORMAT binary)";
        let mut whole = Vec::new();
        c.copy_out(sql).unwrap().read_to_end(&mut whole).unwrap();
        for size in [1, 7, 4096, 1 << 20] {
            let mut out = c.copy_out(sql).unwrap();
            let (mut got, mut buf) = (Vec::new(), vec![0; size]);
            loop {
                let n = out.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            // Ended: it stays ended.
            assert_eq!(out.read(&mut buf).unwrap(), 0);
            assert!(got == whole, "reads of {size} bytes");
        }
        assert_eq!(one(&mut c, "SELECT 7::bigint"), 7);
    }

    #[test]
    fn a_terminated_session_fails_the_next_call_promptly() {
        let pg = Postgres::shared().unwrap();
        let db = pg.fresh_database("blocking_gone").unwrap();
        let mut c = client(pg, &db);
        let pid: i32 = c.query_one("SELECT pg_backend_pid()", &[]).unwrap().get(0);
        let mut other = client(pg, &db);
        other
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        let began = std::time::Instant::now();
        let mut failed = false;
        for _ in 0..3 {
            match c.query_one("SELECT 1", &[]) {
                Ok(_) => std::thread::sleep(std::time::Duration::from_millis(100)),
                Err(e) => {
                    assert_eq!(
                        crate::error::map("x", e).kind(),
                        cutover_connector::ErrorKind::Connect
                    );
                    failed = true;
                    break;
                }
            }
        }
        assert!(failed, "a terminated session still answers");
        assert!(began.elapsed() < std::time::Duration::from_secs(5));
        // And every later call fails too, rather than waiting.
        assert!(c.batch_execute("SELECT 1").is_err());
    }
}
