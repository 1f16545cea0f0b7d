//! The [`RangeChecksum`] contract (verify's checksum pushdown), sentence by sentence: what an
//! engine hashes inside itself must be what the canonical spec (`docs/CANONICAL.md`) computes in
//! Rust from the same values, or verify across engines would see differences that are not there.

use cutover_connector::canonical::{row_hash, row_text, value_text};
use cutover_connector::{
    KeyRange, RangeChecksum, RangeDigest, Slice, Source, SourceFactory, TableReader,
};
use cutover_model::{Key, TableSchema};

use crate::fixture::{insert_items, table, DDL};
use crate::Engine;

/// The digest of canonical rows as the spec computes it in Rust.
fn digest_of(rows: &[cutover_connector::CanonicalRow]) -> RangeDigest {
    rows.iter().fold(RangeDigest::default(), |d, r| {
        d + RangeDigest {
            rows: 1,
            sum: row_hash(&row_text(r.values.iter().map(|v| v.as_deref()))) as u64,
        }
    })
}

fn range(start: Option<&Key>, end: Option<&Key>) -> KeyRange {
    KeyRange {
        start: start.cloned(),
        end: end.cloned(),
    }
}

/// A verifier of the source database holding `items` with 2,000 rows, and the table.
fn items<E: Engine>(e: &E, name: &str) -> (Box<dyn RangeChecksum + Send>, TableSchema) {
    let m = e.migration(name, DDL);
    e.execute(&m.source_db, &insert_items(1..=2_000)).unwrap();
    let tables = m.source.source().unwrap().tables().unwrap();
    (e.verifier(&m.source_db), table(&tables, "items"))
}

/// `checksum` returns `bounds.len() + 1` digests; each is the row count and the wrapping sum of
/// the row hashes of the canonical rows of its range; together they are the whole range's.
pub fn checksum_buckets_are_the_canonical_rows_hashes<E: Engine>(e: &E) {
    let (v, t) = items(e, "checksum");
    checksum_buckets(v, &t);
}

/// [`checksum_buckets_are_the_canonical_rows_hashes`] on a verifier of `items` with rows
/// 1..=2,000.
pub(crate) fn checksum_buckets(mut v: Box<dyn RangeChecksum + Send>, t: &TableSchema) {
    let t = t.clone();
    let all = KeyRange::all();
    let whole = v.checksum(&t, &all, &[], Slice::WHOLE).unwrap();
    assert_eq!(whole.len(), 1, "one digest without bounds");
    let rows = v.canonical_rows(&t, &all).unwrap();
    assert_eq!(rows.len(), 2_000);
    assert_eq!(
        whole[0],
        digest_of(&rows),
        "the digest is the rows' canonical hashes"
    );

    let bounds = v.split(&t, &all, 5).unwrap();
    assert!(!bounds.is_empty(), "2,000 rows split into parts");
    let buckets = v.checksum(&t, &all, &bounds, Slice::WHOLE).unwrap();
    assert_eq!(buckets.len(), bounds.len() + 1);
    let total = buckets.iter().fold(RangeDigest::default(), |a, b| a + *b);
    assert_eq!(total, whole[0], "buckets add up to the whole range");
    let mut edges: Vec<Option<&Key>> = vec![None];
    edges.extend(bounds.iter().map(Some));
    edges.push(None);
    for (i, w) in edges.windows(2).enumerate() {
        let part = v.canonical_rows(&t, &range(w[0], w[1])).unwrap();
        assert_eq!(
            buckets[i],
            digest_of(&part),
            "bucket {i}: {:?}..{:?}",
            w[0],
            w[1]
        );
    }
    // Slices split a range physically; all of them together are the range.
    let of = 3;
    let sliced = (0..of)
        .map(|index| v.checksum(&t, &all, &[], Slice { index, of }).unwrap()[0])
        .fold(RangeDigest::default(), |a, b| a + b);
    assert_eq!(sliced, whole[0], "slices add up to the whole range");
}

/// `split(range, parts)` returns at most `parts - 1` keys of rows in the range, strictly
/// ascending, after the range's start; none for a range too small to split.
pub fn split_returns_ascending_keys_inside_the_range<E: Engine>(e: &E) {
    let (v, t) = items(e, "split");
    split_inside(v, &t);
}

/// [`split_returns_ascending_keys_inside_the_range`] on a verifier of `items` with rows
/// 1..=2,000.
pub(crate) fn split_inside(mut v: Box<dyn RangeChecksum + Send>, t: &TableSchema) {
    let t = t.clone();
    let key = |i: i64| vec![cutover_model::Value::Int(i)];
    let r = range(Some(&key(500)), Some(&key(1_500)));
    let bounds = v.split(&t, &r, 4).unwrap();
    assert!(!bounds.is_empty() && bounds.len() <= 3, "{bounds:?}");
    let ints: Vec<i64> = bounds
        .iter()
        .map(|k| match &k[0] {
            cutover_model::Value::Int(i) => *i,
            other => panic!("an integer key comes back as an integer: {other:?}"),
        })
        .collect();
    assert!(ints.windows(2).all(|w| w[0] < w[1]), "ascending: {ints:?}");
    assert!(
        ints.iter().all(|i| (501..1_500).contains(i)),
        "inside the range: {ints:?}"
    );
    let tiny = range(Some(&key(10)), Some(&key(11)));
    assert!(
        v.split(&t, &tiny, 4).unwrap().is_empty(),
        "one row: no split"
    );
}

/// `canonical_rows` returns every row of the range in key order, each value's canonical text
/// being the spec's text of the value the engine's own driver reads (for every type of the
/// engine's type table).
pub fn canonical_rows_are_the_specs_text_of_the_drivers_values<E: Engine>(e: &E) {
    let types = e.type_table();
    let m = e.migration("canonical", &types.ddl);
    e.execute(&m.source_db, &types.insert).unwrap();
    let tables = m.source.source().unwrap().tables().unwrap();
    let t = table(&tables, "types");
    let direct = e.rows(&m.source_db, "types", "id");
    canonical_of_driver(e.verifier(&m.source_db), &t, &direct);
}

/// The verifier's canonical rows of `t` are the spec's text of `direct` (the driver's rows).
pub(crate) fn canonical_of_driver(
    mut v: Box<dyn RangeChecksum + Send>,
    t: &TableSchema,
    direct: &[cutover_model::Row],
) {
    let rows = v.canonical_rows(t, &KeyRange::all()).unwrap();
    assert_eq!(rows.len(), direct.len(), "row count");
    for (got, want) in rows.iter().zip(direct) {
        let key = t.key_of(want);
        let key_text: Vec<_> = key.iter().map(|k| value_text(k).unwrap()).collect();
        let got_key: Vec<_> = got.key.iter().map(|k| value_text(k).unwrap()).collect();
        assert_eq!(got_key, key_text, "keys in order");
        for ((c, g), w) in t.columns.iter().zip(&got.values).zip(want) {
            let spec = value_text(w).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                g, &spec,
                "column {} ({}) of row {key_text:?}: the engine hashes {g:?}, the spec says {spec:?} for the driver's {w:?}",
                c.name, c.declared_type
            );
        }
    }
}

/// `TableReader::scan`: up to `limit` rows with keys strictly between `after` and `before`,
/// ordered by key; paging with the last key seen reads every row exactly once (composite keys
/// too), equal to what the engine's own driver reads.
pub fn scan_pages_through_every_row_once_in_key_order<E: Engine>(e: &E) {
    let m = e.migration("scan", DDL);
    e.execute(&m.source_db, &insert_items(1..=1_000)).unwrap();
    let pairs: Vec<String> = (0..300)
        .map(|i| format!("({}, 'k{:03}', {i})", i % 7, i))
        .collect();
    e.execute(
        &m.source_db,
        &format!("INSERT INTO pairs (a, b, v) VALUES {};", pairs.join(", ")),
    )
    .unwrap();
    let tables = m.source.source().unwrap().tables().unwrap();
    let reader = SourceFactory::reader(&m.source).unwrap();
    scan_pages(reader, &tables, |name, order| {
        e.rows(&m.source_db, name, order)
    });
}

/// [`scan_pages_through_every_row_once_in_key_order`] on a reader of `items` (1..=1,000) and
/// `pairs` (300 rows), `direct` reading a table through the engine's own driver.
pub(crate) fn scan_pages(
    mut reader: Box<dyn TableReader + Send>,
    tables: &[TableSchema],
    direct: impl Fn(&str, &str) -> Vec<cutover_model::Row>,
) {
    for (name, order) in [("items", "id"), ("pairs", "a, b")] {
        let t = table(tables, name);
        let mut all = Vec::new();
        let mut after: Option<Key> = None;
        loop {
            let page = reader.scan(&t, after.as_ref(), None, 97).unwrap();
            assert!(
                page.len() <= 97,
                "{name}: a page holds at most `limit` rows"
            );
            if page.is_empty() {
                break;
            }
            after = page.last().map(|r| t.key_of(r));
            all.extend(page);
        }
        let direct = direct(name, order);
        let keys = |rows: &[cutover_model::Row]| -> Vec<Key> {
            rows.iter().map(|r| t.key_of(r)).collect()
        };
        assert_eq!(
            keys(&all),
            keys(&direct),
            "{name}: every key once, in key order"
        );
        // A window between two keys, both exclusive.
        let (lo, hi) = (t.key_of(&direct[10]), t.key_of(&direct[20]));
        let window = reader.scan(&t, Some(&lo), Some(&hi), 1_000).unwrap();
        assert_eq!(
            keys(&window),
            keys(&direct[11..20]),
            "{name}: (after, before) exclusive"
        );
    }
}
