//! Turning `--source`/`--target` strings into connectors, with errors that say what to fix.

use std::path::Path;

use anyhow::Context;
use cutover_connector::Engines;

/// Every engine this build knows: the one list of connectors. Any source composes with any
/// target through their factories; an engine may offer only some sides.
pub fn engines() -> Engines {
    Engines::new([
        cutover_postgres::engine(),
        cutover_sqlite::engine(),
        #[cfg(feature = "mysql")]
        cutover_mysql::engine(),
        #[cfg(feature = "nats")]
        cutover_nats::engine(),
        #[cfg(feature = "kafka")]
        cutover_kafka::engine(),
        #[cfg(feature = "parquet")]
        cutover_parquet::engine(),
        #[cfg(feature = "redis")]
        cutover_redis::engine(),
        #[cfg(feature = "dynamodb")]
        cutover_dynamodb::engine(),
    ])
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
