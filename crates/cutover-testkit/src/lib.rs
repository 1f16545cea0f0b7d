//! Throwaway PostgreSQL, MariaDB and Redis servers for cutover's integration tests
//! ([`Redis`]: one server per test, started from `redis-server`, killed on drop).
//!
//! [`Postgres::shared`] and [`MariaDb::shared`] start one server of each kind per
//! test process, on first use, from the locally installed binaries:
//!
//! * in a fresh private directory `$TMPDIR/cutover-testkit-{pg,my}-XXXXXX` (or under
//!   `/tmp` when `$TMPDIR` is long, unusual or not traversable by the server user);
//! * on a free loopback port (`127.0.0.1` only; never 5432 or 3306), retried with a
//!   new port up to 3 times if the port gets taken before the server binds it;
//! * with no system configuration: the machine's own servers, their sockets, data
//!   directories and option files are never used or contacted, and `PG*` / `MYSQL*` /
//!   `MARIADB*` environment variables are removed from every command we run.
//!
//! When the process runs as root (the servers refuse to), the servers run as the
//! `postgres` / `mysql` system users, which then own the temp directories.
//!
//! SQL is sent through the `psql` / `mariadb` command-line clients; there is no
//! driver dependency.
//!
//! # Clean-up contract
//!
//! Every server this crate starts is stopped and its directory deleted when the
//! process ends:
//!
//! * normal exit — including a `cargo test` run in which tests panicked — via a
//!   `libc::atexit` handler (PostgreSQL: `pg_ctl stop -m immediate`; MariaDB:
//!   SIGTERM, then SIGKILL after 10 s);
//! * any other end (SIGKILL, SIGINT, `panic = "abort"`) via a detached watchdog
//!   (`sh`, in its own session) per server that notices the process is gone through
//!   a pipe only this process holds, signals the server (SIGQUIT / SIGTERM, then
//!   SIGKILL after 5 s) and removes the directory, normally within a second or two.
//!
//! Only pids this crate spawned (or that its own servers wrote to their pid files),
//! and only while their working directory is still the private data directory, are
//! ever signalled. Nothing is killed by name.
//!
//! # Locating the programs
//!
//! * PostgreSQL: the directory in `CUTOVER_PG_BIN`, else `pg_config --bindir`, else
//!   the highest `/usr/lib/postgresql/*/bin`, else `PATH` — the first that contains
//!   `initdb`.
//! * MariaDB: `mariadbd`, `mariadb-install-db` and `mariadb` from
//!   `CUTOVER_MARIADB_BIN` if set, else `/usr/sbin`, `/usr/bin`, `/usr/local/{sbin,bin}`,
//!   `PATH`.
//!
//! If they are missing, errors say how to install them (`scripts/ensure-servers.sh`
//! does it on Debian/Ubuntu).
//!
//! # Time limit: no test binary waits forever
//!
//! A hung test must fail the run, not stall CI until CI's own limit. Two layers:
//!
//! * **Per test binary** ([`time_limit`]): the first use of this crate
//!   ([`Postgres::shared`], [`Postgres::dedicated`], [`MariaDb::shared`], or a direct
//!   [`time_limit()`] call, which tests that start no server make) starts a thread that,
//!   after `CUTOVER_TEST_TIMEOUT_SECS` seconds (default 900 = 15 min; `0` = off), writes to
//!   stderr which limit was exceeded and which threads still run (libtest names them after
//!   the tests), and aborts the process. Servers are then stopped and removed by the
//!   watchdogs described above; child processes started with [`end_with_test`] or
//!   [`KillOnDrop`] are killed by the kernel (`PR_SET_PDEATHSIG`).
//! * **Whole run**: `scripts/test` runs the tests under `timeout` (default 25 min,
//!   `CUTOVER_TEST_RUN_TIMEOUT_SECS`), which ends every process of the run, e.g. a hang
//!   in a test binary that never uses this crate.
//!
//! The limits are generous: on a 2-core machine the whole suite took 3–4 min, and 4–7 min
//! beside a CPU hog (`stress-ng --cpu 2`), its slowest binary (`cutover-cli`'s) up to 4 min of
//! that. A test that waits for something (a phase, a row count) waits with a deadline of
//! its own and panics with a message saying what it waited for.
//!
//! # Guards: what a test starts ends with it
//!
//! A panicking test must not leave a thread or a process running, least of all inside
//! `std::thread::scope`, which joins its threads before the panic goes on: a writer thread
//! that nobody stops makes the scope, and the test binary, wait forever.
//!
//! * [`stop_on_drop`] / [`on_drop`]: a guard that sets a stop flag (or runs a closure) when
//!   dropped, also while a panic unwinds. In a scope, create it first thing in the closure,
//!   before spawning the threads it stops.
//! * [`KillOnDrop`]: a child process that is killed and reaped when dropped.
//!
//! # Example
//!
//! ```no_run
//! use cutover_testkit::Postgres;
//!
//! let pg = Postgres::shared()?;
//! let db = pg.fresh_database("orders")?;
//! pg.psql(&db, "CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1)")?;
//! assert_eq!(pg.psql(&db, "SELECT count(*) FROM t")?, "1");
//! let url = pg.url(&db); // postgres://postgres@127.0.0.1:PORT/t_orders_…
//! # let _ = url;
//! # Ok::<(), cutover_testkit::HarnessError>(())
//! ```
#![warn(missing_docs)]

mod dynamodb;
mod error;
mod guard;
mod kafka;
mod limit;
mod mariadb;
mod nats;
mod pki;
mod postgres;
mod redis;
mod sys;

pub use dynamodb::DynamoLocal;
pub use error::HarnessError;
pub use guard::{end_with_test, on_drop, stop_on_drop, KillOnDrop, OnDrop};
pub use kafka::Kafka;
pub use limit::{time_limit, DEFAULT_TIMEOUT, TIMEOUT_ENV};
pub use mariadb::MariaDb;
pub use nats::Nats;
pub use pki::{CertPair, Pki};
pub use postgres::{Postgres, ServerSetup};
pub use redis::Redis;
