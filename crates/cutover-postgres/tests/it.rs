//! PostgreSQL → PostgreSQL copy against real throwaway servers (cutover-testkit).

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::time::Instant;

use cutover_connector::{ErrorKind, Progress};
use cutover_postgres::copy::{copy, CopyOptions, CopyReport};
use cutover_postgres::schema::Selection;
use cutover_postgres::PgEndpoint;
use cutover_testkit::Postgres;

#[path = "it/canonical.rs"]
mod canonical;
#[path = "it/faults.rs"]
mod faults;
#[path = "it/libpq.rs"]
mod libpq;
#[path = "it/sync.rs"]
mod sync;
#[path = "it/verify.rs"]
mod verify;

/// Everything awkward we know of: edge values, odd identifiers, several schemas, composite and
/// text keys, user-defined types (enum, domain, composite, arrays of them), generated and
/// identity columns, partitions, a table without a primary key, constraints, big values.
const AWKWARD: &str = r#"
CREATE SCHEMA "Mixed Case";
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN percent AS numeric(5,2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE TYPE point3 AS (x float8, y float8, z float8);
CREATE TABLE "Mixed Case"."Order" (
    "select" bigint PRIMARY KEY,
    "from" text NOT NULL DEFAULT 'here',
    n numeric,
    f8 float8,
    f4 real,
    d date,
    ts timestamp,
    tz timestamptz,
    iv interval,
    u uuid,
    j json,
    jb jsonb,
    b bytea,
    ia int[],
    ta text[],
    m mood,
    ma mood[],
    p percent,
    pt point3,
    g bigint GENERATED ALWAYS AS ("select" * 2) STORED,
    t time,
    ttz timetz,
    huge text
);
CREATE TABLE public.pairs (a bigint, b text, v int, PRIMARY KEY (a, b));
CREATE TABLE public.words (w text COLLATE "C" PRIMARY KEY, n serial);
CREATE TABLE public.ident (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, note text UNIQUE, CHECK (note <> 'forbidden'));
CREATE TABLE public.refs (id int PRIMARY KEY, order_id bigint REFERENCES "Mixed Case"."Order" ("select"));
CREATE TABLE public.nopk (x int, y text);
CREATE TABLE public.events (id bigint, at date, what text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE public.events_2026 PARTITION OF public.events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE INDEX order_from ON "Mixed Case"."Order" ("from");
CREATE INDEX order_jb ON "Mixed Case"."Order" USING gin (jb);

INSERT INTO "Mixed Case"."Order" ("select", n, f8, f4, d, ts, tz, iv, u, j, jb, b, ia, ta, m, ma, p, pt, t, ttz)
SELECT i,
       CASE i % 7 WHEN 0 THEN 'NaN'::numeric WHEN 1 THEN 'Infinity'::numeric WHEN 2 THEN '-Infinity'::numeric
                  WHEN 3 THEN 123456789012345678901234567890.123456789 ELSE (i::numeric / 7)::numeric(20,5) END,
       CASE i % 5 WHEN 0 THEN 'NaN'::float8 WHEN 1 THEN '-0'::float8 WHEN 2 THEN 'Infinity' WHEN 3 THEN '-Infinity' ELSE i / 3.0 END,
       (i / 7.0)::real,
       CASE i % 4 WHEN 0 THEN '0044-03-15 BC'::date WHEN 1 THEN 'infinity'::date WHEN 2 THEN '-infinity'::date ELSE date '2024-02-29' + i END,
       CASE i % 3 WHEN 0 THEN 'infinity'::timestamp ELSE timestamp '1999-12-31 23:59:59.999999' + i * interval '1 second' END,
       CASE i % 3 WHEN 0 THEN '-infinity'::timestamptz ELSE timestamptz '2026-01-01 12:00:00+05:30' + i * interval '1 minute' END,
       make_interval(months => i % 13, days => -(i % 31), secs => i / 7.0),
       md5(i::text)::uuid,
       ('{"b": 1,  "a": [1, 2, {"z": null}], "i": ' || i || '}')::json,
       ('{"b": 1, "a": "x' || i || '", "nested": {"k": [true, false, null]}}')::jsonb,
       CASE WHEN i % 500 = 0 THEN decode(repeat(md5(i::text), 70000), 'hex') ELSE decode(md5(i::text), 'hex') END,
       ARRAY[i, NULL, -i],
       CASE WHEN i % 2 = 0 THEN ARRAY[['a', NULL], ['c', 'd"q']] ELSE '{}'::text[] END,
       (ARRAY['sad', 'ok', 'happy'])[1 + i % 3]::mood,
       ARRAY['ok', 'sad']::mood[],
       (i % 100)::percent,
       ROW(i, -i, NULL)::point3,
       CASE WHEN i % 9 = 0 THEN '24:00:00'::time ELSE time '00:00:01' + i * interval '1 second' END,
       '10:00:00+05:30'::timetz
FROM generate_series(1, 6000) i;
UPDATE "Mixed Case"."Order" SET huge = repeat('ü', 1000000) WHERE "select" % 1000 = 17;
UPDATE "Mixed Case"."Order" SET n = NULL, b = NULL, ia = NULL, j = NULL WHERE "select" % 11 = 0;
INSERT INTO public.pairs SELECT i % 97, 'k' || i || E'\n\t"x"', i FROM generate_series(1, 5000) i;
INSERT INTO public.words (w) SELECT 'w' || i FROM generate_series(1, 3000) i;
INSERT INTO public.ident (note) SELECT 'note ' || i FROM generate_series(1, 300) i;
INSERT INTO public.refs SELECT i, i FROM generate_series(1, 100) i;
INSERT INTO public.nopk SELECT i % 10, 'dup' FROM generate_series(1, 50) i;
INSERT INTO public.events SELECT i, date '2025-06-01' + (i % 400), 'e' || i FROM generate_series(1, 2000) i;
SELECT nextval('words_n_seq');
ANALYZE;
"#;

const TABLES: &[(&str, &str)] = &[
    ("\"Mixed Case\".\"Order\"", "\"select\""),
    ("public.pairs", "a, b"),
    ("public.words", "w"),
    ("public.ident", "id"),
    ("public.refs", "id"),
    ("public.nopk", "x, y"),
    ("public.events", "id, at"),
];

fn dump(pg: &Postgres, db: &str, table: &str, order: &str) -> String {
    pg.psql(
        db,
        &format!("COPY (SELECT * FROM {table} ORDER BY {order}) TO STDOUT"),
    )
    .unwrap()
}

fn assert_identical(pg: &Postgres, a: &str, b: &str) {
    assert_identical_except(pg, a, b, &[]);
}

fn assert_identical_except(pg: &Postgres, a: &str, b: &str, except: &[&str]) {
    for (table, order) in TABLES.iter().filter(|(t, _)| !except.contains(t)) {
        let (x, y) = (dump(pg, a, table, order), dump(pg, b, table, order));
        if x != y {
            let line = x.lines().zip(y.lines()).position(|(p, q)| p != q);
            panic!(
                "{table} differs (source {} lines, target {} lines), first at line {line:?}",
                x.lines().count(),
                y.lines().count()
            );
        }
        assert!(!x.is_empty(), "{table} is not empty");
    }
}

fn endpoints(pg: &Postgres, src: &str, dst: &str) -> (PgEndpoint, PgEndpoint) {
    (
        PgEndpoint::from_url(&pg.url(src)).unwrap(),
        PgEndpoint::from_url(&pg.url(dst)).unwrap(),
    )
}

/// A copy that nothing stops, with progress nobody reads.
fn copy_now(
    s: &PgEndpoint,
    t: &PgEndpoint,
    opts: &CopyOptions,
) -> Result<CopyReport, cutover_connector::ConnectorError> {
    copy(
        s,
        t,
        opts,
        &Progress::default(),
        &cutover_connector::CancellationToken::new(),
    )
}

fn small_chunks() -> CopyOptions {
    CopyOptions {
        jobs: 3,
        chunk_bytes: 64 << 10,
        chunk_rows: 700,
        ..CopyOptions::default()
    }
}

fn awkward_source(pg: &Postgres) -> String {
    let db = pg.fresh_database("awk").unwrap();
    pg.psql(&db, AWKWARD).unwrap();
    db
}

#[test]
fn awkward_types_and_names_arrive_identical_row_by_row() {
    let pg = Postgres::shared().unwrap();
    let src = awkward_source(pg);
    let dst = pg.fresh_database("awk_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let progress = Progress::default();
    let report = copy(
        &s,
        &t,
        &small_chunks(),
        &progress,
        &cutover_connector::CancellationToken::new(),
    )
    .unwrap();
    assert!(!report.interrupted && !report.resumed);
    let order = report
        .tables
        .iter()
        .find(|r| r.name.name == "Order")
        .unwrap();
    assert!(order.chunks > 3, "the big table was split: {order:?}");
    assert_eq!(order.rows, 6000);
    assert_identical(pg, &src, &dst);

    // Post-data: indexes, constraints, foreign keys and sequences exist and behave.
    let q = |sql: &str| pg.psql(&dst, sql).unwrap();
    assert_eq!(
        q("SELECT count(*) FROM pg_indexes WHERE indexname IN ('order_from', 'order_jb')"),
        "2"
    );
    assert_eq!(
        q("SELECT string_agg(contype::text, '' ORDER BY contype) FROM pg_constraint WHERE conrelid = 'public.ident'::regclass"),
        "cpu"
    );
    assert_eq!(
        q("INSERT INTO public.ident (note) VALUES ('new') RETURNING id"),
        "301"
    );
    q("DELETE FROM public.ident WHERE note = 'new'");
    assert!(
        pg.psql(&dst, "INSERT INTO public.refs VALUES (1000, 999999)")
            .is_err(),
        "FK enforced"
    );
    assert!(
        pg.psql(&dst, "INSERT INTO public.ident (note) VALUES ('forbidden')")
            .is_err(),
        "CHECK enforced"
    );
    assert_eq!(
        q("SELECT nextval('words_n_seq')"),
        pg.psql(&src, "SELECT nextval('words_n_seq')").unwrap()
    );
    assert_eq!(q("SELECT phase FROM _cutover.migration"), "copied");
    // Rows went to the right partitions, and the generated column was computed.
    assert_eq!(
        q("SELECT count(*) FROM ONLY public.events_2026"),
        pg.psql(&src, "SELECT count(*) FROM ONLY public.events_2026")
            .unwrap()
    );
    assert_eq!(
        q("SELECT g FROM \"Mixed Case\".\"Order\" WHERE \"select\" = 21"),
        "42"
    );

    // Running it again finds the copy complete and changes nothing.
    let again = copy_now(&s, &t, &small_chunks()).unwrap();
    assert!(again.resumed);
    assert_identical(pg, &src, &dst);
}

#[test]
fn an_interrupted_copy_resumes_without_copying_chunks_twice() {
    let pg = Postgres::shared().unwrap();
    let src = awkward_source(pg);
    let dst = pg.fresh_database("resume_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let stop = cutover_connector::CancellationToken::new();
    let progress = Progress::default();
    let opts = CopyOptions {
        jobs: 2,
        max_rows_per_sec: NonZeroU32::new(4_000),
        ..small_chunks()
    };
    let first = std::thread::scope(|sc| {
        // Before the copy: a panic below stops it, and the scope can join it.
        let _stop_copy = stop.clone().drop_guard();
        let h = sc.spawn(|| copy(&s, &t, &opts, &progress, &stop));
        while progress.rows_copied.load(Ordering::Relaxed) < 2_000 {
            assert!(
                !h.is_finished(),
                "copy finished before it could be interrupted"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        stop.cancel();
        h.join().unwrap().unwrap()
    });
    assert!(first.interrupted);
    let done: i64 = pg
        .psql(&dst, "SELECT count(*) FROM _cutover.chunks WHERE done")
        .unwrap()
        .parse()
        .unwrap();
    let total: i64 = pg
        .psql(&dst, "SELECT count(*) FROM _cutover.chunks")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        done > 0 && done < total,
        "{done} of {total} chunks done after the stop"
    );

    let second = copy_now(&s, &t, &small_chunks()).unwrap();
    assert!(second.resumed && !second.interrupted);
    let resumed: u64 = second.tables.iter().map(|r| r.resumed_chunks).sum();
    assert_eq!(
        resumed as i64, done,
        "chunks done in the first run were not copied again"
    );
    assert_identical(pg, &src, &dst);
}

#[test]
fn a_tables_indexes_are_built_while_other_tables_still_copy_and_a_resumed_copy_keeps_them() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("overlap_s").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE big (id int PRIMARY KEY, v text);
         INSERT INTO big SELECT i, md5(i::text) FROM generate_series(1, 3000) i;
         CREATE TABLE small (id int PRIMARY KEY, v text UNIQUE);
         INSERT INTO small SELECT i, md5(i::text) FROM generate_series(1, 10) i;
         ANALYZE;",
    )
    .unwrap();
    let dst = pg.fresh_database("overlap_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    // Three chunks of big (largest table first), then small's one: the worker that copies
    // small finds no chunk left and builds small's key and unique index while the other still
    // copies big's last chunk (half a second at 2,000 rows/s).
    let opts = CopyOptions {
        jobs: 2,
        chunk_rows: 1_000,
        max_rows_per_sec: NonZeroU32::new(2_000),
        ..CopyOptions::default()
    };
    let stop = cutover_connector::CancellationToken::new();
    let (first, seen) = std::thread::scope(|sc| {
        let _stop_copy = stop.clone().drop_guard();
        let h = sc.spawn(|| copy(&s, &t, &opts, &Progress::default(), &stop));
        let mut seen = None;
        while !h.is_finished() && seen.is_none() {
            // Fails until the control store exists.
            let state = pg.psql(
                &dst,
                "SELECT (SELECT count(*) FROM pg_index WHERE indrelid = 'public.small'::regclass)
                     || ' ' || (SELECT count(*) FROM _cutover.chunks WHERE table_name = 'big' AND NOT done)
                     || ' ' || (SELECT phase FROM _cutover.migration)",
            );
            if let Some(state) = state.ok().filter(|s| s.starts_with("2 ")) {
                seen = Some(state);
                // Stopped there: big's key is not built.
                stop.cancel();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        (h.join().unwrap().unwrap(), seen)
    });
    let seen = seen.expect("small's indexes were seen before the copy ended");
    let v: Vec<&str> = seen.split(' ').collect();
    assert!(
        v[1] != "0" && v[2] == "copying",
        "small's two indexes were there while big still had chunks to copy: (indexes, big's chunks left, phase) = {seen}"
    );
    assert!(first.interrupted);
    assert_eq!(first.post_data_steps, 2, "small's key and unique index");
    let done = pg
        .psql(
            &dst,
            "SELECT string_agg(done::text, ' ' ORDER BY id) FROM _cutover.steps WHERE phase = 'index'",
        )
        .unwrap();
    assert_eq!(
        done, "false true true",
        "big's key, small's key, small's index"
    );

    // Run again: small's steps are not run again (they would fail: the indexes exist), big's
    // key is built.
    let second = copy_now(&s, &t, &opts).unwrap();
    assert!(second.resumed && !second.interrupted);
    for table in ["big", "small"] {
        assert_eq!(dump(pg, &src, table, "id"), dump(pg, &dst, table, "id"));
    }
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*) FROM pg_index WHERE indrelid IN ('big'::regclass, 'small'::regclass)"
        )
        .unwrap(),
        "3"
    );
}

#[test]
fn a_large_table_never_analyzed_is_sized_from_a_sample_and_copied_whole() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("fresh_s").unwrap();
    // About 2,400 pages, no statistics: rows estimated from a sample of 1,000 pages.
    pg.psql(
        &src,
        "CREATE TABLE t (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off);
         INSERT INTO t SELECT i, md5(i::text) FROM generate_series(1, 300000) i;",
    )
    .unwrap();
    assert_eq!(
        pg.psql(
            &src,
            "SELECT reltuples < 0 FROM pg_class WHERE relname = 't'"
        )
        .unwrap(),
        "t"
    );
    let dst = pg.fresh_database("fresh_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let opts = CopyOptions {
        jobs: 2,
        chunk_rows: 50_000,
        ..CopyOptions::default()
    };
    copy_now(&s, &t, &opts).unwrap();
    let chunks: i64 = pg
        .psql(&dst, "SELECT count(*) FROM _cutover.chunks")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (5..=7).contains(&chunks),
        "{chunks} chunks of about 50,000 rows"
    );
    assert_eq!(dump(pg, &src, "t", "id"), dump(pg, &dst, "t", "id"));
}

#[test]
fn a_target_with_data_is_refused_unless_truncate() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("occupied_s").unwrap();
    pg.psql(&src, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' FROM generate_series(1, 100) i;")
        .unwrap();
    let dst = pg.fresh_database("occupied_t").unwrap();
    pg.psql(
        &dst,
        "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (5000, 'other');",
    )
    .unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let err = copy_now(&s, &t, &small_chunks()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
    assert!(
        err.to_string().contains("public.t") && err.to_string().contains("--truncate"),
        "{err}"
    );
    assert_eq!(
        pg.psql(&dst, "SELECT count(*) FROM t").unwrap(),
        "1",
        "nothing was touched"
    );

    let opts = CopyOptions {
        truncate: true,
        ..small_chunks()
    };
    copy_now(&s, &t, &opts).unwrap();
    assert_eq!(dump(pg, &src, "t", "id"), dump(pg, &dst, "t", "id"));
}

#[test]
fn a_value_the_target_refuses_names_table_and_chunk_and_keeps_finished_chunks() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("refuse_s").unwrap();
    pg.psql(&src, "CREATE TABLE t (id int PRIMARY KEY, v int); INSERT INTO t SELECT i, i FROM generate_series(1, 5000) i; ANALYZE t;")
        .unwrap();
    let dst = pg.fresh_database("refuse_t").unwrap();
    // The target's table refuses values above 4000.
    pg.psql(
        &dst,
        "CREATE TABLE t (id int PRIMARY KEY, v int CHECK (v <= 4000))",
    )
    .unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let opts = CopyOptions {
        truncate: true,
        jobs: 1,
        ..small_chunks()
    };
    let err = copy_now(&s, &t, &opts).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Conflict, "{msg}");
    assert!(msg.contains("copying table public.t chunk"), "{msg}");
    assert!(msg.contains("keys ("), "names the key range: {msg}");
    assert!(msg.contains("run the same command again"), "{msg}");
    let kept: i64 = pg
        .psql(&dst, "SELECT count(*) FROM t")
        .unwrap()
        .parse()
        .unwrap();
    let done_rows: i64 = pg
        .psql(
            &dst,
            "SELECT coalesce(sum(rows), 0) FROM _cutover.chunks WHERE done",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept > 0, "finished chunks were kept");
    assert_eq!(
        kept, done_rows,
        "exactly the finished chunks' rows are on the target"
    );
}

#[test]
fn missing_tables_and_unreachable_servers_are_clear_errors() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("errs").unwrap();
    pg.psql(&src, "CREATE TABLE t (id int PRIMARY KEY)")
        .unwrap();
    let dst = pg.fresh_database("errs_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let opts = CopyOptions {
        selection: Selection {
            tables: vec!["nosuch".into()],
            exclude: vec![],
            ..Default::default()
        },
        ..small_chunks()
    };
    let err = copy_now(&s, &t, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.to_string().contains("nosuch"), "{err}");

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gone = PgEndpoint::from_url(&format!("postgres://u:hunter2@127.0.0.1:{port}/x")).unwrap();
    let err = copy_now(&gone, &t, &small_chunks()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Connect, "{err}");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[test]
fn the_throttle_holds_the_row_rate_within_ten_percent() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("thr").unwrap();
    pg.psql(&src, "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT i, 'v' FROM generate_series(1, 12000) i; ANALYZE t;")
        .unwrap();
    let dst = pg.fresh_database("thr_t").unwrap();
    let (s, t) = endpoints(pg, &src, &dst);
    let opts = CopyOptions {
        jobs: 3,
        max_rows_per_sec: NonZeroU32::new(4_000),
        chunk_rows: 1_000,
        ..CopyOptions::default()
    };
    let progress = Progress::default();
    let (first, last) = std::thread::scope(|sc| {
        let h = sc.spawn(|| {
            copy(
                &s,
                &t,
                &opts,
                &progress,
                &cutover_connector::CancellationToken::new(),
            )
        });
        // Measure the copy phase itself: from the first row to the last.
        let mut first = None;
        let mut last = None;
        while !h.is_finished() {
            let n = progress.rows_copied.load(Ordering::Relaxed)
                + progress
                    .table_snapshot()
                    .iter()
                    .map(|t| t.rows_copied.load(Ordering::Relaxed))
                    .sum::<u64>();
            if n > 0 && first.is_none() {
                first = Some(Instant::now());
            }
            if progress
                .table_snapshot()
                .iter()
                .map(|t| t.rows_copied.load(Ordering::Relaxed))
                .sum::<u64>()
                >= 12_000
                && last.is_none()
            {
                last = Some(Instant::now());
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        h.join().unwrap().unwrap();
        (first.unwrap(), last.unwrap())
    });
    // 400 rows of burst pass at once; the other 11,600 at 4,000/s.
    let secs = last.duration_since(first).as_secs_f64();
    let rate = 11_600.0 / secs;
    assert!(
        (3_600.0..=4_400.0).contains(&rate),
        "{rate:.0} rows/s over {secs:.2}s"
    );
}

#[test]
fn a_wrong_password_is_an_auth_error_with_the_fix_and_no_password() {
    let pg = Postgres::shared().unwrap();
    let db = pg.fresh_database("pw").unwrap();
    let role = format!("cutover_pw_{}", fastrand::u32(..));
    pg.psql(&db, &format!("SET password_encryption = 'scram-sha-256'; CREATE ROLE {role} LOGIN SUPERUSER PASSWORD 'right-one'"))
        .unwrap();
    // Only this role must use a password; everyone else keeps trust.
    let hba = pg.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .unwrap();
    pg.psql(&db, "SELECT pg_reload_conf()").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));

    let url = |pw: &str| format!("postgres://{role}:{pw}@127.0.0.1:{}/{db}", pg.port());
    let wrong = PgEndpoint::from_url(&url("wrong-one")).unwrap();
    let right = PgEndpoint::from_url(&url("right-one")).unwrap();
    let err = copy_now(&wrong, &right, &small_chunks()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("password authentication failed"), "{msg}");
    assert!(msg.contains("check the user name and password"), "{msg}");
    assert!(!msg.contains("wrong-one"), "{msg}");
    assert!(right.connect().is_ok(), "the right password connects");
}

/// A database whose default tablespace sits on a tmpfs of a few MB: a real "disk full". On
/// drop (also when the test fails) the database and tablespace go first, then the mount, so
/// the shared test server never loses files under a live relation.
struct TinyDisk {
    dir: std::path::PathBuf,
    db: String,
    space: String,
}

impl TinyDisk {
    fn for_database(pg: &Postgres, db: &str, mb: u32) -> TinyDisk {
        let dir = std::env::temp_dir().join(format!("cutover-tiny-{}", fastrand::u32(..)));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m,mode=0700"),
                "tmpfs",
            ])
            .arg(&dir)
            .status()
            .unwrap()
            .success();
        assert!(
            ok,
            "mounting a tmpfs needs root (the test harness runs as root on CI machines)"
        );
        let chown = std::process::Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let disk = TinyDisk {
            dir,
            db: db.to_owned(),
            space: format!("tiny_{}", fastrand::u32(..)),
        };
        pg.psql(
            db,
            &format!(
                "CREATE TABLESPACE {} LOCATION '{}'",
                disk.space,
                disk.dir.display()
            ),
        )
        .unwrap();
        pg.psql(
            db,
            &format!(
                "ALTER DATABASE {db} SET default_tablespace = {}",
                disk.space
            ),
        )
        .unwrap();
        disk
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        if let Ok(pg) = Postgres::shared() {
            let _ = pg.psql(
                "postgres",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.db),
            );
            let _ = pg.psql(
                "postgres",
                &format!("DROP TABLESPACE IF EXISTS {}", self.space),
            );
        }
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn a_full_target_disk_stops_with_the_fix_keeps_finished_chunks_and_resumes() {
    let pg = Postgres::shared().unwrap();
    let src = pg.fresh_database("full_s").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE big (id int PRIMARY KEY, body text);
         INSERT INTO big SELECT i, md5(i::text) || repeat('x', 900) FROM generate_series(1, 20000) i;
         ANALYZE big;",
    )
    .unwrap();
    let dst = pg.fresh_database("full_t").unwrap();
    let _disk = TinyDisk::for_database(pg, &dst, 6);
    let (s, t) = endpoints(pg, &src, &dst);
    let opts = CopyOptions {
        jobs: 1,
        chunk_bytes: 512 << 10,
        ..CopyOptions::default()
    };
    let err = copy_now(&s, &t, &opts).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::DiskFull, "{err}");
    let msg = err.to_string();
    assert!(msg.contains("copying table public.big chunk"), "{msg}");
    assert!(
        msg.contains("free space, then run the same command again"),
        "{msg}"
    );
    let kept: i64 = pg
        .psql(&dst, "SELECT count(*) FROM big")
        .unwrap()
        .parse()
        .unwrap();
    let done: i64 = pg
        .psql(
            &dst,
            "SELECT coalesce(sum(rows), 0) FROM _cutover.chunks WHERE done",
        )
        .unwrap()
        .parse()
        .unwrap();
    assert!(kept > 0 && kept < 20000, "{kept}");
    assert_eq!(kept, done, "exactly the finished chunks are on the target");

    // Make room (move everything to the main disk), run the same copy again: it resumes.
    pg.psql(
        &dst,
        &format!("ALTER DATABASE {dst} RESET default_tablespace"),
    )
    .unwrap();
    pg.psql(
        &dst,
        "ALTER TABLE big SET TABLESPACE pg_default;
         ALTER TABLE _cutover.chunks SET TABLESPACE pg_default;
         ALTER TABLE _cutover.migration SET TABLESPACE pg_default;
         ALTER TABLE _cutover.steps SET TABLESPACE pg_default;
         ALTER INDEX _cutover.chunks_pkey SET TABLESPACE pg_default;
         ALTER INDEX _cutover.migration_pkey SET TABLESPACE pg_default;
         ALTER INDEX _cutover.steps_pkey SET TABLESPACE pg_default;",
    )
    .unwrap();
    let report = copy_now(&s, &t, &opts).unwrap();
    assert!(report.resumed);
    assert_eq!(dump(pg, &src, "big", "id"), dump(pg, &dst, "big", "id"));
}
