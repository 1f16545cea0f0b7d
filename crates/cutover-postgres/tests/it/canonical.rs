//! The canonical text of `docs/CANONICAL.md` as PostgreSQL computes it in SQL (verify) and as
//! cutover computes it in Rust, for the same values: arrays of every shape, and JSON deeper
//! than cutover canonicalises.

use cutover_connector::canonical::{self, MAX_JSON_DEPTH};
use cutover_connector::{ErrorKind, KeyRange, Progress, RangeChecksum, Slice, TableReader};
use cutover_model::{Array, Value};
use cutover_postgres::copy::copy;
use cutover_postgres::pgtext;
use cutover_postgres::schema::Selection;
use cutover_postgres::verify::{PgVerifier, RowHash};
use cutover_postgres::PgEndpoint;
use cutover_postgres::PgRows;
use cutover_testkit::Postgres;

const COLUMNS: &str = "id int PRIMARY KEY, ia int[], ta text[], na numeric[], ja json[], \
                       jba jsonb[], fa float8[], ya bytea[]";

fn arr(elements: Vec<Value>) -> Value {
    Value::Array(Array::from_elements(elements))
}

fn shaped(dims: Vec<(i32, i32)>, elements: Vec<Value>) -> Value {
    Value::Array(Array { dims, elements })
}

fn t(s: &str) -> Value {
    Value::Text(s.to_owned())
}

fn n(s: &str) -> Value {
    Value::Decimal(s.parse().unwrap())
}

fn j(s: &str) -> Value {
    Value::Json(s.to_owned())
}

/// Rows of typed values: the "same values" both sides start from.
fn rows() -> Vec<Vec<Value>> {
    let awkward_text = vec![
        t(""),
        Value::Null,
        t("NULL"),
        t("null"),
        t("NULLs"),
        t("a b"),
        t("x\"y"),
        t("back\\slash"),
        t("{}"),
        t("a,b"),
        t("tab\there"),
        t("new\nline"),
        t("cr\r"),
        t("ff\u{c}"),
        t("vt\u{b}"),
        t("(paren)"),
        t("'single'"),
        t("é ✓"),
        t("plain"),
    ];
    vec![
        vec![
            Value::Int(1),
            arr(vec![Value::Int(1), Value::Null, Value::Int(-3)]),
            arr(awkward_text),
            arr(vec![
                n("1.50"),
                n("2.000"),
                n("10"),
                n("NaN"),
                Value::Null,
                n("-0.50"),
                n("0.00"),
            ]),
            arr(vec![
                j(r#"{"b": 1,"a" :[1e2, 1.50]}"#),
                Value::Null,
                j(r#""x\"y""#),
                j("[]"),
            ]),
            arr(vec![j(r#"{"b": 1,"a" :[1e2]}"#), Value::Null, j("null")]),
            arr(vec![
                Value::Float64(0.1),
                Value::Float64(-0.0),
                Value::Float64(f64::NAN),
                Value::Float64(f64::INFINITY),
                Value::Float64(f64::NEG_INFINITY),
                Value::Float64(1e100),
                Value::Float64(1.5e-7),
                Value::Null,
            ]),
            arr(vec![
                Value::Bytes(vec![0, 255]),
                Value::Bytes(vec![]),
                Value::Null,
            ]),
        ],
        // Two dimensions.
        vec![
            Value::Int(2),
            shaped(
                vec![(1, 2), (1, 2)],
                vec![Value::Int(1), Value::Int(2), Value::Int(3), Value::Null],
            ),
            shaped(
                vec![(1, 2), (1, 2)],
                vec![t("a"), t("b c"), Value::Null, t("")],
            ),
            shaped(vec![(1, 1), (1, 2)], vec![n("1.10"), n("7")]),
            shaped(vec![(1, 2), (1, 1)], vec![j(r#"{"z":1,"a":2}"#), j("1")]),
            shaped(vec![(1, 1), (1, 1)], vec![j("{}")]),
            shaped(
                vec![(1, 2), (1, 1)],
                vec![Value::Float64(1.0), Value::Float64(-2.5)],
            ),
            shaped(vec![(1, 1), (1, 1)], vec![Value::Bytes(vec![1])]),
        ],
        // Lower bounds other than 1.
        vec![
            Value::Int(3),
            shaped(vec![(0, 2)], vec![Value::Int(1), Value::Int(2)]),
            shaped(
                vec![(-2, 2), (3, 2)],
                vec![t("a"), t("b"), t("c"), t("d e")],
            ),
            shaped(vec![(2, 1)], vec![n("3.0")]),
            shaped(vec![(5, 1)], vec![j(r#"{"k": [1, 2.0]}"#)]),
            shaped(vec![(0, 1)], vec![j(r#"{"k": "v"}"#)]),
            shaped(vec![(0, 1), (0, 1)], vec![Value::Float64(0.5)]),
            shaped(vec![(7, 1)], vec![Value::Null]),
        ],
        // Empty arrays, and NULL columns.
        vec![
            Value::Int(4),
            arr(vec![]),
            arr(vec![]),
            arr(vec![]),
            Value::Null,
            arr(vec![]),
            Value::Null,
            arr(vec![]),
        ],
    ]
}

/// A table holding `rows()`, written from the typed values' literals.
fn arrays_table(pg: &Postgres) -> String {
    let db = pg.fresh_database("canon_arrays").unwrap();
    let mut client = postgres::Client::connect(&pg.url(&db), postgres::NoTls).unwrap();
    client
        .batch_execute(&format!("CREATE TABLE arr ({COLUMNS})"))
        .unwrap();
    let types = [
        "int",
        "int[]",
        "text[]",
        "numeric[]",
        "json[]",
        "jsonb[]",
        "float8[]",
        "bytea[]",
    ];
    let params: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, ty)| format!("${}::text::{ty}", i + 1))
        .collect();
    let insert = format!("INSERT INTO arr VALUES ({})", params.join(", "));
    for row in rows() {
        let texts: Vec<Option<String>> = row.iter().map(pgtext::encode).collect();
        let refs: Vec<&(dyn postgres::types::ToSql + Sync)> = texts
            .iter()
            .map(|v| v as &(dyn postgres::types::ToSql + Sync))
            .collect();
        client.execute(&insert, &refs).unwrap();
    }
    db
}

#[test]
fn arrays_have_the_same_canonical_text_in_sql_and_in_rust() {
    let pg = Postgres::shared().unwrap();
    let db = arrays_table(pg);
    let e = PgEndpoint::from_url(&pg.url(&db)).unwrap();
    let mut v = PgVerifier::open(&e, RowHash::Md5).unwrap();
    let table = v.tables().remove(0);
    let sql = v.canonical_rows(&table, &KeyRange::all()).unwrap();
    let typed = rows();
    assert_eq!(sql.len(), typed.len());

    // The typed values' canonical text is the server's, column by column.
    let mut expected_sum = 0u64;
    for (got, row) in sql.iter().zip(&typed) {
        let texts: Vec<Option<String>> = row
            .iter()
            .map(|v| canonical::value_text(v).unwrap())
            .collect();
        for ((g, r), c) in got.values.iter().zip(&texts).zip(&table.columns) {
            assert_eq!(g, r, "row {:?}, column {}", row[0], c.name);
        }
        let row_text = canonical::row_text(texts.iter().map(|t| t.as_deref()));
        expected_sum = expected_sum.wrapping_add(canonical::row_hash(&row_text) as u64);
    }
    // So is the row hash the server sums.
    let digest = v
        .checksum(&table, &KeyRange::all(), &[], Slice::WHOLE)
        .unwrap();
    assert_eq!((digest[0].rows, digest[0].sum), (4, expected_sum));

    // The same rows read through cutover's decoder: arrays arrive as their exact text
    // (`Value::Raw`), which is already canonical for every element type but numeric and json
    // (those the server normalises in verify's SQL, and their typed values above agree).
    let mut reader = PgRows::open(&e, &Selection::default()).unwrap();
    let decoded = reader.scan(&table, None, None, 100).unwrap();
    for (got, row) in sql.iter().zip(&decoded) {
        for (i, c) in table.columns.iter().enumerate() {
            if matches!(c.name.as_str(), "na" | "ja") {
                continue;
            }
            assert_eq!(
                got.values[i],
                canonical::value_text(&row[i]).unwrap(),
                "row {:?}, column {}",
                row[0],
                c.name
            );
        }
    }
    assert!(
        matches!(&decoded[0][2], Value::Raw { text, .. } if text.starts_with("{\"\",NULL,\"NULL\",\"null\",NULLs,")),
        "{:?}",
        decoded[0][2]
    );
}

/// A jsonb nested `depth` levels: `[[[…1…]]]`.
fn nested(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

fn deep_table(pg: &Postgres, name: &str, last: &str) -> String {
    let db = pg.fresh_database(name).unwrap();
    pg.psql(
        &db,
        &format!(
            "CREATE TABLE deep (id int PRIMARY KEY, doc jsonb);
             INSERT INTO deep VALUES (1, '{{\"a\": 1}}'), (2, '{}'), (3, '{}');",
            nested(10_000),
            last
        ),
    )
    .unwrap();
    db
}

#[test]
fn json_deeper_than_the_limit_is_an_error_naming_the_row_never_an_abort() {
    let pg = Postgres::shared().unwrap();
    let src = deep_table(pg, "deep_s", &nested(10_000));
    let dst = deep_table(pg, "deep_t", &nested(10_001));
    let (s, t) = (
        PgEndpoint::from_url(&pg.url(&src)).unwrap(),
        PgEndpoint::from_url(&pg.url(&dst)).unwrap(),
    );

    // PostgreSQL computes canonical text in SQL, where cutover's limit does not apply: the
    // bisection compares these rows, and finds the one that differs.
    let tables = PgVerifier::open(&s, RowHash::Md5).unwrap().tables();
    let report = cutover_verify::bisect::verify(
        &|| PgVerifier::open(&s, RowHash::Md5),
        &|| PgVerifier::open(&t, RowHash::Md5),
        &tables,
        &cutover_verify::bisect::Options::default(),
        &cutover_verify::bisect::VerifyProgress::default(),
    )
    .unwrap();
    assert_eq!(report.differences(), 1);

    // The row-by-row comparison reads values through cutover's decoder and canonicalises in
    // Rust to describe a difference: an error naming table, column and key, not a crash.
    let mut a = PgRows::open(&s, &Selection::default()).unwrap();
    let mut b = PgRows::open(&t, &Selection::default()).unwrap();
    let err = cutover_verify::compare_table(&mut a, &mut b, &tables[0], 100).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::UnsupportedType, "{msg}");
    for part in [
        "table public.deep",
        "column doc",
        "key (3)",
        &format!("deeper than {MAX_JSON_DEPTH} levels"),
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }

    // copy carries the documents as they are (no parsing in cutover): they arrive intact.
    let copied = pg.fresh_database("deep_c").unwrap();
    let c = PgEndpoint::from_url(&pg.url(&copied)).unwrap();
    copy(
        &s,
        &c,
        &cutover_postgres::copy::CopyOptions::default(),
        &Progress::default(),
        &cutover_connector::CancellationToken::new(),
    )
    .unwrap();
    let digest = "SELECT string_agg(md5(doc::text), ',' ORDER BY id) FROM deep";
    assert_eq!(
        pg.psql(&copied, digest).unwrap(),
        pg.psql(&src, digest).unwrap()
    );
}

#[test]
fn sync_carries_json_deeper_than_the_limit_intact() {
    use super::sync::{cleanup, drain, migration, small_chunks, start, wait_for};
    let pg = Postgres::shared().unwrap();
    let ddl = format!(
        "CREATE TABLE deep (id int PRIMARY KEY, doc jsonb);
         INSERT INTO deep VALUES (1, '{}');",
        nested(10_000)
    );
    let (src, dst, s, t) = migration(pg, "deep_sync", &ddl);
    let r = start(&s, &t, small_chunks());
    wait_for("the copy", &r, |p| {
        p.phase() == cutover_connector::Phase::Replicating
    });
    // A change through the replication stream (pgoutput → the sink), deeper still (20,000
    // levels is past PostgreSQL's own limit with the default max_stack_depth).
    pg.psql(
        &src,
        &format!("INSERT INTO deep VALUES (2, '{}')", nested(12_000)),
    )
    .unwrap();
    drain(pg, &src, r);
    let digest = "SELECT string_agg(md5(doc::text), ',' ORDER BY id) FROM deep";
    assert_eq!(
        pg.psql(&dst, digest).unwrap(),
        pg.psql(&src, digest).unwrap()
    );
    cleanup(&s);
}
