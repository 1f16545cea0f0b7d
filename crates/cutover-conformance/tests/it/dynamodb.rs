//! DynamoDB runs the target half of the suite (`target_conformance_tests!`; feature `dynamodb`
//! of this crate, on in `scripts/test`): PostgreSQL as the source (the shared throwaway server
//! and its fixture in `postgres.rs`), DynamoDB Local (started once by cutover-testkit) with a
//! table prefix of its own per test, a SQLite state file per test (as `--state` gives), and the
//! AWS SDK as the target's own driver: items are read with `Scan` and decoded here by the
//! source's column types, never by cutover's reader.

use std::collections::HashMap;
use std::sync::{Mutex, Once};

use aws_sdk_dynamodb::types::AttributeValue;
use cutover_conformance::{Engine, Migration, TargetEngine, TypeTable};
use cutover_connector::{OpenOptions, Source, SourceFactory};
use cutover_dynamodb::{DynamoEndpoint, DynamoReader, DynamoTarget};
use cutover_model::{ColumnType, Row, TableSchema, Value};
use cutover_postgres::PgConnect;
use cutover_testkit::DynamoLocal;

use crate::postgres::{pg, Pg};

struct DynamoEngine {
    pg: Pg,
    ddb: &'static DynamoLocal,
    /// Target URL → the source database (whose column types decode the items) and the state
    /// file.
    targets: crate::stateful::Targets,
    dir: tempfile::TempDir,
}

/// DynamoDB Local takes any credentials; the SDK wants some.
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "cutovertest");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "cutovertest");
        std::env::set_var("AWS_REGION", "us-east-1");
    });
}

fn dynamodb_engine() -> DynamoEngine {
    credentials();
    DynamoEngine {
        pg: pg(),
        ddb: DynamoLocal::shared().expect("DynamoDB Local (scripts/ensure-servers.sh)"),
        targets: Mutex::new(HashMap::new()),
        dir: tempfile::tempdir().expect("a temp dir for state files"),
    }
}

/// An attribute as the DynamoDB type map stores it, decoded by the test (the suite's tables
/// hold bigint and text only).
fn decode(ty: &ColumnType, a: Option<&AttributeValue>) -> Value {
    match (a, ty) {
        (None | Some(AttributeValue::Null(_)), _) => Value::Null,
        (Some(AttributeValue::N(n)), ColumnType::Int { .. }) => {
            Value::Int(n.parse().expect("an integer"))
        }
        (Some(AttributeValue::S(s)), ColumnType::Text { .. }) => Value::Text(s.clone()),
        (other, ty) => panic!("the suite's tables have no {ty:?} column holding {other:?}"),
    }
}

impl DynamoEngine {
    fn schema(&self, source: &PgConnect, table: &str) -> TableSchema {
        let tables = SourceFactory::source(source).unwrap().tables().unwrap();
        cutover_conformance::fixture::table(&tables, table)
    }
}

impl TargetEngine for DynamoEngine {
    type Source = PgConnect;
    type Target = DynamoTarget;

    fn migration(&self, name: &str, ddl: &str) -> Migration<PgConnect, DynamoTarget> {
        let m = Engine::migration(&self.pg, name, ddl);
        let prefix = format!("c{}{}_", name.replace(['-', ' '], "_"), fastrand::u32(..));
        let url = format!("dynamodb://{prefix}?endpoint={}", self.ddb.endpoint());
        let state = self.dir.path().join(format!("{prefix}state.db"));
        let open = cutover_dynamodb::engine().target.expect("a target");
        let mut t = open(&url, &OpenOptions::default()).unwrap();
        crate::stateful::attach_sqlite_state(t.as_mut(), &state);
        let target = t
            .as_any()
            .downcast_ref::<DynamoTarget>()
            .expect("a DynamoDB target")
            .clone();
        let mut source = m.source;
        source.peer = None;
        self.targets
            .lock()
            .unwrap()
            .insert(url.clone(), (source.clone(), state));
        Migration {
            source,
            target,
            source_db: m.source_db,
            target_db: url,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        Engine::execute(&self.pg, db, sql)
    }

    /// Every item of the table, read with the SDK's `Scan` (strongly consistent).
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let target = self.targets.lock().unwrap().get(db).cloned();
        let Some((source, _)) = target else {
            return Engine::rows(&self.pg, db, table, order_by);
        };
        let schema = self.schema(&source, table);
        let endpoint = DynamoEndpoint::parse(db, &|k: &str| std::env::var(k).ok()).unwrap();
        let name = cutover_dynamodb::table::table_name(&endpoint.prefix, &schema.name).unwrap();
        let client = endpoint.client().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let page = rt.block_on(
                client
                    .scan()
                    .table_name(&name)
                    .consistent_read(true)
                    .set_exclusive_start_key(start)
                    .send(),
            );
            let page = match page {
                Ok(p) => p,
                // No table yet: nothing was written to it.
                Err(e) if format!("{e:?}").contains("ResourceNotFound") => return Vec::new(),
                Err(e) => panic!("scanning {name}: {e:?}"),
            };
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => break,
            }
        }
        let mut rows: Vec<Row> = items
            .iter()
            .map(|item| {
                schema
                    .columns
                    .iter()
                    .map(|c| decode(&c.ty, item.get(&c.name)))
                    .collect()
            })
            .collect();
        crate::stateful::sort_rows(&mut rows, &schema, order_by);
        rows
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        if !db.starts_with("dynamodb://") {
            return Engine::verifier(&self.pg, db);
        }
        let endpoint = DynamoEndpoint::parse(db, &|k: &str| std::env::var(k).ok()).unwrap();
        Box::new(DynamoReader::open(&endpoint).expect("opening the DynamoDB verifier"))
    }

    fn sink_before_commit(&self) -> &'static str {
        "dynamodb::writer::after-write"
    }

    /// The version goes to the state store (a SQLite file), through rusqlite.
    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String> {
        crate::stateful::plant_target_version(&self.targets, db, version)
    }

    fn type_table(&self) -> TypeTable {
        Engine::type_table(&self.pg)
    }
}

cutover_conformance::target_conformance_tests! {
    engine: dynamodb_engine(),
    known_failures: [
        (apply_commits_all_or_nothing_with_its_checkpoint,
            "DynamoDB has no transaction over a batch of any size, and keeps no column types: a NULL in a NOT NULL column is written, not refused (the source's own constraint is what keeps it out)"),
        (a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch,
            "no transaction over a batch: the items are written before the checkpoint (StatefulSink), so a crash between them leaves part of the batch, which the replay overwrites by key under the position condition (the old checkpoint is kept: that half passes)"),
        (canonical_rows_are_the_specs_text_of_the_drivers_values,
            "the type table's largest float8 (1.8e308) is outside DynamoDB's number range (to 9.99e125): refused naming table, column and key, as the type map documents"),
    ],
}
