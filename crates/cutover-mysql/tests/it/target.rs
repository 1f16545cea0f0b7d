//! The MySQL target against a real MariaDB (the testkit's throwaway server): tables from the
//! neutral schema, batches with their checkpoint, replays, changes, refusals, the state store.
//! Every check reads the target through the `mariadb` client, not through cutover.

use cutover_connector::{ApplyOp, ErrorKind, KeyRange, OpenOptions, Sink, TargetFactory};
use cutover_model::{
    Change, Column, ColumnType, Position, TableName, TableSchema, Timestamp, Value,
};
use cutover_mysql::{MySqlConnect, MySqlEndpoint};
use cutover_testkit::MariaDb;

fn col(name: &str, ty: ColumnType, declared: &str, nullable: bool) -> Column {
    Column {
        name: name.into(),
        ty,
        declared_type: declared.into(),
        nullable,
        default: None,
    }
}

/// A PostgreSQL-shaped table: text key (case matters), numeric, timestamptz, jsonb, bytea,
/// uuid, boolean, and a numeric with a declared scale.
fn notes() -> TableSchema {
    TableSchema {
        name: TableName::new(Some("public"), "Notes"),
        columns: vec![
            col("id", ColumnType::Text { max_len: None }, "text", false),
            col(
                "amount",
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                "numeric",
                true,
            ),
            col(
                "at",
                ColumnType::Timestamp { zoned: true },
                "timestamptz",
                true,
            ),
            col("doc", ColumnType::Json { binary: true }, "jsonb", true),
            col("blob", ColumnType::Bytes { max_len: None }, "bytea", true),
            col("u", ColumnType::Uuid, "uuid", true),
            col("ok", ColumnType::Bool, "boolean", true),
            col(
                "price",
                ColumnType::Decimal {
                    precision: Some(6),
                    scale: Some(2),
                },
                "numeric(6,2)",
                true,
            ),
        ],
        primary_key: vec![0],
        indexes: vec![cutover_model::Index {
            name: "notes_at".into(),
            columns: vec!["at".into()],
            unique: false,
            definition: None,
        }],
    }
}

fn row(id: &str, amount: &str, price: &str) -> Vec<Value> {
    vec![
        Value::Text(id.into()),
        Value::Decimal(amount.parse().unwrap()),
        Value::TimestampTz(Timestamp::parse("2026-01-01 06:30:00.5", true).unwrap()),
        Value::Json(r#"{"b": 1, "a": [1, "x"]}"#.into()),
        Value::Bytes(vec![0, 0xff, 0x10]),
        Value::Uuid([0xab; 16]),
        Value::Bool(true),
        Value::Decimal(price.parse().unwrap()),
    ]
}

fn target(server: &MariaDb, db: &str) -> MySqlConnect {
    MySqlConnect::new(MySqlEndpoint::parse(&server.url(db), &OpenOptions::default()).unwrap())
}

fn upsert(t: &TableSchema, r: Vec<Value>) -> ApplyOp {
    ApplyOp::Upsert {
        table: t.name.clone(),
        row: r,
    }
}

fn pos(n: u64) -> Position {
    Position::tagged("seq", n)
}

#[test]
fn batches_land_exactly_with_their_checkpoint_and_replay_as_once() {
    let server = MariaDb::shared().unwrap();
    let db = server.fresh_database("target_batches").unwrap();
    let t = notes();
    let factory = target(server, &db);
    let mut sink = factory.sink().unwrap();
    sink.prepare(std::slice::from_ref(&t)).unwrap();
    let batch = vec![
        upsert(&t, row("a", "1.50", "12.30")),
        upsert(&t, row("A", "-0.000000000000000000000000000001", "0")),
        upsert(
            &t,
            row("a ", "12345678901234567890123456789012345", "9999.99"),
        ),
    ];
    sink.apply(&batch, pos(1)).unwrap();
    sink.apply(&batch, pos(1)).unwrap();
    let rows = server
        .sql(
            &db,
            "SELECT CONCAT('[', id, ']'), amount + 0, DATE_FORMAT(at, '%Y-%m-%d %H:%i:%s.%f'), \
             HEX(`blob`), u, ok, price FROM Notes ORDER BY id",
        )
        .unwrap();
    assert_eq!(
        rows,
        "[A]\t-0.000000000000000000000000000001\t2026-01-01 06:30:00.500000\t00FF10\t\
         abababab-abab-abab-abab-abababababab\t1\t0.00\n\
         [a]\t1.500000000000000000000000000000\t2026-01-01 06:30:00.500000\t00FF10\t\
         abababab-abab-abab-abab-abababababab\t1\t12.30\n\
         [a ]\t12345678901234567890123456789012345.000000000000000000000000000000\t\
         2026-01-01 06:30:00.500000\t00FF10\tabababab-abab-abab-abab-abababababab\t1\t9999.99",
        "three keys that differ only in case and a trailing space stay three rows, values exact"
    );
    assert_eq!(sink.checkpoint().unwrap(), Some(pos(1)));

    // Changes: a moved key, an update, a delete, in order, with the next checkpoint.
    let changes = vec![
        ApplyOp::Change(Change::Update {
            table: t.name.clone(),
            old_key: vec![Value::Text("a".into())],
            before: None,
            row: row("b", "2", "1"),
            unchanged: vec![],
        }),
        ApplyOp::Change(Change::Delete {
            table: t.name.clone(),
            old_key: vec![Value::Text("A".into())],
            before: None,
        }),
    ];
    sink.apply(&changes, pos(2)).unwrap();
    sink.apply(&changes, pos(2)).unwrap();
    assert_eq!(
        server
            .sql(&db, "SELECT CONCAT('[', id, ']') FROM Notes ORDER BY id")
            .unwrap(),
        "[a ]\n[b]"
    );
    sink.finish_tables(std::slice::from_ref(&t)).unwrap();
    assert_eq!(
        server
            .sql(
                &db,
                "SELECT INDEX_NAME FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = \
                 DATABASE() AND TABLE_NAME = 'Notes' AND INDEX_NAME <> 'PRIMARY'"
            )
            .unwrap(),
        "notes_at"
    );

    // The state store reads what the sink wrote, and a new sink sees the same checkpoint.
    let mut state = factory.state().unwrap().unwrap();
    assert_eq!(state.checkpoint().unwrap(), Some(pos(2)));
    assert_eq!(state.phase().unwrap().as_deref(), Some("replicating"));
    assert_eq!(factory.sink().unwrap().checkpoint().unwrap(), Some(pos(2)));
}

#[test]
fn a_value_the_column_cannot_hold_fails_the_whole_batch_naming_table_key_and_column() {
    let server = MariaDb::shared().unwrap();
    let db = server.fresh_database("target_lossy").unwrap();
    let t = notes();
    let mut sink = target(server, &db).sink().unwrap();
    sink.prepare(std::slice::from_ref(&t)).unwrap();
    sink.apply(&[upsert(&t, row("keep", "1", "1"))], pos(1))
        .unwrap();
    let batch = vec![
        upsert(&t, row("x", "1", "1")),
        upsert(&t, row("y", "1", "1.005")),
    ];
    let e = sink.apply(&batch, pos(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LossyConversion);
    let text = e.to_string();
    assert!(
        text.contains("public.Notes") && text.contains("'y'") && text.contains("price"),
        "{text}"
    );
    let mut late = row("z", "1", "1");
    late[2] = Value::TimestampTz(Timestamp::parse("2040-01-01 00:00:00", true).unwrap());
    let text = sink
        .apply(&[upsert(&t, late)], pos(2))
        .unwrap_err()
        .to_string();
    assert!(text.contains("'z'") && text.contains("2038"), "{text}");
    assert_eq!(
        server.sql(&db, "SELECT id FROM Notes").unwrap(),
        "keep",
        "nothing of a failed batch is left"
    );
    assert_eq!(sink.checkpoint().unwrap(), Some(pos(1)));

    let mut bad = notes();
    bad.name = TableName::bare("spans");
    bad.columns
        .push(col("span", ColumnType::Interval, "interval", true));
    let e = target(server, &db)
        .sink()
        .unwrap()
        .check(&[bad])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::LossyConversion);
    assert!(e.to_string().contains("spans column span"), "{e}");
}

#[test]
fn a_table_with_rows_cutover_did_not_write_is_refused_and_the_chunk_plan_is_kept() {
    let server = MariaDb::shared().unwrap();
    let db = server.fresh_database("target_refuse").unwrap();
    server
        .sql(
            &db,
            "CREATE TABLE Notes (id varchar(10) PRIMARY KEY); INSERT INTO Notes VALUES ('x')",
        )
        .unwrap();
    let t = notes();
    let factory = target(server, &db);
    let e = factory
        .sink()
        .unwrap()
        .prepare(std::slice::from_ref(&t))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("--truncate"), "{e}");

    let db = server.fresh_database("target_plan").unwrap();
    let factory = target(server, &db);
    let mut sink = factory.sink().unwrap();
    sink.prepare(std::slice::from_ref(&t)).unwrap();
    let ranges = vec![
        KeyRange {
            start: None,
            end: Some(vec![Value::Text("m".into())]),
        },
        KeyRange {
            start: Some(vec![Value::Text("m".into())]),
            end: None,
        },
    ];
    let plan = sink.chunk_plan(&t, &mut || Ok(ranges.clone())).unwrap();
    assert_eq!(plan.len(), 2);
    let again = factory
        .sink()
        .unwrap()
        .chunk_plan(&t, &mut || panic!("a stored plan is not planned again"))
        .unwrap();
    assert_eq!(again, plan);
    let stored = factory.state().unwrap().unwrap().chunks().unwrap();
    assert_eq!(stored[1].range.start, Some(vec![Value::Text("m".into())]));
}

#[test]
fn a_batch_of_large_rows_is_split_under_the_servers_packet_limit() {
    let server = MariaDb::shared().unwrap();
    let db = server.fresh_database("target_large").unwrap();
    let t = TableSchema {
        name: TableName::bare("files"),
        columns: vec![
            col(
                "id",
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                "bigint",
                false,
            ),
            col("body", ColumnType::Bytes { max_len: None }, "bytea", false),
        ],
        primary_key: vec![0],
        indexes: vec![],
    };
    let mut sink = target(server, &db).sink().unwrap();
    sink.prepare(std::slice::from_ref(&t)).unwrap();
    // 100 rows of 1 MiB: 100 MiB in one batch, over the server's 64 MiB max_allowed_packet
    // if sent as one statement.
    let batch: Vec<ApplyOp> = (0..100)
        .map(|i| {
            upsert(
                &t,
                vec![Value::Int(i), Value::Bytes(vec![i as u8; 1 << 20])],
            )
        })
        .collect();
    sink.apply(&batch, pos(1)).unwrap();
    assert_eq!(
        server
            .sql(
                &db,
                "SELECT COUNT(*), SUM(LENGTH(body)), SUM(ASCII(SUBSTR(body, 1000, 1))) FROM files"
            )
            .unwrap(),
        format!("100\t{}\t{}", 100 << 20, (0..100).sum::<i64>())
    );
}
