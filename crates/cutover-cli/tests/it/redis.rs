//! Issue 13, part 2, from the command line: Redis as a target of PostgreSQL and SQLite. A sync
//! killed with SIGKILL at random moments under a concurrent writer ends equal, checked by
//! reading Redis with the `redis` crate (not cutover's reader) against psql / rusqlite; verify
//! across the engines finds exactly a field edited in Redis; status and cleanup work.

use std::collections::HashMap;
use std::path::Path;

use rusqlite::Connection;

use super::cross::sync_killed_under_writes;
use super::{
    create_source, cutover, differences, pg_source, pg_writer, text, verify_json, write_load,
};

fn conn(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .unwrap()
}

/// Every row of a table as `field\tfield…` lines (NULL: `\N`), read from the hashes the key
/// index lists, sorted.
fn redis_lines(url: &str, table: &str, fields: &[&str]) -> Vec<String> {
    let mut c = conn(url);
    let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
        .arg(format!("{table}:*"))
        .query(&mut c)
        .unwrap();
    let indexed: usize = redis::cmd("ZCARD").arg(table).query(&mut c).unwrap();
    assert_eq!(
        indexed,
        keys.len(),
        "{table}: the key index lists every row once"
    );
    let mut lines: Vec<String> = keys
        .iter()
        .map(|k| {
            let h: HashMap<String, Vec<u8>> = redis::cmd("HGETALL").arg(k).query(&mut c).unwrap();
            fields
                .iter()
                .map(|f| match h.get(*f) {
                    None => "\\N".to_owned(),
                    Some(b) if *f == "body" && table == "docs" => {
                        format!(
                            "\\\\x{}",
                            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                        )
                    }
                    Some(b) => String::from_utf8(b.clone()).unwrap(),
                })
                .collect::<Vec<_>>()
                .join("\t")
        })
        .collect();
    lines.sort();
    lines
}

fn pg_lines(pg: &cutover_testkit::Postgres, db: &str, sql: &str) -> Vec<String> {
    let out = pg.psql(db, &format!("COPY ({sql}) TO STDOUT")).unwrap();
    let mut lines: Vec<String> = out.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn same(what: &str, a: &[String], b: &[String]) {
    assert_eq!(a.len(), b.len(), "{what}: rows");
    assert!(
        a == b,
        "{what} differ, e.g. {:?}",
        a.iter().zip(b).find(|(x, y)| x != y)
    );
}

#[test]
fn postgres_to_redis_killed_with_sigkill_under_writes_ends_equal() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let redis = cutover_testkit::Redis::start().unwrap();
    let src = pg_source(pg);
    let s = pg.url(&src);
    let t = redis.url();
    let writes = sync_killed_under_writes(&s, &t, 3, 34, |stop, writes| {
        pg_writer(s.clone(), stop, writes)
    });
    assert!(writes > 100, "the writer wrote");

    let pairs = [
        (
            "students",
            "SELECT id, name, profile::text FROM public.students",
            vec!["id", "name", "profile"],
        ),
        (
            "sessions",
            "SELECT id, student_id, score::text, answers::text FROM public.sessions",
            vec!["id", "student_id", "score", "answers"],
        ),
        (
            "school.notes",
            "SELECT a, b, body FROM school.notes",
            vec!["a", "b", "body"],
        ),
    ];
    for (table, sql, fields) in pairs {
        same(
            table,
            &pg_lines(pg, &src, sql),
            &redis_lines(&t, table, &fields),
        );
    }

    let v = verify_json(&["--source", &s, "--target", &t], 0);
    assert!(v["rows_compared"].as_u64().unwrap() > 100_000, "{v}");
    redis::cmd("HSET")
        .arg("school.notes:42:n4242")
        .arg("body")
        .arg("planted")
        .query::<()>(&mut conn(&t))
        .unwrap();
    let v = verify_json(&["--source", &s, "--target", &t], 1);
    assert_eq!(
        differences(&v),
        ["school.notes {\"a\":42,\"b\":\"n4242\"} different body"]
    );

    let o = cutover(&["status", "--source", &s, "--target", &t, "--json"]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(
        out.contains("lsn:"),
        "the applied position is PostgreSQL's: {out}"
    );
    let o = cutover(&["cleanup", "--source", &s, "--target", &t]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("_cutover:*")
        .query(&mut conn(&t))
        .unwrap();
    assert!(
        left.iter()
            .all(|k| k.starts_with("_cutover:schema:") || k == "_cutover:tables"),
        "cleanup removed the state but the table descriptions: {left:?}"
    );
}

fn sqlite_lines(path: &Path, sql: &str) -> Vec<String> {
    let c = Connection::open(path).unwrap();
    let mut st = c.prepare(sql).unwrap();
    let n = st.column_count();
    let mut lines: Vec<String> = st
        .query_map([], |r| {
            (0..n)
                .map(|i| r.get::<_, String>(i))
                .collect::<Result<Vec<_>, _>>()
        })
        .unwrap()
        .map(|r| r.unwrap().join("\t"))
        .collect();
    lines.sort();
    lines
}

#[test]
fn sqlite_to_redis_killed_with_sigkill_under_writes_ends_equal() {
    let redis = cutover_testkit::Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    create_source(&src);
    let t = redis.url();
    let s = src.to_str().unwrap().to_owned();
    let writes =
        sync_killed_under_writes(&s, &t, 3, 35, |stop, writes| write_load(&src, stop, writes));
    assert!(writes > 100, "the writer wrote");
    let docs = "SELECT CAST(id AS TEXT), owner, \
        CASE WHEN body IS NULL THEN '\\N' ELSE '\\\\x' || lower(hex(body)) END, CAST(v AS TEXT) FROM docs";
    same(
        "docs",
        &sqlite_lines(&src, docs),
        &redis_lines(&t, "docs", &["id", "owner", "body", "v"]),
    );
    same(
        "tags",
        &sqlite_lines(&src, "SELECT CAST(doc AS TEXT), tag FROM tags"),
        &redis_lines(&t, "tags", &["doc", "tag"]),
    );
    verify_json(&["--source", &s, "--target", &t], 0);
}

/// A Redis without an append-only file is refused before anything is written, naming the
/// settings and the fix; `durability=none` accepts it.
#[test]
fn a_redis_without_an_append_only_file_is_refused() {
    let redis = cutover_testkit::Redis::start_with(&["--appendonly", "no", "--save", ""]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    create_source(&src);
    let s = src.to_str().unwrap().to_owned();
    let t = redis.url();
    let o = cutover(&[
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--stop-when-caught-up",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("appendonly no")
            && err.contains("appendfsync")
            && err.contains("durability=none"),
        "{err}"
    );
    let n: usize = redis::cmd("DBSIZE").query(&mut conn(&t)).unwrap();
    assert_eq!(n, 0, "nothing was written");
    let volatile = format!("{t}?durability=none");
    let o = cutover(&[
        "sync",
        "--source",
        &s,
        "--target",
        &volatile,
        "--stop-when-caught-up",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(err.contains("durability=none"), "a loud warning: {err}");
}

/// `format=json` and a prefix: every row a JSON object at `{prefix}{table}:{key}`, the state
/// under `{prefix}_cutover:`, and verify across the engines equal, then a planted difference
/// in one document found by its key and column.
#[test]
fn sqlite_to_redis_as_json_rows_with_a_prefix_verifies_equal() {
    let redis = cutover_testkit::Redis::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    create_source(&src);
    let s = src.to_str().unwrap().to_owned();
    let t = format!("{}?prefix=app:&format=json", redis.url());
    let o = cutover(&[
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--stop-when-caught-up",
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let mut c = conn(&redis.url());
    let doc: String = redis::cmd("GET").arg("app:docs:7").query(&mut c).unwrap();
    let v: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(v["id"], "7", "{doc}");
    let n: u64 = redis::cmd("EXISTS")
        .arg("app:_cutover:checkpoint")
        .query(&mut c)
        .unwrap();
    assert_eq!(n, 1, "the state is under the prefix");
    verify_json(&["--source", &s, "--target", &t], 0);
    let mut planted = v.clone();
    planted["owner"] = serde_json::Value::String("planted".into());
    redis::cmd("SET")
        .arg("app:docs:7")
        .arg(planted.to_string())
        .query::<()>(&mut c)
        .unwrap();
    let out = verify_json(&["--source", &s, "--target", &t], 1);
    assert_eq!(differences(&out), ["docs {\"id\":7} different owner"]);
}
