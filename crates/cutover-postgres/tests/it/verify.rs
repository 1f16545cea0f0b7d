//! `verify` on PostgreSQL ↔ PostgreSQL against real throwaway servers (cutover-testkit):
//! checksum bisection, the row-level report, canonical values, repair and the live re-check.

use cutover_connector::PositionOrderExt;
use cutover_postgres::lsn::LSNS;
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cutover_connector::{canonical, ErrorKind};
use cutover_model::TableSchema;
use cutover_postgres::verify::{PgVerifier, RowHash};
use cutover_postgres::PgEndpoint;
use cutover_testkit::Postgres;
use cutover_verify::bisect::{self, Options, VerifyProgress};
use cutover_verify::{DifferenceKind, VerifyReport};

/// The same schema and rows on both sides: numeric with and without scale, json and jsonb,
/// floats, times with zones, bytea, uuid, a composite text key, and a table without a key.
const DATA: &str = r#"
CREATE SCHEMA school;
CREATE TABLE school.students (
    id bigint PRIMARY KEY,
    name text NOT NULL,
    score numeric(8,2),
    ratio numeric,
    f8 float8,
    f4 real,
    profile json,
    tags jsonb,
    seen timestamptz,
    born date,
    photo bytea,
    ref uuid,
    span interval
);
INSERT INTO school.students
SELECT i, 'Student ' || i, (i % 10000) / 100.0, i / 8.0, i / 3.0, (i / 7.0)::real,
       ('{"lang": "en", "goals": [' || i || ', 2], "n": ' || i || '}')::json,
       ('{"k": ' || i || '}')::jsonb,
       timestamptz '2024-01-01 12:00:00+05:30' + i * interval '1 minute',
       date '2000-01-01' + i % 5000,
       decode(md5(i::text), 'hex'),
       md5(i::text)::uuid,
       make_interval(secs => i)
FROM generate_series(1, 20000) i;
CREATE TABLE public.pairs (a bigint, b text, v int, PRIMARY KEY (a, b));
INSERT INTO public.pairs SELECT i % 97, 'k' || i || E' "x",', i FROM generate_series(1, 3000) i;
CREATE TABLE public.nopk (x int, y text);
INSERT INTO public.nopk SELECT i % 10, 'dup' FROM generate_series(1, 50) i;
ANALYZE;
"#;

fn pair(pg: &Postgres, name: &str) -> (String, String) {
    let a = pg.fresh_database(&format!("{name}_s")).unwrap();
    let b = pg.fresh_database(&format!("{name}_t")).unwrap();
    pg.psql(&a, DATA).unwrap();
    pg.psql(&b, DATA).unwrap();
    (a, b)
}

/// Small buckets, slices and leaves, so a 20,000-row table goes through every level.
fn opts() -> Options {
    Options {
        jobs: 3,
        bucket_rows: 500,
        fanout: 4,
        leaf_rows: 16,
        slice_rows: 6_000,
        ..Options::default()
    }
}

fn run(
    pg: &Postgres,
    src: &str,
    dst: &str,
    opts: &Options,
) -> Result<VerifyReport, cutover_connector::ConnectorError> {
    run_with(pg, src, dst, opts, &VerifyProgress::default())
}

fn run_with(
    pg: &Postgres,
    src: &str,
    dst: &str,
    opts: &Options,
    progress: &VerifyProgress,
) -> Result<VerifyReport, cutover_connector::ConnectorError> {
    let s = PgEndpoint::from_url(&pg.url(src)).unwrap();
    let t = PgEndpoint::from_url(&pg.url(dst)).unwrap();
    let tables: Vec<TableSchema> = PgVerifier::open(&s, RowHash::Md5).unwrap().tables();
    bisect::verify(
        &|| PgVerifier::open(&s, RowHash::Native),
        &|| PgVerifier::open(&t, RowHash::Native),
        &tables,
        opts,
        progress,
    )
}

/// (table, key text, kind, columns) of every reported difference.
fn found(report: &VerifyReport) -> BTreeSet<(String, String, String, Vec<String>)> {
    report
        .tables
        .iter()
        .flat_map(|t| {
            t.differences.iter().map(move |d| {
                let cols = match &d.kind {
                    DifferenceKind::Different { columns } => {
                        columns.iter().map(|c| c.column.clone()).collect()
                    }
                    _ => Vec::new(),
                };
                (
                    t.table.to_string(),
                    cutover_connector::key_text(&d.key),
                    d.kind.name().to_owned(),
                    cols,
                )
            })
        })
        .collect()
}

fn diff(
    table: &str,
    key: &str,
    kind: &str,
    cols: &[&str],
) -> (String, String, String, Vec<String>) {
    (
        table.to_owned(),
        key.to_owned(),
        kind.to_owned(),
        cols.iter().map(|c| (*c).to_owned()).collect(),
    )
}

#[test]
fn identical_data_is_equal_and_engine_spellings_of_one_value_are_not_differences() {
    let pg = Postgres::shared().unwrap();
    let (src, dst) = pair(pg, "same");
    let report = run(pg, &src, &dst, &opts()).unwrap();
    assert!(report.is_equal(), "{:?}", found(&report));
    let students = report
        .tables
        .iter()
        .find(|t| t.table.name == "students")
        .unwrap();
    assert_eq!(
        (students.source_rows, students.target_rows),
        (20_000, 20_000)
    );

    // The same values, spelled differently by the engine: JSON key order and whitespace,
    // numeric trailing zeros, a jsonb written with other spacing, rows stored in another order.
    pg.psql(
        &dst,
        r#"UPDATE school.students SET profile = ('{ "n" : ' || id || ',"goals":[' || id || ',2],   "lang":"en"}')::json WHERE id % 1000 = 3;
           UPDATE school.students SET ratio = ratio::numeric(20,6) WHERE id % 1000 = 4;
           UPDATE school.students SET tags = ('{"k":' || id || '   }')::jsonb WHERE id % 1000 = 5;
           CLUSTER public.pairs USING pairs_pkey; VACUUM FULL school.students;"#,
    )
    .unwrap();
    assert_eq!(
        pg.psql(&dst, "SELECT ratio::text FROM school.students WHERE id = 4")
            .unwrap(),
        "0.500000",
        "the target really spells it with trailing zeros"
    );
    let report = run(pg, &src, &dst, &opts()).unwrap();
    assert!(report.is_equal(), "{:?}", found(&report));
}

#[test]
fn targeted_edits_are_reported_exactly_with_kinds_and_columns_then_repaired() {
    let pg = Postgres::shared().unwrap();
    let (src, dst) = pair(pg, "edits");
    pg.psql(
        &dst,
        r#"UPDATE school.students SET score = score + 1 WHERE id = 17;
           UPDATE school.students SET profile = '{"lang": "mi", "goals": [4242, 2], "n": 4242}' WHERE id = 4242;
           UPDATE school.students SET ratio = 0.1 WHERE id = 9000;
           UPDATE school.students SET photo = NULL WHERE id = 12000;
           UPDATE school.students SET f8 = f8 + 1e-12, seen = seen + interval '1 microsecond' WHERE id = 15000;
           DELETE FROM school.students WHERE id IN (1, 19999);
           INSERT INTO school.students (id, name) VALUES (20001, 'new'), (-5, 'before');
           UPDATE public.pairs SET v = NULL WHERE a = 3 AND b = 'k3 "x",';
           DELETE FROM public.nopk WHERE ctid = (SELECT min(ctid) FROM public.nopk WHERE x = 4);
           INSERT INTO public.nopk VALUES (11, 'new');"#,
    )
    .unwrap();
    // NULL against an empty document, and an empty object against an empty array.
    pg.psql(
        &src,
        "UPDATE school.students SET profile = NULL WHERE id = 777;
         UPDATE school.students SET profile = '{}', tags = '{}' WHERE id = 778",
    )
    .unwrap();
    pg.psql(
        &dst,
        "UPDATE school.students SET profile = '{}' WHERE id = 777;
         UPDATE school.students SET profile = '[]', tags = '[]' WHERE id = 778",
    )
    .unwrap();

    let progress = VerifyProgress::default();
    let report = run_with(pg, &src, &dst, &opts(), &progress).unwrap();
    let s = "school.students";
    let expected: BTreeSet<_> = [
        diff(s, "(-5)", "extra", &[]),
        diff(s, "(1)", "missing", &[]),
        diff(s, "(17)", "different", &["score"]),
        diff(s, "(777)", "different", &["profile"]),
        diff(s, "(778)", "different", &["profile", "tags"]),
        diff(s, "(4242)", "different", &["profile"]),
        diff(s, "(9000)", "different", &["ratio"]),
        diff(s, "(12000)", "different", &["photo"]),
        diff(s, "(15000)", "different", &["f8", "seen"]),
        diff(s, "(19999)", "missing", &[]),
        diff(s, "(20001)", "extra", &[]),
        diff("public.pairs", "(3, 'k3 \"x\",')", "different", &["v"]),
        diff("public.nopk", "('4', 'dup')", "missing", &[]),
        diff("public.nopk", "('11', 'new')", "extra", &[]),
    ]
    .into_iter()
    .collect();
    assert_eq!(found(&report), expected);
    assert!(
        progress.rows_hashed.load(Ordering::Relaxed) < 3 * 23_050,
        "bisection re-hashes only the differing ranges"
    );

    // Both values of a differing column, in canonical text.
    let students = report
        .tables
        .iter()
        .find(|t| t.table.name == "students")
        .unwrap();
    let d17 = students
        .differences
        .iter()
        .find(|d| cutover_connector::key_text(&d.key) == "(17)")
        .unwrap();
    let DifferenceKind::Different { columns } = &d17.kind else {
        panic!("{d17:?}")
    };
    assert_eq!(
        (columns[0].source.as_deref(), columns[0].target.as_deref()),
        (Some("0.17"), Some("1.17"))
    );
    let d12000 = students
        .differences
        .iter()
        .find(|d| cutover_connector::key_text(&d.key) == "(12000)")
        .unwrap();
    let DifferenceKind::Different { columns } = &d12000.kind else {
        panic!("{d12000:?}")
    };
    assert_eq!(
        columns[0].target, None,
        "a NULL is told from an empty value"
    );
    assert!(students.note.is_none());
    assert!(report
        .tables
        .iter()
        .find(|t| t.table.name == "nopk")
        .unwrap()
        .note
        .is_some());

    // Every difference is in the target's control store, with the time it was found.
    assert_eq!(
        pg.psql(
            &dst,
            "SELECT count(*), bool_and(found_at <= now()) FROM _cutover.mismatches"
        )
        .unwrap(),
        "14|t"
    );
    assert_eq!(
        pg.psql(&dst, "SELECT kind, columns::text FROM _cutover.mismatches WHERE table_name = 'students' AND key = '(15000)'")
            .unwrap(),
        "different|{f8,seen}"
    );

    // Repair rewrites the keyed rows from the source; the table without a key is left alone.
    let repaired = run(
        pg,
        &src,
        &dst,
        &Options {
            repair: true,
            ..opts()
        },
    )
    .unwrap();
    let r = repaired.repair.clone().unwrap();
    assert_eq!((r.upserted, r.deleted), (10, 2), "{r:?}");
    assert_eq!(r.skipped_tables, vec!["public.nopk".to_owned()]);
    assert_eq!(
        r.still_different, 2,
        "only the table without a key still differs"
    );
    let after = run(pg, &src, &dst, &opts()).unwrap();
    let left: Vec<String> = after
        .tables
        .iter()
        .filter(|t| !t.is_equal())
        .map(|t| t.table.to_string())
        .collect();
    assert_eq!(left, vec!["public.nopk".to_owned()]);
    assert_eq!(
        pg.psql(&dst, "SELECT score, photo IS NULL FROM school.students WHERE id = 17 OR id = 12000 ORDER BY id")
            .unwrap(),
        "0.17|f\n20.00|f",
        "values written back with their type's own scale"
    );
}

#[test]
fn the_checksum_sql_agrees_with_the_canonical_rules() {
    let pg = Postgres::shared().unwrap();
    let db = pg.fresh_database("canon").unwrap();
    pg.psql(
        &db,
        r#"CREATE TABLE t (id int PRIMARY KEY, n numeric, f float8, r real, j json, b bytea, s text);
           INSERT INTO t VALUES (1, 1.500, 1.5e-7, 0.1, '{"b": 1,"a" : [1e2, "x\"y"]}', '\x00ff', 'a b'),
                                (2, NULL, '-0', 'NaN', NULL, '\x', ''),
                                (3, 'NaN', 1e100, 1e6, '[]', NULL, '"(,)\');"#,
    )
    .unwrap();
    let e = PgEndpoint::from_url(&pg.url(&db)).unwrap();
    let mut v = PgVerifier::open(&e, RowHash::Md5).unwrap();
    let t = v.tables().remove(0);
    use cutover_connector::RangeChecksum;
    let rows = v
        .canonical_rows(&t, &cutover_connector::KeyRange::all())
        .unwrap();
    let text = |i: usize| {
        rows[i]
            .values
            .iter()
            .map(|v| v.clone().unwrap_or_else(|| "∅".into()))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    assert_eq!(
        text(0),
        r#"1 | 1.5 | 1.5e-07 | 0.1 | {"a": [100, "x\"y"], "b": 1} | \x00ff | a b"#
    );
    assert_eq!(text(1), "2 | ∅ | -0 | NaN | ∅ | \\x | ");
    assert_eq!(text(2), "3 | NaN | 1e+100 | 1e+06 | [] | ∅ | \"(,)\\");
    // The in-database digest is the sum of the canonical row hashes computed here.
    let expected = rows.iter().fold(0u64, |acc, r| {
        let text = canonical::row_text(r.values.iter().map(|v| v.as_deref()));
        acc.wrapping_add(canonical::row_hash(&text) as u64)
    });
    let digest = v
        .checksum(
            &t,
            &cutover_connector::KeyRange::all(),
            &[],
            cutover_connector::Slice::WHOLE,
        )
        .unwrap();
    assert_eq!((digest[0].rows, digest[0].sum), (3, expected));
    // And the canonical text of model values matches the server's for the same values.
    assert_eq!(canonical::float64_text(1.5e-7), "1.5e-07");
    assert_eq!(
        canonical::json_text(r#"{"b": 1,"a" : [1e2, "x\"y"]}"#)
            .unwrap()
            .as_deref(),
        Some(r#"{"a": [100, "x\"y"], "b": 1}"#)
    );
}

#[test]
fn live_reports_only_differences_that_outlive_the_applier() {
    let pg = Postgres::shared().unwrap();
    let (src, dst) = pair(pg, "live");
    let s = PgEndpoint::from_url(&pg.url(&src)).unwrap();
    let live = Options {
        live: Some(Duration::from_secs(60)),
        ..opts()
    };

    // No sync has run: --live refuses, saying why.
    let err = run(pg, &src, &dst, &live).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(err.to_string().contains("needs a running sync"), "{err}");

    // A "sync" that is behind: the target holds the position it has applied.
    let lsn = pg
        .psql(&src, cutover_postgres::COMMITTED_POSITION_SQL)
        .unwrap();
    pg.psql(
        &dst,
        &format!(
            "CREATE SCHEMA _cutover; CREATE TABLE _cutover.replication (id int PRIMARY KEY, position text);
             INSERT INTO _cutover.replication VALUES (1, 'lsn:{lsn}');"
        ),
    )
    .unwrap();
    // Changes on the source that the applier has not applied yet, and a real difference.
    pg.psql(
        &src,
        "UPDATE school.students SET name = 'renamed' WHERE id IN (10, 11000)",
    )
    .unwrap();
    pg.psql(&dst, "UPDATE school.students SET score = 99 WHERE id = 500")
        .unwrap();

    let progress = VerifyProgress::default();
    let report = std::thread::scope(|sc| {
        let h = sc.spawn(|| run_with(pg, &src, &dst, &live, &progress));
        // The applier: once verify waits, apply the source's changes to the target and then
        // record the source position that covers them.
        loop {
            assert!(!h.is_finished(), "verify did not wait for the applier");
            let stage = progress.stage.lock().unwrap().clone();
            if stage.contains("once the applier reaches") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        pg.psql(
            &dst,
            "UPDATE school.students SET name = 'renamed' WHERE id IN (10, 11000)",
        )
        .unwrap();
        let now = pg
            .psql(&src, cutover_postgres::COMMITTED_POSITION_SQL)
            .unwrap();
        pg.psql(
            &dst,
            &format!("UPDATE _cutover.replication SET position = 'lsn:{now}'"),
        )
        .unwrap();
        h.join().unwrap()
    })
    .unwrap();
    assert_eq!(
        found(&report),
        [diff("school.students", "(500)", "different", &["score"])]
            .into_iter()
            .collect()
    );
    let l = report.live.unwrap();
    assert_eq!((l.candidates, l.resolved), (3, 2));
    let seen = l.waited_for.unwrap();
    let before: cutover_model::Position = format!("lsn:{lsn}").parse().unwrap();
    assert!(
        LSNS.after(&seen, &before),
        "waited for a position after the changes: {seen} > {before}"
    );
    drop(s);
}
