//! The fault campaign of issue 9 (run by hand; too long for every CI run):
//!
//! ```sh
//! CUTOVER_CAMPAIGN_TRIALS=10 cargo test -p cutover-cli --features failpoints --test it \
//!     -- --ignored campaign --nocapture
//! ```
//!
//! Two throwaway servers (source and target, so that each can be restarted alone), a `cutover
//! sync` process following, and an application writing to the source, every committed write
//! logged. Each trial injects one fault, waits until sync has applied new writes again (by
//! itself, or after the same command is run again where the fault is the kill of cutover
//! itself), then stops the writer, lets sync catch up, and compares the source with the target
//! through psql, not cutover's reader: every committed write exactly once, tables equal. The
//! table it prints (and writes to bench/results/faults-<date>.md) is the closing note's.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_testkit::Postgres;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.env_remove("CUTOVER_SOURCE")
        .env_remove("CUTOVER_TARGET")
        .env_remove("FAILPOINTS");
    c
}

struct Trial {
    fault: &'static str,
    recovered_by_itself: bool,
    lost: usize,
    duplicated: usize,
    recover_ms: u128,
}

/// The application: small transactions on the source, each logged once committed (and those
/// whose outcome it cannot know, when the connection is cut during COMMIT).
fn writer(
    url: String,
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<i64>>>,
    uncertain: Arc<Mutex<Vec<i64>>>,
    first: i64,
) -> std::thread::JoinHandle<i64> {
    std::thread::spawn(move || {
        let mut n = first;
        let mut conn: Option<postgres::Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match postgres::Client::connect(&url, postgres::NoTls) {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                },
            };
            n += 1;
            let sql = format!(
                "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = {};
                 INSERT INTO ledger (account, amount) VALUES ({}, {n}); COMMIT",
                1 + n % 1000,
                1 + n % 1000
            );
            match c.batch_execute(&sql) {
                Ok(()) => committed.lock().unwrap().push(n),
                Err(e) => {
                    if crate::writes::outcome_unknown(&e) {
                        uncertain.lock().unwrap().push(n);
                    }
                    conn = None;
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        n
    })
}

fn sync_process(s: &str, t: &str, log: &std::path::Path) -> Child {
    bin()
        .args(["sync", "--source", s, "--target", t])
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        )
        .spawn()
        .unwrap()
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

fn stop_sync(mut child: Child) {
    signal(&child, libc::SIGINT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The newest ledger amount on the target (what sync has applied so far).
fn applied(target: &Postgres, db: &str) -> i64 {
    target
        .psql(db, "SELECT coalesce(max(amount), 0) FROM ledger")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Waits until the target has a write committed after `since` on the source; the time it took.
fn wait_applied(
    target: &Postgres,
    db: &str,
    committed: &Mutex<Vec<i64>>,
    since: Instant,
    within: Duration,
) -> Option<u128> {
    let mark = committed.lock().unwrap().last().copied().unwrap_or(0);
    while since.elapsed() < within {
        if applied(target, db) > mark {
            return Some(since.elapsed().as_millis());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    None
}

#[test]
#[ignore = "the fault campaign takes minutes; run it by hand (see the module docs)"]
fn campaign() {
    let trials: usize = std::env::var("CUTOVER_CAMPAIGN_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let source = Postgres::dedicated().unwrap();
    let target = Postgres::dedicated().unwrap();
    let src = source.fresh_database("campaign").unwrap();
    let dst = target.fresh_database("campaign").unwrap();
    source
        .psql(
            &src,
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, pad text);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, account bigint NOT NULL, amount bigint NOT NULL);
             INSERT INTO accounts SELECT i, 0, repeat('p', 500) FROM generate_series(1, 1000) i;
             INSERT INTO ledger (account, amount) SELECT 1 + i % 1000, 0 FROM generate_series(1, 200000) i;
             ANALYZE;",
        )
        .unwrap();
    let (s, t) = (source.url(&src), target.url(&dst));
    let log = std::env::temp_dir().join(format!("cutover-campaign-{}.log", std::process::id()));
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(Mutex::new(Vec::new()));
    let uncertain = Arc::new(Mutex::new(Vec::new()));
    let mut w = writer(
        s.clone(),
        Arc::clone(&stop),
        Arc::clone(&committed),
        Arc::clone(&uncertain),
        1_000_000,
    );
    let mut sync = sync_process(&s, &t, &log);
    let mut results: Vec<Trial> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(9);
    let faults: Vec<&'static str> = [
        "kill -9 of sync (during copy or replication)",
        "terminate cutover's sessions on the target",
        "terminate cutover's sessions on the source (walsender too)",
        "restart the target (pg_ctl restart -m fast)",
        "restart the source (pg_ctl restart -m fast)",
        "stop the target for 3 s",
    ]
    .into_iter()
    .flat_map(|f| std::iter::repeat_n(f, trials))
    .collect();
    for fault in faults {
        std::thread::sleep(Duration::from_millis(rng.u64(200..1500)));
        let at = Instant::now();
        let mut by_itself = true;
        match fault {
            f if f.starts_with("kill -9") => {
                let _ = sync.kill();
                let _ = sync.wait();
                by_itself = false;
                sync = sync_process(&s, &t, &log);
            }
            f if f.contains("on the target") => {
                let _ = target.psql(&dst, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'cutover%' AND pid <> pg_backend_pid()");
            }
            f if f.contains("on the source") => {
                let _ = source.psql(&src, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name LIKE 'cutover%' AND pid <> pg_backend_pid()");
            }
            f if f.starts_with("restart the target") => target.restart("fast").unwrap(),
            f if f.starts_with("restart the source") => source.restart("fast").unwrap(),
            _ => {
                target.stop().unwrap();
                std::thread::sleep(Duration::from_secs(3));
                target.start_again().unwrap();
            }
        }
        let took = wait_applied(&target, &dst, &committed, at, Duration::from_secs(120));
        let alive = sync.try_wait().unwrap().is_none();
        if took.is_none() || !alive {
            by_itself = false;
            // Needed a rerun: the same command again.
            if !alive {
                sync = sync_process(&s, &t, &log);
            }
        }
        let took = took
            .or_else(|| wait_applied(&target, &dst, &committed, at, Duration::from_secs(180)))
            .unwrap_or(u128::MAX);
        results.push(Trial {
            fault,
            recovered_by_itself: by_itself,
            lost: 0,
            duplicated: 0,
            recover_ms: took,
        });
        // Every few trials, and at the end: stop writing, catch up, compare.
        if results.len().is_multiple_of(trials) {
            stop.store(true, Ordering::Relaxed);
            let last = w.join().unwrap();
            stop_sync(sync);
            let out = bin()
                .args([
                    "sync",
                    "--stop-when-caught-up",
                    "--source",
                    &s,
                    "--target",
                    &t,
                ])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let (lost, duplicated) = crate::writes::compare(
                &committed.lock().unwrap(),
                &uncertain.lock().unwrap(),
                &target
                    .psql(&dst, "SELECT amount FROM ledger WHERE amount > 0")
                    .unwrap()
                    .lines()
                    .map(|l| l.parse().unwrap())
                    .collect::<Vec<i64>>(),
            );
            let (lost, duplicated) = (lost.len(), duplicated.len());
            for r in results.iter_mut().rev().take(trials) {
                r.lost = lost;
                r.duplicated = duplicated;
            }
            let sums = |pg: &Postgres, db: &str| {
                pg.psql(db, "SELECT sum(balance), count(*) FROM accounts")
                    .unwrap()
            };
            assert_eq!(sums(&source, &src), sums(&target, &dst), "{fault}");
            assert_eq!(
                (lost, duplicated),
                (0, 0),
                "{fault}: lost or duplicated writes"
            );
            stop.store(false, Ordering::Relaxed);
            w = writer(
                s.clone(),
                Arc::clone(&stop),
                Arc::clone(&committed),
                Arc::clone(&uncertain),
                last + 1,
            );
            sync = sync_process(&s, &t, &log);
        }
    }
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    stop_sync(sync);
    let mut table = String::from(
        "| fault | trials | recovered by itself | needed a rerun | lost | duplicated | time to recover (ms): best / median / worst |\n|---|---|---|---|---|---|---|\n",
    );
    let mut kinds: Vec<&str> = results.iter().map(|r| r.fault).collect();
    kinds.dedup();
    for k in kinds {
        let rs: Vec<&Trial> = results.iter().filter(|r| r.fault == k).collect();
        let mut ms: Vec<u128> = rs.iter().map(|r| r.recover_ms).collect();
        ms.sort_unstable();
        table.push_str(&format!(
            "| {k} | {} | {} | {} | {} | {} | {} / {} / {} |\n",
            rs.len(),
            rs.iter().filter(|r| r.recovered_by_itself).count(),
            rs.iter().filter(|r| !r.recovered_by_itself).count(),
            rs.iter().map(|r| r.lost).max().unwrap_or(0),
            rs.iter().map(|r| r.duplicated).max().unwrap_or(0),
            ms[0],
            ms[ms.len() / 2],
            ms[ms.len() - 1]
        ));
    }
    eprintln!("{table}");
    eprintln!("sync's log: {}", log.display());
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../bench/results")
        .join(format!(
            "faults-{}.md",
            String::from_utf8_lossy(
                &Command::new("date")
                    .arg("-u")
                    .arg("+%Y%m%dT%H%M%S")
                    .output()
                    .map(|o| o.stdout)
                    .unwrap_or_default()
            )
            .trim()
        ));
    let _ = std::fs::write(out, table);
}
