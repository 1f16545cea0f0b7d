//! Issue 13 §4 from the command line: PostgreSQL → Parquet files under a concurrent writer,
//! killed with SIGKILL at random moments and once at the failpoint between a file and the
//! manifest that lists it. The lake is then read with the `parquet` crate, following each
//! table's manifest (not through cutover): every change the writer committed is in the change
//! files exactly once, in the writer's order per key, and the copy then the changes folded by
//! key give the source's rows.

use std::collections::HashMap;
use std::path::Path;

use arrow_array::{Array, Int32Array, Int64Array, StringArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use super::{cutover, text};

/// Every row of table `acct` in the lake, file by file as the manifest lists them:
/// (kind, op, id, v).
fn read_lake(table_dir: &Path) -> Vec<(String, String, i64, Option<i32>)> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(table_dir.join("_manifest.json")).unwrap()).unwrap();
    let mut out = Vec::new();
    for f in manifest["files"].as_array().unwrap() {
        let kind = f["kind"].as_str().unwrap().to_owned();
        let file = std::fs::File::open(table_dir.join(f["path"].as_str().unwrap())).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        let mut rows = 0;
        for batch in reader {
            let batch = batch.unwrap();
            let ids = batch
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .clone();
            let vs = batch
                .column_by_name("v")
                .unwrap()
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap()
                .clone();
            let ops = batch
                .column_by_name("_op")
                .map(|c| c.as_any().downcast_ref::<StringArray>().unwrap().clone());
            for i in 0..batch.num_rows() {
                let op = ops.as_ref().map_or("r", |o| o.value(i)).to_owned();
                let v = (!vs.is_null(i)).then(|| vs.value(i));
                out.push((kind.clone(), op, ids.value(i), v));
                rows += 1;
            }
        }
        assert_eq!(
            rows,
            f["rows"].as_u64().unwrap() as usize,
            "the manifest's row count"
        );
    }
    out
}

#[test]
fn postgres_to_parquet_killed_under_writes_holds_every_change_exactly_once() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let src = pg.fresh_database("pq_src").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE acct (id bigint PRIMARY KEY, v int NOT NULL, note text, data bytea, at timestamptz DEFAULT now(), amount numeric(12,2) DEFAULT 12.5);
         INSERT INTO acct (id, v, note, data) SELECT i, 0, 'n' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 3000) i;
         ANALYZE acct;",
    )
    .unwrap();
    let s = pg.url(&src);
    let dir = tempfile::tempdir().unwrap();
    let lake = dir.path().join("lake");
    let t = format!("parquet://{}?roll-seconds=1&roll-mb=1", lake.display());
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let name = format!("pq_{}", fastrand::u32(..));
    let args = [
        "sync", "--source", &s, "--target", &t, "--name", &name, "--state", state, "--jobs", "2",
    ];
    let committed = super::sync_under_logged_writes(
        pg,
        &src,
        &args,
        4,
        "parquet::writer::after-file=1*off->panic",
        1717,
    );

    let rows = read_lake(&lake.join("public.acct"));
    eprintln!(
        "{} rows in the lake ({} in change files); the writer committed {} changes",
        rows.len(),
        rows.iter().filter(|r| r.0 == "changes").count(),
        committed.len()
    );
    let mut fold: HashMap<i64, i64> = HashMap::new();
    let mut events: HashMap<i64, Vec<(char, i64)>> = HashMap::new();
    for (kind, op, id, v) in &rows {
        match (kind.as_str(), op.as_str()) {
            ("copy", "r") => {
                fold.insert(*id, i64::from(v.unwrap()));
            }
            ("changes", "c" | "u") => {
                fold.insert(*id, i64::from(v.unwrap()));
                let op = op.chars().next().unwrap();
                events
                    .entry(*id)
                    .or_default()
                    .push((op, i64::from(v.unwrap())));
            }
            ("changes", "d") => {
                fold.remove(id);
                assert_eq!(*v, None, "a delete carries only the key");
                events.entry(*id).or_default().push(('d', -1));
            }
            other => panic!("unexpected row {other:?}"),
        }
    }
    super::assert_each_change_once(&events, &committed);
    let source = super::acct_rows(pg, &src);
    assert_eq!(fold.len(), source.len(), "rows from folding the lake");
    assert!(
        fold == source,
        "the lake folded by key differs from the source"
    );

    let o = cutover(&[
        "status", "--target", &t, "--name", &name, "--state", state, "--json",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let o = cutover(&[
        "cleanup", "--source", &s, "--target", &t, "--name", &name, "--state", state,
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(super::slots(pg, &src), "0");
}
