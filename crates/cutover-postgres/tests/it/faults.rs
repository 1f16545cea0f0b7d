//! Issue 9: a sync left alone survives dropped connections and restarted servers by itself, and
//! a server that accepts connections but never answers fails a connect in `connect_timeout`.
//!
//! Each fault test runs sync on a server of its own (source and target databases both on it)
//! while a writer increments counters and inserts rows on the source, counting every write it
//! knows committed. Faults are injected during the copy and during replication; after each, the
//! test waits until sync has applied changes the source committed after the fault, and prints
//! how long that took (run with `--nocapture`). Then it drains and compares both sides row by
//! row with psql: a write lost or applied twice shows as a different row, or a wrong sum.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cutover_connector::{ErrorKind, Phase, Progress};
use cutover_pipeline::{Control, SyncOptions};
use cutover_postgres::PgEndpoint;
use cutover_testkit::Postgres;

use super::sync::{
    assert_same, cleanup, drain, migration, small_chunks, start, wait_for, wal_position, Running,
};

/// Rows of the table written to; enough that the copy lasts through several faults.
const ROWS: i64 = 60_000;

fn workload() -> String {
    format!(
        "CREATE TABLE c (id bigint PRIMARY KEY, n bigint NOT NULL DEFAULT 0, pad text);
         INSERT INTO c SELECT i, 0, repeat(md5(i::text), 8) FROM generate_series(1, {ROWS}) i;
         ANALYZE c;"
    )
}

/// Writes to the source until stopped: `n = n + 1` on random rows, and new rows with `n = 1`,
/// so that the sum of `n` is the number of writes committed. A write whose outcome it cannot
/// know (the connection broke under it) is counted apart; it reconnects on its own.
struct Writer {
    stop: Arc<AtomicBool>,
    confirmed: Arc<AtomicU64>,
    unknown: Arc<AtomicU64>,
    handle: JoinHandle<()>,
}

impl Writer {
    fn start(url: &str) -> Writer {
        let mut config: postgres::Config = url.parse().unwrap();
        // Not `cutover…`: the faults end cutover's sessions only.
        config
            .application_name("fault writer")
            .connect_timeout(Duration::from_secs(5));
        let stop = Arc::new(AtomicBool::new(false));
        let confirmed = Arc::new(AtomicU64::new(0));
        let unknown = Arc::new(AtomicU64::new(0));
        let (s, c, u) = (
            Arc::clone(&stop),
            Arc::clone(&confirmed),
            Arc::clone(&unknown),
        );
        let handle = std::thread::spawn(move || {
            let mut client: Option<postgres::Client> = None;
            let mut next = 1_000_000i64;
            while !s.load(Ordering::Relaxed) {
                let db = match client.as_mut() {
                    Some(db) => db,
                    None => match config.connect(postgres::NoTls) {
                        Ok(db) => client.insert(db),
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                    },
                };
                let sql = if fastrand::u8(0..5) == 0 {
                    next += 1;
                    format!("INSERT INTO c (id, n) VALUES ({next}, 1)")
                } else {
                    format!(
                        "UPDATE c SET n = n + 1 WHERE id = {}",
                        fastrand::i64(1..=ROWS)
                    )
                };
                match db.batch_execute(&sql) {
                    Ok(()) => {
                        c.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => {
                        u.fetch_add(1, Ordering::Relaxed);
                        client = None;
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        Writer {
            stop,
            confirmed,
            unknown,
            handle,
        }
    }

    fn wait_for_writes(&self, n: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.confirmed.load(Ordering::Relaxed) < n {
            assert!(Instant::now() < deadline, "the writer does not write");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stops it; returns (writes known committed, writes of unknown outcome).
    fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap();
        (
            self.confirmed.load(Ordering::Relaxed),
            self.unknown.load(Ordering::Relaxed),
        )
    }
}

/// One fault: when it began, when the server was back (the same instant for a terminated
/// session), and what it was.
struct Fault {
    began: Instant,
    back: Instant,
    what: String,
}

/// Ends cutover's client sessions on database `db` (not its WAL sender, not the writer's);
/// returns how many.
fn terminate(pg: &Postgres, db: &str) -> Fault {
    let began = Instant::now();
    let n = pg
        .psql(
            "",
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                  WHERE datname = '{db}' AND application_name LIKE 'cutover%'
                    AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
            ),
        )
        .unwrap();
    Fault {
        began,
        back: began,
        what: format!("{n} sessions terminated"),
    }
}

/// How long after the fault (and after the server was back) sync had applied everything the
/// source committed once the fault was over: changes written after it.
fn recovery(pg: &Postgres, src: &str, r: &Running, f: &Fault) -> (Duration, Duration) {
    let after = wal_position(pg, src);
    wait_for("sync to apply changes made after the fault", r, |p| {
        p.applied_position().is_some_and(|a| a >= after)
    });
    (f.began.elapsed(), f.back.elapsed())
}

fn phase(p: &Progress) -> &'static str {
    match p.phase() {
        Phase::Preparing | Phase::Copying => "copy",
        _ => "replication",
    }
}

fn opts() -> SyncOptions {
    SyncOptions {
        retry_budget: Duration::from_secs(120),
        ..small_chunks()
    }
}

/// Runs sync under the writer, injects `fault` up to `in_copy` times while chunks are copied
/// and `in_replication` times after, checks that sync recovered by itself after each, then
/// drains and compares both sides row by row.
fn scenario(
    name: &str,
    in_copy: usize,
    in_replication: usize,
    mut fault: impl FnMut(&Postgres, &str, &str) -> Fault,
) {
    let pg = Postgres::dedicated().unwrap();
    let (src, dst, s, t) = migration(&pg, name, &workload());
    let writer = Writer::start(&pg.url(&src));
    writer.wait_for_writes(50);
    let started = Instant::now();
    let r = start(&s, &t, opts());
    wait_for("the copy to start", &r, |p| {
        p.rows_copied.load(Ordering::Relaxed) > 0
    });
    let mut faults = Vec::new();
    let mut copy_faults = 0;
    let mut inject = |r: &Running| {
        let during = phase(&r.progress);
        let f = fault(&pg, &src, &dst);
        let (from_fault, from_back) = recovery(&pg, &src, r, &f);
        eprintln!(
            "[{name}] fault during {during}: {}; changes applied again {} ms after the fault ({} ms after the server was back)",
            f.what,
            from_fault.as_millis(),
            from_back.as_millis()
        );
        faults.push((during, from_fault, from_back));
        std::thread::sleep(Duration::from_millis(fastrand::u64(50..300)));
        during
    };
    while copy_faults < in_copy && r.progress.phase() == Phase::Copying {
        if inject(&r) == "copy" {
            copy_faults += 1;
        }
    }
    assert!(
        copy_faults > 0,
        "the copy ended ({:?} after sync started) before any fault could be injected during it",
        started.elapsed()
    );
    wait_for("the copy", &r, |p| p.phase() == Phase::Replicating);
    eprintln!(
        "[{name}] copy done {} ms after sync started",
        started.elapsed().as_millis()
    );
    for _ in 0..in_replication {
        inject(&r);
    }
    let (confirmed, unknown) = writer.finish();
    let report = drain(&pg, &src, r);
    assert!(!report.interrupted, "{report:?}");

    // Row by row with psql, and the counters: every committed write exactly once.
    assert_same(&pg, &src, &dst, "c", "id");
    let sum = |db: &str| -> u64 {
        pg.psql(db, "SELECT sum(n) FROM c")
            .unwrap()
            .parse()
            .unwrap()
    };
    let (on_source, on_target) = (sum(&src), sum(&dst));
    assert_eq!(
        on_target, on_source,
        "sum of the counters: target vs source"
    );
    assert!(
        on_source >= confirmed && on_source <= confirmed + unknown,
        "the source's counters sum to {on_source}: {confirmed} writes committed, {unknown} of unknown outcome"
    );
    let worst = faults.iter().map(|f| f.2).max().unwrap_or_default();
    eprintln!(
        "[{name}] {} faults ({copy_faults} during the copy); {confirmed} writes committed (+{unknown} unknown), \
         {} changes applied; slowest recovery after the server was back: {} ms",
        faults.len(),
        report.changes_applied,
        worst.as_millis()
    );
    cleanup(&s);
}

#[test]
fn sync_recovers_by_itself_when_its_target_sessions_are_terminated() {
    scenario("kill_target", 4, 4, |pg, _src, dst| terminate(pg, dst));
}

#[test]
fn sync_recovers_by_itself_when_its_source_client_sessions_are_terminated() {
    scenario("kill_source", 4, 4, |pg, src, _dst| terminate(pg, src));
}

#[test]
fn sync_recovers_by_itself_from_a_fast_restart_of_the_server() {
    scenario("restart", 1, 2, |pg, _src, _dst| {
        let began = Instant::now();
        pg.restart("fast").unwrap();
        Fault {
            began,
            back: Instant::now(),
            what: format!(
                "pg_ctl restart -m fast ({} ms)",
                began.elapsed().as_millis()
            ),
        }
    });
}

#[test]
fn sync_recovers_by_itself_from_the_server_down_for_three_seconds() {
    scenario("stopped", 1, 1, |pg, _src, _dst| {
        let began = Instant::now();
        pg.stop().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        pg.start_again().unwrap();
        Fault {
            began,
            back: Instant::now(),
            what: format!(
                "server stopped, 3 s down, started ({} ms)",
                began.elapsed().as_millis()
            ),
        }
    });
}

/// A listener on 127.0.0.1 that accepts connections and never says a word; the sockets are
/// held until the returned flag is set, then closed.
fn silent_server() -> (u16, Arc<AtomicBool>, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let handle = std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        while !d.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((s, _)) => held.push(s),
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, done, handle)
}

#[test]
fn a_server_that_accepts_and_never_answers_fails_the_connect_within_connect_timeout() {
    let (port, done, handle) = silent_server();
    for query in ["connect_timeout=2&sslmode=disable", "connect_timeout=2"] {
        let url = format!("postgres://u:secret@127.0.0.1:{port}/app?{query}");
        let e = PgEndpoint::from_url(&url).unwrap();
        let began = Instant::now();
        let Err(err) = e.connect() else {
            panic!("{query}: connected to a server that never answers")
        };
        let took = began.elapsed();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert!(
            took >= Duration::from_secs(2) && took < Duration::from_secs(4),
            "{query}: failed after {took:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(text.contains("connect_timeout"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        eprintln!("{query}: {took:?}: {text}");
    }

    // Sync tries again for its budget, then says for how long it tried.
    let url = format!("postgres://u@127.0.0.1:{port}/app?connect_timeout=1&sslmode=disable");
    let e = PgEndpoint::from_url(&url).unwrap();
    let side = cutover_postgres::PgConnect {
        endpoint: e.clone(),
        peer: Some(e),
        selection: Default::default(),
        names: cutover_postgres::CaptureNames::for_migration("silent"),
        truncate: false,
        jobs: 1,
    };
    let began = Instant::now();
    let err = cutover_pipeline::run(
        &side,
        &side,
        &SyncOptions {
            retry_budget: Duration::from_secs(3),
            ..SyncOptions::default()
        },
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_err();
    let took = began.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(7),
        "gave up after {took:?}"
    );
    let text = err.to_string();
    assert!(text.starts_with("gave up on the source after"), "{text}");
    eprintln!("sync: {took:?}: {text}");
    done.store(true, Ordering::Relaxed);
    handle.join().unwrap();
}
