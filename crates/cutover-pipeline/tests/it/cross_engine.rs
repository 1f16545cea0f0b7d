//! SQLite → PostgreSQL and PostgreSQL → SQLite through the same pipeline: tables created from
//! the neutral schema through each target's type map, a writer changing rows during the copy,
//! then both sides read with their own drivers (not cutover's readers) and compared typed.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_connector::{Source, SourceFactory, TargetFactory};
use cutover_model::{decode_row, Value};
use cutover_pipeline::{run, Control, Progress, SyncOptions};
use cutover_postgres::schema::Selection;
use cutover_postgres::{CaptureNames, PgConnect, PgEndpoint};
use cutover_sqlite::SqliteEndpoint;
use cutover_testkit::Postgres;
use rusqlite::Connection;

const ROWS: i64 = 3_000;

fn options() -> SyncOptions {
    SyncOptions {
        jobs: 2,
        chunk_bytes: 32 << 10,
        min_chunk_rows: 100,
        max_chunk_rows: 500,
        batch_changes: 200,
        stop_when_caught_up: true,
        retry_budget: Duration::from_secs(5),
        ..SyncOptions::default()
    }
}

/// A PostgreSQL side whose peer is not PostgreSQL.
fn pg_side(pg: &Postgres, db: &str, name: &str) -> PgConnect {
    PgConnect {
        endpoint: PgEndpoint::from_url(&pg.url(db)).unwrap(),
        peer: None,
        selection: Selection::default(),
        names: CaptureNames::for_migration(name),
        truncate: false,
        jobs: 2,
    }
}

/// Runs sync until it has caught up; again if the writer changed rows after it stopped
/// (a resumed run: it continues from the target's checkpoint).
fn sync_until_equal(
    source: &dyn SourceFactory,
    target: &dyn TargetFactory,
    writer: std::thread::JoinHandle<()>,
) {
    let report = run(
        source,
        target,
        &options(),
        &Control::default(),
        &Progress::default(),
    );
    report.unwrap_or_else(|e| panic!("sync failed: {e}"));
    writer.join().unwrap();
    run(
        source,
        target,
        &options(),
        &Control::default(),
        &Progress::default(),
    )
    .unwrap_or_else(|e| panic!("resumed sync failed: {e}"));
}

fn uuid_text(b: &[u8]) -> String {
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

const SQLITE_SOURCE: &str = r#"
CREATE TABLE "Order Items" (
    "Id" INTEGER PRIMARY KEY,
    "CamelCol" TEXT NOT NULL DEFAULT 'x',
    qty INTEGER,
    price REAL,
    data BLOB,
    flag BOOLEAN,
    amount DECIMAL_TEXT(12,2),
    at TIMESTAMP_TEXT,
    doc JSON_TEXT,
    u UUID
);
CREATE INDEX "by camel" ON "Order Items" ("CamelCol");
"#;

fn sqlite_row(conn: &Connection, i: i64) {
    let null = i % 10 == 0;
    let u: Vec<u8> = (0..16u8)
        .map(|b| b.wrapping_mul(i as u8).wrapping_add(b))
        .collect();
    conn.execute(
        r#"INSERT OR REPLACE INTO "Order Items" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"#,
        rusqlite::params![
            i,
            format!("n{i} 'q' \"Ü\""),
            i * 7,
            (!null).then_some(i as f64 / 3.0),
            (!null).then(|| vec![i as u8, 0, 255]),
            i % 2,
            (!null).then(|| format!("{}.{:02}", i, i % 100)),
            format!("2024-02-{:02} 10:00:{:02}.5", 1 + i % 28, i % 60),
            format!("{{\"k\": {i}, \"a\": [1, 2]}}"),
            u,
        ],
    )
    .unwrap();
}

type Typed = Vec<String>;

fn sqlite_rows(path: &Path, table: &str, cols: usize) -> Vec<Typed> {
    let conn = Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY 1"))
        .unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = rows.next().unwrap() {
        let row: Typed = (0..cols)
            .map(|i| match r.get_ref(i).unwrap() {
                rusqlite::types::ValueRef::Null => "NULL".to_owned(),
                rusqlite::types::ValueRef::Integer(n) => format!("int {n}"),
                rusqlite::types::ValueRef::Real(f) => format!("real {:x}", f.to_bits()),
                rusqlite::types::ValueRef::Text(t) => {
                    format!("text {}", String::from_utf8(t.to_vec()).unwrap())
                }
                rusqlite::types::ValueRef::Blob(b) => format!("blob {b:?}"),
            })
            .collect();
        out.push(row);
    }
    out
}

fn pg_client(pg: &Postgres, db: &str) -> postgres::Client {
    let mut c = postgres::Client::connect(&pg.url(db), postgres::NoTls).unwrap();
    c.batch_execute("SET TimeZone = 'UTC'; SET IntervalStyle = 'iso_8601'")
        .unwrap();
    c
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "NULL".to_owned(), f)
}

#[test]
fn sqlite_to_postgres_under_writes_ends_equal_typed() {
    let pg = Postgres::shared().unwrap();
    let dst = pg.fresh_database("xeng_s2p").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    {
        let conn = Connection::open(&src).unwrap();
        conn.execute_batch(SQLITE_SOURCE).unwrap();
        conn.execute_batch("BEGIN").unwrap();
        for i in 1..=ROWS {
            sqlite_row(&conn, i);
        }
        conn.execute_batch("COMMIT").unwrap();
    }
    let source = SqliteEndpoint::new(&src);
    let target = pg_side(pg, &dst, &dst);
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let src = src.clone();
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let conn = Connection::open(&src).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            for n in 0..600i64 {
                let id = 1 + (n * 37) % (ROWS + 100);
                match n % 3 {
                    0 => sqlite_row(&conn, ROWS + n),
                    1 => {
                        conn.execute(
                            r#"UPDATE "Order Items" SET qty = qty + 1, "CamelCol" = 'changed ' || "Id" WHERE "Id" = ?1"#,
                            [id],
                        )
                        .unwrap();
                    }
                    _ => {
                        conn.execute(r#"DELETE FROM "Order Items" WHERE "Id" = ?1"#, [id])
                            .unwrap();
                    }
                }
                std::thread::sleep(Duration::from_micros(300));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    sync_until_equal(&source, &target, writer);
    assert!(done.load(Ordering::SeqCst));

    // The SQLite side as stored, the PostgreSQL side through its own driver, typed.
    let want: Vec<Typed> = sqlite_rows(&src, "Order Items", 10)
        .into_iter()
        .map(|r| {
            let mut r = r;
            // flag: 0/1 → boolean; u: 16 bytes → uuid text.
            r[5] = match r[5].as_str() {
                "int 0" => "bool false".into(),
                "int 1" => "bool true".into(),
                other => other.into(),
            };
            r.truncate(9);
            r
        })
        .collect();
    let mut c = pg_client(pg, &dst);
    let got: Vec<Typed> = c
        .query(
            r#"SELECT "Id", "CamelCol", qty, price, data, flag, amount::text, at::text, doc::text
                 FROM public."Order Items" ORDER BY 1"#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| {
            vec![
                format!("int {}", r.get::<_, i64>(0)),
                format!("text {}", r.get::<_, String>(1)),
                opt(r.get::<_, Option<i64>>(2), |v| format!("int {v}")),
                opt(r.get::<_, Option<f64>>(3), |v| {
                    format!("real {:x}", v.to_bits())
                }),
                opt(r.get::<_, Option<Vec<u8>>>(4), |v| format!("blob {v:?}")),
                opt(r.get::<_, Option<bool>>(5), |v| format!("bool {v}")),
                opt(r.get::<_, Option<String>>(6), |v| format!("text {v}")),
                opt(r.get::<_, Option<String>>(7), |v| format!("text {v}")),
                opt(r.get::<_, Option<String>>(8), |v| format!("text {v}")),
            ]
        })
        .collect();
    let uuids: Vec<Option<String>> = c
        .query(
            r#"SELECT u::text FROM public."Order Items" ORDER BY "Id""#,
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(want.len(), got.len(), "row counts differ");
    for ((w, g), u) in want.iter().zip(&got).zip(&uuids) {
        assert_eq!(w, g, "row differs");
        let sqlite_uuid = sqlite_uuid_of(&src, &w[0]);
        assert_eq!(u.as_deref(), sqlite_uuid.as_deref(), "uuid of {}", w[0]);
    }
    // Types and the index the applier created.
    let types: Vec<(String, String)> = c
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
              WHERE table_name = 'Order Items' ORDER BY ordinal_position",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        types.iter().map(|(_, t)| t.as_str()).collect::<Vec<_>>(),
        [
            "bigint",
            "text",
            "bigint",
            "double precision",
            "bytea",
            "boolean",
            "numeric",
            "timestamp without time zone",
            "json",
            "uuid"
        ],
        "{types:?}"
    );
    let index: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_indexes WHERE tablename = 'Order Items' AND indexname = 'by camel'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(index, 1, "secondary index built after the copy");
    // Chunk keys come back typed.
    let keys: Vec<Vec<u8>> = c
        .query(
            "SELECT lower_key_enc FROM _cutover.chunks WHERE table_name = 'Order Items' AND lower_key_enc IS NOT NULL",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!keys.is_empty(), "the table was copied in several chunks");
    for k in keys {
        let key = decode_row(&k).unwrap();
        assert!(matches!(key.as_slice(), [Value::Int(_)]), "{key:?}");
    }
    let position: String = c
        .query_one("SELECT position FROM _cutover.replication", &[])
        .unwrap()
        .get(0);
    assert!(position.starts_with("seq:"), "{position}");
    SqliteEndpoint::new(&src)
        .source()
        .unwrap()
        .stop_capture(&[])
        .unwrap();
}

fn sqlite_uuid_of(path: &Path, id: &str) -> Option<String> {
    let id: i64 = id.strip_prefix("int ").unwrap().parse().unwrap();
    let conn = Connection::open(path).unwrap();
    conn.query_row(
        r#"SELECT u FROM "Order Items" WHERE "Id" = ?1"#,
        [id],
        |r| r.get::<_, Option<Vec<u8>>>(0),
    )
    .unwrap()
    .map(|b| uuid_text(&b))
}

#[test]
fn a_lossy_mapping_to_postgres_is_refused_naming_table_column_and_types() {
    let pg = Postgres::shared().unwrap();
    let dst = pg.fresh_database("xeng_lossy").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.db");
    Connection::open(&src)
        .unwrap()
        .execute_batch(
            r#"CREATE TABLE "Odd" ("Id" INTEGER PRIMARY KEY, "Price" NUMERIC);
               INSERT INTO "Odd" VALUES (1, 0.1), (2, 'abc');"#,
        )
        .unwrap();
    let result = run(
        &SqliteEndpoint::new(&src),
        &pg_side(pg, &dst, &dst),
        &options(),
        &Control::default(),
        &Progress::default(),
    );
    let Err(e) = result else {
        panic!("a NUMERIC-affinity column has no exact PostgreSQL type, yet sync ran");
    };
    let text = e.to_string();
    for part in ["Odd", "Price", "NUMERIC", "text"] {
        assert!(text.contains(part), "{part} missing from: {text}");
    }
    let tables: i64 = pg_client(pg, &dst)
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'Odd'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tables, 0, "nothing created before refusing");
}

const PG_SOURCE: &str = r#"
CREATE TABLE "Order Items" (
    id bigint PRIMARY KEY,
    "CamelCol" text NOT NULL,
    n integer,
    r double precision,
    f4 real,
    b bytea,
    flag boolean,
    amount numeric(12,2),
    ts timestamp,
    tz timestamptz,
    d date,
    iv interval,
    j jsonb,
    u uuid,
    ia int[],
    ta text[]
);
CREATE INDEX by_camel ON "Order Items" ("CamelCol");
"#;

fn pg_rows_sql(from: &str, to: &str) -> String {
    format!(
        r#"INSERT INTO "Order Items" SELECT i, 'n' || i || ' "q" ''Ü''', i * 7, i / 3.0, (i / 4.0)::real,
               decode(lpad(to_hex(i), 8, '0'), 'hex'), i % 2 = 0,
               (i || '.' || lpad((i % 100)::text, 2, '0'))::numeric,
               timestamp '2024-02-01 10:00:00' + i * interval '1.5 second',
               timestamptz '2024-02-01 10:00:00+00' + i * interval '1 minute',
               date '2024-01-01' + i::int, make_interval(days => i::int % 5, secs => i % 60),
               jsonb_build_object('k', i, 'a', jsonb_build_array(1, 2)), md5(i::text)::uuid,
               ARRAY[i::int, NULL, i::int + 1], ARRAY['a b', 'x' || i, '']
          FROM generate_series({from}, {to}) i
        ON CONFLICT (id) DO UPDATE SET n = excluded.n + 1"#
    )
}

#[test]
fn postgres_to_sqlite_under_writes_ends_equal_typed() {
    let pg = Postgres::shared().unwrap();
    let src_db = pg.fresh_database("xeng_p2s").unwrap();
    let mut c = pg_client(pg, &src_db);
    c.batch_execute(PG_SOURCE).unwrap();
    c.batch_execute(&pg_rows_sql("1", &ROWS.to_string()))
        .unwrap();
    c.batch_execute(
        r#"UPDATE "Order Items" SET r = NULL, f4 = NULL, b = NULL, amount = NULL, ts = NULL, tz = NULL,
                  iv = NULL, ia = NULL WHERE id % 10 = 0"#,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("dst.db");
    let source = pg_side(pg, &src_db, &src_db);
    let target = SqliteEndpoint::new(&dst);
    let writer = {
        let url = pg.url(&src_db);
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            for n in 0..300i64 {
                let id = 1 + (n * 37) % (ROWS + 50);
                let sql = match n % 3 {
                    0 => pg_rows_sql(&(ROWS + n).to_string(), &(ROWS + n).to_string()),
                    1 => format!(
                        r#"UPDATE "Order Items" SET "CamelCol" = 'changed ' || id, ta = ARRAY['{{x}}', NULL], iv = interval '-1 day 3 hours' WHERE id = {id}"#
                    ),
                    _ => format!(r#"DELETE FROM "Order Items" WHERE id = {id}"#),
                };
                c.batch_execute(&sql).unwrap();
                std::thread::sleep(Duration::from_micros(500));
            }
        })
    };
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        sync_until_equal(&source, &target, writer);
        let want: Vec<Typed> = c
            .query(
                r#"SELECT id, "CamelCol", n, r, f4, b, flag, amount::text, ts::text, tz::text, d::text,
                          iv::text, j::text, u::text, ia::text, ta::text
                     FROM "Order Items" ORDER BY id"#,
                &[],
            )
            .unwrap()
            .iter()
            .map(|r| {
                let text = |i: usize| opt(r.get::<_, Option<String>>(i), |v| format!("text {v}"));
                vec![
                    format!("int {}", r.get::<_, i64>(0)),
                    format!("text {}", r.get::<_, String>(1)),
                    opt(r.get::<_, Option<i32>>(2), |v| format!("int {v}")),
                    opt(r.get::<_, Option<f64>>(3), |v| format!("real {:x}", v.to_bits())),
                    opt(r.get::<_, Option<f32>>(4), |v| {
                        format!("real {:x}", f64::from(v).to_bits())
                    }),
                    opt(r.get::<_, Option<Vec<u8>>>(5), |v| format!("blob {v:?}")),
                    opt(r.get::<_, Option<bool>>(6), |v| format!("int {}", i64::from(v))),
                    text(7),
                    text(8),
                    text(9),
                    text(10),
                    text(11),
                    text(12),
                    text(13),
                    text(14),
                    text(15),
                ]
            })
            .collect();
        let got: Vec<Typed> = sqlite_rows(&dst, "Order Items", 16)
            .into_iter()
            .map(|mut r| {
                // uuid: 16 bytes → its text.
                if let Some(bytes) = r[13].strip_prefix("blob ") {
                    let b: Vec<u8> = bytes
                        .trim_matches(['[', ']'])
                        .split(", ")
                        .map(|x| x.parse().unwrap())
                        .collect();
                    r[13] = format!("text {}", uuid_text(&b));
                }
                r
            })
            .collect();
        assert_eq!(want.len(), got.len(), "row counts differ");
        for (w, g) in want.iter().zip(&got) {
            assert_eq!(w, g, "row differs");
        }
        // Declared types of the type map, and what cutover's reader gives back.
        let conn = Connection::open(&dst).unwrap();
        let declared: Vec<String> = conn
            .prepare(r#"SELECT type FROM pragma_table_info('Order Items')"#)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            declared,
            [
                "bigint",
                "TEXT",
                "INTEGER",
                "double precision",
                "FLOAT32",
                "BLOB",
                "boolean",
                "DECIMAL_TEXT(12,2)",
                "TIMESTAMP_TEXT",
                "TIMESTAMPTZ_TEXT",
                "DATE_TEXT",
                "INTERVAL_TEXT",
                "JSONB_TEXT",
                "uuid",
                "INTEGER_ARRAY",
                "TEXT_ARRAY"
            ]
        );
        // Chunk keys in the SQLite control store keep their variants.
        let keys: Vec<Vec<u8>> = conn
            .prepare("SELECT start_key FROM _cutover_chunks WHERE start_key IS NOT NULL")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!keys.is_empty(), "the table was copied in several chunks");
        for k in keys {
            let key = decode_row(&k).unwrap();
            assert!(matches!(key.as_slice(), [Value::Int(_)]), "{key:?}");
        }
        let checkpoint: String = conn
            .query_row(
                "SELECT value FROM _cutover_state WHERE key = 'checkpoint'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(checkpoint.starts_with("lsn:"), "{checkpoint}");
    }));
    source.source().unwrap().stop_capture(&[]).unwrap();
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}
