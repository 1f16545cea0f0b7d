//! The conformance suite every engine runs: one test per sentence of the contracts in
//! `cutover-connector` ([`Source`], [`Sink`], [`StateStore`](cutover_connector::StateStore)), each named after the sentence it checks.
//!
//! An engine implements [`Engine`] in its test binary (fresh databases, SQL through the
//! engine's own driver, its failpoint names, a table of every type it supports) and expands
//! [`conformance_tests!`], which gives one `#[test]` per contract sentence:
//!
//! ```text
//! cutover_conformance::conformance_tests! {
//!     engine: MyEngine::new(),
//!     known_failures: [
//!         (read_changes_never_splits_a_transaction, "why, and where it is tracked"),
//!     ],
//! }
//! ```
//!
//! Every check compares what cutover reads or writes with what the engine's own driver reads
//! ([`Engine::rows`]), never with cutover's reader. A known failure still runs: it passes while
//! it fails as known, and fails the run the moment it passes (take it off the list then).
//!
//! Tests that configure a failpoint (process-wide) run alone; the others run in parallel.

pub mod crash;
pub mod fixture;
pub mod sink;
pub mod source;
pub mod state;
pub mod target;
pub mod verify;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use cutover_connector::{Connect, RangeChecksum, SourceFactory, TargetFactory};
use cutover_model::Row;

/// One source database and one empty target database, and the connectors to them (of one
/// engine for [`Engine`]; a source engine's and the target engine's for [`TargetEngine`]).
#[derive(Debug, Clone)]
pub struct Migration<S, T = S> {
    pub source: S,
    pub target: T,
    /// The engine's name of each database (a path, a database name), for [`Engine`]'s calls.
    pub source_db: String,
    pub target_db: String,
}

/// What the suite needs from an engine, implemented in the engine's test binary.
pub trait Engine: Sync {
    type Connect: Connect + Clone + Send + Sync + 'static;

    /// A fresh source database with `ddl` run on it, and a fresh empty target database that
    /// takes its tables from that source. `name` is unique per test (for names of databases,
    /// slots, files).
    fn migration(&self, name: &str, ddl: &str) -> Migration<Self::Connect>;

    /// Runs `sql` (one or more `;`-separated statements, transactions spelled out with
    /// `BEGIN`/`COMMIT`/`ROLLBACK`) on database `db` through the engine's own driver. On a
    /// target, the engine lets these sessions write (a target may refuse others' writes).
    fn execute(&self, db: &str, sql: &str) -> Result<(), String>;

    /// Every row of `table` ordered by `order_by`, read by the engine's own driver (not
    /// cutover's) and turned into model values by the test harness.
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row>;

    /// The engine's verify side on database `db` (checksums pushed into the engine).
    fn verifier(&self, db: &str) -> Box<dyn cutover_connector::RangeChecksum + Send>;

    /// The name of the failpoint between a sink's writes and its commit.
    fn sink_before_commit(&self) -> &'static str;

    /// SQL that records `version` as the target's state-store version (to plant a store
    /// written by a newer cutover).
    fn store_version_sql(&self, version: u32) -> String;

    /// A table holding every type the engine supports: its DDL (table `types`, primary key
    /// `id`) and the statements that fill it. Values should include each type's edges.
    fn type_table(&self) -> TypeTable;
}

/// What the target half of the suite needs: a target engine, fed by a source engine (SQLite or
/// PostgreSQL) whose rows and SQL go through that source's own driver, and whose own "rows"
/// are read back by the target's own driver (for Redis: the `redis` crate, decoded by the
/// test), never through cutover's reader. Every [`Engine`] is one (source and target of the
/// same engine); a target-only engine (Redis; next NATS JetStream) implements it directly and
/// expands [`target_conformance_tests!`].
pub trait TargetEngine: Sync {
    type Source: SourceFactory + Clone + Send + Sync + 'static;
    type Target: TargetFactory + Clone + Send + Sync + 'static;

    /// A fresh source database with `ddl` run on it, and a fresh empty target.
    fn migration(&self, name: &str, ddl: &str) -> Migration<Self::Source, Self::Target>;

    /// Runs SQL on the **source** database `db` through the source's own driver.
    fn execute(&self, db: &str, sql: &str) -> Result<(), String>;

    /// Every row of `table` ordered by `order_by` (the key columns, comma-separated), read by
    /// the source's driver on the source database and by the target's own driver on the
    /// target (`Migration::target_db`), as model values typed by the table's columns.
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row>;

    /// The verify side on database `db` (for a target-only engine: the target's).
    fn verifier(&self, db: &str) -> Box<dyn RangeChecksum + Send>;

    /// The name of the failpoint between the target's writes and its commit.
    fn sink_before_commit(&self) -> &'static str;

    /// Records `version` as the target's state-store version (a store written by a newer
    /// cutover), through the target's own driver.
    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String>;

    /// Checks, through the target's own driver, what `prepare` made of the suite's tables
    /// (SQL targets: that the primary keys and NOT NULL were created). Nothing by default.
    fn check_prepared(&self, db: &str) {
        let _ = db;
    }

    /// A table with every type of the source engine (on the source), to sync to the target.
    fn type_table(&self) -> TypeTable;
}

/// A target that is not idempotent by key (a stream, files) reports what it holds: one
/// entry per captured row change delivered, named as the target names it (a stream's message
/// id without its per-event part, a change file's position and index), read with the target's
/// own driver. `rows` on such a target is what it holds folded by key.
pub trait Deliveries: TargetEngine {
    fn deliveries(&self, db: &str) -> Vec<String>;
}

impl<E: Engine> TargetEngine for E {
    type Source = E::Connect;
    type Target = E::Connect;

    fn migration(&self, name: &str, ddl: &str) -> Migration<E::Connect> {
        Engine::migration(self, name, ddl)
    }
    fn execute(&self, db: &str, sql: &str) -> Result<(), String> {
        Engine::execute(self, db, sql)
    }
    fn rows(&self, db: &str, table: &str, order_by: &str) -> Vec<Row> {
        Engine::rows(self, db, table, order_by)
    }
    fn verifier(&self, db: &str) -> Box<dyn RangeChecksum + Send> {
        Engine::verifier(self, db)
    }
    fn sink_before_commit(&self) -> &'static str {
        Engine::sink_before_commit(self)
    }
    fn plant_store_version(&self, db: &str, version: u32) -> Result<(), String> {
        Engine::execute(self, db, &self.store_version_sql(version))
    }
    /// A SQL target took the primary keys and NOT NULL (the suite's DDL: `items`, `pairs`).
    fn check_prepared(&self, db: &str) {
        let insert_items = crate::fixture::insert_items;
        Engine::execute(self, db, &insert_items([1])).unwrap();
        assert!(
            Engine::execute(self, db, &insert_items([1])).is_err(),
            "the primary key was created"
        );
        assert!(
            Engine::execute(self, db, "INSERT INTO items (id, n) VALUES (2, 2)").is_err(),
            "NOT NULL was carried"
        );
        assert!(
            Engine::execute(self, db, "INSERT INTO pairs (a, b, v) VALUES (1, 'x', 1); INSERT INTO pairs (a, b, v) VALUES (1, 'x', 2)")
                .is_err(),
            "the composite primary key was created"
        );
        Engine::execute(self, db, "DELETE FROM items").unwrap();
    }
    fn type_table(&self) -> TypeTable {
        Engine::type_table(self)
    }
}

/// See [`Engine::type_table`].
#[derive(Debug, Clone)]
pub struct TypeTable {
    pub ddl: String,
    pub insert: String,
}

/// Every test of the suite, by name (the names [`conformance_tests!`] expands).
pub const TESTS: &[&str] = &[
    "tables_lists_the_schema",
    "plan_chunks_ranges_cover_every_key_exactly_once",
    "read_chunk_rows_are_ordered_by_key_with_low_not_after_high",
    "start_capture_is_idempotent_and_keeps_changes_captured_since_the_first_call",
    "read_changes_returns_committed_changes_strictly_after_after_in_commit_order",
    "read_changes_never_splits_a_transaction",
    "read_changes_returns_the_same_changes_after_reopening",
    "rollbacks_never_appear",
    "release_then_restart_loses_nothing_not_released",
    "types_round_trip_through_chunks_and_change_capture",
    "prepare_creates_tables_from_the_schema",
    "apply_commits_all_or_nothing_with_its_checkpoint",
    "replaying_a_batch_leaves_the_target_as_once",
    "checkpoint_survives_reopening",
    "chunk_plan_returns_the_stored_plan_unchanged",
    "changes_applied_in_commit_order_give_the_source_state",
    "watch_and_record_recent_do_not_error",
    "a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch",
    "sync_resumes_after_a_failure_mid_sync_and_ends_equal",
    "checksum_buckets_are_the_canonical_rows_hashes",
    "split_returns_ascending_keys_inside_the_range",
    "canonical_rows_are_the_specs_text_of_the_drivers_values",
    "scan_pages_through_every_row_once_in_key_order",
    "state_store_migrates_once_and_refuses_a_newer_store",
    "state_store_reads_what_the_sink_wrote",
    "swap_phase_is_a_compare_and_swap",
];

/// Every test of the target half of the suite ([`target_conformance_tests!`]), by name.
pub const TARGET_TESTS: &[&str] = &[
    "prepare_creates_tables_from_the_schema",
    "apply_commits_all_or_nothing_with_its_checkpoint",
    "replaying_a_batch_leaves_the_target_as_once",
    "checkpoint_survives_reopening",
    "chunk_plan_returns_the_stored_plan_unchanged",
    "changes_applied_in_commit_order_give_the_source_state",
    "watch_and_record_recent_do_not_error",
    "a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch",
    "sync_resumes_after_a_failure_mid_sync_and_ends_equal",
    "checksum_buckets_are_the_canonical_rows_hashes",
    "split_returns_ascending_keys_inside_the_range",
    "canonical_rows_are_the_specs_text_of_the_drivers_values",
    "scan_pages_through_every_row_once_in_key_order",
    "state_store_migrates_once_and_refuses_a_newer_store",
    "state_store_reads_what_the_sink_wrote",
    "swap_phase_is_a_compare_and_swap",
];

/// Tests that configure failpoints: they run while no other test of the binary runs.
const ALONE: &[&str] = &[
    "a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch",
    "sync_resumes_after_a_failure_mid_sync_and_ends_equal",
    "each_change_is_delivered_once_across_crashes",
];

/// Failpoints are process-wide: a test that sets one holds this exclusively.
static FAILPOINTS: RwLock<()> = RwLock::new(());

/// The lock a test holds while it runs: shared, or exclusive for tests that set failpoints.
type Turn = (
    Option<RwLockReadGuard<'static, ()>>,
    Option<RwLockWriteGuard<'static, ()>>,
);

fn turn(name: &str) -> Turn {
    // A test that panicked while holding the lock poisons it; the others still run.
    if ALONE.contains(&name) {
        (
            None,
            Some(FAILPOINTS.write().unwrap_or_else(|p| p.into_inner())),
        )
    } else {
        (
            Some(FAILPOINTS.read().unwrap_or_else(|p| p.into_inner())),
            None,
        )
    }
}

/// Runs test `name` against `engine` (what [`conformance_tests!`] expands to). A test listed in
/// `known_failures` must fail: it passes while it does, and panics once it passes.
pub fn check<E>(engine: &E, name: &str, known_failures: &[(&str, &str)], test: fn(&E)) {
    cutover_testkit::time_limit();
    let _turn = turn(name);
    let Some((_, why)) = known_failures.iter().find(|(n, _)| *n == name) else {
        test(engine);
        return;
    };
    match catch_unwind(AssertUnwindSafe(|| test(engine))) {
        Ok(()) => panic!(
            "{name} is listed as a known failure ({why}) but passes now: take it off the list"
        ),
        Err(e) => {
            let msg = e
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| e.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            eprintln!("known failure {name}: {why}\n  it failed with: {msg}");
        }
    }
}

/// Checks that every name in a `known_failures` list is a test of the suite.
pub fn check_known_failures(known_failures: &[(&str, &str)]) {
    check_known_in(TESTS, known_failures)
}

/// Checks that every name in a `known_failures` list is one of `tests`.
pub fn check_known_in(tests: &[&str], known_failures: &[(&str, &str)]) {
    for (name, _) in known_failures {
        assert!(
            tests.contains(name),
            "known failure {name} is not a test of the conformance suite"
        );
    }
}

/// One `#[test]` per contract sentence for an engine; see the crate's documentation.
#[macro_export]
macro_rules! conformance_tests {
    (engine: $engine:expr, known_failures: [$(($known:ident, $why:literal)),* $(,)?] $(,)?) => {
        $crate::conformance_tests!(@tests $engine, [$((stringify!($known), $why)),*];
            source::tables_lists_the_schema,
            source::plan_chunks_ranges_cover_every_key_exactly_once,
            source::read_chunk_rows_are_ordered_by_key_with_low_not_after_high,
            source::start_capture_is_idempotent_and_keeps_changes_captured_since_the_first_call,
            source::read_changes_returns_committed_changes_strictly_after_after_in_commit_order,
            source::read_changes_never_splits_a_transaction,
            source::read_changes_returns_the_same_changes_after_reopening,
            source::rollbacks_never_appear,
            source::release_then_restart_loses_nothing_not_released,
            source::types_round_trip_through_chunks_and_change_capture,
            sink::prepare_creates_tables_from_the_schema,
            sink::apply_commits_all_or_nothing_with_its_checkpoint,
            sink::replaying_a_batch_leaves_the_target_as_once,
            sink::checkpoint_survives_reopening,
            sink::chunk_plan_returns_the_stored_plan_unchanged,
            sink::changes_applied_in_commit_order_give_the_source_state,
            sink::watch_and_record_recent_do_not_error,
            crash::a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch,
            crash::sync_resumes_after_a_failure_mid_sync_and_ends_equal,
            verify::checksum_buckets_are_the_canonical_rows_hashes,
            verify::split_returns_ascending_keys_inside_the_range,
            verify::canonical_rows_are_the_specs_text_of_the_drivers_values,
            verify::scan_pages_through_every_row_once_in_key_order,
            state::state_store_migrates_once_and_refuses_a_newer_store,
            state::state_store_reads_what_the_sink_wrote,
            state::swap_phase_is_a_compare_and_swap,
        );

        #[test]
        fn known_failures_are_tests_of_the_suite() {
            $crate::check_known_failures(&[$((stringify!($known), $why)),*]);
        }
    };
    (@tests $engine:expr, $known:tt; $($module:ident :: $name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                $crate::check(&$engine, stringify!($name), &$known, $crate::$module::$name);
            }
        )*
    };
}

/// One `#[test]` per sentence of the target contracts (`Sink`, `StateStore`, `RangeChecksum`,
/// `TableReader`) for a [`TargetEngine`]:
///
/// ```text
/// cutover_conformance::target_conformance_tests! { engine: MyTarget::new(), known_failures: [] }
/// ```
/// The target half of the suite plus delivery counts, for targets that are not idempotent by
/// key ([`Deliveries`]).
#[macro_export]
macro_rules! stream_target_conformance_tests {
    (engine: $engine:expr, known_failures: [$(($known:ident, $why:literal)),* $(,)?] $(,)?) => {
        $crate::target_conformance_tests!(engine: $engine, known_failures: [$(($known, $why)),*]);

        #[test]
        fn each_change_is_delivered_once_across_crashes() {
            $crate::check(
                &$engine,
                "each_change_is_delivered_once_across_crashes",
                &[],
                $crate::crash::each_change_is_delivered_once_across_crashes,
            );
        }
    };
}

#[macro_export]
macro_rules! target_conformance_tests {
    (engine: $engine:expr, known_failures: [$(($known:ident, $why:literal)),* $(,)?] $(,)?) => {
        $crate::conformance_tests!(@tests $engine, [$((stringify!($known), $why)),*];
            sink::prepare_creates_tables_from_the_schema,
            sink::apply_commits_all_or_nothing_with_its_checkpoint,
            sink::replaying_a_batch_leaves_the_target_as_once,
            sink::checkpoint_survives_reopening,
            sink::chunk_plan_returns_the_stored_plan_unchanged,
            sink::changes_applied_in_commit_order_give_the_source_state,
            sink::watch_and_record_recent_do_not_error,
            crash::a_crash_before_commit_keeps_the_old_checkpoint_and_none_of_the_batch,
            crash::sync_resumes_after_a_failure_mid_sync_and_ends_equal,
            target::checksum_buckets_are_the_canonical_rows_hashes,
            target::split_returns_ascending_keys_inside_the_range,
            target::canonical_rows_are_the_specs_text_of_the_drivers_values,
            target::scan_pages_through_every_row_once_in_key_order,
            state::state_store_migrates_once_and_refuses_a_newer_store,
            state::state_store_reads_what_the_sink_wrote,
            state::swap_phase_is_a_compare_and_swap,
        );

        #[test]
        fn known_failures_are_tests_of_the_target_suite() {
            $crate::check_known_in($crate::TARGET_TESTS, &[$((stringify!($known), $why)),*]);
        }
    };
}
