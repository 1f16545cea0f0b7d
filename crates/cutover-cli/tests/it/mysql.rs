//! Issue 12 from the command line: MariaDB as a target of SQLite and PostgreSQL sources. A sync
//! killed with SIGKILL at random moments under a concurrent writer ends equal, checked by
//! reading both sides with their own clients (rusqlite, psql, the `mariadb` command), not
//! cutover's reader; `status` reads the migration's state from the MariaDB target.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::Connection;

use super::{create_source, cutover, pg_source, pg_writer, text, write_load};

fn sqlite_lines(path: &Path, sql: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    st.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, String>(i))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
    .map(|r| r.unwrap().join("\t"))
    .collect()
}

fn maria_lines(m: &cutover_testkit::MariaDb, db: &str, sql: &str) -> Vec<String> {
    let out = m.sql(db, sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.lines().map(str::to_owned).collect()
}

#[test]
fn sqlite_to_mariadb_killed_with_sigkill_under_writes_ends_equal() {
    let m = cutover_testkit::MariaDb::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    create_source(&src);
    let db = m.fresh_database("x_sqlite_maria").unwrap();
    let t = m.url(&db);
    let s = src.to_str().unwrap().to_owned();
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| write_load(&src, &stop, &writes));
        super::cross::kill_and_resume(
            &["sync", "--source", &s, "--target", &t, "--jobs", "2"],
            3,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            31,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");

    let docs_sqlite = "SELECT CAST(id AS TEXT), owner, \
        CASE WHEN body IS NULL THEN 'NULL' ELSE hex(body) END, CAST(v AS TEXT) FROM docs ORDER BY id";
    let docs_maria = "SELECT id, owner, IFNULL(HEX(body), 'NULL'), v FROM docs ORDER BY id";
    let (a, b) = (
        sqlite_lines(&src, docs_sqlite),
        maria_lines(m, &db, docs_maria),
    );
    assert_eq!(a.len(), b.len(), "docs rows");
    assert!(
        a == b,
        "docs differ, e.g. {:?}",
        a.iter().zip(&b).find(|(x, y)| x != y)
    );
    let tags = "SELECT CAST(doc AS TEXT), tag FROM tags ORDER BY doc, tag";
    assert_eq!(
        sqlite_lines(&src, tags),
        maria_lines(m, &db, "SELECT doc, tag FROM tags ORDER BY doc, tag"),
        "tags"
    );

    let o = cutover(&["status", "--source", &s, "--target", &t, "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let st: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        st.to_string().contains("seq:"),
        "the applied position is the SQLite source's: {out}"
    );

    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(
        m.sql(&db, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME LIKE '\\_cutover%'")
            .unwrap(),
        "0"
    );
}

fn pg_lines(pg: &cutover_testkit::Postgres, db: &str, sql: &str) -> Vec<String> {
    let out = pg
        .psql(db, &format!("COPY ({sql}) TO STDOUT"))
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    out.lines().map(str::to_owned).collect()
}

#[test]
fn postgres_to_mariadb_killed_with_sigkill_under_writes_ends_equal() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let m = cutover_testkit::MariaDb::shared().unwrap();
    let src = pg_source(pg);
    let s = pg.url(&src);
    let db = m.fresh_database("x_pg_maria").unwrap();
    let t = m.url(&db);
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| pg_writer(s.clone(), &stop, &writes));
        super::cross::kill_and_resume(
            &["sync", "--source", &s, "--target", &t, "--jobs", "2"],
            3,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            32,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");

    // PostgreSQL's text against MariaDB's: jsonb kept as its text in a json column, uuid in
    // MariaDB's uuid type, numeric(6,2) in decimal(6,2); schemas fold into one database.
    let pairs = [
        (
            "students",
            "SELECT id, name, coalesce(profile::text, 'NULL') FROM public.students ORDER BY id",
            "SELECT id, name, IFNULL(profile, 'NULL') FROM students ORDER BY id",
        ),
        (
            "sessions",
            "SELECT id, student_id, score::text, answers::text FROM public.sessions ORDER BY id",
            "SELECT id, student_id, score, answers FROM sessions ORDER BY id",
        ),
        (
            "notes",
            "SELECT a, b, body FROM school.notes ORDER BY a, b COLLATE \"C\"",
            "SELECT a, b, body FROM notes ORDER BY a, b",
        ),
    ];
    for (what, p, q) in pairs {
        let (a, b) = (pg_lines(pg, &src, p), maria_lines(m, &db, q));
        assert_eq!(a.len(), b.len(), "{what}: rows");
        assert!(
            a == b,
            "{what} differ, e.g. {:?}",
            a.iter().zip(&b).find(|(x, y)| x != y)
        );
    }
    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}

/// A MariaDB source: a bigint key with JSON, decimals, datetimes; a composite text key.
fn maria_source(m: &cutover_testkit::MariaDb) -> String {
    let db = m.fresh_database("x_maria_src").unwrap();
    m.sql(
        &db,
        "CREATE TABLE students (id bigint PRIMARY KEY, name varchar(100) NOT NULL, profile json,
             score decimal(6,2), seen datetime(6), flag tinyint(1) NOT NULL DEFAULT 0);
         CREATE TABLE notes (a int, b varchar(50), body text, PRIMARY KEY (a, b));
         INSERT INTO students SELECT seq, CONCAT('student ', seq), CONCAT('{\"n\": ', seq, '}'),
             (seq % 10000) / 100, TIMESTAMP'2026-01-01 00:00:00' + INTERVAL seq SECOND
             + INTERVAL (seq % 7) * 125000 MICROSECOND, seq % 2 FROM seq_1_to_30000;
         INSERT INTO notes SELECT seq % 100, CONCAT('n', seq), REPEAT('b', 100) FROM seq_1_to_20000;",
    )
    .unwrap();
    db
}

/// Writes to the MariaDB source until stopped: inserts, updates, deletes, some in one
/// transaction, through the mariadb client's protocol (cutover's session type, not its reader).
fn maria_writer(url: String, stop: &AtomicBool, writes: &AtomicU64) {
    let ep = cutover_mysql::MySqlEndpoint::parse(&url, &Default::default()).unwrap();
    let mut c = cutover_mysql::Client::connect(&ep, Some(ep.database())).unwrap();
    let mut rng = fastrand::Rng::with_seed(12);
    let mut next = 1_000_000;
    while !stop.load(Ordering::Relaxed) {
        let id = rng.i64(1..30_000);
        next += 1;
        let sql = match rng.u8(0..5) {
            0 => format!("UPDATE students SET profile = '{{\"n\": {next}}}', seen = NOW(6) WHERE id = {id}"),
            1 => format!("INSERT INTO students (id, name, profile, score) VALUES ({next}, 'new {next}', NULL, 1.5)"),
            2 => format!("UPDATE students SET score = MOD(score + 1, 9999), flag = 1 - flag WHERE id = {id}"),
            3 => format!("DELETE FROM notes WHERE a = {} AND b = 'n{id}'", id % 100),
            _ => format!("START TRANSACTION; INSERT INTO notes VALUES ({}, 'w{next}', 'x'); UPDATE students SET name = 'renamed' WHERE id = {}; DELETE FROM students WHERE id = {}; COMMIT", next % 100, id + 1, id + 2),
        };
        for stmt in sql.split("; ") {
            c.query_drop(stmt).unwrap();
        }
        writes.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

#[test]
fn mariadb_to_postgres_killed_with_sigkill_under_writes_ends_equal() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let m = cutover_testkit::MariaDb::shared().unwrap();
    let src = maria_source(m);
    let s = m.url(&src);
    let dst = pg.fresh_database("x_maria_pg").unwrap();
    let t = pg.url(&dst);
    let stop = AtomicBool::new(false);
    let writes = AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| maria_writer(s.clone(), &stop, &writes));
        super::cross::kill_and_resume(
            &["sync", "--source", &s, "--target", &t, "--jobs", "2"],
            3,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            33,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");
    let pairs = [
        (
            "students",
            "SELECT id, name, IFNULL(profile, 'NULL'), IFNULL(score, 'NULL'), \
             IFNULL(DATE_FORMAT(seen, '%Y-%m-%d %H:%i:%s.%f'), 'NULL'), IF(flag, 't', 'f') \
             FROM students ORDER BY id",
            "SELECT id, name, coalesce(profile::text, 'NULL'), coalesce(score::text, 'NULL'), \
             coalesce(to_char(seen, 'YYYY-MM-DD HH24:MI:SS.US'), 'NULL'), flag \
             FROM students ORDER BY id",
        ),
        (
            "notes",
            "SELECT a, b, body FROM notes ORDER BY a, b",
            "SELECT a, b, body FROM notes ORDER BY a, b COLLATE \"C\"",
        ),
    ];
    for (what, q, p) in pairs {
        let (a, b) = (maria_lines(m, &src, q), pg_lines(pg, &dst, p));
        assert_eq!(a.len(), b.len(), "{what}: rows");
        assert!(
            a == b,
            "{what} differ, e.g. {:?}",
            a.iter().zip(&b).find(|(x, y)| x != y)
        );
    }
    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
}
