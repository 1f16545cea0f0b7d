//! The writer against DynamoDB Local (started by cutover-testkit): a replayed or delayed
//! change never overwrites a newer one, deletes are conditioned the same way, changes of one
//! transaction keep their order, and the copy's rows all arrive.

use cutover_connector::{ApplyOp, Counter, RangeChecksum, Writer};
use cutover_dynamodb::{DynamoEndpoint, DynamoReader, DynamoWriter};
use cutover_model::{Change, Column, ColumnType, Position, TableName, TableSchema, Value};

static SEQ: Counter = Counter { kind: "seq" };

fn schema() -> TableSchema {
    let col = |n: &str| Column {
        name: n.into(),
        ty: ColumnType::Int {
            bits: 64,
            unsigned: false,
        },
        declared_type: "bigint".into(),
        nullable: false,
        default: None,
    };
    TableSchema {
        name: TableName {
            schema: Some("public".into()),
            name: "acct".into(),
        },
        columns: vec![col("id"), col("v")],
        primary_key: vec![0],
        indexes: vec![],
    }
}

fn origin(n: u64, index: u32) -> ApplyOp {
    ApplyOp::Origin {
        position: SEQ.position(n),
        index,
        committed_at: None,
        tag: None,
    }
}

fn insert(id: i64, v: i64) -> ApplyOp {
    ApplyOp::Change(Change::Insert {
        table: schema().name,
        row: vec![Value::Int(id), Value::Int(v)],
    })
}

fn update(id: i64, v: i64) -> ApplyOp {
    ApplyOp::Change(Change::Update {
        table: schema().name,
        old_key: vec![Value::Int(id)],
        before: None,
        row: vec![Value::Int(id), Value::Int(v)],
        unchanged: vec![],
    })
}

fn delete(id: i64) -> ApplyOp {
    ApplyOp::Change(Change::Delete {
        table: schema().name,
        old_key: vec![Value::Int(id)],
        before: None,
    })
}

#[test]
fn replayed_changes_never_overwrite_newer_ones() {
    let ddb = cutover_testkit::DynamoLocal::shared().unwrap();
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" | "AWS_SECRET_ACCESS_KEY" => Some("cutovertest".to_owned()),
        _ => None,
    };
    let url = format!(
        "dynamodb://w{}_?endpoint={}&region=us-east-1",
        fastrand::u32(..),
        ddb.endpoint()
    );
    let endpoint = DynamoEndpoint::parse(&url, &env).unwrap();
    let mut w = DynamoWriter::connect(&endpoint).unwrap();
    w.set_order(&SEQ);
    let t = schema();
    w.prepare(std::slice::from_ref(&t)).unwrap();
    // Idempotent: the table exists now.
    w.prepare(std::slice::from_ref(&t)).unwrap();
    let mut reader = DynamoReader::open(&endpoint).unwrap();
    let mut v = |id: i64| -> Option<i64> {
        let rows = reader.exact_rows(&t, &[vec![Value::Int(id)]]).unwrap();
        rows.first().map(|r| match r[1] {
            Value::Int(v) => v,
            ref other => panic!("{other:?}"),
        })
    };
    let upto: Position = SEQ.position(1_000);
    let mut write = |ops: Vec<ApplyOp>| w.write(&ops, &upto).unwrap();

    write(vec![origin(20, 0), insert(1, 20)]);
    assert_eq!(v(1), Some(20));
    // An older insert, replayed: skipped.
    write(vec![origin(10, 0), insert(1, 10)]);
    assert_eq!(v(1), Some(20));
    // An older delete: skipped too.
    write(vec![origin(15, 0), delete(1)]);
    assert_eq!(v(1), Some(20));
    // Newer ones apply.
    write(vec![origin(30, 0), update(1, 30)]);
    assert_eq!(v(1), Some(30));
    write(vec![origin(40, 0), delete(1)]);
    assert_eq!(v(1), None);

    // Two changes of one key in one transaction: in order, and a replay of the first is
    // older than the second.
    write(vec![
        origin(50, 0),
        insert(2, 1),
        origin(50, 1),
        update(2, 2),
    ]);
    assert_eq!(v(2), Some(2));
    // The replay comes from a new process (a new writer), as after a crash.
    let mut again = DynamoWriter::connect(&endpoint).unwrap();
    again.set_order(&SEQ);
    again.prepare(std::slice::from_ref(&t)).unwrap();
    again.write(&[origin(50, 0), insert(2, 1)], &upto).unwrap();
    assert_eq!(v(2), Some(2));
    // Positions past 9 order as numbers, not as text ("100" > "99").
    write(vec![origin(99, 0), update(2, 99)]);
    write(vec![origin(100, 0), update(2, 100)]);
    write(vec![origin(99, 0), update(2, 99)]);
    assert_eq!(v(2), Some(100));

    // The copy's rows: 60 upserts (three BatchWriteItem requests) all arrive, and a change
    // after them in the same batch wins.
    let mut ops: Vec<ApplyOp> = (100..160)
        .map(|id| ApplyOp::Upsert {
            table: t.name.clone(),
            row: vec![Value::Int(id), Value::Int(id * 2)],
        })
        .collect();
    ops.push(origin(200, 0));
    ops.push(update(100, -1));
    write(ops);
    assert_eq!(v(100), Some(-1));
    assert_eq!(v(159), Some(318));
    assert_eq!(
        reader
            .canonical_rows(&t, &cutover_connector::KeyRange::all())
            .unwrap()
            .len(),
        61
    );
    // Skipped as older: the insert at 10, the delete at 15, the update at 99 replayed; and
    // the new process's replay at 50.
    assert_eq!(w.skipped.load(std::sync::atomic::Ordering::Relaxed), 3);
    assert_eq!(again.skipped.load(std::sync::atomic::Ordering::Relaxed), 1);
}
