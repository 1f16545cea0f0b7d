//! Switch and rollback against real throwaway PostgreSQL servers, under a concurrent writer,
//! with failures injected at every step before the flip.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cutover_connector::{
    ConnectorError, Direction, ErrorKind, Fence, Journal, Observation, Progress, SwitchControl,
};
use cutover_model::{Key, Position, TableName};
use cutover_pipeline::{Control, SyncOptions};
use cutover_postgres::schema::Selection;
use cutover_postgres::{reverse_names, CaptureNames, Orientation, PgConnect, PgEndpoint, PgSwitch};
use cutover_switch::{SwitchError, SwitchOptions};
use cutover_testkit::Postgres;

struct Migration {
    src: String,
    dst: String,
    s: PgEndpoint,
    t: PgEndpoint,
    names: CaptureNames,
}

impl Migration {
    fn new(pg: &Postgres, name: &str) -> Migration {
        let src = pg.fresh_database(&format!("{name}_s")).unwrap();
        pg.psql(
            &src,
            "CREATE TABLE accounts (id bigint PRIMARY KEY, owner text NOT NULL, balance numeric(12,2) NOT NULL, doc jsonb);
             CREATE TABLE ledger (id bigserial PRIMARY KEY, account bigint NOT NULL, amount numeric(12,2), at timestamptz DEFAULT now());
             INSERT INTO accounts SELECT i, 'owner ' || i, i * 10, jsonb_build_object('i', i) FROM generate_series(1, 2000) i;
             INSERT INTO ledger (account, amount) SELECT 1 + i % 2000, i FROM generate_series(1, 3000) i;",
        )
        .unwrap();
        let dst = pg.fresh_database(&format!("{name}_t")).unwrap();
        Migration {
            s: PgEndpoint::from_url(&pg.url(&src)).unwrap(),
            t: PgEndpoint::from_url(&pg.url(&dst)).unwrap(),
            names: CaptureNames::for_migration(&dst),
            src,
            dst,
        }
    }

    fn side(&self, e: &PgEndpoint, peer: &PgEndpoint, names: &CaptureNames) -> PgConnect {
        PgConnect {
            endpoint: e.clone(),
            peer: Some(peer.clone()),
            selection: Selection::default(),
            names: names.clone(),
            truncate: false,
            jobs: 2,
        }
    }

    /// (primary side, follower side) for changes flowing forward or back.
    fn pair(&self, direction: Direction) -> (PgConnect, PgConnect) {
        match direction {
            Direction::Forward => (
                self.side(&self.s, &self.t, &self.names),
                self.side(&self.t, &self.s, &self.names),
            ),
            Direction::Reverse => {
                let rev = reverse_names(&self.names);
                (
                    self.side(&self.t, &self.s, &rev),
                    self.side(&self.s, &self.t, &rev),
                )
            }
        }
    }

    fn control(&self, o: Orientation) -> PgSwitch {
        PgSwitch::open(o, &self.s, &self.t, &Selection::default(), &self.names).unwrap()
    }

    /// Follows changes in `direction` until caught up.
    fn catch_up(&self, direction: Direction) {
        let (p, f) = self.pair(direction);
        let opts = SyncOptions {
            stop_when_caught_up: true,
            ..SyncOptions::default()
        };
        cutover_pipeline::run(&p, &f, &opts, &Control::default(), &Progress::default()).unwrap();
    }

    fn dump(&self, pg: &Postgres, db: &str) -> String {
        pg.psql(
            db,
            "SELECT md5(string_agg(a::text, ',' ORDER BY id)) FROM accounts a UNION ALL SELECT md5(string_agg(l::text, ',' ORDER BY id)) FROM ledger l",
        )
        .unwrap()
    }

    fn assert_equal(&self, pg: &Postgres) {
        assert_eq!(
            self.dump(pg, &self.src),
            self.dump(pg, &self.dst),
            "both sides equal row by row"
        );
    }
}

/// Polls `ready` every 10 ms for at most a minute; panics naming `what`.
#[track_caller]
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "no {what} within a minute");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An `--on-switch` command that returns once a row more is in `db`'s ledger than when it
/// started (at most a minute): as it runs after the fence, a write that got past the fence
/// is then certainly in the pause, whatever the machine's speed.
fn hook_awaiting_a_write(pg: &Postgres, db: &str) -> String {
    let count = format!(
        "{} -X -At -h 127.0.0.1 -p {} -U postgres -d {db} -c 'SELECT count(*) FROM ledger'",
        pg.bin_dir().join("psql").display(),
        pg.port()
    );
    format!(
        "n=$({count}); i=0; while [ \"$({count})\" = \"$n\" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done"
    )
}

fn writable(pg: &Postgres, db: &str) -> bool {
    pg.psql(db, "INSERT INTO ledger (account, amount) VALUES (1, 0.01)")
        .is_ok()
}

fn options(want: Direction) -> SwitchOptions {
    let mut o = SwitchOptions::new(want);
    o.catch_up_timeout = Duration::from_secs(60);
    o
}

fn run_switch<C: SwitchControl>(
    m: &Migration,
    control: &mut C,
    opts: &SwitchOptions,
) -> Result<cutover_switch::SwitchReport, SwitchError> {
    let (p, f) = m.pair(match opts.want {
        Direction::Reverse => Direction::Forward,
        Direction::Forward => Direction::Reverse,
    });
    cutover_switch::run(
        &p,
        &f,
        control,
        opts,
        &SyncOptions::default(),
        &cutover_connector::CancellationToken::new(),
        &mut |_| {},
    )
}

/// Writes like an application: to the current primary; when it refuses (fenced), to the
/// other database (the application was pointed there). Records every committed write.
fn application(
    pg: &'static Postgres,
    dbs: [String; 2],
    stop: Arc<AtomicBool>,
    committed: Arc<Mutex<Vec<(usize, i64)>>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut at = 0usize;
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let account = 1 + n % 2000;
            let sql = format!(
                "BEGIN; UPDATE accounts SET balance = balance + 1, doc = doc || '{{\"n\": {n}}}' WHERE id = {account};
                 INSERT INTO ledger (account, amount) VALUES ({account}, 1000000 + {n}); COMMIT"
            );
            match pg.psql(&dbs[at], &sql) {
                Ok(_) => committed.lock().unwrap().push((at, n)),
                Err(e)
                    if e.to_string().contains("read-only")
                        || e.to_string().contains("terminat") =>
                {
                    at = 1 - at;
                }
                Err(_) => {}
            }
        }
    })
}

#[test]
fn a_switch_under_a_writer_moves_writes_and_loses_nothing_then_rollback_brings_them_back() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "sw");
    m.catch_up(Direction::Forward);

    // A sync runs, as it would in production, while the application writes.
    let (p, f) = m.pair(Direction::Forward);
    let sync_control = Arc::new(Control::default());
    let sync_progress = Arc::new(Progress::default());
    let follow = {
        let (c, pr) = (Arc::clone(&sync_control), Arc::clone(&sync_progress));
        std::thread::spawn(move || cutover_pipeline::run(&p, &f, &SyncOptions::default(), &c, &pr))
    };
    // If the test fails, neither goes on in the background.
    let _stop_sync = cutover_testkit::on_drop(|| sync_control.stop());
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_app = cutover_testkit::stop_on_drop(&stop);
    let committed = Arc::new(Mutex::new(Vec::new()));
    let app = application(
        pg,
        [m.src.clone(), m.dst.clone()],
        Arc::clone(&stop),
        Arc::clone(&committed),
    );
    // The premise: the switch starts while the sync applies the application's writes.
    wait_until("writes applied by the running sync", || {
        assert!(!follow.is_finished(), "the sync ended early");
        sync_progress.changes_applied.load(Ordering::Relaxed) > 0
            && committed.lock().unwrap().len() >= 20
    });

    let mut control = m.control(Orientation::Switch);
    let report = run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap();
    assert_eq!(report.direction, Direction::Reverse);
    assert!(report.write_pause > Duration::ZERO && report.write_pause >= report.drain);
    let names: Vec<&str> = report.steps.iter().map(|s| s.name).collect();
    for step in [
        "check",
        "hand-over",
        "catch up",
        "fence",
        "drain",
        "verify",
        "flip",
    ] {
        assert!(names.contains(&step), "{step} in {names:?}");
    }
    // The running sync handed over (it stopped by itself).
    wait_until("end of the running sync", || follow.is_finished());
    let handed = follow.join().unwrap().unwrap();
    assert!(handed.interrupted);

    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    app.join().unwrap();
    let writes = committed.lock().unwrap().clone();
    assert!(
        writes.iter().any(|(db, _)| *db == 0) && writes.iter().any(|(db, _)| *db == 1),
        "the application wrote to both, one after the other"
    );

    // The old primary refuses writes, the new one takes them.
    assert!(!writable(pg, &m.src), "the source is fenced");
    assert!(writable(pg, &m.dst), "the target takes writes");
    assert_eq!(
        pg.psql(&m.dst, "SELECT phase FROM _cutover.migration")
            .unwrap(),
        "switched"
    );
    assert_eq!(
        pg.psql(&m.dst, "SELECT direction FROM _cutover.replication")
            .unwrap(),
        "reverse"
    );

    // Writes made on the target flow back to the source.
    m.catch_up(Direction::Reverse);
    m.assert_equal(pg);
    for (_, n) in &writes {
        assert_eq!(
            pg.psql(
                &m.src,
                &format!("SELECT count(*) FROM ledger WHERE amount = 1000000 + {n}")
            )
            .unwrap(),
            "1",
            "write {n} is on the source exactly once"
        );
    }

    // Roll back: writes made on the target since the switch stay, on the source.
    pg.psql(
        &m.dst,
        "INSERT INTO ledger (account, amount) VALUES (7, 777777)",
    )
    .unwrap();
    let mut control = m.control(Orientation::Rollback);
    let back = run_switch(&m, &mut control, &options(Direction::Forward)).unwrap();
    assert_eq!(back.direction, Direction::Forward);
    assert_eq!(
        pg.psql(&m.src, "SELECT count(*) FROM ledger WHERE amount = 777777")
            .unwrap(),
        "1"
    );
    assert!(writable(pg, &m.src), "the source takes writes again");
    assert!(!writable(pg, &m.dst), "the target is fenced");
    assert_eq!(
        pg.psql(&m.dst, "SELECT phase FROM _cutover.migration")
            .unwrap(),
        "replicating"
    );
    // And forward replication continues from there.
    pg.psql(
        &m.src,
        "INSERT INTO ledger (account, amount) VALUES (8, 888888)",
    )
    .unwrap();
    m.catch_up(Direction::Forward);
    m.assert_equal(pg);
}

/// A [`PgSwitch`] that fails at one named step.
struct Failing {
    inner: PgSwitch,
    at: &'static str,
}

impl Failing {
    fn check(&self, step: &'static str) -> Result<(), ConnectorError> {
        if self.at == step {
            return Err(ConnectorError::new(
                ErrorKind::Database,
                format!("injected failure at {step}"),
            ));
        }
        Ok(())
    }
}

impl SwitchControl for Failing {
    fn observe(&mut self) -> Result<Observation, ConnectorError> {
        self.inner.observe()
    }
    fn request_handover(&mut self, wait: Duration) -> Result<(), ConnectorError> {
        self.check("request_handover")?;
        self.inner.request_handover(wait)
    }
    fn clear_handover(&mut self) -> Result<(), ConnectorError> {
        self.inner.clear_handover()
    }
    fn fence(&mut self, fence: &Fence) -> Result<u64, ConnectorError> {
        // Fails after fencing: the undo must lift it.
        let n = self.inner.fence(fence)?;
        self.check("fence").map(|()| n)
    }
    fn lift_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError> {
        self.inner.lift_fence(fence)
    }
    fn primary_position(&mut self) -> Result<Position, ConnectorError> {
        self.inner.primary_position()
    }
    fn positions(&self) -> &'static dyn cutover_connector::PositionOrder {
        self.inner.positions()
    }
    fn lock(&mut self) -> Result<(), ConnectorError> {
        self.inner.lock()
    }
    fn unlock(&mut self) -> Result<(), ConnectorError> {
        self.inner.unlock()
    }
    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        self.inner.journal()
    }
    fn record(&mut self, journal: &Journal) -> Result<(), ConnectorError> {
        self.inner.record(journal)
    }
    fn clear_journal(&mut self) -> Result<(), ConnectorError> {
        self.inner.clear_journal()
    }
    fn prepare_way_back(&mut self) -> Result<(), ConnectorError> {
        self.inner.prepare_way_back()?;
        self.check("prepare_way_back")
    }
    fn undo_way_back(&mut self) -> Result<(), ConnectorError> {
        self.inner.undo_way_back()
    }
    fn sync_sequences(&mut self) -> Result<(), ConnectorError> {
        self.check("sync_sequences")?;
        self.inner.sync_sequences()
    }
    fn flip(&mut self) -> Result<Direction, ConnectorError> {
        self.check("flip")?;
        self.inner.flip()
    }
    fn open_new_primary(&mut self) -> Result<(), ConnectorError> {
        self.inner.open_new_primary()
    }
    fn retire_old_direction(&mut self) -> Result<(), ConnectorError> {
        self.inner.retire_old_direction()
    }
    fn watched_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        self.inner.watched_keys()
    }
    fn recent_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        self.inner.recent_keys()
    }
}

#[test]
fn a_failure_at_any_step_before_the_flip_leaves_the_source_primary_and_writable() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "fail");
    m.catch_up(Direction::Forward);
    let mut cases: Vec<(&str, SwitchOptions)> =
        ["prepare_way_back", "fence", "sync_sequences", "flip"]
            .iter()
            .map(|s| (*s, options(Direction::Reverse)))
            .collect();
    let mut hook = options(Direction::Reverse);
    hook.on_switch = Some("echo 'cannot reach the load balancer' >&2; exit 3".into());
    cases.push(("on-switch", hook));
    let mut budget = options(Direction::Reverse);
    budget.max_pause = Some(Duration::ZERO);
    cases.push(("pause budget", budget));
    let mut quiet = options(Direction::Reverse);
    quiet.fence = Fence::None;
    quiet.on_switch = Some(hook_awaiting_a_write(pg, &m.src));
    cases.push(("fence check", quiet));

    for (at, opts) in cases {
        let mut control = Failing {
            inner: m.control(Orientation::Switch),
            at,
        };
        // Writes land during the pause (the hand-off waits for one): the fence check must
        // notice them.
        let stop = Arc::new(AtomicBool::new(false));
        let _stop_writer = cutover_testkit::stop_on_drop(&stop);
        let writer = (at == "fence check").then(|| {
            let (db, stop) = (m.src.clone(), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let _ = Postgres::shared()
                        .unwrap()
                        .psql(&db, "INSERT INTO ledger (account, amount) VALUES (2, 2)");
                }
            })
        });
        let err = run_switch(&m, &mut control, &opts).unwrap_err();
        stop.store(true, Ordering::Relaxed);
        if let Some(w) = writer {
            w.join().unwrap();
        }
        let msg = err.to_string();
        assert!(matches!(err, SwitchError::Failed { .. }), "{at}: {msg}");
        assert!(
            msg.contains("undone") || msg.contains("nothing had been changed"),
            "{at}: {msg}"
        );
        // Still the primary, still writable, nothing of the switch left behind.
        assert!(writable(pg, &m.src), "{at}: the source takes writes");
        assert_eq!(
            pg.psql(&m.dst, "SELECT phase FROM _cutover.migration")
                .unwrap(),
            "replicating",
            "{at}"
        );
        assert_eq!(
            pg.psql(
                &m.dst,
                "SELECT count(*) FROM pg_replication_slots WHERE database = current_database()"
            )
            .unwrap(),
            "0",
            "{at}: no reverse slot left on the target"
        );
        assert_eq!(
            pg.psql(&m.src, "SELECT to_regnamespace('_cutover') IS NULL")
                .unwrap(),
            "t",
            "{at}"
        );
        assert_eq!(
            pg.psql(
                &m.src,
                "SELECT coalesce(current_setting('default_transaction_read_only'), 'off')"
            )
            .unwrap(),
            "off",
            "{at}"
        );
    }
    // The migration carries on forward.
    m.catch_up(Direction::Forward);
    m.assert_equal(pg);
    let mut control = m.control(Orientation::Switch);
    run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap();
    assert!(!writable(pg, &m.src));
}

#[test]
fn a_switch_is_refused_with_the_numbers_when_the_follower_lags() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "lag");
    m.catch_up(Direction::Forward);
    // Changes the follower has not seen.
    pg.psql(
        &m.src,
        "UPDATE accounts SET doc = jsonb_build_object('pad', repeat('x', 2000))",
    )
    .unwrap();
    let mut opts = options(Direction::Reverse);
    opts.max_lag = 1024;
    let mut control = m.control(Orientation::Switch);
    let err = run_switch(&m, &mut control, &opts).unwrap_err();
    assert!(matches!(err, SwitchError::Refused(_)), "{err}");
    assert!(
        err.to_string().contains("bytes behind") && err.to_string().contains("--max-lag 1024"),
        "{err}"
    );
    assert!(writable(pg, &m.src));
    // Rolling back what was never switched is refused too.
    let mut control = m.control(Orientation::Rollback);
    let err = run_switch(&m, &mut control, &options(Direction::Forward)).unwrap_err();
    assert!(err.to_string().contains("nothing to roll back"), "{err}");
}

/// Regression: the fence once called pg_terminate_backend in the same WHERE clause as its
/// filter, and the planner was free to end sessions of other databases first.
#[test]
fn the_fence_ends_the_sources_sessions_and_no_others() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "fence");
    m.catch_up(Direction::Forward);
    let bystander_db = pg.fresh_database("bystander").unwrap();
    let connect = |db: &str, app: &str| {
        let url = format!("{}?application_name={app}", pg.url(db));
        postgres::Client::connect(&url, postgres::NoTls).unwrap()
    };
    let mut bystander = connect(&bystander_db, "other-app");
    let mut on_target = connect(&m.dst, "other-app");
    let mut on_source = connect(&m.src, "the-app");
    let mut control = m.control(Orientation::Switch);
    let report = run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap();
    assert!(report.sessions_ended >= 1, "{report:?}");
    assert!(
        on_source.simple_query("SELECT 1").is_err(),
        "the application's source session was ended"
    );
    assert!(
        bystander.simple_query("SELECT 1").is_ok(),
        "another database's session is untouched"
    );
    assert!(
        on_target.simple_query("SELECT 1").is_ok(),
        "the target's sessions are untouched"
    );
}

/// Issue 9, finding 1: the rows changed while their table was copied are where the copy and
/// the stream meet; the switch compares them on both sides before it fences, and refuses a
/// divergence there instead of switching to it.
#[test]
fn rows_changed_during_the_copy_are_verified_before_the_fence_and_a_divergence_refuses() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "watch");
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writer = cutover_testkit::stop_on_drop(&stop);
    let updates = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (url, stop, updates) = (pg.url(&m.src), Arc::clone(&stop), Arc::clone(&updates));
        std::thread::spawn(move || {
            let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
            while !stop.load(Ordering::Relaxed) {
                let id = fastrand::i64(1..=2000);
                c.batch_execute(&format!(
                    "UPDATE accounts SET balance = balance + 1 WHERE id = {id}"
                ))
                .unwrap();
                updates.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Writing already when the copy starts.
    wait_until("updates by the writer", || {
        assert!(!writer.is_finished(), "the writer ended early");
        updates.load(Ordering::Relaxed) >= 50
    });
    let (p, f) = m.pair(Direction::Forward);
    let opts = SyncOptions {
        jobs: 1,
        chunk_bytes: 8 << 10,
        min_chunk_rows: 20,
        max_chunk_rows: 100,
        stop_when_caught_up: true,
        ..SyncOptions::default()
    };
    let progress = Arc::new(Progress::default());
    let sync_control = Arc::new(Control::default());
    let sync = {
        let (progress, c) = (Arc::clone(&progress), Arc::clone(&sync_control));
        std::thread::spawn(move || cutover_pipeline::run(&p, &f, &opts, &c, &progress))
    };
    let _stop_sync = cutover_testkit::on_drop(|| sync_control.stop());
    // Written to all through the copy; stopped once it is done, so that sync can catch up.
    let deadline = Instant::now() + Duration::from_secs(120);
    while progress.phase() != cutover_connector::Phase::Replicating && !sync.is_finished() {
        assert!(Instant::now() < deadline, "the copy did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    sync.join().unwrap().unwrap();
    m.catch_up(Direction::Forward);
    let watched: i64 = pg
        .psql(&m.dst, "SELECT count(*) FROM _cutover.watch")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        watched > 0,
        "the premise: rows changed during the copy were noted"
    );
    m.assert_equal(pg);

    // A divergence on one of them (as the lost update of issue 9 left it).
    let mut control = m.control(Orientation::Switch);
    let keys = control.watched_keys().unwrap();
    assert_eq!(keys.len() as i64, watched);
    let id = keys
        .iter()
        .find_map(|(t, k)| match (t.name.as_str(), k.as_slice()) {
            ("accounts", [cutover_model::Value::Int(id)]) => Some(*id),
            _ => None,
        })
        .expect("an accounts row among them");
    pg.psql(
        &m.dst,
        &format!("SET default_transaction_read_only = off; UPDATE accounts SET balance = -1 WHERE id = {id}"),
    )
    .unwrap();
    let err = run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("verify the copy") && msg.contains(&format!("public.accounts ({id})")),
        "{msg}"
    );
    assert!(writable(pg, &m.src), "nothing was switched: {msg}");

    // Repaired, the switch goes through and says how many rows it compared.
    let balance = pg
        .psql(
            &m.src,
            &format!("SELECT balance FROM accounts WHERE id = {id}"),
        )
        .unwrap();
    pg.psql(
        &m.dst,
        &format!("SET default_transaction_read_only = off; UPDATE accounts SET balance = {balance} WHERE id = {id}"),
    )
    .unwrap();
    let mut control = m.control(Orientation::Switch);
    let report = run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap();
    assert_eq!(report.verified_copy_rows as i64, watched, "{report:?}");
    assert!(!writable(pg, &m.src));
}

/// Issue 9, finding 4: a session that turns `default_transaction_read_only` off gets past the
/// read-only fence; the switch sees its write after the fence position and is undone, and
/// every write it committed is still on the source (and follows to the target).
#[test]
fn a_write_past_the_read_only_fence_is_caught_and_the_switch_undone() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "bypass");
    m.catch_up(Direction::Forward);
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_writer = cutover_testkit::stop_on_drop(&stop);
    let committed = Arc::new(Mutex::new(Vec::new()));
    // Writes cut off by the fence as they committed: the writer cannot know whether they did.
    let uncertain = Arc::new(Mutex::new(Vec::new()));
    let sneaky = {
        let (url, stop, committed, uncertain) = (
            pg.url(&m.src),
            Arc::clone(&stop),
            Arc::clone(&committed),
            Arc::clone(&uncertain),
        );
        std::thread::spawn(move || {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                // Every session opts out of the fence, as a misbehaving pool might.
                let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) else {
                    continue;
                };
                let _ = c.batch_execute("SET default_transaction_read_only = off");
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    let sql = format!(
                        "INSERT INTO ledger (account, amount) VALUES (3, {})",
                        2_000_000 + n
                    );
                    if let Err(e) = c.batch_execute(&sql) {
                        // Session ended (57P..) or connection lost (08..., no code): perhaps
                        // committed. Refused otherwise.
                        let cut_off = e.code().is_none_or(|c| {
                            c.code().starts_with("57P") || c.code().starts_with("08")
                        });
                        if cut_off {
                            uncertain.lock().unwrap().push(n);
                        }
                        break;
                    }
                    committed.lock().unwrap().push(n);
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        })
    };
    wait_until("writes by the writer", || {
        assert!(!sneaky.is_finished(), "the writer ended early");
        committed.lock().unwrap().len() >= 10
    });
    let mut opts = options(Direction::Reverse);
    // The hand-off waits for a write after the fence, so the writer certainly writes in the
    // pause.
    opts.on_switch = Some(hook_awaiting_a_write(pg, &m.src));
    let mut control = m.control(Orientation::Switch);
    let err = run_switch(&m, &mut control, &opts).unwrap_err();
    stop.store(true, Ordering::Relaxed);
    sneaky.join().unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("fence check")
            && msg.contains("after the fence")
            && msg.contains("--fence revoke"),
        "{msg}"
    );
    assert!(msg.contains("undone"), "{msg}");
    assert!(writable(pg, &m.src), "the source is still the primary");
    assert_eq!(
        pg.psql(&m.dst, "SELECT phase FROM _cutover.migration")
            .unwrap(),
        "replicating"
    );
    let writes = committed.lock().unwrap().clone();
    assert!(writes.len() > 10, "the writer wrote ({})", writes.len());
    m.catch_up(Direction::Forward);
    m.assert_equal(pg);
    // Every committed write once; besides them at most the uncertain ones, once.
    let mut on_source: Vec<i64> = pg
        .psql(
            &m.src,
            "SELECT (amount - 2000000)::bigint FROM ledger WHERE amount > 2000000 ORDER BY 1",
        )
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    let uncertain = uncertain.lock().unwrap().clone();
    let before = on_source.len();
    on_source.dedup();
    assert_eq!(on_source.len(), before, "no write twice");
    let extra: Vec<i64> = on_source
        .iter()
        .filter(|n| !writes.contains(n))
        .copied()
        .collect();
    assert!(
        writes.iter().all(|n| on_source.contains(n)),
        "every committed write is on the source"
    );
    assert!(
        extra.iter().all(|n| uncertain.contains(n)),
        "only committed writes and ones whose outcome the writer could not know: extra {extra:?}, uncertain {uncertain:?}"
    );
}

/// `--fence revoke`: the application's role loses its write privileges on the migrated tables
/// of the old primary (a session cannot opt out of that), and gets them back there on rollback.
#[test]
fn the_revoke_fence_takes_write_privileges_and_a_rollback_gives_them_back() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "revoke");
    let role = format!("app_{}", fastrand::u32(..));
    pg.psql("", &format!("CREATE ROLE {role} LOGIN")).unwrap();
    let grant = |db: &str| {
        pg.psql(
            db,
            &format!(
                "SET default_transaction_read_only = off;
                 GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, ledger TO {role};
                 GRANT USAGE ON SEQUENCE ledger_id_seq TO {role}"
            ),
        )
        .unwrap()
    };
    grant(&m.src);
    m.catch_up(Direction::Forward);
    // Privileges are not carried by sync (yet): the target's are given as a user would.
    grant(&m.dst);
    let app_writes = |db: &str| {
        let url = pg.url(db).replace("postgres@", &format!("{role}@"));
        postgres::Client::connect(&url, postgres::NoTls)
            .and_then(|mut c| {
                c.batch_execute(
                    "SET default_transaction_read_only = off; INSERT INTO ledger (account, amount) VALUES (4, 4)",
                )
            })
            .map_err(|e| {
                e.as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned())
            })
    };
    app_writes(&m.src).unwrap();
    let mut opts = options(Direction::Reverse);
    opts.fence = Fence::Revoke;
    let mut control = m.control(Orientation::Switch);
    let report = run_switch(&m, &mut control, &opts).unwrap();
    assert_eq!(report.direction, Direction::Reverse);
    let refused = app_writes(&m.src).unwrap_err();
    assert!(refused.contains("permission denied"), "{refused}");
    app_writes(&m.dst).unwrap();
    m.catch_up(Direction::Reverse);
    // Back: the source gives the privileges back, the target's are taken.
    let mut control = m.control(Orientation::Rollback);
    run_switch(&m, &mut control, &options(Direction::Forward)).unwrap();
    app_writes(&m.src).unwrap();
    m.catch_up(Direction::Forward);
    m.assert_equal(pg);
}

/// Ctrl-C or SIGTERM during the pause (here during a slow --on-switch command, which is ended)
/// undoes the switch: the source takes writes again, nothing is left behind.
#[test]
fn an_interrupted_switch_is_undone_and_its_hand_off_command_ended() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "cancel");
    m.catch_up(Direction::Forward);
    let mut opts = options(Direction::Reverse);
    let dir = std::env::temp_dir().join(format!("cutover-hook-{}", fastrand::u64(..)));
    std::fs::create_dir(&dir).unwrap();
    let _remove_dir = cutover_testkit::on_drop(|| {
        let _ = std::fs::remove_dir_all(&dir);
    });
    let (started, marker) = (dir.join("started"), dir.join("finished"));
    // A hand-off far longer than the switch takes without it.
    opts.on_switch = Some(format!(
        "touch {}; sleep 30; touch {}",
        started.display(),
        marker.display()
    ));
    let cancel = cutover_connector::CancellationToken::new();
    let (p, f) = m.pair(Direction::Forward);
    let mut control = m.control(Orientation::Switch);
    let cancelled_at = Mutex::new(None);
    let returned = AtomicBool::new(false);
    let err = std::thread::scope(|s| {
        // Before the canceller: it gives up when the switch returned (or the test panics).
        let _returned = cutover_testkit::stop_on_drop(&returned);
        // The signal comes while the hand-off command runs.
        s.spawn(|| {
            while !started.exists() {
                if returned.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            *cancelled_at.lock().unwrap() = Some(Instant::now());
            cancel.cancel();
        });
        cutover_switch::run(
            &p,
            &f,
            &mut control,
            &opts,
            &SyncOptions::default(),
            &cancel,
            &mut |_| {},
        )
        .unwrap_err()
    });
    let msg = err.to_string();
    let cancelled_at = cancelled_at
        .lock()
        .unwrap()
        .unwrap_or_else(|| panic!("the hand-off command never started: {msg}"));
    assert!(
        cancelled_at.elapsed() < Duration::from_secs(10),
        "stopped within moments of the signal, not after the 30 s hand-off ({:?})",
        cancelled_at.elapsed()
    );
    assert!(
        msg.contains("interrupted") && msg.contains("undone"),
        "{msg}"
    );
    assert!(!marker.exists(), "the hand-off command was ended");
    assert!(writable(pg, &m.src));
    assert_eq!(
        pg.psql(&m.dst, "SELECT count(*) FROM _cutover.switch_journal")
            .unwrap(),
        "0",
        "nothing left to recover"
    );
}

/// A [`PgSwitch`] that, inside the write pause (while the sequences are set), opens a session
/// on the new primary the way an application that followed the hand-off early would.
struct OpensDuringPause {
    inner: PgSwitch,
    url: String,
    opened: Option<postgres::Client>,
    read_only_then: Option<String>,
}

impl SwitchControl for OpensDuringPause {
    fn observe(&mut self) -> Result<Observation, ConnectorError> {
        self.inner.observe()
    }
    fn request_handover(&mut self, wait: Duration) -> Result<(), ConnectorError> {
        self.inner.request_handover(wait)
    }
    fn clear_handover(&mut self) -> Result<(), ConnectorError> {
        self.inner.clear_handover()
    }
    fn fence(&mut self, fence: &Fence) -> Result<u64, ConnectorError> {
        self.inner.fence(fence)
    }
    fn lift_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError> {
        self.inner.lift_fence(fence)
    }
    fn primary_position(&mut self) -> Result<Position, ConnectorError> {
        self.inner.primary_position()
    }
    fn positions(&self) -> &'static dyn cutover_connector::PositionOrder {
        self.inner.positions()
    }
    fn lock(&mut self) -> Result<(), ConnectorError> {
        self.inner.lock()
    }
    fn unlock(&mut self) -> Result<(), ConnectorError> {
        self.inner.unlock()
    }
    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        self.inner.journal()
    }
    fn record(&mut self, journal: &Journal) -> Result<(), ConnectorError> {
        self.inner.record(journal)
    }
    fn clear_journal(&mut self) -> Result<(), ConnectorError> {
        self.inner.clear_journal()
    }
    fn prepare_way_back(&mut self) -> Result<(), ConnectorError> {
        self.inner.prepare_way_back()
    }
    fn undo_way_back(&mut self) -> Result<(), ConnectorError> {
        self.inner.undo_way_back()
    }
    fn sync_sequences(&mut self) -> Result<(), ConnectorError> {
        let url = format!("{}?application_name=the-app", self.url);
        let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        self.read_only_then = Some(
            c.query_one("SHOW default_transaction_read_only", &[])
                .unwrap()
                .get(0),
        );
        self.opened = Some(c);
        self.inner.sync_sequences()
    }
    fn flip(&mut self) -> Result<Direction, ConnectorError> {
        self.inner.flip()
    }
    fn open_new_primary(&mut self) -> Result<(), ConnectorError> {
        self.inner.open_new_primary()
    }
    fn end_paused_sessions(&mut self) -> Result<u64, ConnectorError> {
        self.inner.end_paused_sessions()
    }
    fn retire_old_direction(&mut self) -> Result<(), ConnectorError> {
        self.inner.retire_old_direction()
    }
    fn watched_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        self.inner.watched_keys()
    }
    fn recent_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        self.inner.recent_keys()
    }
}

/// Issue 9, finding 4: a session opened on the new primary during the pause starts read-only
/// (the database refused writes then) and would stay read-only after the open, refusing the
/// application's writes for as long as its pool keeps it. The switch ends such sessions once
/// the new primary opens, and says so; sessions older than the pause are left alone.
#[test]
fn sessions_opened_on_the_new_primary_during_the_pause_are_ended_when_it_opens() {
    let pg = Postgres::shared().unwrap();
    let m = Migration::new(pg, "paused");
    m.catch_up(Direction::Forward);
    let before_url = format!("{}?application_name=other-app", pg.url(&m.dst));
    let mut before = postgres::Client::connect(&before_url, postgres::NoTls).unwrap();
    let mut control = OpensDuringPause {
        inner: m.control(Orientation::Switch),
        url: pg.url(&m.dst),
        opened: None,
        read_only_then: None,
    };
    let report = run_switch(&m, &mut control, &options(Direction::Reverse)).unwrap();
    assert_eq!(
        control.read_only_then.as_deref(),
        Some("on"),
        "a session opened during the pause starts read-only"
    );
    assert_eq!(report.paused_sessions_ended, 1, "{report:?}");
    assert!(
        control
            .opened
            .as_mut()
            .unwrap()
            .simple_query("SELECT 1")
            .is_err(),
        "the session opened during the pause was ended"
    );
    assert!(
        before.simple_query("SELECT 1").is_ok(),
        "a session older than the pause is left alone"
    );
    assert!(writable(pg, &m.dst), "a new session writes");
    assert!(report.writes_refused >= report.write_pause, "{report:?}");
    let names: Vec<&str> = report.steps.iter().map(|s| s.name).collect();
    for step in ["close in", "open the new primary", "end read-only sessions"] {
        assert!(names.contains(&step), "{step} in {names:?}");
    }
    let ends = names
        .iter()
        .position(|n| *n == "end read-only sessions")
        .unwrap();
    assert_eq!(names[ends - 1], "open the new primary", "{names:?}");
}
