//! Issue 13 §1 from the command line: PostgreSQL → DynamoDB (DynamoDB Local, started by the
//! testkit) under a concurrent writer, killed with SIGKILL at random moments and once at the
//! failpoint between a batch's items and its checkpoint, then drained. Every item is read
//! with the AWS SDK (not through cutover) and compared with PostgreSQL; `cutover verify`
//! reports equal, and then exactly the one item edited behind cutover's back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::{cutover, spawn_cutover, still_running, text};

/// DynamoDB Local takes any credentials; the SDK's standard chain reads these.
fn credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::env::set_var("AWS_ACCESS_KEY_ID", "cutovertest");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "cutovertest");
        std::env::set_var("AWS_REGION", "us-east-1");
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn client(rt: &tokio::runtime::Runtime, endpoint: &str) -> aws_sdk_dynamodb::Client {
    let conf = rt.block_on(
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(aws_smithy_http_client::Builder::new().build_http())
            .endpoint_url(endpoint)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "cutovertest",
                "cutovertest",
                None,
                None,
                "test",
            ))
            .load(),
    );
    aws_sdk_dynamodb::Client::new(&conf)
}

type Item = HashMap<String, AttributeValue>;

/// Every item of a table, read with the SDK.
fn scan(endpoint: &str, table: &str) -> Vec<Item> {
    let rt = runtime();
    let c = client(&rt, endpoint);
    rt.block_on(async {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = c
                .scan()
                .table_name(table)
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            out.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return out,
            }
        }
    })
}

fn n(a: Option<&AttributeValue>) -> String {
    match a {
        Some(AttributeValue::N(n)) => n.clone(),
        Some(AttributeValue::Null(_)) | None => "<null>".to_owned(),
        other => panic!("not a number: {other:?}"),
    }
}

fn s(a: Option<&AttributeValue>) -> String {
    match a {
        Some(AttributeValue::S(s)) => s.clone(),
        Some(AttributeValue::Null(_)) | None => "<null>".to_owned(),
        other => panic!("not a string: {other:?}"),
    }
}

fn hex(a: Option<&AttributeValue>) -> String {
    match a {
        Some(AttributeValue::B(b)) => b.as_ref().iter().map(|x| format!("{x:02x}")).collect(),
        Some(AttributeValue::Null(_)) | None => "<null>".to_owned(),
        other => panic!("not bytes: {other:?}"),
    }
}

fn writer(url: &str, stop: &AtomicBool) -> u64 {
    let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
    let mut rng = fastrand::Rng::with_seed(1301);
    let mut next_id = 100_000i64;
    let mut live: Vec<i64> = (1..=3_000).collect();
    let mut done = 0;
    while !stop.load(Ordering::Relaxed) {
        match rng.u8(0..10) {
            0..=2 => {
                next_id += 1;
                c.execute(
                    "INSERT INTO acct (id, v, note, amount) VALUES ($1, 0, 'new', 0.001)",
                    &[&next_id],
                )
                .unwrap();
                live.push(next_id);
            }
            3..=8 if !live.is_empty() => {
                let id = live[rng.usize(0..live.len())];
                // Two changes of one key in one transaction: their order must hold too.
                let mut t = c.transaction().unwrap();
                t.execute(
                    "UPDATE acct SET v = v + 1, note = repeat('u', v % 50), amount = amount + 0.0000000001 WHERE id = $1",
                    &[&id],
                )
                .unwrap();
                t.execute("UPDATE acct SET v = v + 10 WHERE id = $1", &[&id])
                    .unwrap();
                t.commit().unwrap();
            }
            _ if !live.is_empty() => {
                let id = live.swap_remove(rng.usize(0..live.len()));
                c.execute("DELETE FROM acct WHERE id = $1", &[&id]).unwrap();
            }
            _ => {}
        }
        done += 1;
        std::thread::sleep(Duration::from_micros(rng.u64(200..2_000)));
    }
    done
}

/// The source's rows as psql prints them: id → (v, note, data hex, amount, doc, flag).
fn source_rows(pg: &cutover_testkit::Postgres, db: &str) -> HashMap<i64, Vec<String>> {
    pg.psql(
        db,
        "SELECT id, v, coalesce(note, '<null>'), coalesce(encode(data, 'hex'), '<null>'),
                coalesce(trim_scale(amount)::text, '<null>'), coalesce(doc::text, '<null>'),
                coalesce(flag::text, '<null>')
         FROM acct",
    )
    .unwrap()
    .lines()
    .map(|l| {
        let f: Vec<String> = l.split('|').map(str::to_owned).collect();
        (f[0].parse().unwrap(), f[1..].to_vec())
    })
    .collect()
}

fn item_row(i: &Item) -> (i64, Vec<String>) {
    let id = n(i.get("id")).parse().unwrap();
    let flag = match i.get("flag") {
        Some(AttributeValue::Bool(b)) => b.to_string(),
        Some(AttributeValue::Null(_)) | None => "<null>".to_owned(),
        other => panic!("not a boolean: {other:?}"),
    };
    (
        id,
        vec![
            n(i.get("v")),
            s(i.get("note")),
            hex(i.get("data")),
            n(i.get("amount")),
            s(i.get("doc")),
            flag,
        ],
    )
}

#[test]
fn postgres_to_dynamodb_killed_under_writes_ends_equal_and_verify_finds_an_edit() {
    credentials();
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let ddb = cutover_testkit::DynamoLocal::shared().unwrap();
    let src = pg.fresh_database("ddb_src").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE acct (id bigint PRIMARY KEY, v int NOT NULL, note text, data bytea,
                            amount numeric(38,10), doc jsonb, flag boolean);
         INSERT INTO acct SELECT i, 0, 'n' || i, decode(md5(i::text), 'hex'),
                                 i * 1234567.0123456789, jsonb_build_object('i', i, 'a', 'x'),
                                 i % 3 = 0
                          FROM generate_series(1, 3000) i;
         ANALYZE acct;",
    )
    .unwrap();
    let s_url = pg.url(&src);
    let prefix = format!("t{}_", fastrand::u32(..));
    let t_url = format!("dynamodb://{prefix}?endpoint={}", ddb.endpoint());
    let name = prefix.trim_end_matches('_').to_owned();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let state = state.to_str().unwrap();
    let args = [
        "sync", "--source", &s_url, "--target", &t_url, "--name", &name, "--state", state,
        "--jobs", "2",
    ];
    let stop = AtomicBool::new(false);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut writes = 0;
    std::thread::scope(|sc| {
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let mut child = spawn_cutover(&args, log.path());
        super::wait_for(
            "the replication slot",
            Duration::from_secs(60),
            || still_running(&mut child, "sync", log.path()),
            |seen| {
                let n = super::slots(pg, &src);
                *seen = n.clone();
                (n.trim() == "1").then_some(())
            },
        );
        let writer = sc.spawn(|| writer(&s_url, &stop));
        super::crash_sync_repeatedly(
            &args,
            log.path(),
            child,
            1302,
            4,
            "dynamodb::writer::after-write=2*off->panic",
        );
        stop.store(true, Ordering::Relaxed);
        writes = writer.join().unwrap();
    });
    assert!(writes > 50, "the writer made {writes} changes");
    let mut last: Vec<&str> = args.to_vec();
    last.push("--stop-when-caught-up");
    let o = cutover(&last);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");

    // A few changes after the copy is surely complete: their items carry the change's
    // position (the LSN's sort key and the change's index; rows of the copy carry none).
    pg.psql(
        &src,
        "UPDATE acct SET v = v + 1000, note = 'late' WHERE id IN (SELECT id FROM acct ORDER BY id LIMIT 5)",
    )
    .unwrap();
    let o = cutover(&last);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");

    // Every item, read with the SDK, is the source's row; no item more, none missing.
    let table = format!("{prefix}acct");
    let items = scan(&ddb.endpoint(), &table);
    let got: HashMap<i64, Vec<String>> = items.iter().map(item_row).collect();
    let want = source_rows(pg, &src);
    assert_eq!(got.len(), items.len(), "an id twice");
    assert_eq!(got.len(), want.len(), "items vs source rows");
    let mut wrong = 0;
    for (id, w) in &want {
        let g = got.get(id);
        if g != Some(w) {
            wrong += 1;
            if wrong < 10 {
                eprintln!("id {id}: source {w:?}, DynamoDB {g:?}");
            }
        }
    }
    assert_eq!(wrong, 0, "items that differ from the source");
    let late: Vec<&Item> = items
        .iter()
        .filter(|i| i.get("note") == Some(&AttributeValue::S("late".into())))
        .collect();
    assert_eq!(late.len(), 5, "the late updates");
    for i in late {
        let p = s(i.get("_cutover_pos"));
        let (lsn, index) = p.split_once('.').unwrap_or_default();
        assert!(
            lsn.len() == 16 && index.len() == 12 && u64::from_str_radix(lsn, 16).is_ok(),
            "{p}"
        );
    }

    // verify compares by key and finds them equal.
    let o = cutover(&["verify", "--source", &s_url, "--target", &t_url]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");

    // An item edited behind cutover's back: exactly that key and column.
    let (&edited, _) = want.iter().min_by_key(|(id, _)| **id).unwrap();
    let rt = runtime();
    let c = client(&rt, &ddb.endpoint());
    rt.block_on(
        c.update_item()
            .table_name(&table)
            .key("id", AttributeValue::N(edited.to_string()))
            .update_expression("SET note = :n")
            .expression_attribute_values(":n", AttributeValue::S("edited".into()))
            .send(),
    )
    .unwrap();
    let o = cutover(&["verify", "--source", &s_url, "--target", &t_url]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("  ")).collect();
    assert_eq!(lines.len(), 1, "one difference: {out}");
    assert!(
        lines[0].contains(&format!("id={edited}")) && lines[0].contains("note:"),
        "{out}"
    );
    assert!(lines[0].contains("edited"), "{out}");

    // status reads the state store; cleanup removes it and the slot, and leaves the items.
    let o = cutover(&[
        "status", "--target", &t_url, "--name", &name, "--state", state, "--json",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("lsn:"), "the applied position: {out}");
    let o = cutover(&[
        "cleanup", "--source", &s_url, "--target", &t_url, "--name", &name, "--state", state,
    ]);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(super::slots(pg, &src), "0");
    assert_eq!(scan(&ddb.endpoint(), &table).len(), items.len());
}

#[test]
fn an_oversize_row_is_refused_by_name_or_compressed_and_arrives_intact() {
    credentials();
    let pg = cutover_testkit::Postgres::shared().unwrap();
    let ddb = cutover_testkit::DynamoLocal::shared().unwrap();
    // DynamoDB Local enforces the real limit: a 500 KB item is refused.
    let rt = runtime();
    let c = client(&rt, &ddb.endpoint());
    let probe = format!("p{}", fastrand::u32(..));
    rt.block_on(
        c.create_table()
            .table_name(&probe)
            .billing_mode(aws_sdk_dynamodb::types::BillingMode::PayPerRequest)
            .attribute_definitions(
                aws_sdk_dynamodb::types::AttributeDefinition::builder()
                    .attribute_name("id")
                    .attribute_type(aws_sdk_dynamodb::types::ScalarAttributeType::N)
                    .build()
                    .unwrap(),
            )
            .key_schema(
                aws_sdk_dynamodb::types::KeySchemaElement::builder()
                    .attribute_name("id")
                    .key_type(aws_sdk_dynamodb::types::KeyType::Hash)
                    .build()
                    .unwrap(),
            )
            .send(),
    )
    .unwrap();
    let refused = rt.block_on(
        c.put_item()
            .table_name(&probe)
            .item("id", AttributeValue::N("1".into()))
            .item("body", AttributeValue::S("x".repeat(500_000)))
            .send(),
    );
    assert!(refused.is_err(), "DynamoDB Local took a 500 KB item");

    let src = pg.fresh_database("ddb_big").unwrap();
    pg.psql(
        &src,
        "CREATE TABLE big (id int PRIMARY KEY, body text);
         INSERT INTO big VALUES (1, 'small'), (7, repeat('cutover ', 70000));",
    )
    .unwrap();
    let s_url = pg.url(&src);
    let dir = tempfile::tempdir().unwrap();
    for (option, ok) in [("", false), ("&oversize=compress", true)] {
        let prefix = format!("o{}_", fastrand::u32(..));
        let t_url = format!("dynamodb://{prefix}?endpoint={}{option}", ddb.endpoint());
        let state = dir.path().join(format!("{prefix}.db"));
        let state = state.to_str().unwrap();
        let run = |command: &str, more: &[&str]| {
            let common = [
                command, "--source", &s_url, "--target", &t_url, "--name", &prefix, "--state",
                state,
            ];
            cutover(&[common.as_slice(), more].concat())
        };
        let o = run("sync", &["--stop-when-caught-up"]);
        let (out, err) = text(&o);
        let cleanup = || {
            let o = run("cleanup", &[]);
            assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
        };
        if !ok {
            assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
            assert!(
                err.contains("big") && err.contains("(7)") && err.contains("the item is 5600"),
                "table, key and size: {err}"
            );
            cleanup();
            continue;
        }
        assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
        let items = scan(&ddb.endpoint(), &format!("{prefix}big"));
        let big = items
            .iter()
            .find(|i| i.get("id") == Some(&AttributeValue::N("7".into())))
            .unwrap();
        assert!(
            matches!(big.get("body"), Some(AttributeValue::B(_))),
            "compressed"
        );
        assert!(big.contains_key("_cutover_z"), "marked compressed");
        // Reads through cutover see the original value: verify finds both rows equal.
        let o = cutover(&["verify", "--source", &s_url, "--target", &t_url]);
        let (out, err) = text(&o);
        assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
        cleanup();
    }
    assert_eq!(super::slots(pg, &src), "0");
}
