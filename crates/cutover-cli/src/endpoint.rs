//! Turning `--source`/`--target` strings into connectors, with errors that say what to fix.

use std::path::Path;

use anyhow::{bail, Context};
use cutover_connector::Connect;
use cutover_sqlite::SqliteEndpoint;

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Must exist; change capture will be installed.
    Source,
    /// Created if missing.
    Target,
    /// Must exist (verify, cleanup).
    Existing,
}

/// Which engine a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
    Other,
}

pub fn engine_of(url: &str) -> Engine {
    match url
        .split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .as_deref()
    {
        Some("postgres" | "postgresql") => Engine::Postgres,
        None | Some("sqlite" | "file") => Engine::Sqlite,
        Some(_) => Engine::Other,
    }
}

/// Parses a SQLite URL or path and checks it is usable in `role`.
pub fn sqlite(url: &str, role: Role) -> anyhow::Result<SqliteEndpoint> {
    let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
    match scheme.as_deref() {
        None | Some("sqlite") | Some("file") => {}
        Some("postgres" | "postgresql") => bail!(
            "a PostgreSQL database cannot be paired with a SQLite one: give both as postgres://… \
             (PostgreSQL → PostgreSQL) or both as sqlite://PATH"
        ),
        Some("mysql" | "mariadb") => bail!(
            "{}:// databases are not supported by this build yet; MySQL/MariaDB support is on the way",
            scheme.unwrap_or_default()
        ),
        Some(other) => bail!(
            "unknown database URL scheme {other}://; use sqlite://PATH (or a path to a SQLite file)"
        ),
    }
    let endpoint = SqliteEndpoint::from_url(url.strip_prefix("file://").unwrap_or(url));
    let path = endpoint.path();
    if path.as_os_str().is_empty() {
        bail!("empty database path in {url:?}: use sqlite://PATH");
    }
    match role {
        Role::Source | Role::Existing => {
            // Opening checks existence, file type and that it really is SQLite.
            endpoint
                .reader()
                .with_context(|| format!("cannot use {url} as a source"))?;
        }
        Role::Target => {
            if path.is_dir() {
                bail!(
                    "target {} is a directory; give a database file path",
                    path.display()
                );
            }
            let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
            if let Some(p) = parent {
                if !p.is_dir() {
                    bail!(
                        "the target's folder {} does not exist; create it first",
                        p.display()
                    );
                }
            }
            if path.exists() {
                endpoint
                    .reader()
                    .with_context(|| format!("cannot use {url} as a target"))?;
            }
        }
    }
    Ok(endpoint)
}

/// Removes a database file and its WAL/SHM companions, if present.
pub fn remove_database(path: &Path) -> anyhow::Result<()> {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let p = Path::new(&p);
        if p.exists() {
            std::fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}
