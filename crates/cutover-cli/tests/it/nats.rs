//! Issue 13 (and issue 10's state store and delivery counts) from the command line: PostgreSQL
//! → NATS JetStream under a concurrent writer, killed with SIGKILL at random moments and once
//! at the failpoint between a batch's publish and its checkpoint. The stream is then read with
//! the NATS client (not through cutover): every change the writer committed is in it exactly
//! once, in the writer's order per key, and the events folded by key give the source's rows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{cutover, text};

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
    let committed = super::sync_under_logged_writes(
        pg,
        &src,
        &args,
        4,
        "nats::writer::after-publish=2*off->panic",
        1313,
    );

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
    super::assert_each_change_once(&events, &committed);
    let source = super::acct_rows(pg, &src);
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

/// SQLite (trigger capture) → NATS, killed with SIGKILL twice under the SQLite writer: no
/// message twice, each document's updates arrive one by one (its version counts up by exactly
/// one from event to event: none lost, none repeated), and the events folded by key give the
/// source's rows.
#[test]
fn sqlite_to_nats_killed_under_writes_loses_and_repeats_no_update() {
    let nats = cutover_testkit::Nats::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    super::create_source(&src);
    let s = src.to_str().unwrap().to_owned();
    let name = format!("ns_{}", fastrand::u32(..));
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap().to_owned();
    let t = nats.url();
    let stop = AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = sc.spawn(|| super::write_load(&src, &stop, &writes));
        super::cross::kill_and_resume(
            &[
                "sync", "--source", &s, "--target", &t, "--name", &name, "--state", &state,
            ],
            2,
            || {
                stop.store(true, Ordering::Relaxed);
                writer.join().unwrap();
            },
            17,
        );
    });
    assert!(writes.load(Ordering::Relaxed) > 100, "the writer wrote");
    let messages = read_stream(&t, &format!("cutover_{name}"));
    let mut ids = HashSet::new();
    for (id, _) in &messages {
        assert!(
            ids.insert(id.clone()),
            "message {id} is in the stream twice"
        );
    }
    super::assert_sqlite_events(&src, messages.iter().map(|(_, e)| e));
}

/// A row whose event is larger than the server's max_payload (1 MB by default) stops sync with
/// the table, the key, the size and the fix; nothing after it is published.
#[test]
fn a_row_over_the_servers_max_payload_is_refused_naming_table_key_and_size() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let nats = cutover_testkit::Nats::shared().unwrap();
    let src = pg.fresh_database("nats_big").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE files (id int PRIMARY KEY, body text);
         INSERT INTO files VALUES (1, 'small'), (2, repeat('x', 1500000));",
    )
    .unwrap();
    let s = pg.url(&src);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let name = format!("nb_{}", fastrand::u32(..));
    let t = nats.url();
    let o = cutover(&[
        "sync",
        "--source",
        &s,
        "--target",
        &t,
        "--name",
        &name,
        "--state",
        state.to_str().unwrap(),
        "--stop-when-caught-up",
        "--retry-for",
        "0",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("files key (2)") && err.contains("max_payload"),
        "names table, key and the setting: {err}"
    );
    let _ = cutover(&[
        "cleanup",
        "--source",
        &s,
        "--target",
        &t,
        "--name",
        &name,
        "--state",
        state.to_str().unwrap(),
    ]);
}
