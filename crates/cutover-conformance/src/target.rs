//! The verify and reader sentences for a target-only engine ([`TargetEngine`]): the rows are
//! written by the target's own sink (or a whole sync from the source), then hashed, split,
//! listed and scanned through the target's verifier and reader, with the same checks as
//! [`crate::verify`] runs on an engine's source side.

use std::time::Duration;

use cutover_connector::{Source, SourceFactory, TargetFactory};
use cutover_model::{Row, TableSchema, Value};
use cutover_pipeline::{Control, Progress, SyncOptions};

use crate::fixture::{item, positions, table, CaptureGuard, DDL};
use crate::sink::{prepared, upsert};
use crate::verify::{canonical_of_driver, checksum_buckets, scan_pages, split_inside};
use crate::{Migration, TargetEngine};

/// A target holding `rows` of each named table, written by its sink in batches of 500.
fn filled<E: TargetEngine>(
    e: &E,
    name: &str,
    rows: &[(&str, Vec<Row>)],
) -> (Migration<E::Source, E::Target>, Vec<TableSchema>) {
    let m = e.migration(name, DDL);
    let (p, _capture) = positions(e, &m, 1);
    let (tables, mut sink) = prepared(&m);
    for (t, rows) in rows {
        let t = table(&tables, t).name;
        for batch in rows.chunks(500) {
            let ops: Vec<_> = batch.iter().map(|r| upsert(&t, r.clone())).collect();
            crate::sink::feed(&mut *sink, &ops, p[0].clone()).unwrap();
        }
    }
    (m, tables)
}

fn items(n: i64) -> Vec<Row> {
    (1..=n).map(item).collect()
}

/// See [`crate::verify::checksum_buckets_are_the_canonical_rows_hashes`].
pub fn checksum_buckets_are_the_canonical_rows_hashes<E: TargetEngine>(e: &E) {
    let (m, tables) = filled(e, "t_checksum", &[("items", items(2_000))]);
    checksum_buckets(e.verifier(&m.target_db), &table(&tables, "items"));
}

/// See [`crate::verify::split_returns_ascending_keys_inside_the_range`].
pub fn split_returns_ascending_keys_inside_the_range<E: TargetEngine>(e: &E) {
    let (m, tables) = filled(e, "t_split", &[("items", items(2_000))]);
    split_inside(e.verifier(&m.target_db), &table(&tables, "items"));
}

/// See [`crate::verify::scan_pages_through_every_row_once_in_key_order`]: the target's reader
/// against the target's own driver.
pub fn scan_pages_through_every_row_once_in_key_order<E: TargetEngine>(e: &E) {
    let pairs: Vec<Row> = (0..300)
        .map(|i| {
            vec![
                Value::Int(i % 7),
                Value::Text(format!("k{i:03}")),
                Value::Int(i),
            ]
        })
        .collect();
    let (m, tables) = filled(e, "t_scan", &[("items", items(1_000)), ("pairs", pairs)]);
    let reader = TargetFactory::reader(&m.target).unwrap();
    scan_pages(reader, &tables, |name, order| {
        e.rows(&m.target_db, name, order)
    });
}

/// See [`crate::verify::canonical_rows_are_the_specs_text_of_the_drivers_values`]: every type
/// of the source's type table, synced to the target, hashes on the target as the spec's text
/// of the value the source's driver reads — what verify across the two engines relies on.
pub fn canonical_rows_are_the_specs_text_of_the_drivers_values<E: TargetEngine>(e: &E) {
    let types = e.type_table();
    let m = e.migration("t_canonical", &types.ddl);
    e.execute(&m.source_db, &types.insert).unwrap();
    let tables = m.source.source().unwrap().tables().unwrap();
    let _capture = CaptureGuard::new(&m.source, &tables);
    let control = Control::default();
    let opts = SyncOptions {
        retry_budget: Duration::from_secs(5),
        ..SyncOptions::default()
    };
    std::thread::scope(|s| {
        let _stop = cutover_testkit::on_drop(|| control.stop());
        let run = s.spawn(|| {
            cutover_pipeline::run(&m.source, &m.target, &opts, &control, &Progress::default())
        });
        let end = m.source.source().unwrap().current_position().unwrap();
        control.drain_to(end);
        run.join()
            .expect("the sync")
            .expect("the sync of the type table ends once drained");
    });
    let t = table(&tables, "types");
    let direct = e.rows(&m.source_db, "types", "id");
    canonical_of_driver(e.verifier(&m.target_db), &t, &direct);
}
