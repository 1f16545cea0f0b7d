//! `MySqlSource` against a real MariaDB: schema, chunk reads and binlog capture, checked
//! through the `mariadb` client.

use std::time::{Duration, Instant};

use cutover_connector::{ErrorKind, KeyRange, OpenOptions, PositionOrderExt, Source, TableReader};
use cutover_model::{Change, ColumnType, Position, Row, TableSchema, Transaction, Value};
use cutover_mysql::{MySqlEndpoint, MySqlReader, MySqlSource};
use cutover_testkit::MariaDb;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

struct Db {
    server: &'static MariaDb,
    name: String,
}

impl Db {
    fn new(prefix: &str) -> R<Db> {
        let server = MariaDb::shared()?;
        let name = server.fresh_database(prefix)?;
        Ok(Db { server, name })
    }

    fn sql(&self, sql: &str) -> R<String> {
        Ok(self
            .server
            .sql(&self.name, &format!("SET NAMES utf8mb4; {sql}"))?)
    }

    fn endpoint(&self, params: &str) -> R<MySqlEndpoint> {
        let url = format!("{}{params}", self.server.url(&self.name));
        Ok(MySqlEndpoint::parse(&url, &OpenOptions::default())?)
    }

    fn source(&self, params: &str) -> R<MySqlSource> {
        Ok(MySqlSource::open(&self.endpoint(params)?)?)
    }
}

fn table<'a>(tables: &'a [TableSchema], name: &str) -> &'a TableSchema {
    tables
        .iter()
        .find(|t| t.name.name == name)
        .unwrap_or_else(|| panic!("no table {name} among {tables:?}"))
}

/// Reads changes after `after` until `want` changes arrived (or 20 s passed).
fn changes_until(
    src: &mut MySqlSource,
    tables: &[TableSchema],
    after: &Position,
    want: usize,
) -> R<Vec<Transaction>> {
    let mut out: Vec<Transaction> = Vec::new();
    let mut at = after.clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while out.iter().map(|t| t.changes.len()).sum::<usize>() < want {
        if Instant::now() > deadline {
            return Err(format!("only {out:?} after 20 s").into());
        }
        for t in src.read_changes(tables, at.clone(), 1000)? {
            assert!(
                src.positions().after(&t.position, &at),
                "{} is not after {at}",
                t.position
            );
            at = t.position.clone();
            if !t.changes.is_empty() {
                out.push(t);
            }
        }
    }
    Ok(out)
}

/// The error `read_changes` after `after` comes to (within 20 s), with the changes before it
/// ignored.
fn first_error(
    src: &mut MySqlSource,
    tables: &[TableSchema],
    after: &Position,
) -> cutover_connector::ConnectorError {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no error after 20 s");
        if let Err(e) = src.read_changes(tables, after.clone(), 100) {
            return e;
        }
    }
}

/// A fresh database with `ddl` run in it, a source on it, its tables, and capture started.
fn capturing(prefix: &str, ddl: &str) -> R<(Db, MySqlSource, Vec<TableSchema>, Position)> {
    let db = Db::new(prefix)?;
    db.sql(ddl)?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let after = src.start_capture(&tables)?;
    Ok((db, src, tables, after))
}

/// Inserts `id` into table `t` (one int column) and checks that the stream after `after`
/// brings exactly that next.
fn inserted_next(
    db: &Db,
    src: &mut MySqlSource,
    tables: &[TableSchema],
    after: &Position,
    id: i64,
) -> R {
    db.sql(&format!("INSERT INTO t VALUES ({id})"))?;
    let next = changes_until(src, tables, after, 1)?;
    assert_eq!(
        next[0].changes,
        vec![Change::Insert {
            table: tables[0].name.clone(),
            row: vec![Value::Int(id)]
        }]
    );
    Ok(())
}

const EVERY_TYPE: &str = "CREATE TABLE every_type (
    id int NOT NULL PRIMARY KEY,
    b tinyint(1), i8 tinyint, u8 tinyint unsigned, i16 smallint, i24 mediumint,
    u24 mediumint unsigned, i32 int, u32 int unsigned, i64 bigint, u64 bigint unsigned,
    dec_big decimal(65,30), dec_small decimal(10,2), f32 float, f64 double,
    c char(5), vc varchar(40), tx text, bin binary(4), vb varbinary(10), bl blob,
    d date, t time(6), dt datetime(6), ts timestamp(6) NULL DEFAULT NULL, y year,
    bits bit(10), e enum('small','it''s','big'), s set('a','b','c'), j json, u uuid,
    KEY vc_idx (vc), UNIQUE KEY c_u (c, i8)
) DEFAULT CHARSET utf8mb4";

const EDGE_ROW: &str = "INSERT INTO every_type VALUES (1, 1, -128, 255, -32768, -8388608, 16777215,
    -2147483648, 4294967295, -9223372036854775808, 18446744073709551615,
    '12345678901234567890123456789012345.123456789012345678901234567891', '-1.50', 1.5, 0.1,
    'ab', 'h\u{e9}llo \u{1f600}', 'text \u{1f600}', 0x00ff, 0x00ff00, 0xff00,
    '2024-02-29', '23:59:59.999999', '2024-02-29 23:59:58.123456', '2038-01-19 03:14:07.5',
    2024, b'1000000101', 'it''s', 'c,a', '{\"a\": [1, 2.5, \"x\"]}',
    '123e4567-e89b-12d3-a456-426614174000')";

fn ts(text: &str) -> cutover_model::Timestamp {
    cutover_model::Timestamp::parse(text, false).unwrap()
}

fn expected_edge_row() -> Row {
    vec![
        Value::Int(1),
        Value::Bool(true),
        Value::Int(-128),
        Value::Int(255),
        Value::Int(-32768),
        Value::Int(-8388608),
        Value::Int(16777215),
        Value::Int(-2147483648),
        Value::Int(4294967295),
        Value::Int(i64::MIN),
        Value::UInt(u64::MAX),
        Value::Decimal(
            "12345678901234567890123456789012345.123456789012345678901234567891"
                .parse()
                .unwrap(),
        ),
        Value::Decimal("-1.50".parse().unwrap()),
        Value::Float32(1.5),
        Value::Float64(0.1),
        Value::Text("ab".into()),
        Value::Text("h\u{e9}llo \u{1f600}".into()),
        Value::Text("text \u{1f600}".into()),
        Value::Bytes(vec![0x00, 0xff, 0x00, 0x00]),
        Value::Bytes(vec![0x00, 0xff, 0x00]),
        Value::Bytes(vec![0xff, 0x00]),
        Value::Date("2024-02-29".parse().unwrap()),
        Value::Time("23:59:59.999999".parse().unwrap()),
        Value::Timestamp(ts("2024-02-29 23:59:58.123456")),
        Value::TimestampTz(ts("2038-01-19 03:14:07.5")),
        Value::Int(2024),
        Value::Raw {
            type_name: "bit(10)".into(),
            text: "1000000101".into(),
        },
        Value::Text("it's".into()),
        Value::Text("a,c".into()),
        Value::Json("{\"a\": [1, 2.5, \"x\"]}".into()),
        Value::Uuid([
            0x12, 0x3e, 0x45, 0x67, 0xe8, 0x9b, 0x12, 0xd3, 0xa4, 0x56, 0x42, 0x66, 0x14, 0x17,
            0x40, 0x00,
        ]),
    ]
}

#[test]
fn schema_and_chunks_carry_every_type_exactly() -> R {
    let db = Db::new("my_types")?;
    db.sql(EVERY_TYPE)?;
    db.sql(EDGE_ROW)?;
    db.sql("INSERT INTO every_type (id) VALUES (2)")?;
    db.sql("CREATE TABLE _cutover_state (k int PRIMARY KEY)")?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    assert_eq!(
        tables.len(),
        1,
        "cutover's own tables are left out: {tables:?}"
    );
    let t = table(&tables, "every_type");
    let ty = |name: &str| t.columns[t.column_index(name).unwrap()].ty.clone();
    let declared = |name: &str| {
        t.columns[t.column_index(name).unwrap()]
            .declared_type
            .clone()
    };
    assert_eq!(ty("b"), ColumnType::Bool);
    assert_eq!(
        ty("u64"),
        ColumnType::Int {
            bits: 64,
            unsigned: true
        }
    );
    assert_eq!(
        ty("u24"),
        ColumnType::Int {
            bits: 24,
            unsigned: true
        }
    );
    assert_eq!(
        ty("y"),
        ColumnType::Int {
            bits: 16,
            unsigned: false
        }
    );
    assert_eq!(ty("vc"), ColumnType::Text { max_len: Some(40) });
    assert_eq!(ty("j"), ColumnType::Json { binary: false });
    assert_eq!(ty("u"), ColumnType::Uuid);
    assert_eq!(ty("ts"), ColumnType::Timestamp { zoned: true });
    assert_eq!(ty("dt"), ColumnType::Timestamp { zoned: false });
    assert_eq!(declared("e"), "enum('small','it''s','big')");
    assert_eq!(declared("dec_big"), "decimal(65,30)");
    assert_eq!(t.primary_key, vec![0]);
    assert!(t
        .indexes
        .iter()
        .any(|i| i.name == "vc_idx" && !i.unique && i.columns == ["vc"]));
    assert!(t
        .indexes
        .iter()
        .any(|i| i.name == "c_u" && i.unique && i.columns == ["c", "i8"]));
    assert!(!t.columns[0].nullable && t.columns[1].nullable);

    let chunk = src.read_chunk(t, &KeyRange::all())?;
    assert_eq!(
        chunk.low, chunk.high,
        "MariaDB tells the snapshot's exact position"
    );
    assert_eq!(chunk.rows.len(), 2);
    assert_eq!(chunk.rows[0], expected_edge_row());
    assert!(chunk.rows[1][1..].iter().all(Value::is_null));
    // No transaction is left open: a DDL on the table would wait for its metadata lock.
    db.sql("SET SESSION lock_wait_timeout = 2; ALTER TABLE every_type COMMENT 'x'")?;

    // The same through verify's reader.
    let mut reader = MySqlReader::open(&db.endpoint("")?)?;
    let scanned = reader.scan(t, None, None, 10)?;
    assert_eq!(scanned, chunk.rows);
    Ok(())
}

#[test]
fn tinyint1_other_than_0_or_1_is_refused_naming_the_fix_or_read_as_int() -> R {
    let db = Db::new("my_tinyint")?;
    db.sql(
        "CREATE TABLE flags (id int PRIMARY KEY, f tinyint(1)); INSERT INTO flags VALUES (7, 2)",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let err = src.read_chunk(&tables[0], &KeyRange::all()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("table flags, column f, key (7)") && msg.contains("?tinyint1=int"),
        "{msg}"
    );
    let mut src = db.source("?tinyint1=int")?;
    let tables = src.tables()?;
    let rows = src.read_chunk(&tables[0], &KeyRange::all())?.rows;
    assert_eq!(rows, vec![vec![Value::Int(7), Value::Int(2)]]);
    Ok(())
}

#[test]
fn zero_dates_are_refused_naming_the_key_or_carried_as_null() -> R {
    let db = Db::new("my_zero")?;
    db.sql(
        "CREATE TABLE z (id int PRIMARY KEY, d date, dt datetime);
         SET SESSION sql_mode = '';
         INSERT INTO z VALUES (5, '0000-00-00', '0000-00-00 00:00:00')",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let msg = src
        .read_chunk(&tables[0], &KeyRange::all())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("table z, column d, key (5)") && msg.contains("zero-date=null"),
        "{msg}"
    );
    let mut src = db.source("?zero-date=null")?;
    let rows = src.read_chunk(&tables[0], &KeyRange::all())?.rows;
    assert_eq!(rows, vec![vec![Value::Int(5), Value::Null, Value::Null]]);
    // In the binlog too.
    let after = src.start_capture(&tables)?;
    db.sql("SET SESSION sql_mode = ''; INSERT INTO z VALUES (6, '0000-00-00', '2020-01-01')")?;
    let got = changes_until(&mut src, &tables, &after, 1)?;
    assert_eq!(
        got[0].changes,
        vec![Change::Insert {
            table: tables[0].name.clone(),
            row: vec![
                Value::Int(6),
                Value::Null,
                Value::Timestamp(ts("2020-01-01 00:00:00"))
            ]
        }]
    );
    let mut strict = db.source("")?;
    let err = first_error(&mut strict, &tables, &after);
    let msg = err.to_string();
    assert!(
        msg.contains("table z, column d, key (6)") && msg.contains("zero-date=null"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn chunks_cover_every_key_exactly_once_with_a_composite_key() -> R {
    let db = Db::new("my_chunks")?;
    db.sql(
        "CREATE TABLE pairs (a int, b varchar(10), v int, PRIMARY KEY (a, b));
         INSERT INTO pairs SELECT seq DIV 7, CONCAT('k', seq MOD 7), seq FROM seq_0_to_999",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let t = &tables[0];
    assert_eq!(t.primary_key, vec![0, 1]);
    let est = src.estimate(t)?;
    assert!(est.rows > 0, "{est:?}");
    let ranges = src.plan_chunks(t, 64)?;
    assert!(ranges.len() >= 15, "{} ranges", ranges.len());
    let mut seen = Vec::new();
    for r in &ranges {
        seen.extend(src.read_chunk(t, r)?.rows.into_iter().map(|r| r[2].clone()));
    }
    let mut sorted = seen.clone();
    sorted.sort_by_key(|v| match v {
        Value::Int(i) => *i,
        _ => -1,
    });
    sorted.dedup();
    assert_eq!(seen.len(), 1000);
    assert_eq!(sorted.len(), 1000);
    // Verify's keyset scan walks the same rows in pages.
    let mut reader = MySqlReader::open(&db.endpoint("")?)?;
    let mut after = None;
    let mut n = 0;
    loop {
        let page = reader.scan(t, after.as_ref(), None, 100)?;
        let Some(last) = page.last() else { break };
        after = Some(t.key_of(last));
        n += page.len();
    }
    assert_eq!(n, 1000);
    Ok(())
}

#[test]
fn binlog_changes_of_every_type_decode_like_chunk_reads() -> R {
    let db = Db::new("my_binlog_types")?;
    db.sql(EVERY_TYPE)?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    src.check_capture(&tables)?;
    let after = src.start_capture(&tables)?;
    // Again: idempotent, nothing installed (the shared server's other tests move the binlog).
    let again = src.start_capture(&tables)?;
    assert!(src.positions().reached(&again, &after));
    db.sql(EDGE_ROW)?;
    db.sql("INSERT INTO every_type (id) VALUES (2)")?;
    db.sql(
        "UPDATE every_type SET id = 3, vc = 'changed', u64 = 0, i24 = -1, y = 1901, bits = b'1',
         e = 'big', s = '', d = '1000-01-01', t = '00:00:00', ts = '1970-01-01 00:00:01',
         u = '01890a5d-ac96-774b-bcce-b302099a8000'
         WHERE id = 1",
    )?;
    db.sql("DELETE FROM every_type WHERE id = 2")?;
    let got = changes_until(&mut src, &tables, &after, 4)?;
    let changes: Vec<&Change> = got.iter().flat_map(|t| &t.changes).collect();
    let t = &tables[0];
    let edge = expected_edge_row();
    assert_eq!(
        changes[0],
        &Change::Insert {
            table: t.name.clone(),
            row: edge.clone()
        }
    );
    let Change::Insert { row: nulls, .. } = changes[1] else {
        panic!("{:?}", changes[1])
    };
    assert!(nulls[1..].iter().all(Value::is_null));
    // The update as the chunk read sees the row now.
    let now = src.read_chunk(t, &KeyRange::all())?.rows;
    let Change::Update {
        old_key,
        before,
        row,
        ..
    } = changes[2]
    else {
        panic!("{:?}", changes[2])
    };
    assert_eq!(old_key, &vec![Value::Int(1)]);
    assert_eq!(before.as_ref(), Some(&edge));
    assert_eq!(row, &now[0]);
    assert_eq!(row[t.column_index("y").unwrap()], Value::Int(1901));
    assert_eq!(row[t.column_index("i24").unwrap()], Value::Int(-1));
    assert_eq!(
        row[t.column_index("bits").unwrap()],
        Value::Raw {
            type_name: "bit(10)".into(),
            text: "0000000001".into()
        }
    );
    assert_eq!(
        row[t.column_index("s").unwrap()],
        Value::Text(String::new())
    );
    assert_eq!(
        row[t.column_index("u").unwrap()],
        Value::Uuid([
            0x01, 0x89, 0x0a, 0x5d, 0xac, 0x96, 0x77, 0x4b, 0xbc, 0xce, 0xb3, 0x02, 0x09, 0x9a,
            0x80, 0x00
        ])
    );
    assert_eq!(
        changes[3],
        &Change::Delete {
            table: t.name.clone(),
            old_key: vec![Value::Int(2)],
            before: Some(nulls.clone())
        }
    );
    // Checked through the client, not only through cutover's reader.
    assert_eq!(
        db.sql("SELECT id, vc, u64, y, HEX(bits), e, ts, u FROM every_type")?,
        "3\tchanged\t0\t1901\t1\tbig\t1970-01-01 00:00:01.000000\t01890a5d-ac96-774b-bcce-b302099a8000"
    );
    Ok(())
}

#[test]
fn transactions_come_whole_in_commit_order_and_rollbacks_never() -> R {
    let db = Db::new("my_order")?;
    db.sql("CREATE TABLE t (id int PRIMARY KEY, who varchar(5)); CREATE TABLE other (id int PRIMARY KEY)")?;
    let mut src = db.source("")?;
    let all = src.tables()?;
    let tables = vec![table(&all, "t").clone()];
    let after = src.start_capture(&tables)?;
    let ep = db.endpoint("")?;
    let mut a = cutover_mysql::Client::connect(&ep, Some(&db.name))?;
    let mut b = cutover_mysql::Client::connect(&ep, Some(&db.name))?;
    a.query_drop("BEGIN")?;
    a.query_drop("INSERT INTO t VALUES (1, 'a')")?;
    b.query_drop("BEGIN")?;
    b.query_drop("INSERT INTO t VALUES (2, 'b')")?;
    a.query_drop("INSERT INTO t VALUES (3, 'a')")?;
    b.query_drop("INSERT INTO other VALUES (1)")?;
    b.query_drop("COMMIT")?;
    a.query_drop("UPDATE t SET who = 'a2' WHERE id = 1")?;
    a.query_drop("COMMIT")?;
    a.query_drop("BEGIN")?;
    a.query_drop("INSERT INTO t VALUES (99, 'gone')")?;
    a.query_drop("ROLLBACK")?;
    db.sql("INSERT INTO other VALUES (2); INSERT INTO t VALUES (4, 'c')")?;
    let got = changes_until(&mut src, &tables, &after, 5)?;
    let shape: Vec<Vec<String>> = got
        .iter()
        .map(|t| {
            t.changes
                .iter()
                .map(|c| match c {
                    Change::Insert { row, .. } => format!("+{:?}", row[0]),
                    Change::Update { row, .. } => format!("~{:?}", row[0]),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            vec!["+Int(2)".to_owned()],
            vec![
                "+Int(1)".to_owned(),
                "+Int(3)".to_owned(),
                "~Int(1)".to_owned()
            ],
            vec!["+Int(4)".to_owned()],
        ]
    );
    let order = src.positions();
    assert!(order.after(&got[1].position, &got[0].position));
    assert!(order.reached(&src.current_position()?, &got[2].position));
    // A new source (a restart) at the same position reads the same changes again.
    let mut again = db.source("")?;
    let replay = changes_until(&mut again, &tables, &after, 5)?;
    assert_eq!(replay, got);
    let from_middle = changes_until(&mut again, &tables, &got[0].position, 4)?;
    assert_eq!(from_middle, got[1..]);
    Ok(())
}

#[test]
fn chunk_positions_meet_the_stream() -> R {
    let (db, mut src, tables, start) = capturing(
        "my_watermark",
        "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)",
    )?;
    db.sql("INSERT INTO t VALUES (2)")?;
    let chunk = src.read_chunk(&tables[0], &KeyRange::all())?;
    assert_eq!(chunk.rows.len(), 2);
    let got = changes_until(&mut src, &tables, &start, 1)?;
    // The chunk reflects the insert: its position is at or after the insert's commit.
    assert!(src.positions().reached(&chunk.high, &got[0].position));
    Ok(())
}

#[test]
fn capture_refuses_a_latin1_column_and_a_table_without_a_key_naming_the_fix() -> R {
    let db = Db::new("my_latin1")?;
    db.sql(
        "CREATE TABLE old (id int PRIMARY KEY, name varchar(20) CHARACTER SET latin1);
         CREATE TABLE nokey (v int);
         CREATE TABLE hosts (id int PRIMARY KEY, addr inet6);
         INSERT INTO old VALUES (1, 'caf\u{e9}')",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    // Reading is fine: the server converts to utf8mb4.
    let rows = src
        .read_chunk(table(&tables, "old"), &KeyRange::all())?
        .rows;
    assert_eq!(rows[0][1], Value::Text("caf\u{e9}".into()));
    let err = src.check_capture(&tables).unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        msg.contains("table old, column name is in character set latin1")
            && msg.contains("CONVERT TO CHARACTER SET utf8mb4")
            && msg.contains("table nokey has no primary key")
            && msg.contains("table hosts, column addr has type inet6"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn ddl_on_a_captured_table_stops_capture_naming_it_and_truncate_is_carried() -> R {
    let db = Db::new("my_ddl")?;
    db.sql("CREATE TABLE t (id int PRIMARY KEY); CREATE TABLE other (id int PRIMARY KEY)")?;
    let mut src = db.source("")?;
    let all = src.tables()?;
    let tables = vec![table(&all, "t").clone()];
    let after = src.start_capture(&tables)?;
    db.sql("INSERT INTO t VALUES (1); ALTER TABLE other ADD COLUMN x int; TRUNCATE TABLE t")?;
    let got = changes_until(&mut src, &tables, &after, 2)?;
    assert!(matches!(&got[1].changes[0], Change::Truncate { tables: ts } if ts[0].name == "t"));
    db.sql(
        "INSERT INTO t VALUES (2); ALTER TABLE t ADD COLUMN x int; INSERT INTO t VALUES (3, 3)",
    )?;
    let mut at = got[1].position.clone();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let err = loop {
        assert!(Instant::now() < deadline, "no error; got {seen:?}");
        match src.read_changes(&tables, at.clone(), 100) {
            Ok(txs) => {
                for t in txs {
                    at = t.position.clone();
                    seen.extend(t.changes);
                }
            }
            Err(e) => break e,
        }
    };
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
    let msg = err.to_string();
    assert!(
        msg.contains("table t ") && msg.contains("ALTER TABLE t ADD COLUMN x int"),
        "{msg}"
    );
    // The insert before the ALTER came; nothing after it did.
    assert_eq!(seen.len(), 1, "{seen:?}");
    Ok(())
}

#[test]
fn a_purged_binlog_is_history_lost_saying_to_start_again() -> R {
    let db = Db::new("my_purged")?;
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    // A file before the first one the server has: what a purged binlog looks like.
    let gone: Position = "binlog:binlog.000000/4".parse()?;
    let err = first_error(&mut src, &tables, &gone);
    assert_eq!(err.kind(), ErrorKind::HistoryLost, "{err}");
    assert!(
        err.to_string().contains("start the migration again"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_broken_binlog_stream_is_opened_again_from_where_it_stood() -> R {
    let (db, mut src, tables, after) =
        capturing("my_broken", "CREATE TABLE t (id int PRIMARY KEY)")?;
    db.sql("INSERT INTO t VALUES (1)")?;
    let first = changes_until(&mut src, &tables, &after, 1)?;
    // Cut the stream's connection (the reader's session is in this test's database).
    let ids = db.sql(&format!(
        "SELECT ID FROM information_schema.PROCESSLIST WHERE COMMAND LIKE 'Binlog Dump%' AND DB = '{}'",
        db.name
    ))?;
    assert_eq!(ids.lines().count(), 1, "one reader: {ids:?}");
    db.sql(&format!("KILL CONNECTION {ids}"))?;
    inserted_next(&db, &mut src, &tables, &first[0].position, 2)
}

#[test]
fn spatial_columns_are_refused_naming_table_and_column() -> R {
    let db = Db::new("my_spatial")?;
    db.sql("CREATE TABLE places (id int PRIMARY KEY, at point)")?;
    let err = db.source("")?.tables().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::UnsupportedType);
    assert!(err.to_string().contains("table places, column at"), "{err}");
    Ok(())
}

#[test]
fn the_stream_follows_a_rotation_and_reaches_a_snapshot_taken_after_it() -> R {
    let (db, mut src, tables, after) =
        capturing("my_rotate", "CREATE TABLE t (id int PRIMARY KEY)")?;
    db.sql("INSERT INTO t VALUES (1); FLUSH BINARY LOGS")?;
    let chunk = src.read_chunk(&tables[0], &KeyRange::all())?;
    let order = src.positions();
    assert!(order.after(&chunk.high, &after));
    // The stream reaches the snapshot's position though nothing captured happened after it.
    let mut at = after.clone();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !order.reached(&at, &chunk.high) {
        assert!(
            Instant::now() < deadline,
            "stuck at {at}, snapshot at {}",
            chunk.high
        );
        for t in src.read_changes(&tables, at.clone(), 100)? {
            at = t.position;
            seen.extend(t.changes);
        }
    }
    assert_eq!(seen.len(), 1);
    inserted_next(&db, &mut src, &tables, &at, 2)
}

#[test]
fn capture_names_the_privileges_a_user_lacks() -> R {
    let db = Db::new("my_grants")?;
    db.sql("CREATE TABLE t (id int PRIMARY KEY)")?;
    let user = format!("u_{}", &db.name[db.name.len() - 8..]);
    db.sql(&format!(
        "CREATE USER '{user}'@'127.0.0.1'; GRANT SELECT ON `{}`.* TO '{user}'@'127.0.0.1'",
        db.name
    ))?;
    let url = db
        .server
        .url(&db.name)
        .replace("root@", &format!("{user}@"));
    let mut src = MySqlSource::open(&MySqlEndpoint::parse(&url, &OpenOptions::default())?)?;
    let tables = src.tables()?;
    let msg = src.check_capture(&tables).unwrap_err().to_string();
    db.sql(&format!("DROP USER '{user}'@'127.0.0.1'"))?;
    assert!(
        msg.contains("lacks REPLICATION SLAVE") && msg.contains("BINLOG MONITOR"),
        "{msg}"
    );
    assert!(!msg.contains("binlog_format"), "{msg}");
    Ok(())
}

#[test]
fn a_change_logged_as_a_statement_stops_capture_naming_binlog_format() -> R {
    let (db, mut src, tables, after) = capturing("my_stmt", "CREATE TABLE t (id int PRIMARY KEY)")?;
    // Only this session logs statements: the shared server stays in ROW format.
    db.sql("SET SESSION binlog_format = 'STATEMENT'; INSERT INTO t VALUES (5)")?;
    let err = first_error(&mut src, &tables, &after);
    let msg = err.to_string();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch, "{msg}");
    assert!(
        msg.contains("table t was changed by a statement logged as SQL")
            && msg.contains("SET GLOBAL binlog_format='ROW'"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn batches_hold_about_max_changes_and_a_larger_transaction_whole() -> R {
    let (db, mut src, tables, after) = capturing(
        "my_batches",
        "CREATE TABLE t (id int PRIMARY KEY, v varchar(20))",
    )?;
    // 2000 transactions of one row, then one of 3000 rows, then 10 more.
    let mut singles = String::new();
    for i in 1..=2000 {
        singles.push_str(&format!("INSERT INTO t VALUES ({i}, 'single');"));
    }
    db.sql(&singles)?;
    db.sql("INSERT INTO t SELECT seq, 'big' FROM seq_2001_to_5000")?;
    db.sql("UPDATE t SET v = 'after' WHERE id <= 10")?;
    let mut at = after;
    let mut ids = Vec::new();
    let mut biggest = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ids.len() < 5010 {
        assert!(
            Instant::now() < deadline,
            "{} changes after 60 s",
            ids.len()
        );
        let batch = src.read_changes(&tables, at.clone(), 500)?;
        let n: usize = batch.iter().map(|t| t.changes.len()).sum();
        let largest = batch.iter().map(|t| t.changes.len()).max().unwrap_or(0);
        assert!(
            n <= 500 || batch.len() == 1 || largest < 500 && n < 500 + largest,
            "{n} changes in {} transactions",
            batch.len()
        );
        biggest = biggest.max(largest);
        for t in batch {
            at = t.position;
            for c in t.changes {
                match c {
                    Change::Insert { row, .. } | Change::Update { row, .. } => {
                        ids.push(row[0].clone())
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
    }
    assert_eq!(biggest, 3000, "the big transaction came whole");
    let want: Vec<Value> = (1..=5000).chain(1..=10).map(Value::Int).collect();
    assert_eq!(ids, want);
    Ok(())
}

/// The watermark rule, by hand: each chunk read during a write workload, brought up to date with
/// exactly the stream's changes after its `high`, equals the table at the end. MariaDB's
/// snapshot position is exact (`low == high`), so no change is applied twice or missed.
#[test]
fn chunks_read_under_writes_plus_the_changes_after_their_position_equal_the_table() -> R {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let db = Db::new("my_watermark_load")?;
    db.sql(
        "CREATE TABLE t (id int PRIMARY KEY, v int NOT NULL);
         INSERT INTO t SELECT seq, 0 FROM seq_1_to_1000",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let t = tables[0].clone();
    let start = src.start_capture(&tables)?;
    let stop = Arc::new(AtomicBool::new(false));
    let ep = db.endpoint("")?;
    let dbname = db.name.clone();
    let writer = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || -> Result<u64, String> {
            let mut c =
                cutover_mysql::Client::connect(&ep, Some(&dbname)).map_err(|e| e.to_string())?;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let k = fastrand::i64(1..1300);
                let sql = match fastrand::u8(0..4) {
                    0 => format!("DELETE FROM t WHERE id = {k}"),
                    1 => format!("INSERT INTO t VALUES ({k}, 1) ON DUPLICATE KEY UPDATE v = v + 1"),
                    2 => format!(
                        "BEGIN; UPDATE t SET v = v + 1 WHERE id = {k}; UPDATE t SET v = v + 1 WHERE id = {}; COMMIT",
                        k + 1
                    ),
                    _ => format!("UPDATE t SET v = v + 10 WHERE id BETWEEN {k} AND {}", k + 20),
                };
                for s in sql.split("; ") {
                    c.query_drop(s).map_err(|e| e.to_string())?;
                }
                n += 1;
            }
            Ok(n)
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let ranges = src.plan_chunks(&t, 100)?;
    let mut chunks = Vec::new();
    for r in &ranges {
        chunks.push((r.clone(), src.read_chunk(&t, r)?));
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().map_err(|_| "writer panicked")??;
    assert!(writes > 50, "only {writes} writes");
    let end = src.current_position()?;
    // Every transaction from the start of capture to the end.
    let mut txs: Vec<Transaction> = Vec::new();
    let mut at = start;
    let order = src.positions();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !order.reached(&at, &end) {
        assert!(Instant::now() < deadline, "stream stuck at {at}, end {end}");
        for tx in src.read_changes(&tables, at.clone(), 1000)? {
            at = tx.position.clone();
            txs.push(tx);
        }
    }
    let id = |v: &Value| match v {
        Value::Int(i) => *i,
        other => panic!("{other:?}"),
    };
    let in_range = |r: &KeyRange, k: i64| {
        r.start.as_ref().is_none_or(|s| k >= id(&s[0]))
            && r.end.as_ref().is_none_or(|e| k < id(&e[0]))
    };
    let mut rebuilt: BTreeMap<i64, Row> = BTreeMap::new();
    for (range, chunk) in &chunks {
        assert_eq!(chunk.low, chunk.high);
        let mut rows: BTreeMap<i64, Row> =
            chunk.rows.iter().map(|r| (id(&r[0]), r.clone())).collect();
        for tx in txs
            .iter()
            .filter(|tx| order.after(&tx.position, &chunk.high))
        {
            for c in &tx.changes {
                match c {
                    Change::Insert { row, .. } => {
                        if in_range(range, id(&row[0])) {
                            rows.insert(id(&row[0]), row.clone());
                        }
                    }
                    Change::Update { old_key, row, .. } => {
                        if in_range(range, id(&old_key[0])) {
                            rows.remove(&id(&old_key[0]));
                        }
                        if in_range(range, id(&row[0])) {
                            rows.insert(id(&row[0]), row.clone());
                        }
                    }
                    Change::Delete { old_key, .. } => {
                        rows.remove(&id(&old_key[0]));
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        rebuilt.extend(rows);
    }
    let now: BTreeMap<i64, Row> = src
        .read_chunk(&t, &KeyRange::all())?
        .rows
        .into_iter()
        .map(|r| (id(&r[0]), r))
        .collect();
    assert!(
        rebuilt == now,
        "rebuilt {} rows, the table has {}",
        rebuilt.len(),
        now.len()
    );
    // And as the client sees the table.
    let sum: i64 = rebuilt.values().map(|r| id(&r[1])).sum();
    assert_eq!(
        db.sql("SELECT COUNT(*), SUM(v) FROM t")?,
        format!("{}\t{sum}", rebuilt.len())
    );
    Ok(())
}

#[test]
fn odd_names_and_large_values_travel_through_chunks_and_the_binlog() -> R {
    let db = Db::new("my_odd")?;
    db.sql(
        "CREATE TABLE `odd ``name`` \u{e9}` (`key col` varchar(20) PRIMARY KEY, `select` longtext)",
    )?;
    let mut src = db.source("")?;
    let tables = src.tables()?;
    let t = &tables[0];
    assert_eq!(t.name.name, "odd `name` \u{e9}");
    let after = src.start_capture(&tables)?;
    db.sql(
        "INSERT INTO `odd ``name`` \u{e9}` VALUES ('a b', REPEAT('x', 5000000)), ('\u{1f600}', 'small')",
    )?;
    let got = changes_until(&mut src, &tables, &after, 2)?;
    let rows = src.read_chunk(t, &KeyRange::all())?.rows;
    let inserted: Vec<&Row> = got[0]
        .changes
        .iter()
        .map(|c| match c {
            Change::Insert { row, .. } => row,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| inserted.contains(&r)));
    assert!(matches!(&inserted[0][1], Value::Text(s) if s.len() == 5_000_000));
    Ok(())
}

#[test]
fn a_non_transactional_table_s_changes_end_at_their_commit_query() -> R {
    let (db, mut src, tables, after) = capturing(
        "my_myisam",
        "CREATE TABLE m (id int PRIMARY KEY, v int) ENGINE = MyISAM",
    )?;
    // MariaDB ends these with a COMMIT query, not an XID event.
    db.sql("INSERT INTO m VALUES (1, 1), (2, 2); UPDATE m SET v = 3 WHERE id = 2")?;
    let got = changes_until(&mut src, &tables, &after, 3)?;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].changes.len(), 2);
    assert!(matches!(&got[1].changes[0], Change::Update { row, .. } if row[1] == Value::Int(3)));
    Ok(())
}

#[test]
fn an_xa_transaction_on_a_captured_table_is_refused_not_lost() -> R {
    let (db, mut src, tables, after) = capturing("my_xa", "CREATE TABLE t (id int PRIMARY KEY)")?;
    db.sql(
        "XA START 'x1'; INSERT INTO t VALUES (1); XA END 'x1'; XA PREPARE 'x1'; XA COMMIT 'x1'",
    )?;
    let err = first_error(&mut src, &tables, &after);
    assert_eq!(err.kind(), ErrorKind::UnsupportedType, "{err}");
    assert!(err.to_string().contains("XA transaction"), "{err}");
    // One phase is an ordinary transaction.
    let (db, mut src, tables, after) = capturing("my_xa1", "CREATE TABLE t (id int PRIMARY KEY)")?;
    db.sql("XA START 'x2'; INSERT INTO t VALUES (2); XA END 'x2'; XA COMMIT 'x2' ONE PHASE")?;
    let got = changes_until(&mut src, &tables, &after, 1)?;
    assert_eq!(got[0].changes.len(), 1);
    Ok(())
}

#[test]
fn idle_polling_keeps_one_stream_and_opens_no_connections() -> R {
    let (db, mut src, tables, after) = capturing("my_idle", "CREATE TABLE t (id int PRIMARY KEY)")?;
    let readers = || {
        db.sql(&format!(
            "SELECT ID FROM information_schema.PROCESSLIST \
             WHERE COMMAND LIKE 'Binlog Dump%' AND DB = '{}'",
            db.name
        ))
    };
    let mut at = after;
    let started = Instant::now();
    let mut first = None;
    for i in 0..300 {
        for t in src.read_changes(&tables, at.clone(), 100)? {
            at = t.position;
        }
        if i == 10 {
            first = Some(readers()?);
        }
    }
    let per_call = started.elapsed() / 300;
    let first = first.ok_or("no reader seen")?;
    assert_eq!(first.lines().count(), 1, "one binlog reader: {first:?}");
    assert_eq!(readers()?, first, "the same reader connection all along");
    assert!(
        per_call < Duration::from_millis(50),
        "{per_call:?} per idle call"
    );
    inserted_next(&db, &mut src, &tables, &at, 1)
}
