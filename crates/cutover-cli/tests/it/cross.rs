//! Issue 10, the proof: SQLite → PostgreSQL and PostgreSQL → SQLite from the command line. A
//! sync killed with SIGKILL at random moments under a concurrent writer ends equal, checked by
//! reading both sides with their own drivers (not cutover's reader); `verify` across the two
//! engines says equal, then finds a planted difference by its key; `status` reads the
//! migration on a PostgreSQL target fed by SQLite.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::types::Value as Sql;
use rusqlite::Connection;

use super::{
    create_source, cutover, differences, pg_source, pg_writer, spawn_cutover, still_running, text,
    verify_json, write_load,
};

/// `sync --jobs 2` from `s` to `t` while `writer` writes to the source (until the flag it is
/// given is set, counting its writes in the counter), killed with SIGKILL `rounds` times at
/// random moments (`seed`), then drained with `--stop-when-caught-up`; returns the writes.
pub(crate) fn sync_killed_under_writes(
    s: &str,
    t: &str,
    rounds: usize,
    seed: u64,
    writer: impl FnOnce(&AtomicBool, &AtomicU64) + Send,
) -> u64 {
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let w = sc.spawn(|| writer(&stop, &writes));
        kill_and_resume(
            &["sync", "--source", s, "--target", t, "--jobs", "2"],
            rounds,
            || {
                stop.store(true, Ordering::Relaxed);
                w.join().unwrap();
            },
            seed,
        );
    });
    writes.load(Ordering::Relaxed)
}

/// Runs `sync ARGS` `rounds` times, each killed with SIGKILL after a random 0.3–2.5 s, then
/// once more with `--stop-when-caught-up` after `stop` ended the writer.
pub(crate) fn kill_and_resume(args: &[&str], rounds: usize, stop: impl FnOnce(), seed: u64) {
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut rng = fastrand::Rng::with_seed(seed);
    for round in 0..rounds {
        let mut child = spawn_cutover(args, log.path());
        std::thread::sleep(Duration::from_millis(rng.u64(300..2_500)));
        if let Err(e) = still_running(&mut child, &format!("sync (round {round})"), log.path()) {
            panic!("{e}");
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    stop();
    let mut last: Vec<&str> = args.to_vec();
    last.push("--stop-when-caught-up");
    let o = cutover(&last);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("caught up"), "{out}");
}

/// A SQLite value as PostgreSQL's text output writes the same value in the column the type map
/// gives it (bigint, text, bytea), `\N` for NULL.
fn sqlite_text(v: &Sql) -> String {
    match v {
        Sql::Null => "\\N".to_owned(),
        Sql::Integer(i) => i.to_string(),
        Sql::Real(f) => f.to_string(),
        Sql::Text(t) => t.clone(),
        Sql::Blob(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
            format!("\\\\x{hex}")
        }
    }
}

fn sqlite_lines(path: &Path, sql: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, Sql>(i).map(|v| sqlite_text(&v)))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(|r| r.unwrap().join("\t"))
    .collect()
}

fn pg_lines(pg: &cutover_testkit::Postgres, db: &str, sql: &str) -> Vec<String> {
    let out = pg
        .psql(db, &format!("COPY ({sql}) TO STDOUT"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.lines().map(str::to_owned).collect()
}

#[test]
fn sqlite_to_postgres_killed_with_sigkill_under_writes_ends_equal_and_verifies() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    create_source(&src);
    let dst = pg.fresh_database("x_sqlite_pg").unwrap();
    let t = pg.url(&dst);
    let s = src.to_str().unwrap().to_owned();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| write_load(&src, &stop, &writes));
        kill_and_resume(
            &["sync", "--source", &s, "--target", &t, "--jobs", "2"],
            4,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            21,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");

    // status reads the migration from the PostgreSQL target's control store, right after the
    // sync stopped (later it says the sync is not running and shows no lag).
    let (st, out) = status_of(&t, "seq:");
    assert!(
        st["lag_changes"].is_i64(),
        "lag in the source's unit: {out}"
    );
    assert!(st["lag_bytes"].is_null(), "{out}");

    // Both sides with their own drivers.
    let docs = "SELECT id, owner, body, v FROM docs ORDER BY id";
    let tags = "SELECT doc, tag FROM tags ORDER BY doc, tag";
    let (a, b) = (sqlite_lines(&src, docs), pg_lines(pg, &dst, docs));
    assert_eq!(a.len(), b.len(), "docs rows");
    assert!(
        a == b,
        "docs differ, e.g. {:?}",
        a.iter().zip(&b).find(|(x, y)| x != y)
    );
    assert_eq!(sqlite_lines(&src, tags), pg_lines(pg, &dst, tags), "tags");

    // verify across the engines: equal, then a planted difference found by its key.
    let v = verify_json(&["--source", &s, "--target", &t], 0);
    assert!(v["rows_compared"].as_u64().unwrap() > 2 * 50_000, "{v}");
    pg.psql(
        &dst,
        "SET default_transaction_read_only = off; UPDATE docs SET owner = 'planted' WHERE id = 4242",
    )
    .unwrap();
    let v = verify_json(&["--source", &s, "--target", &t], 1);
    assert_eq!(differences(&v), ["docs {\"id\":4242} different owner"]);

    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

#[test]
fn postgres_to_sqlite_killed_with_sigkill_under_writes_ends_equal_and_verifies() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg_source(pg);
    let s = pg.url(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("target.db");
    let t = dst.to_str().unwrap().to_owned();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| pg_writer(s.clone(), &stop, &writes));
        kill_and_resume(
            &["sync", "--source", &s, "--target", &t, "--jobs", "2"],
            4,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            22,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");

    // status reads the SQLite target's control store: positions and lag in the source's
    // units (WAL bytes).
    let (st, out) = status_of(&t, "lsn:");
    assert!(
        st["lag_bytes"].is_i64() && st["changes_applied"].is_i64(),
        "{out}"
    );

    // PostgreSQL's own text against the values SQLite holds, as the type map stores them:
    // bigint and text as they are, jsonb as its text, numeric as its exact text, uuid as 16
    // bytes.
    let students = (
        "SELECT id, name, profile::text FROM public.students ORDER BY id",
        "SELECT id, name, profile FROM students ORDER BY id",
    );
    let sessions = (
        "SELECT encode(uuid_send(id), 'hex'), student_id, score::text, answers::text FROM public.sessions ORDER BY id",
        "SELECT hex(id), student_id, score, answers FROM sessions ORDER BY id",
    );
    let notes = (
        "SELECT a, b, body FROM school.notes ORDER BY a, b COLLATE \"C\"",
        "SELECT a, b, body FROM notes ORDER BY a, b",
    );
    for (what, (p, q)) in [
        ("students", students),
        ("sessions", sessions),
        ("notes", notes),
    ] {
        let (a, b) = (pg_lines(pg, &src, p), sqlite_lines(&dst, q));
        let b: Vec<String> = if what == "sessions" {
            b.into_iter().map(|l| lower_first(&l)).collect()
        } else {
            b
        };
        assert_eq!(a.len(), b.len(), "{what}: rows");
        assert!(
            a == b,
            "{what} differ, e.g. {:?}",
            a.iter().zip(&b).find(|(x, y)| x != y)
        );
    }

    let v = verify_json(&["--source", &s, "--target", &t], 0);
    assert!(v["rows_compared"].as_u64().unwrap() > 100_000, "{v}");
    Connection::open(&dst)
        .unwrap()
        .execute("UPDATE students SET name = 'planted' WHERE id = 4242", [])
        .unwrap();
    let v = verify_json(&["--source", &s, "--target", &t], 1);
    assert_eq!(
        differences(&v),
        ["public.students {\"id\":4242} different name"]
    );
    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// `cutover status --json` of a target that has caught up, its applied position in the source's
/// kind (`prefix`); with the output for messages.
fn status_of(target: &str, prefix: &str) -> (serde_json::Value, String) {
    let o = cutover(&["status", "--target", target, "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["phase"], "replicating", "{out}");
    assert!(
        st["applied_position"]
            .as_str()
            .is_some_and(|p| p.starts_with(prefix)),
        "{out}"
    );
    (st, out)
}

/// SQLite's `hex()` is upper case; PostgreSQL's `encode(…, 'hex')` lower.
fn lower_first(line: &str) -> String {
    match line.split_once('\t') {
        Some((first, rest)) => format!("{}\t{rest}", first.to_ascii_lowercase()),
        None => line.to_ascii_lowercase(),
    }
}

#[test]
fn demo_into_postgres_ends_equal_and_refuses_a_database_it_already_filled() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let db = pg.fresh_database("x_demo").unwrap();
    let url = pg.url(&db);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let args = [
        "demo",
        "--dir",
        d,
        "--rows",
        "3000",
        "--seconds",
        "0.3",
        "--rate",
        "200",
        "--target",
        &url,
    ];
    let o = cutover(&args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("verify      equal"), "{out}");
    assert!(out.contains("0 differences"), "{out}");
    // The rows are in PostgreSQL, read by its own client.
    let students: i64 = pg
        .psql(&db, "SELECT count(*) FROM public.students")
        .unwrap()
        .parse()
        .unwrap();
    assert!(students > 100, "{students}");
    let o = cutover(&args);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("is not empty"), "{err}");
}
