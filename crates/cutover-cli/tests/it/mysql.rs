//! Issue 12 from the command line: MariaDB as a target of a SQLite source. A sync killed with
//! SIGKILL at random moments under a concurrent writer ends equal, checked by reading both
//! sides with their own clients (rusqlite and the `mariadb` command), not cutover's reader;
//! `status` reads the migration's state from the MariaDB target.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusqlite::Connection;

use super::{create_source, cutover, text, write_load};

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
