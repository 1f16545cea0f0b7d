//! A synchronous client for PostgreSQL's streaming replication protocol (logical, `pgoutput`),
//! on top of `postgres-protocol`'s message builders and SCRAM/MD5 code.
//!
//! Why our own: tokio-postgres, the driver cutover uses everywhere else, has no replication
//! mode (CopyBoth) upstream; the crates that have one are async-only and bring their own TLS
//! and runtime. The protocol part needed here is small (startup and authentication, a simple
//! query, `START_REPLICATION`, then CopyData frames both ways) and fits cutover's
//! threads-and-blocking design: the change stream is read with a socket timeout from the
//! applier's own thread.
//!
//! Framing is kept apart from decoding: [`Frame`] splits the byte stream into messages, and
//! [`ReplicationMessage::parse`] turns CopyData payloads into XLogData and keepalives without
//! ever panicking on malformed input.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use cutover_connector::{ConnectorError, ErrorKind};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::frontend;

use crate::endpoint::{PgEndpoint, TlsMode};
use crate::error::server_error;

/// What the connection runs over.
enum Transport {
    Plain(TcpStream),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Transport {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.set_read_timeout(t),
            #[cfg(unix)]
            Transport::Unix(s) => s.set_read_timeout(t),
            Transport::Tls(s) => s.sock.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.set_write_timeout(t),
            #[cfg(unix)]
            Transport::Unix(s) => s.set_write_timeout(t),
            Transport::Tls(s) => s.sock.set_write_timeout(t),
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.read(buf),
            #[cfg(unix)]
            Transport::Unix(s) => s.read(buf),
            Transport::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Plain(s) => s.write(buf),
            #[cfg(unix)]
            Transport::Unix(s) => s.write(buf),
            Transport::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Plain(s) => s.flush(),
            #[cfg(unix)]
            Transport::Unix(s) => s.flush(),
            Transport::Tls(s) => s.flush(),
        }
    }
}

/// One backend message: its type byte and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Frame {
    pub tag: u8,
    pub body: bytes::Bytes,
}

impl Frame {
    /// Takes one whole message off the front of `buf`, if it holds one.
    pub(crate) fn split(buf: &mut BytesMut) -> io::Result<Option<Frame>> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if len < 4 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("invalid message length {len} from the server"),
            ));
        }
        let total = 1 + len as usize;
        if buf.len() < total {
            buf.reserve(total - buf.len());
            return Ok(None);
        }
        let tag = buf[0];
        let mut msg = buf.split_to(total);
        msg.advance(5);
        Ok(Some(Frame {
            tag,
            body: msg.freeze(),
        }))
    }
}

/// A CopyData payload of the replication stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ReplicationMessage {
    /// WAL data: a `pgoutput` message that starts at `start`.
    XLogData {
        start: u64,
        end: u64,
        data: bytes::Bytes,
    },
    /// The server's position; `reply` asks for a status update now.
    Keepalive { end: u64, reply: bool },
}

impl ReplicationMessage {
    pub(crate) fn parse(mut b: bytes::Bytes) -> io::Result<ReplicationMessage> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if b.is_empty() {
            return Err(bad("empty replication message"));
        }
        match b.get_u8() {
            b'w' if b.len() >= 24 => {
                let start = b.get_u64();
                let end = b.get_u64();
                let _time = b.get_i64();
                Ok(ReplicationMessage::XLogData {
                    start,
                    end,
                    data: b,
                })
            }
            b'k' if b.len() >= 17 => {
                let end = b.get_u64();
                let _time = b.get_i64();
                Ok(ReplicationMessage::Keepalive {
                    end,
                    reply: b.get_u8() != 0,
                })
            }
            b'w' | b'k' => Err(bad("truncated replication message")),
            other => Err(bad(&format!(
                "unknown replication message type {:?}",
                other as char
            ))),
        }
    }
}

/// Microseconds since 2000-01-01, PostgreSQL's epoch.
fn pg_now() -> i64 {
    const PG_EPOCH_UNIX_SECS: u64 = 946_684_800;
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64 - (PG_EPOCH_UNIX_SECS as i64) * 1_000_000)
        .unwrap_or(0)
}

/// The text of one field of an ErrorResponse/NoticeResponse body.
fn error_fields(body: &[u8]) -> (String, String, Option<String>) {
    let (mut code, mut message, mut detail) = (String::new(), String::new(), None);
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            b'D' => detail = Some(value),
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or(&[]);
    }
    (code, message, detail)
}

/// A replication connection (`replication=database`).
pub(crate) struct ReplicationConnection {
    io: Transport,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// Where the server is, for messages (no password).
    describe: String,
    /// Whether the connection is in CopyBoth mode (streaming).
    streaming: bool,
    /// While set, waiting for the server's next message ends at this instant (after this
    /// long) with [`ErrorKind::Timeout`] and this advice: during the handshake and
    /// `START_REPLICATION`.
    answer_by: Option<(Instant, Duration, &'static str)>,
}

/// How long `START_REPLICATION` may take to answer (as a control statement).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What to do about a handshake that timed out.
const HANDSHAKE_ADVICE: &str =
    "overloaded, hung, or not PostgreSQL on that port? Check the host and port, \
     or allow longer with connect_timeout=SECONDS in the URL";

/// Server settings every cutover session uses, so values print the same way on the stream as
/// in chunk reads (see [`PgEndpoint::connect`]).
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "iso_8601"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
];

impl ReplicationConnection {
    /// Connects and authenticates in logical replication mode, all within the endpoint's
    /// [`PgEndpoint::handshake_timeout`] (a server that accepts and never answers is a
    /// [`ErrorKind::Timeout`], not a hang).
    pub(crate) fn connect(endpoint: &PgEndpoint) -> Result<ReplicationConnection, ConnectorError> {
        let describe = endpoint.redacted().to_owned();
        let ctx = || format!("opening a replication connection to {describe}");
        let config = endpoint.config();
        let patience = endpoint.handshake_timeout();
        let answer_by = Some((Instant::now() + patience, patience, HANDSHAKE_ADVICE));
        let io = open_transport(endpoint, patience).map_err(|e| {
            if let Some(refused) = crate::error::tls_refusal(&e) {
                return ConnectorError::new(ErrorKind::Auth, format!("{}: {refused}", ctx()))
                    .with_source(e);
            }
            if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) {
                endpoint.handshake_timed_out(patience).with_source(e)
            } else {
                ConnectorError::new(
                    ErrorKind::Connect,
                    format!(
                        "{}: {e} (is the server running and reachable at that host and port? check the URL, the network and sslmode)",
                        ctx()
                    ),
                )
                .with_source(e)
            }
        })?;
        let mut conn = ReplicationConnection {
            io,
            rbuf: BytesMut::with_capacity(64 * 1024),
            wbuf: BytesMut::with_capacity(1024),
            describe: describe.clone(),
            streaming: false,
            answer_by,
        };
        let user = config.get_user().unwrap_or("postgres").to_owned();
        let mut params: Vec<(&str, &str)> = vec![
            ("user", &user),
            ("database", endpoint.dbname()),
            ("replication", "database"),
            (
                "application_name",
                config.get_application_name().unwrap_or("cutover"),
            ),
        ];
        if let Some(options) = config.get_options() {
            params.push(("options", options));
        }
        params.extend_from_slice(SESSION_SETTINGS);
        frontend::startup_message(params.iter().copied(), &mut conn.wbuf)
            .map_err(|e| conn.io_error(&ctx(), e))?;
        conn.flush().map_err(|e| conn.io_error(&ctx(), e))?;
        conn.authenticate(config.get_password(), &user)?;
        // Parameter statuses and the backend key, then ReadyForQuery.
        loop {
            let f = conn.expect_frame(&ctx())?;
            match f.tag {
                b'Z' => break,
                b'E' => return Err(conn.server_error(&ctx(), &f.body)),
                _ => {}
            }
        }
        conn.answer_by = None;
        conn.io
            .set_write_timeout(None)
            .map_err(|e| conn.io_error(&ctx(), e))?;
        Ok(conn)
    }

    fn authenticate(&mut self, password: Option<&[u8]>, user: &str) -> Result<(), ConnectorError> {
        let ctx = format!("authenticating to {}", self.describe);
        let need_password = || {
            ConnectorError::new(
                ErrorKind::Auth,
                format!("{ctx}: {}", crate::endpoint::no_password()),
            )
        };
        let mut scram: Option<ScramSha256> = None;
        loop {
            let f = self.expect_frame(&ctx)?;
            match f.tag {
                b'E' => return Err(self.server_error(&ctx, &f.body)),
                b'R' => {}
                other => {
                    return Err(ConnectorError::new(
                        ErrorKind::Database,
                        format!(
                            "{ctx}: unexpected message {:?} during authentication",
                            other as char
                        ),
                    ))
                }
            }
            let mut body = f.body.clone();
            if body.len() < 4 {
                return Err(self.protocol_error(&ctx, "short authentication message"));
            }
            let code = body.get_i32();
            match code {
                0 => return Ok(()),
                3 => {
                    let pw = password.ok_or_else(need_password)?;
                    frontend::password_message(pw, &mut self.wbuf)
                        .map_err(|e| self.io_error(&ctx, e))?;
                }
                5 => {
                    let pw = password.ok_or_else(need_password)?;
                    if body.len() < 4 {
                        return Err(self.protocol_error(&ctx, "short MD5 salt"));
                    }
                    let salt = [body[0], body[1], body[2], body[3]];
                    let hash =
                        postgres_protocol::authentication::md5_hash(user.as_bytes(), pw, salt);
                    frontend::password_message(hash.as_bytes(), &mut self.wbuf)
                        .map_err(|e| self.io_error(&ctx, e))?;
                }
                10 => {
                    let pw = password.ok_or_else(need_password)?;
                    let mechanisms: Vec<&[u8]> =
                        body.split(|&b| b == 0).filter(|m| !m.is_empty()).collect();
                    if !mechanisms.contains(&SCRAM_SHA_256.as_bytes()) {
                        return Err(ConnectorError::new(
                            ErrorKind::Auth,
                            format!("{ctx}: the server offers no SASL mechanism cutover supports (SCRAM-SHA-256)"),
                        ));
                    }
                    // Channel binding is not used, so the plain mechanism is always acceptable.
                    let s = ScramSha256::new(pw, ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut self.wbuf)
                        .map_err(|e| self.io_error(&ctx, e))?;
                    scram = Some(s);
                }
                11 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol_error(&ctx, "SASL continue before start"))?;
                    s.update(&body).map_err(|e| {
                        ConnectorError::new(ErrorKind::Auth, format!("{ctx}: {e}"))
                    })?;
                    let msg = s.message().to_vec();
                    frontend::sasl_response(&msg, &mut self.wbuf)
                        .map_err(|e| self.io_error(&ctx, e))?;
                }
                12 => {
                    let s = scram
                        .as_mut()
                        .ok_or_else(|| self.protocol_error(&ctx, "SASL final before start"))?;
                    s.finish(&body).map_err(|e| {
                        ConnectorError::new(
                            ErrorKind::Auth,
                            format!("{ctx}: the server's SCRAM proof is wrong: {e}"),
                        )
                    })?;
                    continue;
                }
                other => {
                    return Err(ConnectorError::new(
                        ErrorKind::Auth,
                        format!("{ctx}: the server asks for an authentication method cutover does not support (code {other}); use password, md5 or scram-sha-256 in pg_hba.conf"),
                    ))
                }
            }
            self.flush().map_err(|e| self.io_error(&ctx, e))?;
        }
    }

    /// Runs one replication command (`CREATE_REPLICATION_SLOT …`) and returns its rows as text.
    pub(crate) fn command(
        &mut self,
        sql: &str,
    ) -> Result<Vec<Vec<Option<String>>>, ConnectorError> {
        let ctx = format!("running {sql:?} on {}", self.describe);
        frontend::query(sql, &mut self.wbuf).map_err(|e| self.io_error(&ctx, e))?;
        self.flush().map_err(|e| self.io_error(&ctx, e))?;
        let mut rows = Vec::new();
        let mut error = None;
        loop {
            // No limit: creating a slot waits for every running transaction to end.
            let f = self.expect_frame(&ctx)?;
            match f.tag {
                b'D' => rows.push(parse_data_row(&f.body).map_err(|e| self.io_error(&ctx, e))?),
                b'E' => error = Some(self.server_error(&ctx, &f.body)),
                b'Z' => break,
                _ => {}
            }
        }
        match error {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `START_REPLICATION SLOT … LOGICAL …`: from here on the server streams.
    pub(crate) fn start_logical(
        &mut self,
        slot: &str,
        from: u64,
        publication: &str,
    ) -> Result<(), ConnectorError> {
        let sql = format!(
            "START_REPLICATION SLOT \"{}\" LOGICAL {:X}/{:X} (proto_version '1', publication_names '\"{}\"')",
            slot.replace('"', "\"\""),
            from >> 32,
            from & 0xFFFF_FFFF,
            publication.replace('"', "\"\"").replace('\'', "''"),
        );
        let ctx = format!("starting replication from slot {slot} on {}", self.describe);
        frontend::query(&sql, &mut self.wbuf).map_err(|e| self.io_error(&ctx, e))?;
        self.flush().map_err(|e| self.io_error(&ctx, e))?;
        self.answer_by = Some((
            Instant::now() + START_TIMEOUT,
            START_TIMEOUT,
            "overloaded or hung? sync tries again",
        ));
        let answer = loop {
            let f = match self.expect_frame(&ctx) {
                Ok(f) => f,
                Err(e) => break Err(e),
            };
            match f.tag {
                b'W' => {
                    self.streaming = true;
                    break Ok(());
                }
                b'E' => break Err(self.server_error(&ctx, &f.body)),
                _ => {}
            }
        };
        self.answer_by = None;
        answer
    }

    /// The server's next message, waiting at most until [`ReplicationConnection::answer_by`]
    /// when it is set (forever otherwise).
    fn expect_frame(&mut self, ctx: &str) -> Result<Frame, ConnectorError> {
        let Some((by, patience, advice)) = self.answer_by else {
            return self.next_frame(None)?.ok_or_else(|| self.closed(ctx));
        };
        loop {
            let left = by.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    format!(
                        "{ctx}: no answer from the server within {:.1} s ({advice})",
                        patience.as_secs_f64()
                    ),
                ));
            }
            if let Some(f) = self.next_frame(Some(left))? {
                return Ok(f);
            }
        }
    }

    /// The next stream message, waiting at most `wait`; `None` when nothing came in time.
    pub(crate) fn recv(
        &mut self,
        wait: Duration,
    ) -> Result<Option<ReplicationMessage>, ConnectorError> {
        let ctx = format!("reading the change stream from {}", self.describe);
        loop {
            let Some(f) = self.next_frame(Some(wait))? else {
                return Ok(None);
            };
            match f.tag {
                b'd' => {
                    return ReplicationMessage::parse(f.body)
                        .map(Some)
                        .map_err(|e| self.io_error(&ctx, e))
                }
                b'E' => return Err(self.server_error(&ctx, &f.body)),
                b'c' | b'C' | b'Z' => {
                    self.streaming = false;
                    return Err(ConnectorError::new(
                        ErrorKind::Connect,
                        format!("{ctx}: the server ended the stream; run the same command again"),
                    ));
                }
                // Notices and parameter changes.
                _ => {}
            }
        }
    }

    /// Tells the server what the target has durably applied (`flushed`), so it can free WAL,
    /// and optionally asks for a keepalive with its current position.
    pub(crate) fn send_status(
        &mut self,
        received: u64,
        flushed: u64,
        ask_reply: bool,
    ) -> Result<(), ConnectorError> {
        let mut payload = Vec::with_capacity(34);
        payload.push(b'r');
        payload.extend_from_slice(&received.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&flushed.to_be_bytes());
        payload.extend_from_slice(&pg_now().to_be_bytes());
        payload.push(u8::from(ask_reply));
        let ctx = format!("sending a status update to {}", self.describe);
        frontend::CopyData::new(&payload[..])
            .map_err(|e| self.io_error(&ctx, e))?
            .write(&mut self.wbuf);
        self.flush().map_err(|e| self.io_error(&ctx, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.io.write_all(&self.wbuf)?;
        self.wbuf.clear();
        self.io.flush()
    }

    /// Reads until a whole frame is buffered; `None` if `wait` passed first.
    fn next_frame(&mut self, wait: Option<Duration>) -> Result<Option<Frame>, ConnectorError> {
        let ctx = || format!("reading from {}", self.describe);
        if let Some(f) = Frame::split(&mut self.rbuf).map_err(|e| self.io_error(&ctx(), e))? {
            return Ok(Some(f));
        }
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let timeout = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    Some(left)
                }
                None => None,
            };
            self.io
                .set_read_timeout(timeout)
                .map_err(|e| self.io_error(&ctx(), e))?;
            match self.io.read(&mut chunk) {
                Ok(0) => return Err(self.closed(&ctx())),
                Ok(n) => {
                    self.rbuf.extend_from_slice(&chunk[..n]);
                    if let Some(f) =
                        Frame::split(&mut self.rbuf).map_err(|e| self.io_error(&ctx(), e))?
                    {
                        return Ok(Some(f));
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io_error(&ctx(), e)),
            }
        }
    }

    fn io_error(&self, ctx: &str, e: io::Error) -> ConnectorError {
        ConnectorError::new(
            ErrorKind::Connect,
            format!("{ctx}: {e} (the replication connection failed: run the same command again)"),
        )
        .with_source(e)
    }

    fn closed(&self, ctx: &str) -> ConnectorError {
        ConnectorError::new(
            ErrorKind::Connect,
            format!("{ctx}: the server closed the replication connection (restarted, or max_wal_senders reached?): run the same command again"),
        )
    }

    fn protocol_error(&self, ctx: &str, what: &str) -> ConnectorError {
        ConnectorError::new(ErrorKind::Database, format!("{ctx}: {what}"))
    }

    fn server_error(&self, ctx: &str, body: &[u8]) -> ConnectorError {
        let (code, message, detail) = error_fields(body);
        server_error(ctx, &code, &message, detail.as_deref())
    }
}

impl Drop for ReplicationConnection {
    fn drop(&mut self) {
        // A polite goodbye; the server cleans up either way.
        if self.streaming {
            frontend::copy_done(&mut self.wbuf);
        }
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush();
    }
}

/// A DataRow's values as text (`None` for NULL).
fn parse_data_row(body: &[u8]) -> io::Result<Vec<Option<String>>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "malformed DataRow");
    let n = body.get(..2).ok_or_else(bad)?;
    let n = i16::from_be_bytes([n[0], n[1]]).max(0) as usize;
    let mut rest = &body[2..];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let len = rest.get(..4).ok_or_else(bad)?;
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        rest = &rest[4..];
        if len < 0 {
            out.push(None);
            continue;
        }
        let value = rest.get(..len as usize).ok_or_else(bad)?;
        out.push(Some(String::from_utf8_lossy(value).into_owned()));
        rest = &rest[len as usize..];
    }
    Ok(out)
}

/// Connects (TCP or unix socket) and negotiates TLS. Reads and writes on the socket time out
/// after `patience` until the caller lifts it, so a server that never answers cannot hang the
/// handshake.
fn open_transport(endpoint: &PgEndpoint, patience: Duration) -> io::Result<Transport> {
    let config = endpoint.config();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let timeout = config
        .get_connect_timeout()
        .copied()
        .unwrap_or(Duration::from_secs(10));
    let hosts = config.get_hosts();
    let host = hosts
        .first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the URL names no host"))?;
    let tcp = match (host, config.get_hostaddrs().first()) {
        // `hostaddr`: connect there; the host name is for TLS.
        (tokio_postgres::config::Host::Tcp(_), Some(addr)) => {
            TcpStream::connect_timeout(&std::net::SocketAddr::new(*addr, port), timeout)?
        }
        (tokio_postgres::config::Host::Tcp(name), None) => {
            use std::net::ToSocketAddrs;
            let mut last =
                io::Error::new(io::ErrorKind::NotFound, format!("{name} has no address"));
            let mut found = None;
            for addr in (name.as_str(), port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, timeout) {
                    Ok(s) => {
                        found = Some(s);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            found.ok_or(last)?
        }
        #[cfg(unix)]
        (tokio_postgres::config::Host::Unix(dir), _) => {
            let path = dir.join(format!(".s.PGSQL.{port}"));
            let socket = std::os::unix::net::UnixStream::connect(path)?;
            socket.set_read_timeout(Some(patience))?;
            socket.set_write_timeout(Some(patience))?;
            return Ok(Transport::Unix(socket));
        }
    };
    tcp.set_nodelay(true)?;
    tcp.set_read_timeout(Some(patience))?;
    tcp.set_write_timeout(Some(patience))?;
    let Some(tls) = endpoint.tls_client() else {
        return Ok(Transport::Plain(tcp));
    };
    // SSLRequest: 8 bytes, then one byte back: S (go ahead) or N (no TLS here).
    let mut tcp = tcp;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    tcp.write_all(&req)?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer)?;
    if answer[0] != b'S' {
        if endpoint.tls() == TlsMode::Prefer {
            return Ok(Transport::Plain(tcp));
        }
        return Err(io::Error::new(
            io::ErrorKind::ConnectionRefused,
            "the server does not accept TLS connections, and the URL's sslmode requires TLS",
        ));
    }
    let name = match host {
        tokio_postgres::config::Host::Tcp(n) => n.clone(),
        #[cfg(unix)]
        tokio_postgres::config::Host::Unix(_) => "localhost".to_owned(),
    };
    let server_name = rustls::pki_types::ServerName::try_from(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let conn = rustls::ClientConnection::new(tls, server_name).map_err(io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    Ok(Transport::Tls(Box::new(stream)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_only_when_whole() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[b'd', 0, 0, 0, 7, 1, 2]);
        assert_eq!(Frame::split(&mut buf).unwrap(), None);
        buf.extend_from_slice(&[3, b'Z', 0, 0, 0, 5, b'I']);
        let f = Frame::split(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'd', &[1u8, 2, 3][..]));
        let f = Frame::split(&mut buf).unwrap().unwrap();
        assert_eq!((f.tag, &f.body[..]), (b'Z', &b"I"[..]));
        assert!(buf.is_empty());
        let mut bad = BytesMut::from(&[b'd', 0, 0, 0, 2][..]);
        assert!(Frame::split(&mut bad).is_err());
    }

    #[test]
    fn replication_messages_parse_and_garbage_is_an_error() {
        let mut w = vec![b'w'];
        w.extend_from_slice(&10u64.to_be_bytes());
        w.extend_from_slice(&20u64.to_be_bytes());
        w.extend_from_slice(&0i64.to_be_bytes());
        w.extend_from_slice(b"B...");
        assert_eq!(
            ReplicationMessage::parse(w.clone().into()).unwrap(),
            ReplicationMessage::XLogData {
                start: 10,
                end: 20,
                data: bytes::Bytes::from_static(b"B...")
            }
        );
        let mut k = vec![b'k'];
        k.extend_from_slice(&99u64.to_be_bytes());
        k.extend_from_slice(&0i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            ReplicationMessage::parse(k.into()).unwrap(),
            ReplicationMessage::Keepalive {
                end: 99,
                reply: true
            }
        );
        for n in 0..w.len().min(25) {
            assert!(ReplicationMessage::parse(w[..n].to_vec().into()).is_err());
        }
        assert!(ReplicationMessage::parse(vec![b'x', 0, 0].into()).is_err());
    }

    #[test]
    fn data_rows_parse_and_short_ones_are_errors() {
        let body = [0u8, 2, 0, 0, 0, 2, b'h', b'i', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            parse_data_row(&body).unwrap(),
            vec![Some("hi".to_owned()), None]
        );
        for n in 0..body.len() - 4 {
            assert!(parse_data_row(&body[..n]).is_err(), "{n} bytes");
        }
    }

    /// A server that accepts and never says a word: the handshake gives up after the URL's
    /// `connect_timeout`, with and without TLS negotiation.
    #[test]
    fn a_handshake_without_answer_times_out() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepting = std::thread::spawn(move || {
            let mut held = Vec::new();
            for _ in 0..2 {
                held.push(listener.accept().unwrap().0);
            }
            held
        });
        for tls in ["disable", "prefer"] {
            let e = PgEndpoint::from_url(&format!(
                "postgres://u@127.0.0.1:{port}/db?connect_timeout=1&sslmode={tls}"
            ))
            .unwrap();
            let began = std::time::Instant::now();
            let Err(err) = ReplicationConnection::connect(&e) else {
                panic!("connected to a server that never answers");
            };
            let took = began.elapsed();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{tls}: {err}");
            assert!(
                took >= Duration::from_secs(1) && took < Duration::from_secs(3),
                "{tls}: {took:?}"
            );
            assert!(err.to_string().contains("connect_timeout"), "{err}");
        }
        drop(accepting.join().unwrap());
    }

    #[test]
    fn error_fields_parse() {
        let e = b"SERROR\0C42704\0Mreplication slot \"x\" does not exist\0\0";
        let (code, msg, detail) = error_fields(e);
        assert_eq!(code, "42704");
        assert!(msg.contains("does not exist"));
        assert_eq!(detail, None);
    }
}
