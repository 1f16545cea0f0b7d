//! Bookkeeping of an application's writes, for tests that compare what it committed with what
//! a database holds (outside cutover's own reader).

use std::collections::HashMap;

/// Whether a failed write may have committed all the same: the connection was cut while it
/// committed (ended by a fence, server going away), so the client cannot know. A refusal
/// (read-only, no privilege) surely did not commit.
pub fn outcome_unknown(e: &postgres::Error) -> bool {
    e.code().is_none_or(|c| {
        let c = c.code();
        c.starts_with("57P") || c.starts_with("08")
    })
}

/// The committed writes missing from `on_db`, and the writes on it that were not committed or
/// are there more than once. A write whose outcome was unknown may be there once, or not.
pub fn compare(committed: &[i64], unknown: &[i64], on_db: &[i64]) -> (Vec<i64>, Vec<i64>) {
    let mut count: HashMap<i64, i64> = HashMap::new();
    for n in on_db {
        *count.entry(*n).or_default() += 1;
    }
    for n in unknown {
        if let Some(c) = count.get_mut(n) {
            *c -= 1;
        }
    }
    let mut missing = Vec::new();
    for n in committed {
        match count.get_mut(n) {
            Some(c) if *c > 0 => *c -= 1,
            _ => missing.push(*n),
        }
    }
    let mut extra: Vec<i64> = count
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(n, _)| n)
        .collect();
    extra.sort_unstable();
    (missing, extra)
}
