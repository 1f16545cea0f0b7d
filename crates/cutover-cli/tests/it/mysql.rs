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
