//! Kafka runs the target half of the suite with delivery counts
//! (`stream_target_conformance_tests!`): PostgreSQL as the source, the shared throwaway tansu
//! broker (topics of 3 partitions), the migration's state in a SQLite file of its own per test,
//! and a Kafka client (rskafka) as the target's own driver: every partition of the migration's
//! topics is read record by record and folded by key here, its values decoded by the source's
//! column types, never through cutover.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cutover_conformance::{Deliveries, Engine, Migration, TargetEngine, TypeTable};
use cutover_connector::{OpenOptions, Source, SourceFactory};
use cutover_kafka::KafkaTarget;
use cutover_model::{Row, TableSchema};
use cutover_postgres::PgConnect;
use cutover_testkit::Kafka;

use crate::postgres::{pg, Pg};

struct KafkaEngine {
    pg: Pg,
    /// Target name (the topics' prefix) → the source database and the state file.
    targets: crate::stateful::Targets,
    _dir: tempfile::TempDir,
}

fn kafka_engine() -> KafkaEngine {
    KafkaEngine {
        pg: pg(),
        targets: Mutex::new(HashMap::new()),
        _dir: tempfile::tempdir().expect("a temp dir for state files"),
    }
}

/// Every message of the topics under `prefix`, per partition in order: (its `cutover.id`
/// header, the event).
pub(crate) fn messages(bootstrap: &str, prefix: &str) -> Vec<Vec<(String, serde_json::Value)>> {
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
                let mut partition = Vec::new();
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
                        partition.push((id, serde_json::from_slice(&value).unwrap()));
                    }
                }
                out.push(partition);
            }
        }
        out
    })
}

fn bootstrap() -> String {
    Kafka::shared().expect("the test's Kafka").bootstrap()
}

impl TargetEngine for KafkaEngine {
    type Source = PgConnect;
    type Target = KafkaTarget;

    fn migration(&self, name: &str, ddl: &str) -> Migration<PgConnect, KafkaTarget> {
        let m = Engine::migration(&self.pg, name, ddl);
        let prefix = format!("c{}_{name}", fastrand::u32(..));
        let state = self._dir.path().join(format!("{prefix}.db"));
        let url = format!(
            "{}?partitions=3",
            Kafka::shared().expect("a throwaway Kafka").url()
        );
        let open = cutover_kafka::engine().target.expect("a target");
        let mut t = open(
            &url,
            &OpenOptions {
                name: Some(prefix.clone()),
                ..OpenOptions::default()
            },
        )
        .unwrap();
        crate::stateful::attach_sqlite_state(t.as_mut(), &state);
        let target = t
            .as_any()
            .downcast_ref::<KafkaTarget>()
            .expect("a Kafka target")
            .clone();
        let mut source = m.source;
        source.peer = None;
        let db = prefix;
        self.targets
            .lock()
            .unwrap()
            .insert(db.clone(), (source.clone(), state));
        Migration {
            source,
            target,
            source_db: m.source_db,
            target_db: db,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        Engine::execute(&self.pg, db, sql)
    }

    /// The topics folded by key: copied rows (`r`), inserts and updates set the row, deletes
    /// remove it, a truncate (sent to every partition) empties the table.
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let target = self.targets.lock().unwrap().get(db).cloned();
        let Some((source, _)) = target else {
            return Engine::rows(&self.pg, db, table, order_by);
        };
        let schema: TableSchema = {
            let tables = SourceFactory::source(&source).unwrap().tables().unwrap();
            cutover_conformance::fixture::table(&tables, table)
        };
        // Each partition on its own: a truncate empties the keys of its partition.
        let mut rows: Vec<Row> = Vec::new();
        for partition in messages(&bootstrap(), db) {
            let mut fold: BTreeMap<String, Row> = BTreeMap::new();
            crate::stateful::fold_events(
                partition.iter().map(|(_, e)| e),
                &schema,
                table,
                &mut fold,
            );
            rows.extend(fold.into_values());
        }
        crate::stateful::sort_rows(&mut rows, &schema, order_by);
        rows
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        if self.targets.lock().unwrap().contains_key(db) {
            panic!("Kafka topics hold events, not rows: they have no verify side");
        }
        Engine::verifier(&self.pg, db)
    }

    fn sink_before_commit(&self) -> &'static str {
        "kafka::writer::after-produce"
    }

    /// The version goes to the state store (a SQLite file), through rusqlite.
    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String> {
        crate::stateful::plant_target_version(&self.targets, db, version)
    }

    fn type_table(&self) -> TypeTable {
        Engine::type_table(&self.pg)
    }
}

impl Deliveries for KafkaEngine {
    /// The names of change messages (not the copy's `r` rows, not truncates, which go to every
    /// partition), without the part an update that moves a key adds (its delete and its insert
    /// are one change).
    fn deliveries(&self, db: &str) -> Vec<String> {
        messages(&bootstrap(), db)
            .into_iter()
            .flatten()
            .filter(|(_, e)| e["op"] != "r" && e["op"] != "t")
            .filter_map(|(id, _)| {
                let (change, part) = id.rsplit_once(':')?;
                (part == "0").then(|| change.to_owned())
            })
            .collect()
    }
}

cutover_conformance::stream_target_conformance_tests! {
    engine: kafka_engine(),
    known_failures: [
        (apply_commits_all_or_nothing_with_its_checkpoint,
            "a topic checks no NOT NULL and cannot take a message back: a batch that fails midway is partly produced, and its replay sends only what the partitions lack"),
        (a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch,
            "what was produced before the crash stays in the topics; the replay sends only what the partitions lack (each_change_is_delivered_once_across_crashes)"),
        (checksum_buckets_are_the_canonical_rows_hashes, "topics hold events, not rows: no verify side"),
        (split_returns_ascending_keys_inside_the_range, "topics hold events, not rows: no verify side"),
        (canonical_rows_are_the_specs_text_of_the_drivers_values, "topics hold events, not rows: no verify side"),
        (scan_pages_through_every_row_once_in_key_order, "topics hold events, not rows: no verify side"),
    ],
}
