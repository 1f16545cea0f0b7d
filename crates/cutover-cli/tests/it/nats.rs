//! Issue 13 (and issue 10's state store and delivery counts) from the command line: PostgreSQL
//! → NATS JetStream under a concurrent writer, killed with SIGKILL at random moments and once
//! at the failpoint between a batch's publish and its checkpoint. The stream is then read with
//! the NATS client (not through cutover): every change the writer committed is in it exactly
//! once, in the writer's order per key, and the events folded by key give the source's rows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{cutover, spawn_cutover, still_running, text};

/// One change the writer committed: (id, op, v after it; for a delete the v it had).
type Committed = (i64, char, i64);

fn writer(url: &str, stop: &AtomicBool, log: &Mutex<Vec<Committed>>) {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut rng = fastrand::Rng::with_seed(13);
    let mut next_id = 100_000i64;
    let mut live: Vec<i64> = (1..=3_000).collect();
    while !stop.load(Ordering::Relaxed) {
        match rng.u8(0..10) {
            0..=2 => {
                next_id += 1;
                c.execute(
                    "INSERT INTO acct (id, v, note) VALUES ($1, 0, 'new')",
                    &[&next_id],
                )
                .unwrap();
                live.push(next_id);
                log.lock().unwrap().push((next_id, 'c', 0));
            }
            3..=8 if !live.is_empty() => {
                let id = live[rng.usize(0..live.len())];
                let v: i32 = c
                    .query_one(
                        "UPDATE acct SET v = v + 1, note = repeat('u', v % 50) WHERE id = $1 RETURNING v",
                        &[&id],
                    )
                    .unwrap()
                    .get(0);
                log.lock().unwrap().push((id, 'u', i64::from(v)));
            }
            _ if !live.is_empty() => {
                let id = live.swap_remove(rng.usize(0..live.len()));
                let v: i32 = c
                    .query_one("DELETE FROM acct WHERE id = $1 RETURNING v", &[&id])
                    .unwrap()
                    .get(0);
                log.lock().unwrap().push((id, 'd', i64::from(v)));
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_micros(rng.u64(200..2_000)));
    }
}

/// Every message of `stream`, in order: (Nats-Msg-Id, the event).
fn read_stream(url: &str, stream: &str) -> Vec<(String, serde_json::Value)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut s = js.get_stream(stream).await.unwrap();
        let info = s.info().await.unwrap().clone();
        let mut out = Vec::new();
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let m = s.get_raw_message(seq).await.unwrap();
            let id = m
                .headers
                .get("Nats-Msg-Id")
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            out.push((id, serde_json::from_slice(&m.payload).unwrap()));
        }
        out
    })
}

#[test]
fn postgres_to_nats_killed_under_writes_delivers_every_change_exactly_once() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let nats = cutover_testkit::Nats::shared().unwrap();
    let src = pg.fresh_database("nats_src").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE acct (id bigint PRIMARY KEY, v int NOT NULL, note text, data bytea);
         INSERT INTO acct SELECT i, 0, 'n' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 3000) i;
         ANALYZE acct;",
    )
    .unwrap();
    let s = pg.url(&src);
    let name = format!("nt_{}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let t = nats.url();
    let args = [
        "sync", "--source", &s, "--target", &t, "--name", &name, "--state", state, "--jobs", "2",
    ];
    let stop = AtomicBool::new(false);
    let committed = Mutex::new(Vec::new());
    let log = tempfile::NamedTempFile::new().unwrap();
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        // The first run creates the slot; the writer starts once it exists, so every change it
        // commits is captured.
        let mut child = spawn_cutover(&args, log.path());
        super::wait_for(
            "the replication slot",
            Duration::from_secs(60),
            || still_running(&mut child, "sync", log.path()),
            |seen| {
                let n = super::slots(pg, &src);
                *seen = n.clone();
                (n.trim() == "1").then_some(())
            },
        );
        let writer = sc.spawn(|| writer(&s, &stop, &committed));
        super::crash_sync_repeatedly(
            &args,
            log.path(),
            child,
            1313,
            4,
            "nats::writer::after-publish=2*off->panic",
        );
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    });
    let mut last: Vec<&str> = args.to_vec();
    last.push("--stop-when-caught-up");
    let o = cutover(&last);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    let committed = committed.into_inner().unwrap();
    assert!(committed.len() > 50, "the writer wrote {}", committed.len());

    let messages = read_stream(&t, &format!("cutover_{name}"));
    // No message twice.
    let mut ids = HashSet::new();
    for (id, _) in &messages {
        assert!(
            ids.insert(id.clone()),
            "message {id} is in the stream twice"
        );
    }
    // Every committed change exactly once, in the writer's order per key.
    let mut events: HashMap<i64, Vec<(char, i64)>> = HashMap::new();
    let mut fold: HashMap<i64, i64> = HashMap::new();
    for (_, e) in &messages {
        let op = e["op"].as_str().unwrap().chars().next().unwrap();
        let row = if op == 'd' { &e["before"] } else { &e["after"] };
        let id = row["id"].as_i64().unwrap();
        match op {
            'r' => {
                fold.insert(id, row["v"].as_i64().unwrap());
            }
            'c' | 'u' => {
                let v = row["v"].as_i64().unwrap();
                fold.insert(id, v);
                events.entry(id).or_default().push((op, v));
            }
            'd' => {
                fold.remove(&id);
                // The source sends only the key of a deleted row (replica identity default).
                events.entry(id).or_default().push((op, -1));
            }
            other => panic!("unexpected op {other}: {e}"),
        }
    }
    let mut expected: HashMap<i64, Vec<(char, i64)>> = HashMap::new();
    for &(id, op, v) in &committed {
        expected
            .entry(id)
            .or_default()
            .push((op, if op == 'd' { -1 } else { v }));
    }
    for (id, got) in &events {
        if expected.get(id) != Some(got) {
            for (mid, e) in &messages {
                let row = if e["op"] == "d" {
                    &e["before"]
                } else {
                    &e["after"]
                };
                if row["id"].as_i64() == Some(*id) {
                    eprintln!("{mid} {} {}", e["op"], e["source"]);
                }
            }
        }
        assert_eq!(
            expected.get(id),
            Some(got),
            "the changes of id {id} in the stream (right) vs committed (left)"
        );
    }
    for (id, want) in &expected {
        assert_eq!(events.get(id), Some(want), "the changes of id {id}");
    }
    let changes: usize = events.values().map(Vec::len).sum();
    assert_eq!(
        changes,
        committed.len(),
        "change events in the stream vs changes committed"
    );
    // The events folded by key are the source's rows.
    let source: HashMap<i64, i64> = pg
        .psql(&src, "SELECT id, v FROM acct")
        .unwrap()
        .lines()
        .map(|l| {
            let (a, b) = l.split_once('|').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    assert_eq!(fold.len(), source.len(), "rows from folding the stream");
    assert!(
        fold == source,
        "the stream folded by key differs from the source"
    );

    // status reads the state store; cleanup removes it and the slot, and leaves the stream.
    let o = cutover(&[
        "status", "--target", &t, "--name", &name, "--state", state, "--json",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("lsn:"), "the applied position: {out}");
    let o = cutover(&[
        "cleanup", "--source", &s, "--target", &t, "--name", &name, "--state", state,
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(super::slots(pg, &src), "0");
    assert_eq!(
        read_stream(&t, &format!("cutover_{name}")).len(),
        messages.len()
    );
}

#[test]
fn state_is_refused_for_a_target_that_keeps_its_own_and_a_stream_cannot_be_verified() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    rusqlite::Connection::open(&a)
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .unwrap();
    let st = dir.path().join("s.db");
    let o = cutover(&[
        "sync",
        "--source",
        a.to_str().unwrap(),
        "--target",
        b.to_str().unwrap(),
        "--state",
        st.to_str().unwrap(),
        "--stop-when-caught-up",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("keeps the migration's state itself"), "{err}");

    let o = cutover(&[
        "verify",
        "--source",
        a.to_str().unwrap(),
        "--target",
        "nats://127.0.0.1:1?stream=x",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("NATS JetStream cannot be a side of verify"),
        "{err}"
    );
}
