//! SQLite runs the suite: database files in a temporary directory, rusqlite as the driver.

use std::path::PathBuf;
use std::sync::OnceLock;

use cutover_conformance::{Engine, Migration, TypeTable};
use cutover_model::{Row, Value};
use cutover_sqlite::SqliteEndpoint;
use rusqlite::types::ValueRef;
use rusqlite::Connection;

struct Sqlite {
    dir: PathBuf,
}

fn sqlite() -> &'static Sqlite {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    static ENGINE: OnceLock<Sqlite> = OnceLock::new();
    ENGINE.get_or_init(|| Sqlite {
        dir: DIR
            .get_or_init(|| tempfile::tempdir().expect("a temporary directory"))
            .path()
            .to_owned(),
    })
}

fn open(path: &str) -> Connection {
    let conn = Connection::open(path).expect("opening a test database");
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    conn
}

impl Engine for Sqlite {
    type Connect = SqliteEndpoint;

    fn migration(&self, name: &str, ddl: &str) -> Migration<SqliteEndpoint> {
        let dir = tempfile::Builder::new()
            .prefix(name)
            .tempdir_in(&self.dir)
            .expect("a directory for the test")
            .keep();
        let source_db = dir.join("source.db").display().to_string();
        let target_db = dir.join("target.db").display().to_string();
        open(&source_db)
            .execute_batch(ddl)
            .expect("the source's DDL");
        Migration {
            source: SqliteEndpoint::new(&source_db),
            target: SqliteEndpoint::new(&target_db),
            source_db,
            target_db,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        let conn = open(db);
        let result = conn.execute_batch(sql).map_err(|e| e.to_string());
        if result.is_err() && !conn.is_autocommit() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        result
    }

    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let conn = open(db);
        let mut stmt = conn
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY {order_by}"))
            .unwrap();
        let n = stmt.column_count();
        // cutover's SQLite type map reads 0 and 1 in a BOOLEAN column as booleans (README,
        // "Type map"); every other value as its storage class.
        let boolean: Vec<bool> = conn
            .prepare(
                "SELECT upper(type) IN ('BOOLEAN', 'BOOL') FROM pragma_table_info(?1) ORDER BY cid",
            )
            .unwrap()
            .query_map([table], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        Ok(match r.get_ref(i)? {
                            ValueRef::Null => Value::Null,
                            ValueRef::Integer(b @ (0 | 1)) if boolean[i] => Value::Bool(b == 1),
                            ValueRef::Integer(i) => Value::Int(i),
                            ValueRef::Real(f) => Value::Float64(f),
                            ValueRef::Text(t) => {
                                Value::Text(String::from_utf8(t.to_vec()).expect("UTF-8 text"))
                            }
                            ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
                        })
                    })
                    .collect::<Result<Row, rusqlite::Error>>()
            })
            .unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        Box::new(
            cutover_sqlite::SqliteVerifier::open(std::path::Path::new(db))
                .expect("opening a SQLite verifier"),
        )
    }

    fn store_version_sql(&self, version: u32) -> String {
        format!("INSERT OR REPLACE INTO _cutover_state (key, value) VALUES ('store_version', '{version}')")
    }

    fn sink_before_commit(&self) -> &'static str {
        "sqlite::sink::before-commit"
    }

    /// SQLite's five storage classes at their edges, in columns of every affinity (INTEGER,
    /// REAL, TEXT, BLOB, NUMERIC and none), where a value keeps its class or is converted by
    /// the column's affinity as SQLite does.
    fn type_table(&self) -> TypeTable {
        let ddl = "CREATE TABLE types (id INTEGER PRIMARY KEY, i INTEGER, r REAL, t TEXT, b BLOB, \
                   num NUMERIC, any_ ANY, untyped, d DECIMAL(10,2), v VARCHAR(20), bo BOOLEAN, dt DATETIME)";
        let rows = [
            "(1, 0, 0.0, '', x'', 0, NULL, NULL, 0, '', 0, '2024-02-29 12:00:00')",
            "(2, 9223372036854775807, 1.7976931348623157e308, 'ü€𝄞 \"quoted\" ''single''', x'00ff00', 1.5, 42, 'text', 123.45, 'v', 1, '0001-01-01')",
            "(3, -9223372036854775808, -0.0, ' lead and trail ', x'deadbeef', '12345678901234567890', 4.25, x'01', '-0.5', 'x', 0, 1700000000)",
            "(4, 42, 5e-324, 'line\nbreak\ttab', zeroblob(3), 'not a number', 'any text', 9223372036854775807, 'abc', '1', 'true', NULL)",
            "(5, '17', '2.5', 17, 3.25, '0x10', x'', -1.0, NULL, NULL, NULL, 1.5)",
            "(6, NULL, 1e308 * 10, NULL, NULL, NULL, -9223372036854775808, 0.1, 1e-7, NULL, NULL, NULL)",
            "(7, 1, -1e308 * 10, char(0) || 'nul', NULL, 3.0, 3.0, 2.0, 100, 'y', -1, 'z')",
        ];
        TypeTable {
            ddl: ddl.to_owned(),
            insert: format!("INSERT INTO types VALUES {};", rows.join(", ")),
        }
    }
}

cutover_conformance::conformance_tests! {
    engine: *sqlite(),
    known_failures: [
        (
            read_changes_never_splits_a_transaction,
            "SQLite's capture triggers cannot see transaction boundaries: every row change is \
             its own transaction (ARCHITECTURE.md, Known limits)"
        ),
    ],
}
