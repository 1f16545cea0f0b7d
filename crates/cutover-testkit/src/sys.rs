//! Process, file-system and clean-up plumbing shared by both servers.
//!
//! Clean-up has two independent layers:
//!
//! * a registry of started servers, torn down by a `libc::atexit` handler when the
//!   process exits normally (which includes a `cargo test` run with failing tests);
//! * one detached watchdog shell per server, in its own session, that blocks on a
//!   pipe whose write end only this process holds. When this process is gone for any
//!   reason (normal exit, panic=abort, SIGINT, SIGKILL) the pipe reaches EOF and the
//!   watchdog stops the server and deletes its directory.
//!
//! Neither layer ever signals a process by name: only pids this process spawned (or
//! that our own server wrote into its pid file inside our private temp dir), and only
//! while `/proc/PID/cwd` is still that private data directory.

use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, Once};
use std::thread;
use std::time::{Duration, Instant};

use crate::HarnessError;

/// The unprivileged account a server runs as when this process is root.
#[derive(Debug, Clone)]
pub(crate) struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// Returns `None` when not running as root (the server then runs as us), else the
/// uid/gid of `user`.
pub(crate) fn run_as(
    user: &str,
    server: &'static str,
    install: &str,
) -> Result<Option<RunAs>, HarnessError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    match lookup_user(user) {
        Some((uid, gid)) => Ok(Some(RunAs {
            name: user.to_string(),
            uid,
            gid,
        })),
        None => Err(HarnessError::MissingUser {
            server,
            user: user.to_string(),
            install: install.to_string(),
        }),
    }
}

fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf: Vec<libc::c_char> = vec![0; 1 << 16];
    // SAFETY: an all-zero `passwd` is a valid value (null pointers, zero ids); it is
    // only read after getpwnam_r reported success, which fills it in.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call and `buf.len()` is
    // the true size of `buf`; getpwnam_r is the thread-safe variant.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// Makes `cmd` run as `run_as` (if any).
pub(crate) fn as_user(cmd: &mut Command, run_as: Option<&RunAs>) {
    if let Some(r) = run_as {
        // std also clears supplementary groups when dropping from root.
        cmd.uid(r.uid).gid(r.gid);
    }
}

/// Removes every environment variable starting with one of `prefixes`, so that e.g.
/// `PGHOST`/`PGPORT`/`MYSQL_TCP_PORT` in the caller's environment can never redirect
/// a client to another server.
pub(crate) fn scrub_env(cmd: &mut Command, prefixes: &[&str]) {
    for (key, _) in std::env::vars_os() {
        let k = key.to_string_lossy();
        if prefixes.iter().any(|p| k.starts_with(p)) {
            cmd.env_remove(&key);
        }
    }
}

/// A server's private directories: `top` (0755, removed at the end) and `top/data`.
#[derive(Debug, Clone)]
pub(crate) struct ServerDir {
    pub top: PathBuf,
    pub data: PathBuf,
}

/// Where to create server directories: `std::env::temp_dir()` when its path is short,
/// plain (safe to pass inside a `pg_ctl -o` string and short enough for a unix socket
/// path) and traversable by the server user; otherwise `/tmp`.
fn temp_base(run_as: Option<&RunAs>) -> PathBuf {
    let t = std::env::temp_dir();
    let s = t.to_string_lossy();
    let plain = t.is_absolute()
        && s.len() <= 60
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    let traversable = run_as.is_none()
        || t.ancestors().all(|a| {
            fs::metadata(a)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
        });
    if plain && traversable && t.is_dir() {
        t
    } else {
        PathBuf::from("/tmp")
    }
}

pub(crate) fn make_server_dir(
    kind: &str,
    owner: Option<&RunAs>,
) -> Result<ServerDir, HarnessError> {
    let base = temp_base(owner);
    let mut top = None;
    for _ in 0..100 {
        let suffix: String = std::iter::repeat_with(fastrand::alphanumeric)
            .take(6)
            .collect();
        let candidate = base.join(format!("cutover-testkit-{kind}-{suffix}"));
        match fs::DirBuilder::new().mode(0o755).create(&candidate) {
            Ok(()) => {
                top = Some(candidate);
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(HarnessError::io(
                    format!("creating a temp dir under {}", base.display()),
                    e,
                ))
            }
        }
    }
    let top = top.ok_or_else(|| {
        HarnessError::io(
            format!("creating a temp dir under {}", base.display()),
            "100 random names were all taken",
        )
    })?;
    let result = (|| {
        // The umask may have narrowed the mode; the server user must be able to enter.
        fs::set_permissions(&top, fs::Permissions::from_mode(0o755))
            .map_err(|e| HarnessError::io(format!("chmod 0755 {}", top.display()), e))?;
        let top = fs::canonicalize(&top)
            .map_err(|e| HarnessError::io(format!("resolving {}", top.display()), e))?;
        let data = top.join("data");
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&data)
            .map_err(|e| HarnessError::io(format!("creating {}", data.display()), e))?;
        fs::set_permissions(&data, fs::Permissions::from_mode(0o700))
            .map_err(|e| HarnessError::io(format!("chmod 0700 {}", data.display()), e))?;
        let dir = ServerDir { top, data };
        chown_to(&dir.top, owner)?;
        chown_to(&dir.data, owner)?;
        Ok(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&top);
    }
    result
}

/// Creates `path` (0700) owned by the server user.
pub(crate) fn make_owned_dir(path: &Path, owner: Option<&RunAs>) -> Result<(), HarnessError> {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|e| HarnessError::io(format!("creating {}", path.display()), e))?;
    chown_to(path, owner)
}

pub(crate) fn chown_to(path: &Path, owner: Option<&RunAs>) -> Result<(), HarnessError> {
    if let Some(r) = owner {
        chown(path, Some(r.uid), Some(r.gid))
            .map_err(|e| HarnessError::io(format!("chown {} {}", r.name, path.display()), e))?;
    }
    Ok(())
}

/// A loopback port that was free a moment ago (never 5432 or 3306).
pub(crate) fn free_port() -> Result<u16, HarnessError> {
    for _ in 0..20 {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| HarnessError::io("binding 127.0.0.1:0 to find a free port", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| HarnessError::io("reading the port of 127.0.0.1:0", e))?
            .port();
        if port != 5432 && port != 3306 {
            return Ok(port);
        }
    }
    Err(HarnessError::io(
        "finding a free port",
        "the kernel kept returning reserved ports",
    ))
}

/// `true` while `pid` is a live process whose working directory is `data`. Both
/// servers chdir into their data directory, which is private to this harness, so
/// this is how we make sure a pid is still *our* server before signalling it.
pub(crate) fn is_ours(pid: i32, data: &Path) -> bool {
    pid > 0
        && fs::read_link(format!("/proc/{pid}/cwd"))
            .map(|cwd| cwd == data)
            .unwrap_or(false)
}

/// Reads the pid on the first line of a server pid file.
pub(crate) fn pid_from_file(path: &Path) -> Option<i32> {
    let text = fs::read_to_string(path).ok()?;
    text.lines().next()?.trim().parse().ok()
}

pub(crate) fn signal(pid: i32, sig: libc::c_int) {
    if pid > 0 {
        // SAFETY: kill has no memory-safety preconditions; pid > 0 targets one process.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// The last `lines` lines of a (log) file, or a note saying why it can't be read.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(could not read {}: {e})", path.display()),
    }
}

/// `--- last lines of PATH ---` followed by the tail of that file.
pub(crate) fn log_section(path: &Path, lines: usize) -> String {
    format!(
        "--- last lines of {} ---\n{}",
        path.display(),
        log_tail(path, lines)
    )
}

/// A shell-like rendering of a command line for error messages.
pub(crate) fn describe(cmd: &Command, run_as: Option<&RunAs>) -> String {
    let mut s = String::new();
    if let Some(r) = run_as {
        s.push_str(&format!("[as user {}] ", r.name));
    }
    s.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&quote(arg));
    }
    s
}

fn quote(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-=:,@+%".contains(c));
    if plain {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion with stdin closed, capturing its output.
pub(crate) fn run_captured(cmd: &mut Command, what: &str) -> Result<Output, HarnessError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| HarnessError::io(format!("running {what}"), e))
}

pub(crate) fn combined_output(out: &Output) -> String {
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    if !err.trim().is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&err);
    }
    s.trim_end().to_string()
}

/// Runs a client with `sql` on its stdin and returns stdout without leading/trailing
/// newlines.
pub(crate) fn run_sql(mut cmd: Command, sql: &str) -> Result<String, HarnessError> {
    let command = describe(&cmd, None);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| HarnessError::io(format!("running `{command}`"), e))?;
    let stdin = child.stdin.take();
    let mut input = sql.as_bytes().to_vec();
    input.push(b'\n');
    // Feed stdin from another thread so a large result can't deadlock against a
    // large script.
    let writer = thread::spawn(move || {
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input);
        }
    });
    let out = child
        .wait_with_output()
        .map_err(|e| HarnessError::io(format!("waiting for `{command}`"), e))?;
    let _ = writer.join();
    if !out.status.success() {
        let mut shown: String = sql.chars().take(500).collect();
        if shown.len() < sql.len() {
            shown.push_str(" …");
        }
        return Err(HarnessError::Sql {
            command,
            status: out.status.to_string(),
            sql: shown,
            stderr: String::from_utf8_lossy(&out.stderr).trim_end().to_string(),
        });
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim_matches(['\n', '\r']).to_string())
}

/// `t_<prefix>_<16 hex>`: a valid unquoted identifier in both servers, ≤ 59 bytes.
pub(crate) fn fresh_name(prefix: &str) -> String {
    let clean: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    if clean.is_empty() {
        format!("t_{:016x}", fastrand::u64(..))
    } else {
        format!("t_{clean}_{:016x}", fastrand::u64(..))
    }
}

// ---------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------

/// `sh -c WATCHDOG $0 TOP DATA SIGNAL PIDFILE`. Blocks reading pids from stdin until
/// EOF (= the test process is gone), then stops every reported pid (plus the one in
/// the pid file) that still runs inside DATA, and removes TOP.
const WATCHDOG: &str = r#"
top=$1 data=$2 sig=$3 pidfile=$4
trap '' HUP INT
pids=
while read -r p; do pids="$pids $p"; done
if p=$(head -n 1 "$pidfile" 2>/dev/null); then pids="$pids $p"; fi
ours() {
  case $1 in ''|*[!0-9]*) return 1 ;; esac
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$data" ]
}
any_alive() {
  for p in $pids; do ours "$p" && return 0; done
  return 1
}
for p in $pids; do ours "$p" && kill -s "$sig" "$p" 2>/dev/null; done
i=0
while any_alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
for p in $pids; do ours "$p" && kill -s KILL "$p" 2>/dev/null; done
i=0
while any_alive && [ "$i" -lt 50 ]; do sleep 0.1; i=$((i+1)); done
case $top in */cutover-testkit-*) rm -rf "$top" ;; esac
"#;

pub(crate) struct Watchdog {
    child: Child,
    stdin: ChildStdin,
}

/// Spawns the watchdog for `dir`. `sig` is the polite stop signal name (`QUIT` =
/// PostgreSQL immediate shutdown, `TERM` for MariaDB).
pub(crate) fn spawn_watchdog(
    dir: &ServerDir,
    sig: &str,
    pidfile: &Path,
) -> Result<Watchdog, HarnessError> {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(WATCHDOG)
        .arg("cutover-testkit-watchdog")
        .arg(&dir.top)
        .arg(&dir.data)
        .arg(sig)
        .arg(pidfile)
        .current_dir("/")
        .stdin(Stdio::piped())
        // Never inherit our stdout/stderr: a harness that reads them to EOF
        // (nextest, the re-exec tests) would otherwise wait for the watchdog.
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls
    // setsid, which is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| HarnessError::io("spawning the clean-up watchdog (/bin/sh)", e))?;
    match child.stdin.take() {
        // std creates the pipe with O_CLOEXEC, so no other child (in particular the
        // servers) inherits the write end; it closes exactly when we exit.
        Some(stdin) => Ok(Watchdog { child, stdin }),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(HarnessError::io(
                "spawning the clean-up watchdog",
                "no stdin pipe",
            ))
        }
    }
}

// ---------------------------------------------------------------------------
// Registry + atexit
// ---------------------------------------------------------------------------

/// How to stop a registered server.
pub(crate) enum Stop {
    /// Nothing running yet (still being set up).
    Nothing,
    /// `pg_ctl stop -m immediate` (as `run_as`), then SIGKILL of the pid-file pid.
    PgCtl {
        pg_ctl: PathBuf,
        run_as: Option<RunAs>,
    },
    /// Our own child process: SIGTERM, then SIGKILL after a grace period.
    Child(Child),
}

struct Entry {
    id: u64,
    dir: ServerDir,
    pidfile: PathBuf,
    stop: Stop,
    watchdog: Option<Watchdog>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: Mutex<u64> = Mutex::new(0);
static ATEXIT: Once = Once::new();

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Registers a server directory (and its watchdog) for clean-up at exit; returns
/// the handle used by the other registry functions.
pub(crate) fn register(dir: ServerDir, pidfile: PathBuf, watchdog: Watchdog) -> u64 {
    ATEXIT.call_once(|| {
        // SAFETY: `cleanup_at_exit` is an `extern "C" fn()` that never unwinds.
        unsafe {
            libc::atexit(cleanup_at_exit);
        }
    });
    let id = {
        let mut next = NEXT_ID.lock().unwrap_or_else(|p| p.into_inner());
        *next += 1;
        *next
    };
    registry().push(Entry {
        id,
        dir,
        pidfile,
        stop: Stop::Nothing,
        watchdog: Some(watchdog),
    });
    id
}

pub(crate) fn set_stop(id: u64, stop: Stop) {
    if let Some(e) = registry().iter_mut().find(|e| e.id == id) {
        e.stop = stop;
    }
}

/// Tells the watchdog of `id` about a server pid as soon as it exists.
pub(crate) fn report_pid(id: u64, pid: u32) {
    if let Some(e) = registry().iter_mut().find(|e| e.id == id) {
        if let Some(w) = e.watchdog.as_mut() {
            let _ = writeln!(w.stdin, "{pid}");
        }
    }
}

/// `~/.cache/cutover-test-tools/<tool>` (`$XDG_CACHE_HOME` first), where the scripts in
/// `scripts/` install the test servers that are not Debian packages.
pub(crate) fn tools_cache(tool: &str) -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/tmp"))
        .join("cutover-test-tools")
        .join(tool)
}

/// Starts a server that writes no pid file of its own, on a free loopback port, for the
/// registered server `id` (which it tears down on failure): `command(port)` builds the
/// command, run in its own process group with stdout and stderr appended to `log` and its pid
/// written to `pidfile`; ready once the port takes connections within `patience`. Tried again
/// with a new port, up to 3 times, when the log shows `in_use` (the port was taken first).
pub(crate) fn start_listening(
    id: u64,
    server: &'static str,
    pidfile: &Path,
    log: &Path,
    patience: std::time::Duration,
    in_use: &str,
    mut command: impl FnMut(u16) -> Command,
) -> Result<u16, HarnessError> {
    use std::time::Instant;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let port = free_port()?;
        let opened = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|out| Ok((out.try_clone()?, out)));
        let (out, err) = match opened {
            Ok(o) => o,
            Err(e) => {
                teardown(id);
                return Err(HarnessError::io(format!("opening the {server} log"), e));
            }
        };
        let mut cmd = command(port);
        cmd.stdin(std::process::Stdio::null())
            .stdout(out)
            .stderr(err);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let described = describe(&cmd, None);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                teardown(id);
                return Err(HarnessError::io(format!("spawning `{described}`"), e));
            }
        };
        let _ = std::fs::write(pidfile, format!("{}\n", child.id()));
        report_pid(id, child.id());
        let deadline = Instant::now() + patience;
        let outcome = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("it exited with {status}"));
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break Ok(());
            }
            if Instant::now() > deadline {
                break Err(format!("not listening within {} s", patience.as_secs()));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        match outcome {
            Ok(()) => {
                set_stop(id, Stop::Child(child));
                return Ok(port);
            }
            Err(reason) => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(log).unwrap_or_default();
                if text.contains(in_use) && attempt < 3 {
                    continue;
                }
                teardown(id);
                return Err(HarnessError::StartFailed {
                    server,
                    port,
                    reason,
                    command: described,
                    log_tail: log_section(log, 20),
                    fix: "see the log above".to_owned(),
                });
            }
        }
    }
}

/// Stops the server of `id` now and removes its directory (used when a start fails).
pub(crate) fn teardown(id: u64) {
    let entry = {
        let mut reg = registry();
        let pos = reg.iter().position(|e| e.id == id);
        pos.map(|p| reg.remove(p))
    };
    if let Some(mut entry) = entry {
        let watchdog = entry.watchdog.take();
        stop_entry(entry);
        if let Some(Watchdog { mut child, stdin }) = watchdog {
            drop(stdin); // EOF: it finds nothing left to do and exits
            let _ = child.wait();
        }
    }
}

extern "C" fn cleanup_at_exit() {
    let _ = std::panic::catch_unwind(|| {
        // Another thread may hold the lock if `exit` was called mid-start; don't
        // deadlock the exit — the watchdogs cover whatever we skip.
        let deadline = Instant::now() + Duration::from_secs(5);
        let entries = loop {
            match REGISTRY.try_lock() {
                Ok(mut reg) => break std::mem::take(&mut *reg),
                Err(std::sync::TryLockError::Poisoned(p)) => {
                    break std::mem::take(&mut *p.into_inner())
                }
                Err(std::sync::TryLockError::WouldBlock) if Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(10))
                }
                Err(std::sync::TryLockError::WouldBlock) => return,
            }
        };
        for mut entry in entries {
            // Keep the watchdog's pipe open until the process is really gone; it
            // then wakes up, finds nothing to do and exits.
            let watchdog = entry.watchdog.take();
            stop_entry(entry);
            std::mem::forget(watchdog);
        }
    });
}

fn stop_entry(entry: Entry) {
    let Entry {
        dir, pidfile, stop, ..
    } = entry;
    match stop {
        Stop::Nothing => {}
        Stop::PgCtl { pg_ctl, run_as } => {
            let mut cmd = Command::new(&pg_ctl);
            cmd.arg("-D")
                .arg(&dir.data)
                .args(["stop", "-m", "immediate", "-w", "-t", "15"])
                .current_dir(&dir.top)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            scrub_env(&mut cmd, &["PG"]);
            as_user(&mut cmd, run_as.as_ref());
            let _ = cmd.status();
        }
        Stop::Child(mut child) => {
            if let Ok(None) = child.try_wait() {
                signal(child.id() as i32, libc::SIGTERM);
                let deadline = Instant::now() + Duration::from_secs(10);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(50));
                }
                if let Ok(None) = child.try_wait() {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }
    // Last resort, e.g. pg_ctl failed or the server was started by a process we
    // don't hold: SIGKILL the pid-file pid if it still runs in our data dir.
    if let Some(pid) = pid_from_file(&pidfile) {
        if is_ours(pid, &dir.data) {
            signal(pid, libc::SIGKILL);
            let deadline = Instant::now() + Duration::from_secs(5);
            while is_ours(pid, &dir.data) && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
    if dir
        .top
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("cutover-testkit-"))
    {
        let _ = fs::remove_dir_all(&dir.top);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_names_are_safe_identifiers() {
        let a = fresh_name("Orders / Q1-2024!");
        let b = fresh_name("Orders / Q1-2024!");
        assert_ne!(a, b);
        assert!(a.starts_with("t_orders___q1_2024__"), "{a}");
        let long = fresh_name(&"x".repeat(200));
        assert!(long.len() <= 59, "{}", long.len());
        for name in [a, long, fresh_name("")] {
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
        }
    }

    #[test]
    fn commands_are_described_with_shell_quoting() {
        let mut cmd = Command::new("/usr/bin/psql");
        cmd.args(["-c", "select 'x'", "-p", "5"]);
        let run_as = RunAs {
            name: "postgres".into(),
            uid: 1,
            gid: 1,
        };
        assert_eq!(
            describe(&cmd, Some(&run_as)),
            r"[as user postgres] /usr/bin/psql -c 'select '\''x'\''' -p 5"
        );
    }

    #[test]
    fn log_tail_keeps_the_last_lines() {
        let path = std::env::temp_dir().join(format!(
            "cutover-testkit-unit-{:016x}.log",
            fastrand::u64(..)
        ));
        fs::write(&path, "a\nb\nc\n").unwrap();
        assert_eq!(log_tail(&path, 2), "b\nc");
        fs::remove_file(&path).unwrap();
        assert!(log_tail(&path, 2).starts_with("(could not read"));
    }
}
