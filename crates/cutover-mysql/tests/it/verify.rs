//! `MySqlVerifier` against a real MariaDB: digests computed in the server.

use cutover_connector::canonical::{row_hash, row_text};
use cutover_connector::{CanonicalRow, KeyRange, OpenOptions, RangeChecksum, RangeDigest, Slice};
use cutover_model::Key;
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

/// Columns named like the aliases of verify's own SQL (`b`, `h`, `x`) are not mistaken for
/// them: every bucket is the digest of its range's canonical rows.
#[test]
fn buckets_are_the_digests_of_their_ranges_whatever_the_columns_are_named() -> R {
    let server = MariaDb::shared()?;
    let db = server.fresh_database("my_verify_names")?;
    server.sql(
        &db,
        "SET NAMES utf8mb4;
         CREATE TABLE pairs (a int, b varchar(20), h int, x varchar(5), PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq MOD 13, CONCAT(ELT(seq MOD 4 + 1, '', 'é', 'a b', 'x\"y'),
             seq), seq, IF(seq MOD 3 = 0, NULL, 'v') FROM seq_0_to_599",
    )?;
    let ep = MySqlEndpoint::parse(&server.url(&db), &OpenOptions::default())?;
    let mut v = MySqlVerifier::open(&ep)?;
    let t = v
        .tables()
        .into_iter()
        .find(|t| t.name.name == "pairs")
        .ok_or("no table pairs")?;
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
