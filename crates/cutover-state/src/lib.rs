//! The migration's state store: its schema and its versioned migrations, one list per backend
//! dialect. The contract of a store is [`cutover_connector::StateStore`]; the backends live in
//! the engine crates that hold the drivers (`cutover_postgres::PgState` on the `_cutover`
//! schema, `cutover_sqlite::SqliteState` on the `_cutover_*` tables), and the conformance suite
//! (`cutover-conformance`, `state` sentences) tests every backend alike.
//!
//! A store records its version (PostgreSQL: `_cutover.store.version`; SQLite: the
//! `store_version` entry of `_cutover_state`, never the database's own `user_version`, which is
//! the user's). [`pending`] says which migrations a store at a given version still needs, and
//! refuses a store written by a newer cutover; the backend runs them in one transaction with
//! the new version. Every migration is idempotent (`IF NOT EXISTS`), so a store made before it
//! recorded a version (cutover 0.1's) is adopted by running them all.
//!
//! Adding to the state: append a migration with the next version to each dialect's list (never
//! edit a released one), write it so that running it twice is harmless, and say in its summary
//! what it adds.

use cutover_connector::{ConnectorError, ErrorKind};

/// One step of a store's schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Migration {
    pub version: u32,
    /// What it adds, for logs.
    pub summary: &'static str,
    /// The statements, run in the migration's transaction.
    pub sql: &'static str,
}

/// The newest version of `migrations`.
pub fn latest(migrations: &[Migration]) -> u32 {
    migrations.iter().map(|m| m.version).max().unwrap_or(0)
}

/// The migrations a store at version `stored` (`None`: none recorded) still needs, in order.
/// A store newer than this build is refused with an error naming both versions and `store`.
pub fn pending<'a>(
    migrations: &'a [Migration],
    stored: Option<u32>,
    store: &str,
) -> Result<&'a [Migration], ConnectorError> {
    let newest = latest(migrations);
    match stored {
        Some(v) if v > newest => Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "the migration's state in {store} was written by a newer cutover (store version \
                 {v}; this one knows up to {newest}): run the newer cutover, or start the \
                 migration again after `cutover cleanup`"
            ),
        )),
        Some(v) => Ok(&migrations[migrations.partition_point(|m| m.version <= v)..]),
        None => Ok(migrations),
    }
}

/// PostgreSQL: the `_cutover` schema on the target.
pub mod postgres {
    use super::Migration;

    /// Records `$1` as the store's version (after the migrations, in their transaction).
    pub const SET_VERSION: &str = "INSERT INTO _cutover.store (id, version) VALUES (1, $1)
        ON CONFLICT (id) DO UPDATE SET version = greatest(_cutover.store.version, excluded.version)";

    /// The store's version; run only once `_cutover.store` exists.
    pub const VERSION: &str = "SELECT version FROM _cutover.store WHERE id = 1";

    /// Verify's mismatches (also created on its own by a verify that records mismatches on a
    /// database holding no migration).
    pub const MISMATCHES: &str = "CREATE SCHEMA IF NOT EXISTS _cutover;
CREATE TABLE IF NOT EXISTS _cutover.mismatches (
    id bigserial PRIMARY KEY,
    found_at timestamptz NOT NULL DEFAULT now(),
    table_schema text,
    table_name text NOT NULL,
    key text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('missing', 'extra', 'different')),
    columns text[] NOT NULL DEFAULT '{}',
    detail text NOT NULL DEFAULT '');
";

    /// Every version, oldest first.
    pub const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            summary: "the control store: phase, checkpoint and status, chunk plan, watched and \
                      recent keys, switch journal, fence grants, post-data steps",
            sql: "
CREATE SCHEMA IF NOT EXISTS _cutover;
CREATE TABLE IF NOT EXISTS _cutover.migration (
    id int PRIMARY KEY CHECK (id = 1),
    source text NOT NULL,
    phase text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE _cutover.migration ADD COLUMN IF NOT EXISTS mode text NOT NULL DEFAULT 'copy';
ALTER TABLE _cutover.migration ADD COLUMN IF NOT EXISTS fence text;
CREATE TABLE IF NOT EXISTS _cutover.replication (
    id int PRIMARY KEY CHECK (id = 1),
    slot text NOT NULL,
    publication text NOT NULL,
    position text,
    source_position text,
    committed_at timestamptz,
    changes_applied bigint NOT NULL DEFAULT 0,
    changes_per_sec double precision,
    lag_bytes bigint,
    history_bytes bigint,
    direction text NOT NULL DEFAULT 'forward',
    updated_at timestamptz NOT NULL DEFAULT now());
ALTER TABLE _cutover.replication ADD COLUMN IF NOT EXISTS handover_requested boolean NOT NULL DEFAULT false;
ALTER TABLE _cutover.replication ADD COLUMN IF NOT EXISTS lag_changes bigint;
CREATE TABLE IF NOT EXISTS _cutover.chunks (
    table_schema text NOT NULL,
    table_name text NOT NULL,
    chunk int NOT NULL,
    lower_key text[],
    upper_key text[],
    done boolean NOT NULL DEFAULT false,
    rows bigint,
    bytes bigint,
    done_at timestamptz,
    PRIMARY KEY (table_schema, table_name, chunk));
ALTER TABLE _cutover.chunks ADD COLUMN IF NOT EXISTS in_snapshot boolean NOT NULL DEFAULT false;
CREATE TABLE IF NOT EXISTS _cutover.watch (
    table_schema text NOT NULL,
    table_name text NOT NULL,
    key bytea NOT NULL,
    PRIMARY KEY (table_schema, table_name, key));
CREATE TABLE IF NOT EXISTS _cutover.recent (
    n bigint PRIMARY KEY,
    table_schema text NOT NULL,
    table_name text NOT NULL,
    key bytea NOT NULL);
CREATE TABLE IF NOT EXISTS _cutover.switch_journal (
    id int PRIMARY KEY CHECK (id = 1),
    want text NOT NULL,
    fence text NOT NULL,
    step text NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS _cutover.fence_grants (
    side text NOT NULL,
    table_name text NOT NULL,
    role text NOT NULL,
    privilege text NOT NULL,
    PRIMARY KEY (side, table_name, role, privilege));
CREATE TABLE IF NOT EXISTS _cutover.steps (
    id int PRIMARY KEY,
    phase text NOT NULL,
    sql text NOT NULL,
    done boolean NOT NULL DEFAULT false);
ALTER TABLE _cutover.steps ADD COLUMN IF NOT EXISTS name text;
",
        },
        Migration {
            version: 2,
            summary: "typed chunk keys (the model's binary encoding) and the store's version",
            sql: "
ALTER TABLE _cutover.chunks ADD COLUMN IF NOT EXISTS lower_key_enc bytea;
ALTER TABLE _cutover.chunks ADD COLUMN IF NOT EXISTS upper_key_enc bytea;
CREATE TABLE IF NOT EXISTS _cutover.store (
    id int PRIMARY KEY CHECK (id = 1),
    version int NOT NULL);
",
        },
        Migration {
            version: 3,
            summary: "verify's mismatches",
            sql: MISMATCHES,
        },
    ];
}

/// SQLite: `_cutover_*` tables in the target's file.
pub mod sqlite {
    use super::Migration;

    /// Records `?1` (text) as the store's version (after the migrations, in their transaction).
    pub const SET_VERSION: &str =
        "INSERT OR REPLACE INTO _cutover_state (key, value) VALUES ('store_version', ?1)";

    /// The store's version; run only once `_cutover_state` exists.
    pub const VERSION: &str = "SELECT value FROM _cutover_state WHERE key = 'store_version'";

    /// Verify's mismatches (also created on its own by a verify that records mismatches in a
    /// file holding no migration).
    pub const MISMATCHES: &str = "
CREATE TABLE IF NOT EXISTS _cutover_mismatches (
    id INTEGER PRIMARY KEY,
    found_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    table_name TEXT NOT NULL,
    key TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('missing', 'extra', 'different')),
    columns TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '');
";

    /// Every version, oldest first.
    pub const MIGRATIONS: &[Migration] = &[
        Migration {
            version: 1,
            summary: "the control store: checkpoint, phase and status entries, tables, chunk \
                      plan with typed keys, watched keys",
            sql: "
CREATE TABLE IF NOT EXISTS _cutover_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _cutover_tables (name TEXT PRIMARY KEY, phase TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS _cutover_chunks (table_name TEXT NOT NULL, chunk INTEGER NOT NULL,
    start_key BLOB, end_key BLOB, done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (table_name, chunk));
CREATE TABLE IF NOT EXISTS _cutover_watch (table_name TEXT NOT NULL, key BLOB NOT NULL,
    PRIMARY KEY (table_name, key));
",
        },
        Migration {
            version: 2,
            summary: "verify's mismatches",
            sql: MISMATCHES,
        },
    ];
}

/// MySQL and MariaDB: `_cutover_*` tables in the target database (InnoDB, so the sink writes
/// them in its data transactions). MySQL commits DDL implicitly: each statement is idempotent
/// on its own, and the version is recorded after all of them.
pub mod mysql {
    use super::Migration;

    /// Records `?` (text) as the store's version.
    pub const SET_VERSION: &str = "INSERT INTO `_cutover_state` (`key`, `value`) \
        VALUES ('store_version', ?) ON DUPLICATE KEY UPDATE `value` = VALUES(`value`)";

    /// The store's version; run only once `_cutover_state` exists.
    pub const VERSION: &str = "SELECT `value` FROM `_cutover_state` WHERE `key` = 'store_version'";

    /// Verify's mismatches (also created on its own by a verify that records mismatches in a
    /// database holding no migration).
    pub const MISMATCHES: &str = "
CREATE TABLE IF NOT EXISTS `_cutover_mismatches` (
    `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    `found_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    `table_name` VARCHAR(255) NOT NULL,
    `key` TEXT NOT NULL,
    `kind` VARCHAR(16) NOT NULL,
    `columns` TEXT NOT NULL,
    `detail` TEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
";

    /// Every version, oldest first.
    pub const MIGRATIONS: &[Migration] = &[Migration {
        version: 1,
        summary: "the control store: checkpoint, phase and status entries, tables, chunk plan \
                  with typed keys, watched keys, verify's mismatches",
        sql: "
CREATE TABLE IF NOT EXISTS `_cutover_state` (`key` VARCHAR(64) NOT NULL PRIMARY KEY,
    `value` TEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS `_cutover_tables` (`name` VARCHAR(255) NOT NULL PRIMARY KEY,
    `phase` VARCHAR(32) NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS `_cutover_chunks` (`table_name` VARCHAR(255) NOT NULL,
    `chunk` INT NOT NULL, `start_key` LONGBLOB NULL, `end_key` LONGBLOB NULL,
    `done` TINYINT NOT NULL DEFAULT 0, `rows_copied` BIGINT NULL,
    PRIMARY KEY (`table_name`, `chunk`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS `_cutover_watch` (`table_name` VARCHAR(255) NOT NULL,
    `key_md5` BINARY(16) NOT NULL, `key_bytes` LONGBLOB NOT NULL,
    PRIMARY KEY (`table_name`, `key_md5`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
CREATE TABLE IF NOT EXISTS `_cutover_mismatches` (
    `id` BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
    `found_at` DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    `table_name` VARCHAR(255) NOT NULL,
    `key` TEXT NOT NULL,
    `kind` VARCHAR(16) NOT NULL,
    `columns` TEXT NOT NULL,
    `detail` TEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
",
    }];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_ascend_from_one_without_gaps() {
        for list in [postgres::MIGRATIONS, sqlite::MIGRATIONS, mysql::MIGRATIONS] {
            for (i, m) in list.iter().enumerate() {
                assert_eq!(m.version as usize, i + 1, "{}", m.summary);
            }
        }
    }

    #[test]
    fn pending_is_what_a_store_lacks_and_a_newer_store_is_refused() {
        let all = postgres::MIGRATIONS;
        assert_eq!(pending(all, None, "x").unwrap().len(), all.len());
        assert_eq!(pending(all, Some(1), "x").unwrap()[0].version, 2);
        assert!(pending(all, Some(latest(all)), "x").unwrap().is_empty());
        let e = pending(all, Some(99), "the target").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let text = e.to_string();
        assert!(
            text.contains("store version 99") && text.contains("up to 3"),
            "{text}"
        );
        assert!(text.contains("the target"), "{text}");
    }

    #[test]
    fn every_migration_can_run_twice() {
        // Idempotence is what lets a store made before versions were recorded be adopted; the
        // backends' tests run the SQL, this checks the spelling that makes it so.
        for m in postgres::MIGRATIONS
            .iter()
            .chain(sqlite::MIGRATIONS)
            .chain(mysql::MIGRATIONS)
        {
            for stmt in m.sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                assert!(
                    stmt.contains("IF NOT EXISTS"),
                    "migration {} is not idempotent: {stmt}",
                    m.version
                );
            }
        }
    }
}

/// Redis: keys under `{prefix}_cutover:` (no DDL: a version records which keys a store has and
/// how they are laid out; `cutover-redis`'s `layout` module lists them). The sink writes them in
/// the same `MULTI`/`EXEC` as the rows.
pub mod redis {
    use super::Migration;

    /// The key (after the prefix) that holds the store's version.
    pub const VERSION_KEY: &str = "_cutover:store_version";

    /// Every version, oldest first. `sql` is empty: a Redis store has no statements to run,
    /// only the version to record (a later layout adds its conversion here).
    pub const MIGRATIONS: &[Migration] = &[Migration {
        version: 1,
        summary: "the control keys: store_version, migration (phase), checkpoint, tables, \
                  schema:{table}, chunks:{table} and done:{table} (typed keys), status, \
                  watch:{table}, recent, mismatches",
        sql: "",
    }];
}
