//! Issue 9, finding 3: `kill -9` of `switch` at every step, with an application writing and a
//! `cutover sync` running. Named failpoints (`FAILPOINTS=switch::…=panic`, the `failpoints`
//! feature the test command builds with) end the process there as a kill would. Afterwards,
//! without anyone rerunning the switch, exactly one side takes writes and every write the
//! application committed is on both sides exactly once.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_testkit::{KillOnDrop, Postgres};

/// The crash points, and whether the switch is past its point of no return there.
const POINTS: &[(&str, bool)] = &[
    ("switch::after-handover", false),
    ("switch::after-way-back", false),
    ("switch::after-fence", false),
    ("switch::before-flip", false),
    ("switch::after-flip", true),
    ("switch::after-open", true),
];

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cutover"));
    c.env_remove("CUTOVER_SOURCE")
        .env_remove("CUTOVER_TARGET")
        .env_remove("FAILPOINTS");
    cutover_testkit::end_with_test(&mut c);
    c
}

fn writable(pg: &Postgres, db: &str, n: i64) -> bool {
    pg.psql(
        db,
        &format!(
            "INSERT INTO ledger (account, amount) VALUES (0, {})",
            5_000_000 + n
        ),
    )
    .is_ok()
}

/// An application: writes to whichever database takes its writes (the one it was pointed at,
/// else the other); every committed write is recorded by its amount, and every write whose
/// outcome it cannot know (the connection was cut while it committed) as uncertain.
fn application(
    urls: [String; 2],
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<i64>>>,
    uncertain: Arc<Mutex<Vec<i64>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut at = 0;
        let mut n = 0i64;
        let mut conn: Option<postgres::Client> = None;
        while !stop.load(Ordering::Relaxed) {
            let c = match conn.as_mut() {
                Some(c) => c,
                None => match postgres::Client::connect(&urls[at], postgres::NoTls) {
                    Ok(c) => conn.insert(c),
                    Err(_) => {
                        at = 1 - at;
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                },
            };
            n += 1;
            let sql = format!(
                "BEGIN; UPDATE accounts SET balance = balance + 1 WHERE id = {};
                 INSERT INTO ledger (account, amount) VALUES ({}, {}); COMMIT",
                1 + n % 500,
                1 + n % 500,
                1_000_000 + n
            );
            match c.batch_execute(&sql) {
                Ok(()) => committed.lock().unwrap().push(1_000_000 + n),
                Err(e) => {
                    if crate::writes::outcome_unknown(&e) {
                        uncertain.lock().unwrap().push(1_000_000 + n);
                    }
                    // Refused (fenced) or cut off: try the other database.
                    conn = None;
                    at = 1 - at;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    })
}

/// `cutover sync` in the background; killed when dropped (also when the test panics).
fn background_sync(s: &str, t: &str, log: &std::path::Path) -> KillOnDrop {
    KillOnDrop::spawn(
        bin()
            .args(["sync", "--source", s, "--target", t])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap()),
    )
    .unwrap()
}

/// Whether a WAL sender streams from the migration's slot on `src` (a sync is following).
fn slot_active(pg: &Postgres, src: &str) -> bool {
    pg.psql(
        src,
        "SELECT count(*) FROM pg_replication_slots WHERE database = current_database() AND active",
    )
    .unwrap()
        != "0"
}

/// Polls `ready` every 20 ms for at most `limit`; panics naming `what` (and `log`'s text).
fn wait_until(what: &str, limit: Duration, log: &std::path::Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "no {what} within {limit:?}; sync said:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn interrupt(mut child: KillOnDrop) {
    // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "sync did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_switch_killed_at_any_step_is_finished_or_undone_by_the_running_sync_and_loses_nothing() {
    let pg = Postgres::shared().unwrap();
    let mut table = Vec::new();
    for (point, past_flip) in POINTS {
        let src = pg.fresh_database("crash_s").unwrap();
        pg.psql(
            &src,
            "CREATE TABLE accounts (id bigint PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, account bigint NOT NULL, amount bigint NOT NULL);
             INSERT INTO accounts SELECT i, 0 FROM generate_series(1, 500) i;",
        )
        .unwrap();
        let dst = pg.fresh_database("crash_t").unwrap();
        let (s, t) = (pg.url(&src), pg.url(&dst));
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
        let log_file = tempfile::NamedTempFile::new().unwrap();
        let log = log_file.path();
        // The sync above has ended; so has its WAL sender once the slot is inactive.
        wait_until("inactive slot", Duration::from_secs(30), log, || {
            !slot_active(pg, &src)
        });
        let mut sync = background_sync(&s, &t, log);
        let stop = Arc::new(AtomicBool::new(false));
        // Before the application: a panic below stops it.
        let _stop_app = cutover_testkit::stop_on_drop(&stop);
        let committed = Arc::new(Mutex::new(Vec::new()));
        let uncertain = Arc::new(Mutex::new(Vec::new()));
        let app = application(
            [s.clone(), t.clone()],
            Arc::clone(&stop),
            Arc::clone(&committed),
            Arc::clone(&uncertain),
        );
        // The premise: the switch starts while a sync follows and the application writes.
        wait_until(
            "sync following the source",
            Duration::from_secs(60),
            log,
            || {
                assert!(
                    sync.try_wait().unwrap().is_none(),
                    "{point}: sync exited early:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
                slot_active(pg, &src)
            },
        );
        wait_until(
            "writes by the application",
            Duration::from_secs(60),
            log,
            || committed.lock().unwrap().len() >= 50,
        );

        let crashed = bin()
            .args(["switch", "--source", &s, "--target", &t])
            .env("FAILPOINTS", format!("{point}=panic"))
            .output()
            .unwrap();
        assert!(
            !crashed.status.success(),
            "{point}: the switch died there\n{}",
            String::from_utf8_lossy(&crashed.stderr)
        );
        let died = Instant::now();
        // The running sync finishes or undoes it by itself: wait for exactly one writable side.
        let mut probe = 0;
        let (on_src, on_dst) = loop {
            probe += 1;
            let (a, b) = (writable(pg, &src, probe), writable(pg, &dst, -probe));
            for (ok, n) in [(a, probe), (b, -probe)] {
                if ok {
                    committed.lock().unwrap().push(5_000_000 + n);
                }
            }
            if a != b {
                break (a, b);
            }
            assert!(
                died.elapsed() < Duration::from_secs(30),
                "{point}: no single primary 30 s after the crash (source {a}, target {b}); sync said:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let recovered_ms = died.elapsed().as_millis();
        assert_eq!(
            (on_src, on_dst),
            (!past_flip, *past_flip),
            "{point}: the primary is the {}",
            if *past_flip { "target" } else { "source" }
        );
        std::thread::sleep(Duration::from_millis(1000));
        stop.store(true, Ordering::Relaxed);
        app.join().unwrap();
        // Both sides once the sync has followed the last writes (in whichever direction).
        interrupt(sync);
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
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let writes = committed.lock().unwrap().clone();
        let uncertain = uncertain.lock().unwrap().clone();
        for db in [&src, &dst] {
            let on_db: Vec<i64> = pg
                .psql(db, "SELECT amount FROM ledger WHERE amount >= 1000000")
                .unwrap()
                .lines()
                .map(|l| l.parse().unwrap())
                .collect();
            let (missing, doubled) = crate::writes::compare(&writes, &uncertain, &on_db);
            assert!(
                missing.is_empty() && doubled.is_empty(),
                "{point}: on {db}, of {} committed writes, missing {:?}, not committed or doubled {:?} (first 10 of each)",
                writes.len(),
                &missing[..missing.len().min(10)],
                &doubled[..doubled.len().min(10)],
            );
            assert_eq!(
                pg.psql(db, "SELECT sum(balance) FROM accounts").unwrap(),
                pg.psql(&src, "SELECT sum(balance) FROM accounts").unwrap(),
            );
        }
        let status = bin()
            .args(["status", "--target", &t, "--json"])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        assert!(v["switch_in_progress"].is_null(), "{point}: {v}");
        table.push(format!(
            "{point}: primary {} after {recovered_ms} ms, {} writes, none lost or doubled",
            if *past_flip { "target" } else { "source" },
            writes.len()
        ));
    }
    eprintln!("{}", table.join("\n"));
}
