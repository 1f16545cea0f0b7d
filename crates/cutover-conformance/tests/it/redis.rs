//! Redis runs the target half of the suite (`target_conformance_tests!`): PostgreSQL as the
//! source (the shared throwaway server and its fixture in `postgres.rs`), a throwaway Redis
//! per test (cutover-testkit), and the `redis` crate as the target's own driver: rows are read
//! with `SCAN`/`HGETALL` and decoded here by the source's column types, never by cutover's
//! reader.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cutover_conformance::{Engine, Migration, TargetEngine, TypeTable};
use cutover_connector::{
    ConnectorError, OpenOptions, Sink, Source, SourceFactory, StateStore, TableReader,
    TargetFactory,
};
use cutover_model::{ColumnType, Row, TableSchema, Value};
use cutover_postgres::PgConnect;
use cutover_redis::{RedisConnect, RedisEndpoint, RedisVerifier};
use cutover_testkit::Redis;

use crate::postgres::{pg, Pg};

/// The Redis target of one test, with the server it lives on (stopped with the last clone).
#[derive(Clone)]
struct RedisTarget {
    connect: RedisConnect,
    _server: Arc<Redis>,
}

impl TargetFactory for RedisTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        self.connect.sink()
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        TargetFactory::reader(&self.connect)
    }
    fn describe(&self) -> String {
        TargetFactory::describe(&self.connect)
    }
    fn migration_name(&self) -> Option<String> {
        self.connect.migration_name()
    }
    fn state(&self) -> Result<Option<Box<dyn StateStore>>, ConnectorError> {
        self.connect.state()
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self.connect.as_any()
    }
}

struct RedisEngine {
    pg: Pg,
    /// Target URL → the source database (whose column types decode the target's fields).
    sources: Mutex<HashMap<String, PgConnect>>,
}

fn redis_engine() -> RedisEngine {
    RedisEngine {
        pg: pg(),
        sources: Mutex::new(HashMap::new()),
    }
}

fn client(url: &str) -> redis::Connection {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .expect("connecting to the test's Redis")
}

/// A field as the Redis type map stores it, decoded by the test (the suite's tables hold
/// bigint and text only).
fn decode(ty: &ColumnType, b: &[u8]) -> Value {
    let text = String::from_utf8(b.to_vec()).expect("UTF-8 text in Redis");
    match ty {
        ColumnType::Int { .. } => Value::Int(text.parse().expect("decimal digits")),
        ColumnType::Text { .. } => Value::Text(text),
        other => panic!("the suite's tables have no {other:?} column"),
    }
}

fn order_key(row: &[Value], by: &[usize]) -> Vec<(i64, Vec<u8>)> {
    by.iter()
        .map(|&i| match &row[i] {
            Value::Int(n) => (*n, Vec::new()),
            Value::Text(s) => (0, s.as_bytes().to_vec()),
            other => panic!("no key of {other:?} in the suite"),
        })
        .collect()
}

impl TargetEngine for RedisEngine {
    type Source = PgConnect;
    type Target = RedisTarget;

    fn migration(&self, name: &str, ddl: &str) -> Migration<PgConnect, RedisTarget> {
        let m = Engine::migration(&self.pg, name, ddl);
        let server = Arc::new(Redis::start().expect("a throwaway Redis"));
        let url = server.url();
        let endpoint = RedisEndpoint::parse(&url, &OpenOptions::default()).unwrap();
        let mut source = m.source;
        source.peer = None;
        self.sources
            .lock()
            .unwrap()
            .insert(url.clone(), source.clone());
        Migration {
            source,
            target: RedisTarget {
                connect: RedisConnect::new(endpoint),
                _server: server,
            },
            source_db: m.source_db,
            target_db: url,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        Engine::execute(&self.pg, db, sql)
    }

    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let source = self.sources.lock().unwrap().get(db).cloned();
        let Some(source) = source else {
            return Engine::rows(&self.pg, db, table, order_by);
        };
        let schema: TableSchema = {
            let tables = SourceFactory::source(&source).unwrap().tables().unwrap();
            cutover_conformance::fixture::table(&tables, table)
        };
        let mut c = client(db);
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("{table}:*"))
            .query(&mut c)
            .unwrap();
        let mut rows: Vec<Row> = keys
            .iter()
            .map(|k| {
                let fields: HashMap<String, Vec<u8>> =
                    redis::cmd("HGETALL").arg(k).query(&mut c).unwrap();
                schema
                    .columns
                    .iter()
                    .map(|col| {
                        fields
                            .get(&col.name)
                            .map_or(Value::Null, |b| decode(&col.ty, b))
                    })
                    .collect()
            })
            .collect();
        let by: Vec<usize> = order_by
            .split(',')
            .map(|c| schema.column_index(c.trim()).expect("an order column"))
            .collect();
        rows.sort_by_key(|r| order_key(r, &by));
        // The key index lists exactly these rows.
        let indexed: usize = redis::cmd("ZCARD").arg(table).query(&mut c).unwrap();
        assert_eq!(
            indexed,
            rows.len(),
            "{table}: the key index and the rows agree"
        );
        rows
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        if !db.starts_with("redis://") {
            return Engine::verifier(&self.pg, db);
        }
        let endpoint = RedisEndpoint::parse(db, &OpenOptions::default()).unwrap();
        Box::new(RedisVerifier::open(&endpoint).expect("opening the Redis verifier"))
    }

    fn sink_before_commit(&self) -> &'static str {
        "redis::sink::before-commit"
    }

    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String> {
        redis::cmd("SET")
            .arg("_cutover:store_version")
            .arg(version)
            .query::<()>(&mut client(db))
            .map_err(|e| e.to_string())
    }

    /// The schema of each table and the store's version are kept beside the rows.
    fn check_prepared(&self, db: &str) {
        let mut c = client(db);
        for key in [
            "_cutover:schema:items",
            "_cutover:schema:pairs",
            "_cutover:store_version",
        ] {
            let n: u64 = redis::cmd("EXISTS").arg(key).query(&mut c).unwrap();
            assert_eq!(n, 1, "prepare wrote {key}");
        }
    }

    fn type_table(&self) -> TypeTable {
        Engine::type_table(&self.pg)
    }
}

cutover_conformance::target_conformance_tests! {
    engine: redis_engine(),
    known_failures: [],
}
