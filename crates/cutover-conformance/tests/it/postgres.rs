//! PostgreSQL runs the suite: one throwaway server for the test binary (cutover-testkit), a
//! fresh database per side and test, the `postgres` driver as the engine's own reader.

use std::str::FromStr;

use cutover_conformance::{Engine, Migration, TypeTable};
use cutover_model::{Decimal, Row, Value};
use cutover_postgres::schema::Selection;
use cutover_postgres::{CaptureNames, PgConnect, PgEndpoint};
use cutover_testkit::Postgres;
use postgres::types::Type;
use postgres::{Client, NoTls};

pub(crate) struct Pg {
    server: &'static Postgres,
}

pub(crate) fn pg() -> Pg {
    Pg {
        server: Postgres::shared().expect("a throwaway PostgreSQL server"),
    }
}

/// The driver's session: what the tests write on a target is not refused (a sync's target
/// refuses other sessions' writes), and text forms print as cutover's sessions print them.
const SESSION: &str = "SET default_transaction_read_only = off; SET TimeZone = 'UTC'; \
    SET DateStyle = 'ISO'; SET IntervalStyle = 'iso_8601'; SET extra_float_digits = 3; \
    SET bytea_output = 'hex'";

impl Pg {
    fn client(&self, db: &str) -> Client {
        let mut client =
            Client::connect(&self.server.url(db), NoTls).expect("connecting to the test server");
        client.batch_execute(SESSION).unwrap();
        client
    }
}

/// Types the driver reads in binary, without cutover's text decoding.
fn native(ty: &Type) -> bool {
    [
        Type::BOOL,
        Type::INT2,
        Type::INT4,
        Type::INT8,
        Type::OID,
        Type::FLOAT4,
        Type::FLOAT8,
        Type::TEXT,
        Type::VARCHAR,
        Type::BPCHAR,
        Type::NAME,
        Type::BYTEA,
    ]
    .contains(ty)
}

fn uuid(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("uuid text");
    }
    out
}

impl Engine for Pg {
    type Connect = PgConnect;

    fn migration(&self, name: &str, ddl: &str) -> Migration<PgConnect> {
        let source_db = self.server.fresh_database(&format!("{name}_s")).unwrap();
        self.server.psql(&source_db, ddl).expect("the source's DDL");
        let target_db = self.server.fresh_database(&format!("{name}_t")).unwrap();
        let endpoint = |db: &str| PgEndpoint::from_url(&self.server.url(db)).unwrap();
        let (s, t) = (endpoint(&source_db), endpoint(&target_db));
        let side = |e: &PgEndpoint, peer: &PgEndpoint| PgConnect {
            endpoint: e.clone(),
            peer: Some(peer.clone()),
            selection: Selection::default(),
            names: CaptureNames::for_migration(&target_db),
            truncate: false,
            jobs: 2,
        };
        Migration {
            source: side(&s, &t),
            target: side(&t, &s),
            source_db,
            target_db,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        self.client(db)
            .batch_execute(sql)
            .map_err(|e| e.to_string())
    }

    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let mut client = self.client(db);
        let all = client
            .prepare(&format!("SELECT * FROM \"{table}\" ORDER BY {order_by}"))
            .unwrap();
        let columns: Vec<(String, Type)> = all
            .columns()
            .iter()
            .map(|c| (c.name().to_owned(), c.type_().clone()))
            .collect();
        // The driver describes a domain's column by its base type; cutover keeps a domain's
        // values as their exact text (`Value::Raw`), as every type it does not model.
        let domains: Vec<String> = client
            .query(
                "SELECT a.attname::text FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
                  WHERE a.attrelid = $1::text::regclass AND t.typtype = 'd'",
                &[&table],
            )
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let columns: Vec<(String, Type)> = columns
            .into_iter()
            .map(|(name, ty)| {
                let ty = if domains.contains(&name) {
                    Type::UNKNOWN
                } else {
                    ty
                };
                (name, ty)
            })
            .collect();
        let list: Vec<String> = columns
            .iter()
            .map(|(name, ty)| {
                if native(ty) {
                    format!("\"{name}\"")
                } else {
                    // The type's output function (a `::text` cast may differ: inet's adds the mask);
                    // `num_nonnulls`, as a composite of NULL fields `IS NULL`.
                    format!(
                        "CASE WHEN num_nonnulls(\"{name}\") = 1 THEN format('%s', \"{name}\") END"
                    )
                }
            })
            .collect();
        let rows = client
            .query(
                &format!(
                    "SELECT {} FROM \"{table}\" ORDER BY {order_by}",
                    list.join(", ")
                ),
                &[],
            )
            .unwrap();
        rows.iter()
            .map(|r| {
                columns
                    .iter()
                    .enumerate()
                    .map(|(i, (_, ty))| {
                        let v = match *ty {
                            Type::BOOL => r.get::<_, Option<bool>>(i).map(Value::Bool),
                            Type::INT2 => r.get::<_, Option<i16>>(i).map(|x| Value::Int(x.into())),
                            Type::INT4 => r.get::<_, Option<i32>>(i).map(|x| Value::Int(x.into())),
                            Type::INT8 => r.get::<_, Option<i64>>(i).map(Value::Int),
                            Type::OID => r.get::<_, Option<u32>>(i).map(|x| Value::Int(x.into())),
                            Type::FLOAT4 => r.get::<_, Option<f32>>(i).map(Value::Float32),
                            Type::FLOAT8 => r.get::<_, Option<f64>>(i).map(Value::Float64),
                            Type::BYTEA => r.get::<_, Option<Vec<u8>>>(i).map(Value::Bytes),
                            ref t if native(t) => r.get::<_, Option<String>>(i).map(Value::Text),
                            ref t => r.get::<_, Option<String>>(i).map(|text| match *t {
                                Type::NUMERIC => {
                                    Value::Decimal(Decimal::from_str(&text).expect("numeric text"))
                                }
                                Type::UUID => Value::Uuid(uuid(&text)),
                                Type::JSON | Type::JSONB => Value::Json(text),
                                _ => Value::Raw {
                                    type_name: t.name().to_owned(),
                                    text,
                                },
                            }),
                        };
                        v.unwrap_or(Value::Null)
                    })
                    .collect()
            })
            .collect()
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        let endpoint = PgEndpoint::from_url(&self.server.url(db)).unwrap();
        Box::new(
            cutover_postgres::verify::PgVerifier::open(
                &endpoint,
                cutover_postgres::verify::RowHash::Md5,
            )
            .expect("opening a PostgreSQL verifier"),
        )
    }

    fn store_version_sql(&self, version: u32) -> String {
        format!("UPDATE _cutover.store SET version = {version}")
    }

    fn sink_before_commit(&self) -> &'static str {
        "postgres::sink::before-commit"
    }

    fn type_table(&self) -> TypeTable {
        let ddl = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN percent AS numeric(5,2) CHECK (VALUE BETWEEN 0 AND 100);
CREATE TYPE pair AS (x int, y text);
CREATE TABLE types (
    id bigint PRIMARY KEY,
    bo boolean, i2 smallint, i4 integer, i8 bigint, f4 real, f8 double precision,
    n numeric, n2 numeric(12,3), t text, vc varchar(12), c char(4), nm name, b bytea,
    u uuid, j json, jb jsonb, d date, tm time, ttz timetz, ts timestamp, tstz timestamptz,
    iv interval, ia int[], ta text[][], m mood, p percent, cp pair, inet_ inet, bits bit varying(16),
    rng int4range, o oid, x xml, mo money
);"#;
        let rows = [
            "(1, true, 32767, 2147483647, 9223372036854775807, 3.4028235e38, 1.7976931348623157e308, \
              'NaN', 123456789.123, '', '', '', '', '\\x', '00000000-0000-0000-0000-000000000000', \
              '{}', '{}', '4713-01-01 BC', '00:00:00', '00:00:00+00', '4713-01-01 00:00:00 BC', \
              '294276-12-31 23:59:59.999999+00', '0', '{}', '{}', 'sad', 0, '(,)', '0.0.0.0/0', B'', \
              'empty', 0, '<a/>', 0)",
            "(2, false, -32768, -2147483648, -9223372036854775808, 1.4e-45, 5e-324, \
              'Infinity', -0.001, 'ü€𝄞 \"q\" ''s''', 'twelve chars', 'ab', 'pg_name', '\\x00ff10', \
              'ffffffff-ffff-ffff-ffff-ffffffffffff', '{\"b\": 1,  \"a\": [1, 2.50, null]}', \
              '{\"b\": 1, \"a\": [1, 2.50, null]}', 'infinity', '24:00:00', '23:59:59.999999-15:59', \
              'infinity', '-infinity', '-178000000 years', '{1,NULL,-3}', '{{a,NULL},{\"c,d\",\"e\\\"f\"}}', \
              'happy', 100, '(1,\"x, \"\"y\"\"\")', '2001:db8::1/128', B'1010101010101010', \
              '[1,10)', 4294967295, '<x y=\"1\">t</x>', -92233720368547758.08)",
            "(3, NULL, 0, 0, 0, -0, -0, '-Infinity', 0, E'line\\nbreak\\ttab', 'x', 'abcd', 'x', \
              decode(repeat('ab', 5000), 'hex'), 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', \
              '[]', 'null', '-infinity', '12:34:56.789', '12:34:56+05:30', '-infinity', \
              'infinity', '1 year 2 mons -3 days 04:05:06.789', '[0:2]={1,2,3}', '{}', 'ok', 50.5, \
              NULL, '192.168.0.1', B'1', '(,)', 1, NULL, 92233720368547758.07)",
            "(4, true, 1, 1, 1, 'NaN', 'Infinity', 123456789012345678901234567890.123456789, \
              999999999.999, repeat('long ', 4000), NULL, NULL, NULL, NULL, NULL, NULL, \
              '{\"k\": {\"n\": [true, false]}}', '2024-02-29', NULL, NULL, '1999-12-31 23:59:59.999999', \
              '2026-01-01 12:00:00+05:30', '-1 days -00:00:00.000001', NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL)",
            "(5, false, NULL, NULL, NULL, '-Infinity', 'NaN', -0.0, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            "(6, NULL, NULL, NULL, NULL, 0.1, 0.1, 1e-20, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL)",
            "(7, NULL, NULL, NULL, NULL, 16777217, 0.30000000000000004, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
        ];
        TypeTable {
            ddl: ddl.to_owned(),
            insert: format!("INSERT INTO types VALUES {};", rows.join(", ")),
        }
    }
}

cutover_conformance::conformance_tests! {
    engine: pg(),
    known_failures: [],
}
