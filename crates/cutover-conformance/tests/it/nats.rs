//! NATS JetStream runs the target half of the suite with delivery counts
//! (`stream_target_conformance_tests!`): PostgreSQL as the source, the shared throwaway
//! nats-server, the migration's state in a SQLite file of its own per test, and the NATS client
//! as the target's own driver: the stream is read message by message and folded by key here,
//! its values decoded by the source's column types, never through cutover.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use cutover_conformance::{Deliveries, Engine, Migration, TargetEngine, TypeTable};
use cutover_connector::{OpenOptions, Source, SourceFactory};
use cutover_model::{Row, TableSchema};
use cutover_nats::NatsTarget;
use cutover_postgres::PgConnect;
use cutover_testkit::Nats;

use crate::postgres::{pg, Pg};

struct NatsEngine {
    pg: Pg,
    /// Target name (the stream) → the source database and the state file.
    targets: crate::stateful::Targets,
    _dir: tempfile::TempDir,
}

fn nats_engine() -> NatsEngine {
    NatsEngine {
        pg: pg(),
        targets: Mutex::new(HashMap::new()),
        _dir: tempfile::tempdir().expect("a temp dir for state files"),
    }
}

/// Every message of `stream`: (Nats-Msg-Id, the event).
fn messages(stream: &str) -> Vec<(String, serde_json::Value)> {
    let url = Nats::shared().expect("the test's NATS").url();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let Ok(mut s) = js.get_stream(stream).await else {
            return Vec::new();
        };
        let info = s.info().await.unwrap().clone();
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return out;
        }
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

impl TargetEngine for NatsEngine {
    type Source = PgConnect;
    type Target = NatsTarget;

    fn migration(&self, name: &str, ddl: &str) -> Migration<PgConnect, NatsTarget> {
        let m = Engine::migration(&self.pg, name, ddl);
        let stream_name = format!("c{}_{name}", fastrand::u32(..));
        let state = self._dir.path().join(format!("{stream_name}.db"));
        let url = Nats::shared().expect("a throwaway NATS").url();
        let open = cutover_nats::engine().target.expect("a target");
        let mut t = open(
            &url,
            &OpenOptions {
                name: Some(stream_name.clone()),
                ..OpenOptions::default()
            },
        )
        .unwrap();
        crate::stateful::attach_sqlite_state(t.as_mut(), &state);
        let target = t
            .as_any()
            .downcast_ref::<NatsTarget>()
            .expect("a NATS target")
            .clone();
        let mut source = m.source;
        source.peer = None;
        let db = format!("cutover_{stream_name}");
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

    /// The stream folded by key: copied rows (`r`), inserts and updates set the row, deletes
    /// remove it.
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let target = self.targets.lock().unwrap().get(db).cloned();
        let Some((source, _)) = target else {
            return Engine::rows(&self.pg, db, table, order_by);
        };
        let schema: TableSchema = {
            let tables = SourceFactory::source(&source).unwrap().tables().unwrap();
            cutover_conformance::fixture::table(&tables, table)
        };
        let mut fold: BTreeMap<String, Row> = BTreeMap::new();
        let events = messages(db);
        crate::stateful::fold_events(events.iter().map(|(_, e)| e), &schema, table, &mut fold);
        let mut rows: Vec<Row> = fold.into_values().collect();
        crate::stateful::sort_rows(&mut rows, &schema, order_by);
        rows
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        if self.targets.lock().unwrap().contains_key(db) {
            panic!("a NATS stream holds events, not rows: it has no verify side");
        }
        Engine::verifier(&self.pg, db)
    }

    fn sink_before_commit(&self) -> &'static str {
        "nats::writer::after-publish"
    }

    /// The version goes to the state store (a SQLite file), through rusqlite.
    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String> {
        crate::stateful::plant_target_version(&self.targets, db, version)
    }

    fn type_table(&self) -> TypeTable {
        Engine::type_table(&self.pg)
    }
}

impl Deliveries for NatsEngine {
    /// The ids of change messages (not the copy's `r` rows), without the part an update that
    /// moves a key adds (its delete and its insert are one change).
    fn deliveries(&self, db: &str) -> Vec<String> {
        messages(db)
            .into_iter()
            .filter(|(_, e)| e["op"] != "r")
            .filter_map(|(id, _)| {
                let (change, part) = id.rsplit_once(':')?;
                (part == "0").then(|| change.to_owned())
            })
            .collect()
    }
}

cutover_conformance::stream_target_conformance_tests! {
    engine: nats_engine(),
    known_failures: [
        (apply_commits_all_or_nothing_with_its_checkpoint,
            "a stream checks no NOT NULL and cannot take a message back: a batch that fails midway is partly published, and its replay is dropped as duplicates"),
        (a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch,
            "what was published before the crash stays in the stream; the replay is dropped as duplicates (each_change_is_delivered_once_across_crashes)"),
        (checksum_buckets_are_the_canonical_rows_hashes, "a stream holds events, not rows: no verify side"),
        (split_returns_ascending_keys_inside_the_range, "a stream holds events, not rows: no verify side"),
        (canonical_rows_are_the_specs_text_of_the_drivers_values, "a stream holds events, not rows: no verify side"),
        (scan_pages_through_every_row_once_in_key_order, "a stream holds events, not rows: no verify side"),
    ],
}
