//! Integration tests: real throwaway servers, plus re-executions of this test binary
//! as a child process to check that the servers die with the process that started them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use cutover_testkit::{HarnessError, MariaDb, Postgres};

#[test]
fn postgres_harness_starts_a_logical_wal_server() {
    let pg = Postgres::shared().expect("start throwaway postgres");
    assert_ne!(pg.port(), 5432);
    assert!(pg.bin_dir().join("initdb").is_file());

    let db = pg.fresh_database("pg harness").unwrap();
    let other = pg.fresh_database("pg harness").unwrap();
    assert_ne!(db, other);
    assert!(db.starts_with("t_pg_harness_"), "{db}");
    assert_eq!(
        pg.url(&db),
        format!("postgres://postgres@127.0.0.1:{}/{db}", pg.port())
    );

    assert_eq!(pg.psql(&db, "show wal_level").unwrap(), "logical");
    assert_eq!(pg.psql(&db, "select current_database()").unwrap(), db);
    pg.psql(
        &db,
        "create table t (id int primary key, name text);
         insert into t values (1, 'a'), (2, 'b');",
    )
    .unwrap();
    assert_eq!(
        pg.psql(&db, "select id, name from t order by id").unwrap(),
        "1|a\n2|b"
    );
    // The table lives only in `db`.
    assert_eq!(
        pg.psql(
            &other,
            "select count(*) from pg_tables where tablename = 't'"
        )
        .unwrap(),
        "0"
    );

    let err = pg.psql(&db, "select * from no_such_table").unwrap_err();
    assert!(matches!(err, HarnessError::Sql { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_table"), "{err}");
    assert!(matches!(
        pg.psql("host=127.0.0.1 port=5432", "select 1"),
        Err(HarnessError::InvalidArgument(_))
    ));
}

#[test]
fn mariadb_harness_starts_a_row_binlog_server() {
    let my = MariaDb::shared().expect("start throwaway mariadb");
    assert_ne!(my.port(), 3306);

    let db = my.fresh_database("my_harness").unwrap();
    let other = my.fresh_database("my_harness").unwrap();
    assert_ne!(db, other);
    assert_eq!(
        my.url(&db),
        format!("mysql://root@127.0.0.1:{}/{db}", my.port())
    );

    assert_eq!(
        my.sql(&db, "SELECT @@log_bin, @@binlog_format").unwrap(),
        "1\tROW"
    );
    assert_eq!(
        my.sql("", "SELECT @@binlog_row_image, @@character_set_server")
            .unwrap(),
        "FULL\tutf8mb4"
    );
    my.sql(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20));
         INSERT INTO t VALUES (1, 'a'), (2, 'b');",
    )
    .unwrap();
    assert_eq!(
        my.sql(&db, "SELECT id, name FROM t ORDER BY id").unwrap(),
        "1\ta\n2\tb"
    );
    assert_eq!(
        my.sql(&db, "SELECT CURRENT_USER()").unwrap(),
        "root@127.0.0.1"
    );

    let err = my.sql(&db, "SELECT * FROM no_such_table").unwrap_err();
    assert!(matches!(err, HarnessError::Sql { .. }), "{err:?}");
    assert!(err.to_string().contains("no_such_table"), "{err}");
}

// ---------------------------------------------------------------------------
// The time limit of a test binary
// ---------------------------------------------------------------------------

const HANG_ENV: &str = "CUTOVER_TESTKIT_HANG";

/// Does nothing in a normal run. Re-executed by the test below with `CUTOVER_TESTKIT_HANG=1`,
/// it starts the time limit and hangs.
#[test]
fn child_hangs() {
    if std::env::var_os(HANG_ENV).is_none() {
        return;
    }
    cutover_testkit::time_limit();
    thread::sleep(Duration::from_secs(120));
}

/// Runs `child_hangs` in a child with `CUTOVER_TEST_TIMEOUT_SECS=limit`; returns how it
/// ended, its stderr and how long it took.
fn run_hung_child(limit: &str) -> (std::process::ExitStatus, String, Duration) {
    let started = Instant::now();
    let mut child = cutover_testkit::KillOnDrop::spawn(
        Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_hangs", "--nocapture", "--test-threads=1"])
            .env(HANG_ENV, "1")
            .env(cutover_testkit::TIMEOUT_ENV, limit)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the child still runs after 60 s with a time limit of {limit:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    (status, reader.join().unwrap(), started.elapsed())
}

#[test]
fn a_hung_test_binary_is_aborted_at_its_time_limit_naming_it() {
    let (status, stderr, took) = run_hung_child("1");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGABRT),
        "{status}; stderr:\n{stderr}"
    );
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(
        stderr.contains("over its time limit (CUTOVER_TEST_TIMEOUT_SECS=1;"),
        "{stderr}"
    );
    // libtest names each test's thread after the test.
    assert!(stderr.contains("child_hangs"), "{stderr}");
}

#[test]
fn a_time_limit_that_is_no_number_is_refused_with_the_variable_named() {
    let (status, stderr, _) = run_hung_child("ten");
    assert_eq!(status.code(), Some(101), "{status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("CUTOVER_TEST_TIMEOUT_SECS=\"ten\" is not a whole number of seconds"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------
// Clean-up when the process ends
// ---------------------------------------------------------------------------

const CHILD_ENV: &str = "CUTOVER_TESTKIT_CHILD";

/// What the child started, for its own atexit check.
static CHILD_SERVERS: Mutex<Vec<(u16, PathBuf)>> = Mutex::new(Vec::new());

/// Registered before the testkit registers its own handler, so it runs *after* the
/// testkit's clean-up (atexit handlers run in reverse order) but before the process
/// is gone (so before any watchdog can act): it reports what the atexit path did.
extern "C" fn report_after_testkit_cleanup() {
    let servers = CHILD_SERVERS.lock().map(|s| s.clone()).unwrap_or_default();
    let mut line = String::from("AFTER-ATEXIT");
    for (port, data) in &servers {
        line.push_str(&format!(
            " {port}:listening={},dir_exists={}",
            accepts(*port),
            data.parent().unwrap().exists()
        ));
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Does nothing in a normal run. Re-executed by the tests below with
/// `CUTOVER_TESTKIT_CHILD=exit|sleep`, it starts both servers, prints their ports
/// and dirs, and then exits normally (`exit`) or waits to be killed (`sleep`).
#[test]
fn child_starts_server() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return;
    };
    // SAFETY: registering a plain extern "C" fn that does not unwind.
    unsafe { libc::atexit(report_after_testkit_cleanup) };
    let pg = Postgres::shared().unwrap();
    let my = MariaDb::shared().unwrap();
    *CHILD_SERVERS.lock().unwrap() = vec![
        (pg.port(), pg.data_dir().to_path_buf()),
        (my.port(), my.data_dir().to_path_buf()),
    ];
    println!("SERVER postgres {} {}", pg.port(), pg.data_dir().display());
    println!("SERVER mariadb {} {}", my.port(), my.data_dir().display());
    println!("READY");
    if mode == "sleep" {
        thread::sleep(Duration::from_secs(300));
    }
}

struct Server {
    kind: String,
    port: u16,
    data_dir: PathBuf,
}

enum Line {
    Text(String),
    Eof,
}

struct ChildRun {
    child: Child,
    lines: Receiver<Line>,
    seen: Vec<String>,
    servers: Vec<Server>,
}

impl ChildRun {
    /// Starts this test binary as a child in `mode` and waits for it to report
    /// its servers.
    fn start(mode: &str) -> ChildRun {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_starts_server",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, mode)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => {
                        if tx.send(Line::Text(l)).is_err() {
                            return;
                        }
                    }
                    Err(_) => break,
                }
            }
            let _ = tx.send(Line::Eof);
        });
        let mut run = ChildRun {
            child,
            lines,
            seen: Vec::new(),
            servers: Vec::new(),
        };
        loop {
            let line = run.next_line(Duration::from_secs(180));
            // libtest prints "test child_starts_server ... " without a newline
            // before our first line, so markers may appear mid-line.
            if line.ends_with("READY") {
                break;
            }
            if let Some(rest) = line.find("SERVER ").map(|i| &line[i + "SERVER ".len()..]) {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap().to_string();
                let port = parts.next().unwrap().parse().unwrap();
                let data_dir = PathBuf::from(parts.next().unwrap());
                run.servers.push(Server {
                    kind,
                    port,
                    data_dir,
                });
            }
        }
        assert_eq!(run.servers.len(), 2, "child output: {:?}", run.seen);
        for s in &run.servers {
            assert!(accepts(s.port), "{} on {} not accepting", s.kind, s.port);
            assert!(s.data_dir.is_dir(), "{}", s.data_dir.display());
            assert!(s
                .data_dir
                .parent()
                .unwrap()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("cutover-testkit-"));
        }
        run
    }

    fn next_line(&mut self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(Line::Text(l)) => {
                self.seen.push(l.clone());
                l
            }
            Ok(Line::Eof) | Err(_) => {
                let _ = self.child.kill();
                panic!(
                    "child ended or stalled before the expected line; output so far: {:#?}",
                    self.seen
                )
            }
        }
    }

    /// After the child exited: its stdout must reach EOF promptly, i.e. no server or
    /// watchdog inherited it (a harness reading it to the end would hang otherwise).
    fn expect_eof(&mut self) -> Vec<String> {
        let mut rest = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(10)) {
                Ok(Line::Text(l)) => rest.push(l),
                Ok(Line::Eof) => return rest,
                Err(_) => {
                    panic!("child's stdout still open after it exited (inherited by a server?)")
                }
            }
        }
    }

    /// Waits until every server is unreachable and its directory is gone.
    fn expect_servers_gone(&self, within: Duration) -> Duration {
        let started = Instant::now();
        loop {
            let left: Vec<String> = self
                .servers
                .iter()
                .filter_map(|s| {
                    let top = s.data_dir.parent().unwrap();
                    let listening = accepts(s.port);
                    let exists = top.exists();
                    (listening || exists).then(|| {
                        format!(
                            "{} port {} listening={listening}, {} exists={exists}",
                            s.kind,
                            s.port,
                            top.display()
                        )
                    })
                })
                .collect();
            if left.is_empty() {
                return started.elapsed();
            }
            assert!(
                started.elapsed() < within,
                "servers still there after {within:?}: {left:?}"
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildRun {
    fn drop(&mut self) {
        // Don't leave a sleeping child behind when an assertion fails.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long a server may outlive the process that started it. The watchdog alone may take
/// 10 s by design (the polite signal, 5 s, SIGKILL, 5 s) before it deletes the directory; on
/// a loaded machine a little more. Normally it is a second or two (printed by the tests).
const SERVERS_GONE_WITHIN: Duration = Duration::from_secs(30);

fn accepts(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

#[test]
fn servers_stop_when_the_process_exits() {
    let mut run = ChildRun::start("exit");
    let status = run.child.wait().unwrap();
    assert!(status.success(), "child failed: {status}; {:?}", run.seen);
    let rest = run.expect_eof();
    // The atexit handler alone (the watchdog can't have acted yet) already cleaned up.
    let report = rest
        .iter()
        .find(|l| l.starts_with("AFTER-ATEXIT"))
        .unwrap_or_else(|| panic!("no AFTER-ATEXIT line in {rest:?}"));
    assert!(
        !report.contains("=true"),
        "atexit left something behind: {report}"
    );
    assert_eq!(report.matches("listening=false").count(), 2, "{report}");
    let took = run.expect_servers_gone(SERVERS_GONE_WITHIN);
    eprintln!("servers gone {took:?} after normal exit");
    for s in &run.servers {
        assert!(
            !processes_in(&s.data_dir),
            "{} process still running",
            s.kind
        );
    }
}

#[test]
fn servers_stop_when_the_process_is_killed() {
    let mut run = ChildRun::start("sleep");
    let killed_at = Instant::now();
    run.child.kill().unwrap(); // SIGKILL: no atexit, only the watchdogs can help
    let status = run.child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(libc::SIGKILL)
    );
    run.expect_eof();
    run.expect_servers_gone(SERVERS_GONE_WITHIN);
    eprintln!(
        "servers gone {:?} after SIGKILL of the test process",
        killed_at.elapsed()
    );
    // Nothing of ours may survive: no process still runs in a deleted data dir.
    for s in &run.servers {
        assert!(
            !processes_in(&s.data_dir),
            "{} process still running",
            s.kind
        );
    }
}

/// True if some process's working directory is (or was, before deletion) `dir`.
fn processes_in(dir: &Path) -> bool {
    let deleted = format!("{} (deleted)", dir.display());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_link(e.path().join("cwd")).ok())
        .any(|cwd| cwd == dir || cwd.to_string_lossy() == deleted)
}
