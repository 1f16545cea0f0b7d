//! MariaDB → MariaDB through the real pipeline (chunks, the binlog stream, the applier's
//! watermark rule, this engine's target) under a concurrent writer, compared with the `mariadb`
//! client on both sides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cutover_connector::{OpenOptions, TargetFactory};
use cutover_mysql::{Client, MySqlConnect, MySqlEndpoint};
use cutover_pipeline::{run, Control, Progress, SyncOptions};
use cutover_testkit::MariaDb;

type R<T = ()> = Result<T, Box<dyn std::error::Error>>;

fn options() -> SyncOptions {
    SyncOptions {
        jobs: 2,
        chunk_bytes: 16 << 10,
        min_chunk_rows: 100,
        max_chunk_rows: 400,
        batch_changes: 200,
        stop_when_caught_up: true,
        retry_budget: Duration::from_secs(10),
        ..SyncOptions::default()
    }
}

#[test]
fn mariadb_to_mariadb_under_a_writer_with_the_stream_cut_ends_equal() -> R {
    let server = MariaDb::shared()?;
    let src = server.fresh_database("my_sync_src")?;
    let dst = server.fresh_database("my_sync_dst")?;
    server.sql(
        &src,
        "SET NAMES utf8mb4;
         CREATE TABLE items (id int PRIMARY KEY, v int NOT NULL, note varchar(40),
           amount decimal(12,2), at datetime(6), flag tinyint(1), big bigint unsigned)
           DEFAULT CHARSET utf8mb4;
         INSERT INTO items SELECT seq, 0, CONCAT('n\u{e9}', seq), seq / 7,
           '2024-01-01' + INTERVAL seq SECOND, seq % 2, 18446744073709551615 - seq
           FROM seq_1_to_3000",
    )?;
    let opts = OpenOptions::default();
    let source = MySqlConnect::new(MySqlEndpoint::parse(&server.url(&src), &opts)?);
    let mut target = MySqlConnect::new(MySqlEndpoint::parse(&server.url(&dst), &opts)?);
    target.pair(&source)?;

    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let ep = MySqlEndpoint::parse(&server.url(&src), &opts)?;
        let db = src.clone();
        std::thread::spawn(move || -> Result<u64, String> {
            let mut c = Client::connect(&ep, Some(&db)).map_err(|e| e.to_string())?;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 3000 {
                let k = fastrand::i64(1..3500);
                let statements = match fastrand::u8(0..4) {
                    0 => vec![format!("DELETE FROM items WHERE id = {k}")],
                    1 => vec![format!(
                        "INSERT INTO items VALUES ({k}, 1, 'new', 1.25, '2025-06-30 12:00:00.5', 1, 7) \
                         ON DUPLICATE KEY UPDATE v = v + 1, note = 'upserted'"
                    )],
                    2 => vec![
                        "BEGIN".to_owned(),
                        format!("UPDATE items SET v = v + 1, amount = amount + 0.01 WHERE id = {k}"),
                        format!("UPDATE items SET id = {} WHERE id = {k}", k + 5000),
                        "COMMIT".to_owned(),
                    ],
                    _ => vec![format!(
                        "UPDATE items SET v = v + 10, flag = 1 - flag WHERE id BETWEEN {k} AND {}",
                        k + 30
                    )],
                };
                for s in statements {
                    // A key moved onto an existing one: skip that write.
                    if let Err(e) = c.query_drop(&s) {
                        if e.kind() != cutover_connector::ErrorKind::Conflict {
                            return Err(e.to_string());
                        }
                        c.query_drop("ROLLBACK").map_err(|e| e.to_string())?;
                    }
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(n)
        })
    };
    // The binlog stream's connection is cut now and then while sync runs: opened again from
    // where it stood, the same changes come again (at-least-once), the target stays exact.
    let killer = {
        let stop = Arc::clone(&stop);
        let src = src.clone();
        std::thread::spawn(move || -> Result<u32, String> {
            let mut kills = 0;
            while !stop.load(Ordering::Relaxed) && kills < 4 {
                std::thread::sleep(Duration::from_millis(400));
                let ids = server
                    .sql(
                        &src,
                        &format!(
                            "SELECT ID FROM information_schema.PROCESSLIST \
                             WHERE COMMAND LIKE 'Binlog Dump%' AND DB = '{src}'"
                        ),
                    )
                    .map_err(|e| e.to_string())?;
                for id in ids.lines().filter(|l| !l.is_empty()) {
                    // Gone already is fine.
                    if server.sql(&src, &format!("KILL CONNECTION {id}")).is_ok() {
                        kills += 1;
                    }
                }
            }
            Ok(kills)
        })
    };
    let sync = |what: &str| -> Result<(), String> {
        run(
            &source,
            &target,
            &options(),
            &Control::default(),
            &Progress::default(),
        )
        .map(|_| ())
        .map_err(|e| format!("{what}: {e}"))
    };
    sync("sync")?;
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().map_err(|_| "the writer panicked")??;
    let kills = killer.join().map_err(|_| "the killer panicked")??;
    assert!(writes > 100, "only {writes} writes");
    eprintln!("{writes} write transactions, the binlog stream cut {kills} times");
    // Resumed from the target's checkpoint: the writes after the first run stopped.
    sync("resumed sync")?;
    let q = "SET NAMES utf8mb4; SELECT id, v, note, amount, at, flag, big FROM items ORDER BY id";
    let (a, b) = (server.sql(&src, q)?, server.sql(&dst, q)?);
    assert!(a.lines().count() > 2000);
    if a != b {
        let diff: Vec<_> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(5)
            .collect();
        panic!(
            "source {} rows, target {} rows; first differences: {diff:?}",
            a.lines().count(),
            b.lines().count()
        );
    }
    Ok(())
}
