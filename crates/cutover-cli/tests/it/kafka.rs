//! Issue 13 from the command line: PostgreSQL → Kafka and SQLite → Kafka under a concurrent
//! writer, killed with SIGKILL at random moments and once at the failpoint between a batch's
//! produce and its checkpoint, on the throwaway tansu broker. The topics are then read with a
//! Kafka client (rskafka, not through cutover): every change the writer committed is in them
//! exactly once, in the writer's order per key (each key in one partition), and the events
//! folded by key give the source's rows.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

use super::{cutover, text};

/// Every message of the topics under `prefix`, partition after partition, each in order:
/// (the topic, the partition, its `cutover.id` header, the event).
fn read_topics(bootstrap: &str, prefix: &str) -> Vec<(String, i32, String, serde_json::Value)> {
    use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = rskafka::client::ClientBuilder::new(vec![bootstrap.to_owned()])
            .build()
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut topics = client.list_topics().await.unwrap();
        topics.retain(|t| t.name.starts_with(&format!("{prefix}.")));
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        for t in topics {
            for p in t.partitions {
                let pc = client
                    .partition_client(t.name.as_str(), p, UnknownTopicHandling::Retry)
                    .await
                    .unwrap();
                let high = pc.get_offset(OffsetAt::Latest).await.unwrap();
                let mut at = pc.get_offset(OffsetAt::Earliest).await.unwrap();
                while at < high {
                    let (records, _) = pc.fetch_records(at, 1..(64 << 20), 100).await.unwrap();
                    for r in records {
                        at = r.offset + 1;
                        let id = r
                            .record
                            .headers
                            .get("cutover.id")
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                            .unwrap_or_default();
                        let value = r.record.value.unwrap_or_default();
                        out.push((
                            t.name.clone(),
                            p,
                            id,
                            serde_json::from_slice(&value).unwrap(),
                        ));
                    }
                }
            }
        }
        out
    })
}

/// No message twice: each (topic, `cutover.id`) once.
fn assert_no_message_twice(messages: &[(String, i32, String, serde_json::Value)]) {
    let mut ids = HashSet::new();
    for (topic, p, id, _) in messages {
        assert!(
            ids.insert((topic.clone(), id.clone())),
            "message {id} is in topic {topic} twice (partition {p})"
        );
    }
}

#[test]
fn postgres_to_kafka_killed_under_writes_delivers_every_change_exactly_once() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let kafka = cutover_testkit::Kafka::shared().unwrap();
    let src = pg.fresh_database("kafka_src").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE acct (id bigint PRIMARY KEY, v int NOT NULL, note text, data bytea);
         INSERT INTO acct SELECT i, 0, 'n' || i, decode(md5(i::text), 'hex') FROM generate_series(1, 3000) i;
         ANALYZE acct;",
    )
    .unwrap();
    let s = pg.url(&src);
    let name = format!("kt_{}", fastrand::u32(..));
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    // Four partitions: each key's changes in the partition of its key.
    let t = format!("{}?partitions=4", kafka.url());
    let args = [
        "sync", "--source", &s, "--target", &t, "--name", &name, "--state", state, "--jobs", "2",
    ];
    let committed = super::sync_under_logged_writes(
        pg,
        &src,
        &args,
        4,
        "kafka::writer::after-produce=2*off->panic",
        1313,
    );

    let messages = read_topics(&kafka.bootstrap(), &name);
    assert!(
        messages
            .iter()
            .all(|(topic, ..)| topic == &format!("{name}.public.acct")),
        "one topic, <prefix>.<schema>.<table>"
    );
    assert_no_message_twice(&messages);
    // Every committed change exactly once, in the writer's order per key; each key in one
    // partition.
    let mut events: HashMap<i64, Vec<(char, i64)>> = HashMap::new();
    let mut fold: HashMap<i64, i64> = HashMap::new();
    let mut partition_of: HashMap<i64, i32> = HashMap::new();
    for (_, p, _, e) in &messages {
        let op = e["op"].as_str().unwrap().chars().next().unwrap();
        let row = if op == 'd' { &e["before"] } else { &e["after"] };
        let id = row["id"].as_i64().unwrap();
        assert_eq!(
            *partition_of.entry(id).or_insert(*p),
            *p,
            "key {id} in two partitions"
        );
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
    assert_eq!(fold.len(), source.len(), "rows from folding the topic");
    assert!(
        fold == source,
        "the topic folded by key differs from the source"
    );
    assert!(
        partition_of.values().collect::<HashSet<_>>().len() > 1,
        "the keys spread over the partitions"
    );

    // status reads the state store; cleanup removes it and the slot, and leaves the topics.
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
    assert_eq!(read_topics(&kafka.bootstrap(), &name).len(), messages.len());
}

#[test]
fn kafka_topics_cannot_be_verified() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    rusqlite::Connection::open(&a)
        .unwrap()
        .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        .unwrap();
    let o = cutover(&[
        "verify",
        "--source",
        a.to_str().unwrap(),
        "--target",
        "kafka://127.0.0.1:1?prefix=x",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(err.contains("Kafka cannot be a side of verify"), "{err}");
}

/// SQLite (trigger capture) → Kafka, killed with SIGKILL twice under the SQLite writer: no
/// message twice, each document's updates arrive one by one (its version counts up by exactly
/// one from event to event: none lost, none repeated), and the events folded by key give the
/// source's rows.
#[test]
fn sqlite_to_kafka_killed_under_writes_loses_and_repeats_no_update() {
    let kafka = cutover_testkit::Kafka::shared().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("source.db");
    super::create_source(&src);
    let s = src.to_str().unwrap().to_owned();
    let name = format!("ks_{}", fastrand::u32(..));
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap().to_owned();
    let t = format!("{}?partitions=3", kafka.url());
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
    let messages = read_topics(&kafka.bootstrap(), &name);
    assert_no_message_twice(&messages);
    super::assert_sqlite_events(&src, messages.iter().map(|(.., e)| e));
}

/// A row whose event is larger than the brokers take (1048588 bytes, Kafka's default
/// `message.max.bytes`, unless `?max-message-bytes=` says otherwise) stops sync with the
/// table, the key, the size and the fix.
#[test]
fn a_row_over_the_brokers_max_message_size_is_refused_naming_table_key_and_size() {
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let kafka = cutover_testkit::Kafka::shared().unwrap();
    let src = pg.fresh_database("kafka_big").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE files (id int PRIMARY KEY, body text);
         INSERT INTO files VALUES (1, 'small'), (2, repeat('x', 1500000));",
    )
    .unwrap();
    let s = pg.url(&src);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let name = format!("kb_{}", fastrand::u32(..));
    let t = kafka.url();
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
        err.contains("files key (2)")
            && err.contains("message.max.bytes")
            && err.contains("bytes, more than"),
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
