//! The [`StateStore`] contract, sentence by sentence, on the store a target hosts
//! ([`TargetFactory::state`]).

use std::sync::Barrier;

use cutover_connector::{ApplyOp, ErrorKind, StateStore, TargetFactory};
use cutover_model::{Position, Value};

use crate::fixture::{table, DDL};
use crate::sink::prepared;
use crate::TargetEngine;

fn store<T: TargetFactory>(target: &T) -> Box<dyn StateStore> {
    target
        .state()
        .unwrap()
        .expect("the target hosts a state store")
}

/// Where no store exists nothing reads as state, and reading creates none; `migrate` creates
/// the newest version, a second call changes nothing, and a store written by a newer cutover is
/// refused naming both versions and left as it is.
pub fn state_store_migrates_once_and_refuses_a_newer_store<E: TargetEngine>(e: &E) {
    let m = e.migration("state_migrate", DDL);
    let mut s = store(&m.target);
    assert_eq!(s.version().unwrap(), None, "a fresh target holds no store");
    assert_eq!(s.phase().unwrap(), None);
    assert_eq!(s.checkpoint().unwrap(), None);
    assert_eq!(s.status().unwrap(), None);
    assert!(s.chunks().unwrap().is_empty());
    assert!(s.mismatches(10).unwrap().is_empty());
    assert_eq!(s.version().unwrap(), None, "reading created no store");

    let v = s.migrate().unwrap();
    assert!(v >= 1);
    assert_eq!(s.version().unwrap(), Some(v));
    assert_eq!(s.migrate().unwrap(), v, "a second migrate");
    assert_eq!(s.version().unwrap(), Some(v));

    e.plant_store_version(&m.target_db, v + 7).unwrap();
    let err = s.migrate().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&format!("store version {}", v + 7)) && text.contains(&format!("up to {v}")),
        "the refusal names both versions: {text}"
    );
    assert_eq!(
        s.version().unwrap(),
        Some(v + 7),
        "a refused store is left as it is"
    );
}

/// What the sink writes in its transactions reads back through the store: the checkpoint, the
/// chunk plan with typed keys ordered by table and index and which chunks are done, a phase,
/// and the store at the newest version after the sink prepared it.
pub fn state_store_reads_what_the_sink_wrote<E: TargetEngine>(e: &E) {
    let m = e.migration("state_reads", DDL);
    let (tables, mut sink) = prepared(&m);
    let items = table(&tables, "items");
    let bounds = [
        vec![Value::Int(-5)],
        vec![Value::Int(100)],
        vec![Value::Int(1 << 40)],
    ];
    let ranges = crate::fixture::ranges_between(&bounds);
    sink.chunk_plan(&items, &mut || Ok(ranges.clone())).unwrap();
    // A real position of the source's engine: the store keeps what it is given.
    let (positions, _capture) = crate::fixture::positions(e, &m, 1);
    let at: Position = positions[0].clone();
    crate::sink::feed(
        &mut *sink,
        &[ApplyOp::ChunkDone {
            table: items.name.clone(),
            chunk: 1,
            rows: 0,
        }],
        at.clone(),
    )
    .unwrap();
    drop(sink);

    let mut s = store(&m.target);
    let v = s.version().unwrap();
    assert!(v.is_some(), "the sink's prepare made the store");
    assert_eq!(
        s.migrate().unwrap(),
        v.unwrap_or_default(),
        "already the newest"
    );
    assert_eq!(s.checkpoint().unwrap(), Some(at.clone()));
    assert!(
        s.phase().unwrap().is_some(),
        "a prepared migration has a phase"
    );
    let chunks: Vec<_> = s
        .chunks()
        .unwrap()
        .into_iter()
        .filter(|c| c.table.name == items.name.name)
        .collect();
    assert_eq!(chunks.len(), ranges.len());
    for (i, (c, r)) in chunks.iter().zip(&ranges).enumerate() {
        assert_eq!(c.index as usize, i);
        assert_eq!(&c.range, r, "chunk {i}: typed keys as given");
        assert_eq!(c.done, i == 1, "chunk {i}: done as marked");
    }
}

/// `swap_phase` moves the phase only from the phase it is now, and of two stores swapping from
/// the same phase at once exactly one wins.
pub fn swap_phase_is_a_compare_and_swap<E: TargetEngine>(e: &E) {
    let m = e.migration("state_swap", DDL);
    let _ = prepared(&m);
    let mut s = store(&m.target);
    let now = s
        .phase()
        .unwrap()
        .expect("a prepared migration has a phase");
    assert!(!s.swap_phase(Some("no such phase"), "x").unwrap());
    assert!(
        !s.swap_phase(None, "x").unwrap(),
        "None means no phase yet; there is one"
    );
    assert_eq!(s.phase().unwrap().as_deref(), Some(now.as_str()));
    assert!(s.swap_phase(Some(&now), "contended").unwrap());
    assert_eq!(s.phase().unwrap().as_deref(), Some("contended"));

    let barrier = Barrier::new(2);
    let won: Vec<bool> = std::thread::scope(|sc| {
        let racers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|to| {
                let (target, barrier) = (&m.target, &barrier);
                sc.spawn(move || {
                    let mut s = store(target);
                    barrier.wait();
                    s.swap_phase(Some("contended"), to).unwrap()
                })
            })
            .collect();
        racers.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(
        won.iter().filter(|w| **w).count(),
        1,
        "exactly one of two swaps from the same phase wins: {won:?}"
    );
    let last = s.phase().unwrap();
    assert!(
        matches!(last.as_deref(), Some("a" | "b")),
        "the winner's phase: {last:?}"
    );
}
