//! `MySqlVerifier` against a real MariaDB: digests computed in the server.

use cutover_connector::canonical::{row_hash, row_text};
use cutover_connector::{CanonicalRow, KeyRange, OpenOptions, RangeChecksum, RangeDigest, Slice};
use cutover_model::{Key, TableSchema, Value};
use cutover_mysql::{MySqlEndpoint, MySqlVerifier};
use cutover_testkit::MariaDb;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

/// The digest the spec computes from canonical rows.
fn digest_of(rows: &[CanonicalRow]) -> RangeDigest {
    rows.iter().fold(RangeDigest::default(), |d, r| {
        d + RangeDigest {
            rows: 1,
            sum: row_hash(&row_text(r.values.iter().map(|v| v.as_deref()))) as u64,
        }
    })
}

/// A verifier of a fresh database where `sql` made one table, and that table.
fn verifier(prefix: &str, sql: &str) -> R<(MySqlVerifier, TableSchema)> {
    let server = MariaDb::shared()?;
    let db = server.fresh_database(prefix)?;
    server.sql(&db, &format!("SET NAMES utf8mb4; {sql}"))?;
    let ep = MySqlEndpoint::parse(&server.url(&db), &OpenOptions::default())?;
    let v = MySqlVerifier::open(&ep)?;
    let t = v.tables().into_iter().next().ok_or("no table")?;
    Ok((v, t))
}

/// Columns named like the aliases of verify's own SQL (`b`, `h`, `x`) are not mistaken for
/// them: every bucket is the digest of its range's canonical rows.
#[test]
fn buckets_are_the_digests_of_their_ranges_whatever_the_columns_are_named() -> R {
    let (mut v, t) = verifier(
        "my_verify_names",
        "CREATE TABLE pairs (a int, b varchar(20), h int, x varchar(5), PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq MOD 13, CONCAT(ELT(seq MOD 4 + 1, '', 'é', 'a b', 'x\"y'),
             seq), seq, IF(seq MOD 3 = 0, NULL, 'v') FROM seq_0_to_599",
    )?;
    let all = KeyRange::all();
    let whole = v.checksum(&t, &all, &[], Slice::WHOLE)?;
    assert_eq!(whole, [digest_of(&v.canonical_rows(&t, &all)?)]);
    assert_eq!(whole[0].rows, 600);
    let bounds = v.split(&t, &all, 6)?;
    assert!(bounds.len() > 2, "{bounds:?}");
    let buckets = v.checksum(&t, &all, &bounds, Slice::WHOLE)?;
    let mut edges: Vec<Option<&Key>> = vec![None];
    edges.extend(bounds.iter().map(Some));
    edges.push(None);
    for (i, w) in edges.windows(2).enumerate() {
        let range = KeyRange {
            start: w[0].cloned(),
            end: w[1].cloned(),
        };
        assert_eq!(
            buckets[i],
            digest_of(&v.canonical_rows(&t, &range)?),
            "bucket {i}"
        );
    }
    Ok(())
}

/// `canonical_rows_by_key` gives the rows of the keys that exist (as `canonical_rows` does) and
/// nothing for the others, the last row of the table included.
#[test]
fn canonical_rows_by_key_are_the_rows_of_those_keys() -> R {
    let (mut v, t) = verifier(
        "my_verify_by_key",
        "CREATE TABLE t (a int, b varchar(20), v double, PRIMARY KEY (a, b));
         INSERT INTO t SELECT seq MOD 7, CONCAT('k', seq), seq / 3 FROM seq_0_to_299",
    )?;
    let all = v.canonical_rows(&t, &KeyRange::all())?;
    assert_eq!(all.len(), 300);
    let want: Vec<CanonicalRow> = [0, 3, 150, 299].iter().map(|&i| all[i].clone()).collect();
    let mut keys: Vec<Key> = want.iter().map(|r| r.key.clone()).collect();
    keys.insert(1, vec![Value::Int(0), Value::Text("k0a".into())]);
    keys.push(vec![Value::Int(99), Value::Text(String::new())]);
    assert_eq!(v.canonical_rows_by_key(&t, &keys)?, want);
    Ok(())
}
