//! MariaDB runs the suite (cutover-mysql, MySQL's and MariaDB's engine): one throwaway server
//! for the test binary (cutover-testkit), a fresh database per side and test, SQL through the
//! `mariadb` client, rows read by mysql_async (the engine's driver) and turned into model
//! values here, by the column types `information_schema` names (crates/cutover-mysql/TYPES.md),
//! never by cutover's decoder.

use std::str::FromStr;

use cutover_conformance::{Engine, Migration, TypeTable};
use cutover_connector::OpenOptions;
use cutover_model::{Date, Decimal, Row, Time, Timestamp, Value};
use cutover_mysql::{Client, MySqlConnect, MySqlEndpoint};
use cutover_testkit::MariaDb;
use mysql_async::{Params, Value as My};

struct Maria {
    server: &'static MariaDb,
}

fn mariadb() -> Maria {
    Maria {
        server: MariaDb::shared().expect("a throwaway MariaDB server"),
    }
}

/// What every `execute` session says first: the statements are UTF-8 (the client would
/// otherwise guess a character set from the locale) and timestamps are written in UTC, as
/// cutover's sessions and [`Maria::client`]'s read them.
const SESSION: &str = "SET NAMES utf8mb4; SET time_zone = '+00:00';";

/// One column of a table as `information_schema.COLUMNS` describes it.
struct Col {
    name: String,
    /// `DATA_TYPE`: `int`, `varchar`, `longtext`, …
    data_type: String,
    /// `COLUMN_TYPE`: `int(10) unsigned`, `tinyint(1)`, `bit(10)`, …
    column_type: String,
    /// MariaDB's `json` (a `longtext` checked by `json_valid`).
    json: bool,
}

impl Maria {
    fn endpoint(&self, db: &str) -> MySqlEndpoint {
        let opts = OpenOptions {
            jobs: 2,
            ..OpenOptions::default()
        };
        MySqlEndpoint::parse(&self.server.url(db), &opts).expect("the test server's URL")
    }

    /// A session of the driver (mysql_async) on `db`: UTF-8, UTC, strict.
    fn client(&self, db: &str) -> Client {
        Client::connect(&self.endpoint(db), Some(db)).expect("connecting to the test server")
    }

    /// The columns of `table`, in order.
    fn columns(client: &mut Client, db: &str, table: &str) -> Vec<Col> {
        let cols: Vec<(String, String, String)> = client
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, COLUMN_TYPE FROM information_schema.COLUMNS \
                  WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
                Params::Positional(vec![db.into(), table.into()]),
            )
            .expect("reading the table's columns");
        // MariaDB's `json` is `longtext` with `CHECK (json_valid(col))`, named after the column.
        let checks: Vec<String> = client
            .exec(
                "SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
                  WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ?",
                Params::Positional(vec![db.into(), table.into()]),
            )
            .expect("reading the table's checks");
        cols.into_iter()
            .map(|(name, data_type, column_type)| Col {
                json: checks.contains(&format!("json_valid(`{name}`)")),
                name,
                data_type: data_type.to_ascii_lowercase(),
                column_type: column_type.to_ascii_lowercase(),
            })
            .collect()
    }
}

fn text(col: &Col, v: My) -> String {
    match v {
        My::Bytes(b) => {
            String::from_utf8(b).unwrap_or_else(|e| panic!("column {}: not UTF-8: {e}", col.name))
        }
        other => panic!(
            "column {}: text expected, the driver read {other:?}",
            col.name
        ),
    }
}

fn int(col: &Col, v: My) -> Value {
    match v {
        My::Int(i) => Value::Int(i),
        My::UInt(u) => i64::try_from(u).map_or(Value::UInt(u), Value::Int),
        other => panic!(
            "column {}: an integer expected, the driver read {other:?}",
            col.name
        ),
    }
}

const MICROS_PER_DAY: i64 = 86_400_000_000;

fn micros(h: u8, m: u8, s: u8, us: u32) -> i64 {
    ((i64::from(h) * 60 + i64::from(m)) * 60 + i64::from(s)) * 1_000_000 + i64::from(us)
}

/// A date or date-time the driver read (binary protocol): the date, and the microseconds of
/// its day.
fn date_time(col: &Col, v: My) -> (Date, i64) {
    match v {
        My::Date(y, mo, d, h, mi, s, us) => {
            let date = Date::from_ymd(y.into(), mo.into(), d.into())
                .unwrap_or_else(|| panic!("column {}: not a date: {y}-{mo}-{d}", col.name));
            (date, micros(h, mi, s, us))
        }
        other => panic!(
            "column {}: a date expected, the driver read {other:?}",
            col.name
        ),
    }
}

fn timestamp(col: &Col, v: My) -> Timestamp {
    match date_time(col, v) {
        (Date::Days(days), us) => Timestamp::Micros(i64::from(days) * MICROS_PER_DAY + us),
        (other, _) => panic!("column {}: {other:?}", col.name),
    }
}

/// A MySQL value as the type map says (crates/cutover-mysql/TYPES.md), from what the driver
/// read in the binary protocol.
fn decode(col: &Col, v: My) -> Value {
    if v == My::NULL {
        return Value::Null;
    }
    match col.data_type.as_str() {
        "tinyint" if col.column_type == "tinyint(1)" => match v {
            My::Int(0) => Value::Bool(false),
            My::Int(1) => Value::Bool(true),
            other => panic!("column {}: tinyint(1) holds {other:?}", col.name),
        },
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "year" => int(col, v),
        "decimal" => Value::Decimal(Decimal::from_str(&text(col, v)).expect("decimal text")),
        "float" => match v {
            My::Float(f) => Value::Float32(f),
            other => panic!("column {}: float read as {other:?}", col.name),
        },
        "double" => match v {
            My::Double(f) => Value::Float64(f),
            other => panic!("column {}: double read as {other:?}", col.name),
        },
        "longtext" if col.json => Value::Json(text(col, v)),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set" => {
            Value::Text(text(col, v))
        }
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => match v {
            My::Bytes(b) => Value::Bytes(b),
            other => panic!("column {}: bytes read as {other:?}", col.name),
        },
        "date" => Value::Date(date_time(col, v).0),
        "time" => match v {
            My::Time(false, days, h, m, s, us) => {
                let us = i64::from(days) * MICROS_PER_DAY + micros(h, m, s, us);
                Value::Time(Time::from_micros(us).expect("a time of day"))
            }
            other => panic!(
                "column {}: a time of day expected, read {other:?}",
                col.name
            ),
        },
        "datetime" => Value::Timestamp(timestamp(col, v)),
        // The session's time zone is UTC: the instant as UTC.
        "timestamp" => Value::TimestampTz(timestamp(col, v)),
        "bit" => {
            let n: usize = col
                .column_type
                .trim_start_matches("bit(")
                .trim_end_matches(')')
                .parse()
                .expect("bit(n)");
            let My::Bytes(bytes) = v else {
                panic!("column {}: bit read as {v:?}", col.name)
            };
            let all: String = bytes.iter().map(|b| format!("{b:08b}")).collect();
            let text = format!("{all:0>n$}");
            Value::Raw {
                type_name: col.column_type.clone(),
                text: text[text.len() - n..].to_owned(),
            }
        }
        "uuid" => {
            let t = text(col, v);
            let hex: Vec<u8> = t.bytes().filter(|c| *c != b'-').collect();
            assert_eq!(hex.len(), 32, "column {}: uuid text {t:?}", col.name);
            let mut out = [0u8; 16];
            for (i, b) in out.iter_mut().enumerate() {
                let pair = std::str::from_utf8(&hex[2 * i..2 * i + 2]).unwrap();
                *b = u8::from_str_radix(pair, 16).expect("uuid hex");
            }
            Value::Uuid(out)
        }
        _ => Value::Raw {
            type_name: col.column_type.clone(),
            text: text(col, v),
        },
    }
}

impl Engine for Maria {
    type Connect = MySqlConnect;

    fn migration(&self, name: &str, ddl: &str) -> Migration<MySqlConnect> {
        // MySQL refuses a `text` column in a key (a key's prefix must be given a length): the
        // suite's portable `pairs (a bigint, b text, …, PRIMARY KEY (a, b))` takes
        // `varchar(255)` here, which the suite's values fit and the type map reads as text too.
        let ddl = ddl.replace("b text,", "b varchar(255),");
        let source_db = self.server.fresh_database(&format!("{name}_s")).unwrap();
        self.server
            .sql(&source_db, &ddl)
            .unwrap_or_else(|e| panic!("the source's DDL: {e}"));
        let target_db = self.server.fresh_database(&format!("{name}_t")).unwrap();
        Migration {
            source: MySqlConnect::new(self.endpoint(&source_db)),
            target: MySqlConnect::new(self.endpoint(&target_db)),
            source_db,
            target_db,
        }
    }

    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        self.server
            .sql(db, &format!("{SESSION} {sql}"))
            .map(drop)
            .map_err(|e| e.to_string())
    }

    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        let mut client = self.client(db);
        let columns = Self::columns(&mut client, db, table);
        assert!(!columns.is_empty(), "table {table} has columns");
        let list: Vec<String> = columns
            .iter()
            .map(|c| format!("`{}`", c.name.replace('`', "``")))
            .collect();
        // A prepared statement: the binary protocol carries floats, integers and date-times as
        // such (the text protocol prints `float` with 6 digits).
        let rows: Vec<mysql_async::Row> = client
            .exec(
                &format!(
                    "SELECT {} FROM `{table}` ORDER BY {order_by}",
                    list.join(", ")
                ),
                Params::Empty,
            )
            .expect("reading the table");
        rows.into_iter()
            .map(|r| {
                r.unwrap()
                    .into_iter()
                    .zip(&columns)
                    .map(|(v, c)| decode(c, v))
                    .collect()
            })
            .collect()
    }

    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send> {
        Box::new(
            cutover_mysql::MySqlVerifier::open(&self.endpoint(db))
                .expect("opening a MySQL verifier"),
        )
    }

    fn store_version_sql(&self, version: u32) -> String {
        format!("UPDATE `_cutover_state` SET `value` = '{version}' WHERE `key` = 'store_version'")
    }

    fn sink_before_commit(&self) -> &'static str {
        "mysql::sink::before-commit"
    }

    fn type_table(&self) -> TypeTable {
        let ddl = "CREATE TABLE types (
    id bigint PRIMARY KEY,
    bo tinyint(1), i1 tinyint, u1 tinyint unsigned, i2 smallint, u2 smallint unsigned,
    i3 mediumint, u3 mediumint unsigned, i4 int, u4 int unsigned, i8 bigint,
    u8 bigint unsigned, dm decimal(65,30), d2 decimal(12,3), d0 decimal(20,0), f4 float,
    f8 double, c char(4), vc varchar(32), t text, lt longtext, en enum('sad','ok','happy'),
    st set('a','b','c'), j json, bn binary(4), vb varbinary(16), bl blob, lb longblob,
    d date, tm time(6), dt datetime(6), ts timestamp(6) NULL DEFAULT NULL, y year,
    bits bit(10), u uuid
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;";
        let rows = [
            // Upper edges.
            "(1, 1, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, 4294967295, \
              9223372036854775807, 18446744073709551615, \
              99999999999999999999999999999999999.999999999999999999999999999999, \
              999999999.999, 99999999999999999999, 3.4028234e38, 1.7976931348623157e308, \
              'a''\"b', 'ü€𝄞 \"q\" ''s'' 😀', 'line\\nbreak\\ttab', REPEAT('long ', 4000), \
              'happy', 'a,c', '{\"b\": 1,  \"a\": [1, 2.50, null], \"e\": \"😀\"}', 0x00ff, \
              0x00ff10, X'', REPEAT(0xab, 10000), '9999-12-31', '23:59:59.999999', \
              '9999-12-31 23:59:59.999999', '2038-01-19 03:14:07.999999', 2155, b'1111111111', \
              'ffffffff-ffff-ffff-ffff-ffffffffffff')",
            // Lower edges.
            "(2, 0, -128, 0, -32768, 0, -8388608, 0, -2147483648, 0, -9223372036854775808, 0, \
              -99999999999999999999999999999999999.999999999999999999999999999999, \
              -0.001, -99999999999999999999, -1.4e-45, 5e-324, '', '', '', '', 'sad', '', \
              '[]', X'', X'', 0x00, X'', '1000-01-01', '00:00:00', '1000-01-01 00:00:00', \
              '1970-01-01 00:00:01', 1901, b'0', '00000000-0000-0000-0000-000000000000')",
            // Zeros, signs, quoting.
            "(3, NULL, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0.0, -0.0, 'abcd', 'x, (y)', \
              'back\\\\slash \"dq\" ''sq''', '', 'ok', 'a,b,c', 'null', 0xffffffff, 0xff00, \
              0x0a, 0x00, '2024-02-29', '24:00:00', '2024-02-29 12:00:00.5', \
              '2026-01-01 12:00:00', 0, b'1000000001', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11')",
            // NULL everywhere but the key.
            "(4, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
              NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
            // Scales and floats that do not round-trip through few digits.
            "(5, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0.000000000000000000000000000001, 1.5, 100, \
              0.1, 0.30000000000000004, ' sp', 'tab\\there', ' ', 'x', NULL, NULL, \
              '{\"k\": {\"n\": [true, false]}, \"s\": \"a\\\\\"b\"}', NULL, NULL, NULL, NULL, \
              '2000-01-01', '12:34:56.789', '1999-12-31 23:59:59.999999', \
              '2000-01-01 00:00:00', 2000, b'0000000001', NULL)",
            "(6, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 123.450000, \
              -100.000, -1, 16777217, 1e-20, NULL, NULL, NULL, NULL, NULL, NULL, '\"text\"', \
              NULL, NULL, NULL, NULL, NULL, '00:00:00.000001', NULL, NULL, NULL, NULL, NULL)",
        ];
        TypeTable {
            ddl: ddl.to_owned(),
            insert: format!("INSERT INTO types VALUES {};", rows.join(", ")),
        }
    }
}

cutover_conformance::conformance_tests! {
    engine: mariadb(),
    known_failures: [
        (
            start_capture_is_idempotent_and_keeps_changes_captured_since_the_first_call,
            "a MySQL source is read-only for cutover (SELECT and the replication grants): the \
             binlog is the server's own and nothing on the server records where a reader's \
             capture started, so each call returns the binlog position of its time (sync \
             resumes from the target's checkpoint; a later start is used only while nothing \
             was committed on the target)"
        ),
    ],
}
