//! Settings from a TOML file (`--config migration.toml`); flags and `CUTOVER_*` variables win.
//!
//! ```toml
//! source = "postgres://app@db-old:5432/app?sslmode=require"
//! target = "postgres://app@db-new:5432/app?sslmode=require"
//! source_env_prefix = "OLD_"   # optional: the source reads OLD_PGPASSWORD, OLD_PGHOST, …
//! target_env_prefix = "NEW_"
//! tables = ["public.students", "sessions"]   # optional; all tables when absent
//! exclude_tables = ["audit_log"]
//! jobs = 8
//! max_rows_per_sec = 50000
//! name = "school"          # the migration's name (--name)
//! capture = true           # copy: start change capture first (--capture)
//! chunk_mb = 128           # copy: chunk size (--chunk-mb)
//! ddl = "stop"             # sync: --ddl
//! retry_for = 600          # sync: --retry-for, seconds
//! skip_foreign_keys = true # --skip-foreign-keys
//! grants = true            # --grants
//! state = "sqlite://school.state.db"   # targets without transactions: --state
//! copy_method = "rows"     # sync: --copy-method (auto: the pair's bulk path where it has one)
//! ```

use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub source: Option<String>,
    pub target: Option<String>,
    pub source_env_prefix: Option<String>,
    pub target_env_prefix: Option<String>,
    pub tables: Option<Vec<String>>,
    pub exclude_tables: Option<Vec<String>>,
    pub jobs: Option<usize>,
    pub max_rows_per_sec: Option<u32>,
    pub truncate: Option<bool>,
    pub snapshot: Option<bool>,
    pub name: Option<String>,
    pub capture: Option<bool>,
    pub chunk_mb: Option<u64>,
    pub ddl: Option<crate::sync::DdlArg>,
    pub retry_for: Option<u64>,
    pub skip_foreign_keys: Option<bool>,
    pub grants: Option<bool>,
    pub state: Option<String>,
    pub copy_method: Option<crate::sync::CopyMethod>,
}

pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("in the config file {}", path.display()))
}
