//! End-to-end tests of the `cutover` binary.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cutover_testkit::KillOnDrop;
use rusqlite::Connection;

#[path = "it/campaign.rs"]
mod campaign;
#[path = "it/cross.rs"]
mod cross;
#[cfg(all(feature = "dynamodb", feature = "failpoints"))]
#[path = "it/dynamodb.rs"]
mod dynamodb;
#[cfg(all(feature = "kafka", feature = "failpoints"))]
#[path = "it/kafka.rs"]
mod kafka;
#[path = "it/libpq.rs"]
mod libpq;
#[cfg(feature = "mysql")]
#[path = "it/mysql.rs"]
mod mysql;
#[cfg(all(feature = "nats", feature = "failpoints"))]
#[path = "it/nats.rs"]
mod nats;
#[path = "it/pagila.rs"]
mod pagila;
#[cfg(all(feature = "parquet", feature = "failpoints"))]
#[path = "it/parquet.rs"]
mod parquet;
#[cfg(feature = "redis")]
#[path = "it/redis.rs"]
mod redis_target;
#[path = "it/refusals.rs"]
mod refusals;
#[cfg(feature = "failpoints")]
#[path = "it/switch_crash.rs"]
mod switch_crash;
#[path = "it/writes.rs"]
mod writes;

fn command(args: &[&str]) -> Command {
    // Tests that start no server still get the test binary's time limit.
    cutover_testkit::time_limit();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.args(args)
        .env_remove("CUTOVER_SOURCE")
        .env_remove("CUTOVER_TARGET");
    cutover_testkit::end_with_test(&mut cmd);
    cmd
}

fn cutover(args: &[&str]) -> Output {
    command(args).output().expect("run cutover")
}

/// `cutover ARGS` in the background, stdout discarded and stderr written to `log`; killed
/// when dropped (also when the test panics).
fn spawn_cutover(args: &[&str], log: &Path) -> KillOnDrop {
    KillOnDrop::spawn(
        command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("create the log file")),
    )
    .expect("start cutover")
}

/// Polls `probe` every 10 ms until it returns `Some`, for at most `limit`; panics naming
/// `what` and the last thing `seen` said. `running` is asked first each time, so that a
/// process that ended early fails the wait at once instead of at the deadline.
#[track_caller]
fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut running: impl FnMut() -> Result<(), String>,
    mut probe: impl FnMut(&mut String) -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    let mut seen = String::new();
    loop {
        if let Err(e) = running() {
            panic!("{e} while waiting for {what} (last seen: {seen})");
        }
        if let Some(v) = probe(&mut seen) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?} (last seen: {seen})"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `Err` (with the end of its `log`) once `child` has exited.
fn still_running(child: &mut KillOnDrop, what: &str, log: &Path) -> Result<(), String> {
    let status = match child.try_wait() {
        Ok(None) => return Ok(()),
        Ok(Some(status)) => status.to_string(),
        Err(e) => e.to_string(),
    };
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    Err(format!(
        "{what} exited early ({status}); its stderr ends with:\n{}\n",
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    ))
}

#[cfg(all(
    feature = "failpoints",
    any(feature = "nats", feature = "kafka", feature = "parquet")
))]
/// One change the writer committed: (id, op, v after it; for a delete the v it had).
pub(crate) type Committed = (i64, char, i64);

#[cfg(all(
    feature = "failpoints",
    any(feature = "nats", feature = "kafka", feature = "parquet")
))]
/// A writer on table `acct (id bigint PRIMARY KEY, v int, note text)` with ids 1..=3000 to start
/// with: inserts (v = 0), updates (v + 1) and deletes, each its own transaction, every one
/// logged as (id, op, v) once committed: what a stream or a lake target must hold exactly once.
pub(crate) fn logging_writer(
    url: &str,
    stop: &std::sync::atomic::AtomicBool,
    log: &std::sync::Mutex<Vec<Committed>>,
) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut rng = fastrand::Rng::with_seed(13);
    let mut next_id = 100_000i64;
    let mut live: Vec<i64> = (1..=3_000).collect();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match rng.u8(0..10) {
            0..=2 => {
                next_id += 1;
                c.execute(
                    "INSERT INTO acct (id, v, note) VALUES ($1, 0, 'new')",
                    &[&next_id],
                )
                .unwrap();
                live.push(next_id);
                log.lock().unwrap().push((next_id, 'c', 0));
            }
            3..=8 if !live.is_empty() => {
                let id = live[rng.usize(0..live.len())];
                let v: i32 = c
                    .query_one(
                        "UPDATE acct SET v = v + 1, note = repeat('u', v % 50) WHERE id = $1 RETURNING v",
                        &[&id],
                    )
                    .unwrap()
                    .get(0);
                log.lock().unwrap().push((id, 'u', i64::from(v)));
            }
            _ if !live.is_empty() => {
                let id = live.swap_remove(rng.usize(0..live.len()));
                let v: i32 = c
                    .query_one("DELETE FROM acct WHERE id = $1 RETURNING v", &[&id])
                    .unwrap()
                    .get(0);
                log.lock().unwrap().push((id, 'd', i64::from(v)));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_micros(rng.u64(200..2_000)));
    }
}

#[cfg(all(
    feature = "failpoints",
    any(feature = "nats", feature = "kafka", feature = "parquet")
))]
/// Runs `args` (a `sync` from PostgreSQL database `src`) under [`logging_writer`]: started once
/// the slot exists, SIGKILLed `kills` times at random moments (seeded), then once ended by the
/// failpoint `failpoint` (`name=…->panic`, whose name its stderr must show), the writer
/// stopped, and the sync drained with `--stop-when-caught-up`. Returns what the writer
/// committed.
pub(crate) fn sync_under_logged_writes(
    pg: &cutover_testkit::Postgres,
    src: &str,
    args: &[&str],
    kills: usize,
    failpoint: &str,
    seed: u64,
) -> Vec<Committed> {
    let url = pg.url(src);
    let stop = AtomicBool::new(false);
    let committed = std::sync::Mutex::new(Vec::new());
    let log = tempfile::NamedTempFile::new().unwrap();
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let mut child = spawn_cutover(args, log.path());
        // Changes are captured from the slot's consistent point on: a slot still being created
        // (waiting for running transactions) shows with no confirmed position yet, and what
        // commits meanwhile arrives as copied rows, not as changes.
        wait_for(
            "a consistent replication slot",
            Duration::from_secs(60),
            || still_running(&mut child, "sync", log.path()),
            |seen| {
                let n = pg
                    .psql(
                        src,
                        "SELECT count(*) FROM pg_replication_slots \
                         WHERE database = current_database() AND confirmed_flush_lsn IS NOT NULL",
                    )
                    .unwrap_or_default();
                *seen = n.clone();
                (n.trim() == "1").then_some(())
            },
        );
        let writer = sc.spawn(|| logging_writer(&url, &stop, &committed));
        let mut rng = fastrand::Rng::with_seed(seed);
        for round in 0..kills {
            if round > 0 {
                child = spawn_cutover(args, log.path());
            }
            std::thread::sleep(Duration::from_millis(rng.u64(500..2_500)));
            if let Err(e) = still_running(&mut child, &format!("sync (round {round})"), log.path())
            {
                panic!("{e}");
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
        }
        let o = command(args).env("FAILPOINTS", failpoint).output().unwrap();
        let (out, err) = text(&o);
        assert_ne!(
            o.status.code(),
            Some(0),
            "the failpoint ended it: {out}\n{err}"
        );
        let name = failpoint.split('=').next().unwrap_or(failpoint);
        assert!(err.contains(name), "{err}");
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    let mut last: Vec<&str> = args.to_vec();
    last.push("--stop-when-caught-up");
    let o = cutover(&last);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let committed = committed.into_inner().unwrap();
    assert!(committed.len() > 50, "the writer wrote {}", committed.len());
    committed
}

#[cfg(all(
    feature = "failpoints",
    any(feature = "nats", feature = "kafka", feature = "parquet")
))]
/// Delivery counts: the change events a target holds, per id in its order as (op, v; -1 for a
/// delete), are exactly what the writer committed, each once, in the writer's order per id.
pub(crate) fn assert_each_change_once(
    events: &std::collections::HashMap<i64, Vec<(char, i64)>>,
    committed: &[Committed],
) {
    let mut expected: std::collections::HashMap<i64, Vec<(char, i64)>> = Default::default();
    for &(id, op, v) in committed {
        expected
            .entry(id)
            .or_default()
            .push((op, if op == 'd' { -1 } else { v }));
    }
    for (id, got) in events {
        assert_eq!(
            expected.get(id),
            Some(got),
            "the changes of id {id}: committed (left), in the target (right)"
        );
    }
    let held: usize = events.values().map(Vec::len).sum();
    assert_eq!(
        held,
        committed.len(),
        "change events in the target vs changes committed"
    );
}

#[cfg(all(
    feature = "failpoints",
    any(feature = "nats", feature = "kafka", feature = "parquet")
))]
/// `SELECT id, v FROM acct` on the source, by id.
pub(crate) fn acct_rows(
    pg: &cutover_testkit::Postgres,
    db: &str,
) -> std::collections::HashMap<i64, i64> {
    pg.psql(db, "SELECT id, v FROM acct")
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('|').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect()
}

/// Ends a running `sync` (`child`, started with `args`) with SIGKILL at random moments,
/// `rounds` times (each run after the first started anew), then runs it once more with
/// `failpoint` (`name=2*off->panic`) set, which must end it naming the failpoint.
#[cfg(all(feature = "failpoints", feature = "dynamodb"))]
fn crash_sync_repeatedly(
    args: &[&str],
    log: &Path,
    mut child: KillOnDrop,
    seed: u64,
    rounds: usize,
    failpoint: &str,
) {
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..rounds {
        if round > 0 {
            child = spawn_cutover(args, log);
        }
        std::thread::sleep(Duration::from_millis(rng.u64(400..2_500)));
        if let Err(e) = still_running(&mut child, &format!("sync (round {round})"), log) {
            panic!("{e}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let o = command(args).env("FAILPOINTS", failpoint).output().unwrap();
    let (out, err) = text(&o);
    assert_ne!(
        o.status.code(),
        Some(0),
        "the failpoint ended it: {out}\n{err}"
    );
    let name = failpoint.split('=').next().unwrap_or(failpoint);
    let short = name.rsplit("::").next().unwrap_or(name);
    assert!(err.contains(short), "{err}");
}

/// How many replication slots the source database `db` has (as psql prints it).
fn slots(pg: &cutover_testkit::Postgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()",
    )
    .unwrap_or_default()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn assert_exit(o: &Output, code: i32, stderr_has: &str) {
    let (out, err) = text(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        err.contains(stderr_has),
        "stderr should mention {stderr_has:?}:\n{err}"
    );
}

#[test]
fn bad_input_is_refused_with_exit_2_and_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plain.txt");
    std::fs::write(
        &file,
        "not a database, just text that is long enough to have a header",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let target = dir.path().join("t.db");
    let target = target.to_str().unwrap();

    assert_exit(&cutover(&["frobnicate"]), 2, "unrecognized subcommand");
    assert_exit(
        &cutover(&["demo", "--bogus"]),
        2,
        "unexpected argument '--bogus'",
    );
    assert_exit(
        &cutover(&["demo", "--rows", "ten"]),
        2,
        "invalid value 'ten'",
    );
    assert_exit(
        &cutover(&["demo", "--dir", file]),
        2,
        "is a file, not a folder",
    );
    assert_exit(
        &cutover(&["sync", "--source", file, "--target", target]),
        2,
        "not a SQLite database",
    );
    assert_exit(
        &cutover(&[
            "verify",
            "--source",
            "sqlite:///nonexistent/x.db",
            "--target",
            target,
        ]),
        2,
        "no SQLite database at /nonexistent/x.db",
    );
    // Any source pairs with any target: PostgreSQL → SQLite gets as far as connecting.
    assert_exit(
        &cutover(&[
            "sync",
            "--source",
            "postgres://u:secret@127.0.0.1:1/db",
            "--target",
            target,
            "--retry-for",
            "0",
        ]),
        2,
        "connecting to postgres://u:***@127.0.0.1:1/db",
    );
    assert_exit(
        &cutover(&[
            "sync",
            "--source",
            "oracle://u:secret@127.0.0.1:1/db",
            "--target",
            target,
        ]),
        2,
        "oracle:// is not a database this build of cutover knows",
    );
    assert_exit(
        &cutover(&[
            "copy",
            "--source",
            "postgres://u:secret@127.0.0.1:1/db?sslmode=verify",
            "--target",
            "postgres://h/db",
        ]),
        2,
        "sslmode=verify is not one of",
    );
    let o = cutover(&[
        "copy",
        "--source",
        "postgres://u:secret@127.0.0.1:1/db",
        "--target",
        "postgres://u:secret@127.0.0.1:1/db2",
    ]);
    assert_exit(&o, 2, "connecting to postgres://u:***@127.0.0.1:1/db");
    assert!(
        !text(&o).1.contains("secret"),
        "passwords are never printed"
    );
    let o = cutover(&[
        "sync",
        "--source",
        "postgres://u:secret@127.0.0.1:1/db",
        "--target",
        target,
        "--retry-for",
        "0",
    ]);
    assert!(
        !text(&o).1.contains("secret"),
        "passwords are never printed"
    );
    assert_exit(
        &cutover(&["sync", "--target", target]),
        2,
        "no source database: pass --source",
    );
    let bad_config = dir.path().join("m.toml");
    std::fs::write(&bad_config, "source = \"sqlite://a.db\"\njobz = 3\n").unwrap();
    assert_exit(
        &cutover(&["copy", "--config", bad_config.to_str().unwrap()]),
        2,
        "unknown field `jobz`",
    );
}

#[test]
fn help_teaches_the_commands() {
    let o = cutover(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let (out, _) = text(&o);
    for word in ["demo", "sync", "verify", "cleanup", "Exit codes"] {
        assert!(out.contains(word), "--help mentions {word}:\n{out}");
    }
    let (out, _) = text(&cutover(&["demo", "--help"]));
    for word in ["--dir", "--rows", "--seconds", "./cutover-demo"] {
        assert!(out.contains(word), "demo --help mentions {word}:\n{out}");
    }
}

#[test]
fn demo_migrates_under_load_and_starts_over_cleanly_in_the_same_dir() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    for run in 0..2 {
        let o = cutover(&[
            "demo",
            "--dir",
            d,
            "--rows",
            "4000",
            "--seconds",
            "0.3",
            "--rate",
            "300",
        ]);
        let (out, err) = text(&o);
        assert_eq!(
            o.status.code(),
            Some(0),
            "run {run}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(out.contains("verify      equal"), "{out}");
        assert!(out.contains("0 differences"), "{out}");
        assert!(out.contains("write pause"), "{out}");
        let pause_ms: f64 = out
            .split("write pause ")
            .nth(2)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("summary reports the pause in ms:\n{out}"));
        assert!(pause_ms > 0.0, "{out}");
        assert!(
            !out.contains("\u{1b}["),
            "no terminal escapes when stdout is not a terminal"
        );
    }
}

const ROWS: i64 = 60_000;

fn create_source(path: &Path) {
    let c = Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE docs (id INTEGER PRIMARY KEY, owner TEXT NOT NULL, body BLOB, v INTEGER NOT NULL);
         CREATE TABLE tags (doc INTEGER, tag TEXT, PRIMARY KEY (doc, tag)) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in 0..ROWS {
        tx.execute(
            "INSERT INTO docs VALUES (?1, ?2, ?3, 0)",
            rusqlite::params![
                i,
                format!("owner{}", i % 97),
                vec![(i % 256) as u8; 1_000 + (i % 300) as usize]
            ],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO tags VALUES (?1, ?2)",
            rusqlite::params![i, format!("t{}", i % 5)],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

fn write_load(path: &Path, stop: &AtomicBool, writes: &AtomicU64) {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(Duration::from_secs(30)).unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut next = ROWS;
    while !stop.load(Ordering::Relaxed) {
        let id = rng.i64(0..next);
        let tx = c.unchecked_transaction().unwrap();
        match rng.u8(0..4) {
            0 => {
                tx.execute("INSERT INTO docs VALUES (?1, 'new', x'01', 0)", [next])
                    .unwrap();
                tx.execute("INSERT OR IGNORE INTO tags VALUES (?1, 'fresh')", [next])
                    .unwrap();
                next += 1;
            }
            1 => {
                tx.execute("DELETE FROM docs WHERE id = ?1", [id]).unwrap();
                tx.execute("DELETE FROM tags WHERE doc = ?1", [id]).unwrap();
            }
            _ => {
                tx.execute(
                    "UPDATE docs SET v = v + 1, body = randomblob(64) WHERE id = ?1",
                    [id],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        writes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn dump(path: &Path) -> Vec<Vec<rusqlite::types::Value>> {
    let c = Connection::open(path).unwrap();
    let mut out = Vec::new();
    for q in [
        "SELECT * FROM docs ORDER BY id",
        "SELECT * FROM tags ORDER BY doc, tag",
    ] {
        let mut st = c.prepare(q).unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n).map(|i| r.get(i)).collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        out.extend(rows.map(Result::unwrap));
    }
    out
}

fn chunks_done(target: &Path) -> (i64, i64) {
    let c = Connection::open(target).unwrap();
    c.query_row(
        "SELECT coalesce(sum(done), 0), count(*) FROM _cutover_chunks",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .unwrap_or((0, 0))
}

#[test]
fn sync_killed_with_sigkill_at_random_moments_resumes_to_equal() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    let dst = dir.path().join("dst.db");
    create_source(&src);
    let (s, t) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let mut rng = fastrand::Rng::with_seed(5);
    let log = dir.path().join("sync.log");
    let args = ["sync", "--source", s, "--target", t, "--jobs", "2"];
    let mut killed_during_copy = 0;
    std::thread::scope(|scope| {
        // Before the writer: a panic below stops it, and the scope can join it.
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = scope.spawn(|| write_load(&src, &stop, &writes));
        for round in 0..5 {
            let mut child = spawn_cutover(&args, &log);
            let what = format!("sync (round {round})");
            if round < 2 {
                // In the copy, at a random chunk: once this run has finished 1 to 3 chunks of
                // its own, while at least half of them are still to do (several seconds of
                // copying, so the copy cannot end between the look and the kill).
                let (start, total) = wait_for(
                    "the chunk plan",
                    Duration::from_secs(120),
                    || still_running(&mut child, &what, &log),
                    |seen| {
                        let (done, total) = chunks_done(&dst);
                        *seen = format!("{done} of {total} chunks done");
                        (total > 0).then_some((done, total))
                    },
                );
                let aim = start + rng.i64(1..=3);
                assert!(
                    aim <= total / 2,
                    "round {round}: {start} of {total} chunks were done already; the source is too small to kill sync during its copy"
                );
                wait_for(
                    &format!("{aim} chunks done"),
                    Duration::from_secs(120),
                    || still_running(&mut child, &what, &log),
                    |seen| {
                        let (done, total) = chunks_done(&dst);
                        *seen = format!("{done} of {total} chunks done");
                        (done >= aim).then_some(())
                    },
                );
            } else {
                // Anywhere: in the copy, in the steps after it, or while changes are applied.
                std::thread::sleep(Duration::from_millis(rng.u64(150..900)));
                if let Err(e) = still_running(&mut child, &what, &log) {
                    panic!("{e}");
                }
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let (done, total) = chunks_done(&dst);
            if total > 0 && done < total {
                killed_during_copy += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    eprintln!("{killed_during_copy} of 5 kills landed in the copy");
    assert!(
        killed_during_copy >= 2,
        "the kills of rounds 0 and 1 landed in the middle of the copy ({killed_during_copy} did)"
    );
    assert!(
        writes.load(Ordering::Relaxed) > 500,
        "the writer kept writing throughout"
    );

    let o = cutover(&[
        "sync",
        "--source",
        s,
        "--target",
        t,
        "--stop-when-caught-up",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("caught up"), "{out}");
    assert!(
        dump(&src) == dump(&dst),
        "source and target differ after the resumed sync"
    );

    let o = cutover(&["verify", "--source", s, "--target", t]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("equal"), "{out}");

    // A change on the target is found, and reported with exit 1.
    Connection::open(&dst)
        .unwrap()
        .execute(
            "UPDATE docs SET owner = 'tampered' WHERE id = (SELECT min(id) FROM docs)",
            [],
        )
        .unwrap();
    let o = cutover(&["verify", "--source", s, "--target", t]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("different: owner: owner0 ≠ tampered"), "{out}");

    let o = cutover(&["cleanup", "--source", s, "--target", t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let left: i64 = Connection::open(&src)
        .unwrap()
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name LIKE '%cutover%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0, "cleanup removed the triggers and the change log");
}

// PostgreSQL end to end, against throwaway servers.

fn pg_dump_all(pg: &cutover_testkit::Postgres, db: &str) -> Vec<String> {
    [
        "public.students ORDER BY id",
        "public.sessions ORDER BY id",
        "school.notes ORDER BY a, b",
    ]
    .iter()
    .map(|t| {
        let (table, order) = t.split_once(" ORDER BY ").unwrap();
        pg.psql(
            db,
            &format!("COPY (SELECT * FROM {table} ORDER BY {order}) TO STDOUT"),
        )
        .unwrap()
    })
    .collect()
}

fn pg_source(pg: &cutover_testkit::Postgres) -> String {
    let db = pg.fresh_database("e2e").unwrap();
    pg.psql(
        &db,
        "CREATE SCHEMA school;
         CREATE TABLE public.students (id bigint PRIMARY KEY, name text NOT NULL, profile jsonb);
         CREATE TABLE public.sessions (id uuid PRIMARY KEY, student_id bigint REFERENCES public.students, score numeric(6,2), answers jsonb);
         CREATE TABLE school.notes (a int, b text, body text, PRIMARY KEY (a, b));
         INSERT INTO public.students SELECT i, 'student ' || i, jsonb_build_object('n', i) FROM generate_series(1, 60000) i;
         INSERT INTO public.sessions SELECT md5(i::text)::uuid, 1 + i % 60000, (i % 10000) / 100.0, jsonb_build_object('a', repeat('x', 200)) FROM generate_series(1, 60000) i;
         INSERT INTO school.notes SELECT i % 100, 'n' || i, repeat('b', 100) FROM generate_series(1, 30000) i;
         ANALYZE;",
    )
    .unwrap();
    db
}

#[test]
fn pg_copy_from_a_config_file_prints_json_and_arrives_identical() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let dst = pg.fresh_database("e2e_cfg").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("migration.toml");
    std::fs::write(
        &cfg,
        format!(
            "source = \"{}\"\ntarget = \"{}\"\njobs = 2\n",
            pg.url(&src),
            pg.url(&dst)
        ),
    )
    .unwrap();
    let o = cutover(&[
        "copy",
        "--config",
        cfg.to_str().unwrap(),
        "--json",
        "--chunk-mb",
        "1",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let v: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["rows"], 150_000);
    assert!(v["mb_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(v["tables"].as_array().unwrap().len(), 3);
    assert!(v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["chunks"].as_u64().unwrap() > 1));
    assert_eq!(pg_dump_all(pg, &src), pg_dump_all(pg, &dst));
}

/// `(done, total)` of the target's chunk plan; `(0, 0)` while there is none.
fn pg_chunks(pg: &cutover_testkit::Postgres, db: &str) -> (i64, i64) {
    pg.psql(
        db,
        "SELECT count(*) FILTER (WHERE done), count(*) FROM _cutover.chunks",
    )
    .ok()
    .and_then(|row| {
        let (done, total) = row.split_once('|')?;
        Some((done.parse().ok()?, total.parse().ok()?))
    })
    .unwrap_or((0, 0))
}

/// The target's `_cutover.migration.phase`; `none` while there is no control store or no row.
fn pg_phase(pg: &cutover_testkit::Postgres, db: &str) -> String {
    pg.psql(
        db,
        "SELECT coalesce((SELECT phase FROM _cutover.migration), 'none')",
    )
    .unwrap_or_else(|_| "none".into())
}

/// Kills `child` (SIGKILL) in its copy, at a random moment: up to `max_ms` after its chunk
/// plan is stored and `working()` (the run itself is at work: a look at the source) holds,
/// and at once when only `left` chunks are still to do, so that the copy cannot end between
/// the last look and the kill (choose `left` above the chunks the run can have read ahead).
/// Returns the phase and the chunks `(done, total)` seen after the kill; panics if the
/// child ended or was not at work in its copy within 2 minutes.
#[allow(clippy::too_many_arguments)]
fn kill_in_copy(
    pg: &cutover_testkit::Postgres,
    db: &str,
    child: &mut KillOnDrop,
    what: &str,
    log: &Path,
    mut working: impl FnMut() -> bool,
    max_ms: u64,
    left: i64,
    rng: &mut fastrand::Rng,
) -> (String, i64, i64) {
    wait_for(
        "the run at work in its copy",
        Duration::from_secs(120),
        || still_running(child, what, log),
        |seen| {
            let ((done, total), phase) = (pg_chunks(pg, db), pg_phase(pg, db));
            *seen = format!("phase {phase}, {done} of {total} chunks done");
            (phase == "copying" && total > 0 && working()).then_some(())
        },
    );
    let until = Instant::now() + Duration::from_millis(rng.u64(0..max_ms));
    loop {
        if let Err(e) = still_running(child, what, log) {
            panic!("{e}");
        }
        let (done, total) = pg_chunks(pg, db);
        if Instant::now() >= until || total - done <= left {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (done, total) = pg_chunks(pg, db);
    (pg_phase(pg, db), done, total)
}

/// Whether a `COPY` streams out of `db` (a copy worker reads a chunk).
fn copy_streaming(pg: &cutover_testkit::Postgres, db: &str) -> bool {
    pg.psql(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'COPY%TO STDOUT%'",
    )
    .is_ok_and(|n| n != "0")
}

/// Whether a WAL sender streams from a slot of `db` (a sync follows its changes).
fn slot_active(pg: &cutover_testkit::Postgres, db: &str) -> bool {
    pg.psql(
        db,
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active",
    )
    .is_ok_and(|n| n != "0")
}

/// Waits (2 minutes at most) until `busy` no longer holds: what a killed run left on the
/// server is gone before the next run's activity is looked for.
fn wait_gone(what: &str, mut busy: impl FnMut() -> bool) {
    wait_for(
        &format!("the end of {what}"),
        Duration::from_secs(120),
        || Ok(()),
        |_| (!busy()).then_some(()),
    );
}

#[test]
fn pg_copy_killed_with_sigkill_at_random_moments_resumes_without_loss_or_duplicates() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let dst = pg.fresh_database("e2e_kill").unwrap();
    let (s, t) = (pg.url(&src), pg.url(&dst));
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut killed_in = Vec::new();
    for round in 0..4 {
        // Throttled so that the copy lasts several seconds, and killed in it.
        wait_gone("the killed copy's COPY", || copy_streaming(pg, &src));
        let mut child = spawn_cutover(
            &[
                "copy",
                "--source",
                &s,
                "--target",
                &t,
                "--jobs",
                "2",
                "--chunk-mb",
                "1",
                "--max-rows-per-sec",
                "40000",
            ],
            log.path(),
        );
        let what = format!("copy (round {round})");
        // Odd rounds once this run finished a chunk, even ones once it streams its first: in
        // the middle of chunks, and after some are done. At most 2 are read at a time.
        let start = pg_chunks(pg, &dst).0;
        killed_in.push(kill_in_copy(
            pg,
            &dst,
            &mut child,
            &what,
            log.path(),
            || match round % 2 {
                0 => copy_streaming(pg, &src),
                _ => pg_chunks(pg, &dst).0 > start,
            },
            1_000,
            3,
            &mut rng,
        ));
    }
    eprintln!("kills landed in (phase, chunks done, chunks): {killed_in:?}");
    assert!(
        killed_in
            .iter()
            .all(|(phase, done, total)| phase == "copying" && done < total),
        "every kill landed in the copy (phase, chunks done, chunks): {killed_in:?}"
    );
    let o = cutover(&["copy", "--source", &s, "--target", &t, "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["resumed"], true, "{out}");
    assert_eq!(pg_dump_all(pg, &src), pg_dump_all(pg, &dst));
    assert_eq!(
        pg.psql(&dst, "SELECT phase FROM _cutover.migration")
            .unwrap(),
        "copied"
    );
}

/// Writes to the e2e source until `stop`: updates, inserts, deletes on every table.
fn pg_writer(url: String, stop: &AtomicBool, writes: &AtomicU64) {
    let mut c = cutover_postgres::PgEndpoint::from_url(&url)
        .unwrap()
        .connect()
        .unwrap();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut next = 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let id = rng.i64(1..60_000);
        next += 1;
        let sql = match rng.u8(0..5) {
            0 => format!("UPDATE public.students SET profile = profile || '{{\"seen\": {next}}}' WHERE id = {id}"),
            1 => format!("INSERT INTO public.students VALUES ({next}, 'new {next}', NULL)"),
            2 => format!("UPDATE public.sessions SET score = score + 1 WHERE id = md5('{id}')::uuid"),
            3 => format!("DELETE FROM school.notes WHERE a = {} AND b = 'n{id}'", id % 100),
            _ => format!("BEGIN; INSERT INTO school.notes VALUES ({}, 'w{next}', 'x'); UPDATE public.students SET name = 'renamed' WHERE id = {}; COMMIT", next % 100, id + 1),
        };
        c.batch_execute(&sql).unwrap();
        writes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Sync's default for two PostgreSQL databases: the bulk path (binary COPY in the slot's
/// snapshot), then the changes from the slot.
#[test]
fn pg_sync_killed_with_sigkill_in_bulk_copy_and_apply_resumes_to_equal() {
    pg_sync_killed_in_copy_and_apply("auto", "e2e_sync_kill_bulk");
}

/// The path every other pair takes: chunks read beside the change stream, written by the
/// applier.
#[test]
fn pg_sync_killed_with_sigkill_in_copy_and_apply_resumes_to_equal() {
    pg_sync_killed_in_copy_and_apply("rows", "e2e_sync_kill");
}

fn pg_sync_killed_in_copy_and_apply(method: &str, db: &str) {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let dst = pg.fresh_database(db).unwrap();
    let (s, t) = (pg.url(&src), pg.url(&dst));
    let log = tempfile::NamedTempFile::new().unwrap();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut killed_in = Vec::new();
    std::thread::scope(|sc| {
        // Before the writer: a panic below stops it, and the scope can join it.
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| pg_writer(s.clone(), &stop, &writes));
        for round in 0..6 {
            wait_gone("the killed sync's WAL sender", || slot_active(pg, &src));
            let mut child = spawn_cutover(
                &[
                    "sync",
                    "--source",
                    &s,
                    "--target",
                    &t,
                    "--jobs",
                    "2",
                    "--copy-method",
                    method,
                    // The bulk path's chunks are 64 MB by default (the source would be 3),
                    // and it copies this source in well under a second: slowed down, the
                    // kills land inside it.
                    "--chunk-mb",
                    if method == "rows" { "4" } else { "1" },
                    "--max-rows-per-sec",
                    if method == "rows" {
                        "10000000"
                    } else {
                        "40000"
                    },
                ],
                log.path(),
            );
            let what = format!("sync (round {round})");
            let (phase, done, total) = if round < 3 {
                // In the copy, once this run is at work on the source: the applier's path
                // follows the source's changes as it copies (it holds at most 2 × jobs chunks
                // read ahead); the bulk path streams COPY out of the source.
                kill_in_copy(
                    pg,
                    &dst,
                    &mut child,
                    &what,
                    log.path(),
                    || match method {
                        "rows" => slot_active(pg, &src),
                        _ => copy_streaming(pg, &src),
                    },
                    1_500,
                    5,
                    &mut rng,
                )
            } else {
                // While changes are applied: once the copy is done, at a random moment.
                wait_for(
                    "the end of the copy",
                    Duration::from_secs(180),
                    || still_running(&mut child, &what, log.path()),
                    |seen| {
                        *seen = pg_phase(pg, &dst);
                        (seen == "replicating").then_some(())
                    },
                );
                std::thread::sleep(Duration::from_millis(rng.u64(0..1_500)));
                if let Err(e) = still_running(&mut child, &what, log.path()) {
                    panic!("{e}");
                }
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                let (done, total) = pg_chunks(pg, &dst);
                (pg_phase(pg, &dst), done, total)
            };
            if round == 0 {
                // Which path copies: the run's own words.
                let said = std::fs::read_to_string(log.path()).unwrap();
                let bulk = said.contains("copying with binary COPY");
                assert_eq!(bulk, method == "auto", "{said}");
            }
            killed_in.push(match (phase.as_str(), done < total) {
                ("copying", true) | ("replicating", false) => phase,
                _ => format!("{phase} ({done} of {total} chunks done)"),
            });
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    eprintln!("kills landed in: {killed_in:?}");
    assert_eq!(
        killed_in,
        [
            "copying",
            "copying",
            "copying",
            "replicating",
            "replicating",
            "replicating"
        ],
        "where the kills landed"
    );
    assert!(writes.load(Ordering::Relaxed) > 500);
    let written_upto: cutover_model::Position = format!(
        "lsn:{}",
        pg.psql(&src, cutover_postgres::COMMITTED_POSITION_SQL)
            .unwrap()
    )
    .parse()
    .unwrap();
    let o = cutover(&[
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--stop-when-caught-up",
        "--copy-method",
        method,
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("caught up"), "{out}");
    assert_eq!(pg_dump_all(pg, &src), pg_dump_all(pg, &dst));
    let o = cutover(&["status", "--target", &t, "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(v["phase"], "replicating", "{out}");
    assert_eq!(v["mode"], "sync", "{out}");
    // Lag is measured against a source whose WAL keeps moving (other databases of the shared
    // test server); what is certain is that everything the writer wrote is applied.
    assert!(
        v["lag_bytes"].is_i64() && v["lag_seconds"].is_f64(),
        "{out}"
    );
    let applied: cutover_model::Position = v["applied_position"].as_str().unwrap().parse().unwrap();
    assert!(
        cutover_connector::PositionOrderExt::reached(
            &cutover_postgres::lsn::LSNS,
            &applied,
            &written_upto
        ),
        "{out}"
    );
    assert!(v["changes_applied"].as_i64().unwrap() > 500, "{out}");
    assert!(
        v["applied_position"].as_str().unwrap().starts_with("lsn:"),
        "{out}"
    );
    let tables = v["tables"].as_array().unwrap();
    assert_eq!(tables.len(), 3, "{out}");
    assert!(
        tables.iter().all(|t| t["chunks"] == t["chunks_done"]),
        "{out}"
    );
    let o = cutover(&["status", "--target", &t]);
    assert!(text(&o).0.contains("lag"), "{}", text(&o).0);

    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(slots(pg, &src), "0");
    assert_eq!(
        pg.psql(&dst, "SELECT to_regnamespace('_cutover') IS NULL")
            .unwrap(),
        "t"
    );
}

fn verify_json(args: &[&str], code: i32) -> serde_json::Value {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let o = cutover(&all);
    let (out, err) = text(&o);
    // A report of thousands of differences is cut: the counts come last, per table.
    let shown = match out.find("\"tables\"") {
        Some(i) if out.len() > 4_000 => format!("{}… {}", &out[..1_000.min(i)], &out[i..]),
        _ => out.clone(),
    };
    assert_eq!(o.status.code(), Some(code), "{shown}\n{err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {shown}"))
}

/// `table key kind columns` of each reported difference, sorted.
fn differences(v: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let cols: Vec<&str> = d["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["column"].as_str().unwrap())
                .collect();
            format!(
                "{} {} {} {}",
                d["table"].as_str().unwrap(),
                d["key"],
                d["kind"].as_str().unwrap(),
                cols.join(",")
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn pg_verify_reports_exactly_the_edited_rows_and_repair_makes_it_equal() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let dst = pg.fresh_database("e2e_verify").unwrap();
    let (s, t) = (pg.url(&src), pg.url(&dst));
    let o = cutover(&["copy", "--source", &s, "--target", &t, "--json"]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let ends = [
        "--source",
        s.as_str(),
        "--target",
        t.as_str(),
        "--jobs",
        "2",
    ];

    let v = verify_json(&ends, 0);
    assert_eq!(v["equal"], true);
    assert_eq!(v["rows_compared"], 150_000);
    assert_eq!(v["differences"].as_array().unwrap().len(), 0);

    // Equal values spelled differently are not differences; real edits are, exactly.
    pg.psql(
        &dst,
        "UPDATE public.students SET profile = '{\"n\":  5}'::jsonb WHERE id = 5;
         UPDATE public.sessions SET score = 1.50 WHERE score = 1.5;
         UPDATE public.students SET profile = '{\"n\": 7, \"x\": true}' WHERE id = 7;
         UPDATE public.sessions SET score = score + 0.01 WHERE id = md5('123')::uuid;
         UPDATE public.students SET profile = NULL WHERE id = 40000;
         DELETE FROM school.notes WHERE a = 5 AND b = 'n5';
         INSERT INTO public.students VALUES (60001, 'extra', NULL);",
    )
    .unwrap();
    let v = verify_json(&ends, 1);
    assert_eq!(
        differences(&v),
        [
            "public.sessions {\"id\":\"202cb962-ac59-075b-964b-07152d234b70\"} different score",
            "public.students {\"id\":40000} different profile",
            "public.students {\"id\":60001} extra ",
            "public.students {\"id\":7} different profile",
            "school.notes {\"a\":5,\"b\":\"n5\"} missing ",
        ]
    );
    let d = v["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["key"]["id"] == 40000)
        .unwrap();
    assert_eq!(d["columns"][0]["source"], "{\"n\": 40000}");
    assert!(d["columns"][0]["target"].is_null());
    assert_eq!(
        pg.psql(&dst, "SELECT count(*) FROM _cutover.mismatches")
            .unwrap(),
        "5"
    );

    // The human report names table, key, kind and both values.
    let o = cutover(&["verify", "--source", &s, "--target", &t]);
    let (out, _) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(
            "public.students (id=7): different: profile: {\"n\": 7} ≠ {\"n\": 7, \"x\": true}"
        ),
        "{out}"
    );
    assert!(
        out.contains("school.notes (a=5, b='n5'): missing on target"),
        "{out}"
    );

    // --live without a running sync says so and exits 2.
    let o = cutover(&["verify", "--source", &s, "--target", &t, "--live"]);
    assert_exit(&o, 2, "needs a running sync");

    let mut repair = ends.to_vec();
    repair.push("--repair");
    let v = verify_json(&repair, 0);
    assert_eq!(v["repair"]["upserted"], 4);
    assert_eq!(v["repair"]["deleted"], 1);
    assert_eq!(v["repair"]["still_different"], 0);
    let v = verify_json(&ends, 0);
    assert_eq!(v["equal"], true);
    assert_eq!(pg_dump_all(pg, &src), pg_dump_all(pg, &dst));
}

#[test]
fn sqlite_verify_ignores_json_spelling_and_repairs_real_differences() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    for p in [&a, &b] {
        let c = Connection::open(p).unwrap();
        c.execute_batch(
            "CREATE TABLE docs (id INTEGER PRIMARY KEY, title TEXT, meta JSON, score REAL, body BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
             INSERT INTO docs SELECT i, 'doc ' || i, '{\"a\": ' || i || ', \"b\": [1, 2]}', i / 4.0, x'00ff' FROM n;",
        )
        .unwrap();
    }
    let (s, t) = (a.to_str().unwrap(), b.to_str().unwrap());
    let c = Connection::open(&b).unwrap();
    c.execute_batch(
        "UPDATE docs SET meta = '{\"b\":[1,2],   \"a\":' || id || '}' WHERE id % 10 = 0;",
    )
    .unwrap();
    let v = verify_json(&["--source", s, "--target", t], 0);
    assert_eq!(v["rows_compared"], 5000);

    c.execute_batch(
        "UPDATE docs SET score = 0.3 WHERE id = 99;
         UPDATE docs SET title = NULL WHERE id = 100;
         DELETE FROM docs WHERE id = 4999;
         INSERT INTO docs VALUES (6000, 'x', NULL, NULL, NULL);",
    )
    .unwrap();
    let v = verify_json(&["--source", s, "--target", t], 1);
    assert_eq!(
        differences(&v),
        [
            "docs {\"id\":100} different title",
            "docs {\"id\":4999} missing ",
            "docs {\"id\":6000} extra ",
            "docs {\"id\":99} different score",
        ]
    );
    let recorded: i64 = c
        .query_row("SELECT count(*) FROM _cutover_mismatches", [], |r| r.get(0))
        .unwrap();
    assert_eq!(recorded, 4);
    verify_json(&["--source", s, "--target", t, "--repair"], 0);
    verify_json(&["--source", s, "--target", t], 0);
    assert_exit(
        &cutover(&["verify", "--source", s, "--target", t, "--live"]),
        2,
        "--live waits on the sync applier",
    );
    // cleanup takes the mismatch table with the rest of the control store.
    let o = cutover(&["cleanup", "--source", s, "--target", t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let left: i64 = c
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = '_cutover_mismatches'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn pg_switch_and_rollback_from_the_command_line_report_pause_and_direction() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let dst = pg.fresh_database("e2e_switch").unwrap();
    let (s, t) = (pg.url(&src), pg.url(&dst));
    let ends = ["--source", s.as_str(), "--target", t.as_str()];
    let run = |cmd: &[&str]| {
        let mut args = cmd.to_vec();
        args.extend_from_slice(&ends);
        let o = cutover(&args);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{cmd:?}\n{out}\n{err}");
        (out, err)
    };
    let status = || {
        let o = cutover(&["status", "--target", &t, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&text(&o).0).unwrap();
        (
            v["phase"].as_str().unwrap().to_owned(),
            v["direction"].as_str().unwrap().to_owned(),
        )
    };
    run(&["sync", "--stop-when-caught-up"]);
    assert_eq!(status(), ("replicating".into(), "forward".into()));

    let (out, _) = run(&["switch", "--json", "--max-pause-ms", "30000"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["switched"], true, "{out}");
    assert_eq!(v["direction"], "reverse", "{out}");
    assert!(v["write_pause_ms"].as_f64().unwrap() > 0.0, "{out}");
    assert!(v["drain_ms"].as_f64().unwrap() <= v["write_pause_ms"].as_f64().unwrap());
    assert!(
        v["writes_refused_ms"].as_f64().unwrap() >= v["write_pause_ms"].as_f64().unwrap(),
        "{out}"
    );
    assert!(v["paused_sessions_ended"].is_u64(), "{out}");
    assert!(v["verified_rows"].is_u64(), "{out}");
    // Each step carries its wall-clock start (ms since the epoch), in order, to line it up
    // with what clients saw.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        * 1e3;
    let starts: Vec<f64> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["start_ms"].as_f64().expect("start_ms"))
        .collect();
    assert!(starts.len() >= 5, "{out}");
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "{out}");
    assert!(
        starts[0] > now_ms - 120_000.0 && *starts.last().unwrap() <= now_ms,
        "{out}"
    );
    assert_eq!(status(), ("switched".into(), "reverse".into()));
    assert!(
        pg.psql(&src, "INSERT INTO school.notes VALUES (1, 'x', 'y')")
            .is_err(),
        "source fenced"
    );
    pg.psql(
        &dst,
        "INSERT INTO school.notes VALUES (1, 'written on the target', 'y')",
    )
    .unwrap();
    // The same sync command now follows changes back to the source.
    let (_, err) = run(&["sync", "--stop-when-caught-up"]);
    assert!(err.contains("following changes back"), "{err}");
    assert_eq!(
        pg.psql(
            &src,
            "SELECT count(*) FROM school.notes WHERE b = 'written on the target'"
        )
        .unwrap(),
        "1"
    );
    // A second switch is refused; rollback goes back.
    let o = cutover(&["switch", "--source", &s, "--target", &t]);
    assert_exit(&o, 2, "already switched");
    let (out, _) = run(&["rollback", "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["direction"], "forward", "{out}");
    assert_eq!(status(), ("replicating".into(), "forward".into()));
    pg.psql(
        &src,
        "INSERT INTO school.notes VALUES (2, 'after rollback', 'y')",
    )
    .unwrap();
    run(&["sync", "--stop-when-caught-up"]);
    assert_eq!(pg_dump_all(pg, &src), pg_dump_all(pg, &dst));
    run(&["cleanup"]);
    // Nothing of cutover's is left on either side, and the target takes writes again.
    for db in [&src, &dst] {
        assert_eq!(
            pg.psql(
                db,
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            )
            .unwrap(),
            "0"
        );
        assert_eq!(
            pg.psql(db, "SELECT count(*) FROM pg_publication").unwrap(),
            "0"
        );
        assert_eq!(
            pg.psql(db, "SELECT to_regnamespace('_cutover') IS NULL")
                .unwrap(),
            "t"
        );
    }
    pg.psql(
        &dst,
        "INSERT INTO school.notes VALUES (3, 'after cleanup', 'y')",
    )
    .unwrap();
}

#[test]
fn redirected_output_has_no_colour_codes_json_logs_parse_and_quiet_prints_no_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    Connection::open(&a)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
             INSERT INTO t SELECT i, 'v' || i FROM n;",
        )
        .unwrap();
    let (s, t) = (a.to_str().unwrap(), b.to_str().unwrap());
    let o = cutover(&[
        "sync",
        "--source",
        s,
        "--target",
        t,
        "--stop-when-caught-up",
        "--log",
        "info",
        "--log-format",
        "json",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        !out.contains('\u{1b}') && !err.contains('\u{1b}'),
        "no escape codes off a terminal:\n{out}\n{err}"
    );
    let logs: Vec<serde_json::Value> = err
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        logs.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("sync starting"))),
        "{err}"
    );
    // A second run catches up at once; with --quiet only its summary is printed.
    let o = cutover(&[
        "sync",
        "--source",
        s,
        "--target",
        t,
        "--stop-when-caught-up",
        "--quiet",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert_eq!(out.lines().count(), 1, "only the summary:\n{out}");
    assert!(out.starts_with("caught up:"), "{out}");
}

#[test]
fn a_config_file_takes_every_flags_key() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    Connection::open(&a)
        .unwrap()
        .execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t VALUES (1, 'x');",
        )
        .unwrap();
    let config = dir.path().join("m.toml");
    std::fs::write(
        &config,
        format!(
            "source = {:?}\ntarget = {:?}\nname = \"m\"\ncapture = true\nchunk_mb = 8\nddl = \"stop\"\nretry_for = 5\njobs = 1\n",
            a.to_str().unwrap(),
            b.to_str().unwrap()
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let o = cutover(&["sync", "--config", c, "--stop-when-caught-up"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // copy reads them too, and refuses only what it cannot do with two SQLite files.
    assert_exit(
        &cutover(&["copy", "--config", c]),
        2,
        "sync --stop-when-caught-up",
    );
    std::fs::write(&config, "ddl = \"sometimes\"\n").unwrap();
    assert_exit(
        &cutover(&["sync", "--config", c]),
        2,
        "unknown variant `sometimes`",
    );
}

/// The demo's summary adds up: the rows the workload changed on the source before the switch
/// (inserted + updated + deleted, as SQLite counted them) are the changes sync applied, and
/// the copy is verified equal.
#[test]
fn the_demo_summary_adds_up() {
    let dir = tempfile::tempdir().unwrap();
    let out = cutover(&[
        "demo",
        "--dir",
        dir.path().join("demo").to_str().unwrap(),
        "--rows",
        "20000",
        "--seconds",
        "1",
        "--rate",
        "300",
    ]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("replicated"))
        .unwrap_or_else(|| panic!("no replicated line: {stdout}"));
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    // changes, transactions, rows, inserted, updated, deleted, superseded
    let [changes, _, rows, ins, upd, del, _] = numbers[..] else {
        panic!("unexpected summary line: {line}")
    };
    assert!(changes > 0, "{line}");
    assert_eq!(rows, ins + upd + del, "{line}");
    assert_eq!(changes, rows, "{line}");
    assert!(stdout.contains("equal:"), "{stdout}");
}

#[cfg(all(feature = "failpoints", any(feature = "nats", feature = "kafka")))]
/// The events a stream target holds for [`write_load`]'s tables (`docs`, `tags`), in order per
/// key, checked: each document's updates arrive one by one (its version counts up by exactly
/// one from event to event: none lost, none repeated), and the events folded by key give the
/// source's rows (the SQLite file `src`).
pub(crate) fn assert_sqlite_events<'a>(
    src: &Path,
    events: impl IntoIterator<Item = &'a serde_json::Value>,
) {
    use std::collections::{HashMap, HashSet};
    let mut docs: HashMap<i64, i64> = HashMap::new();
    let mut tags: HashSet<(i64, String)> = HashSet::new();
    let mut versions: HashMap<i64, Vec<i64>> = HashMap::new();
    for e in events {
        let op = e["op"].as_str().unwrap();
        let table = e["source"]["table"].as_str().unwrap();
        let row = if op == "d" { &e["before"] } else { &e["after"] };
        match (table, op) {
            ("docs", "d") => {
                docs.remove(&row["id"].as_i64().unwrap());
            }
            ("docs", _) => {
                let (k, v) = (row["id"].as_i64().unwrap(), row["v"].as_i64().unwrap());
                docs.insert(k, v);
                if op != "r" {
                    versions.entry(k).or_default().push(v);
                }
            }
            ("tags", "d") => {
                tags.remove(&(
                    row["doc"].as_i64().unwrap(),
                    row["tag"].as_str().unwrap().to_owned(),
                ));
            }
            ("tags", _) => {
                tags.insert((
                    row["doc"].as_i64().unwrap(),
                    row["tag"].as_str().unwrap().to_owned(),
                ));
            }
            other => panic!("unexpected event {other:?}: {e}"),
        }
    }
    for (k, vs) in &versions {
        for w in vs.windows(2) {
            assert_eq!(
                w[1],
                w[0] + 1,
                "doc {k}: versions {vs:?} (a lost or repeated update)"
            );
        }
    }
    let c = rusqlite::Connection::open(src).unwrap();
    let source_docs: HashMap<i64, i64> = c
        .prepare("SELECT id, v FROM docs")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let source_tags: HashSet<(i64, String)> = c
        .prepare("SELECT doc, tag FROM tags")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        docs.len(),
        source_docs.len(),
        "docs from folding the target's events"
    );
    assert!(
        docs == source_docs,
        "docs folded from the target's events differ from the source"
    );
    assert!(
        tags == source_tags,
        "tags folded from the target's events differ from the source"
    );
}
