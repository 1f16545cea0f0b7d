//! The migration's state hosted in Redis: [`StateStore`] over the `{prefix}_cutover:*` keys
//! the sink writes (layout in `layout.rs`, versions in `cutover_state::redis`).

use cutover_connector::{
    ConnectorError, ErrorKind, Journal, StateStore, StoredChunk, StoredMismatch, StoredStatus,
};
use cutover_model::{decode_row, Position, TableName, Value};
use std::collections::HashMap;

use crate::endpoint::{Conn, RedisEndpoint};
use crate::layout::Layout;
use crate::sink::decode_bounds;

/// Moves the phase only from the expected one, atomically (a script runs alone in Redis).
/// `ARGV[1]`: `1` if a phase is expected, `0` for "no phase yet"; `ARGV[2]` the expected phase;
/// `ARGV[3]` the new one.
const SWAP_PHASE: &str = "local cur = redis.call('HGET', KEYS[1], 'phase')
if ARGV[1] == '0' then
  if cur then return 0 end
else
  if cur ~= ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], 'phase', ARGV[3])
return 1";

pub struct RedisState {
    endpoint: RedisEndpoint,
    layout: Layout,
    conn: Option<Conn>,
}

impl RedisState {
    pub fn open(endpoint: &RedisEndpoint) -> RedisState {
        RedisState {
            endpoint: endpoint.clone(),
            layout: Layout::of(endpoint),
            conn: None,
        }
    }

    fn conn(&mut self) -> Result<&mut Conn, ConnectorError> {
        if self.conn.is_none() {
            self.conn = Some(self.endpoint.connect()?);
        }
        self.conn.as_mut().ok_or_else(|| {
            ConnectorError::new(ErrorKind::Connect, "no connection to the state store")
        })
    }

    fn get(&mut self, name: &str) -> Result<Option<String>, ConnectorError> {
        let key = self.layout.control(name);
        self.conn()?.query(redis::cmd("GET").arg(key))
    }
}

fn corrupt(what: &str) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::Database,
        format!("{what} in the migration's state is not what cutover writes; run `cutover cleanup` and start again"),
    )
}

impl StateStore for RedisState {
    fn describe(&self) -> String {
        self.endpoint.describe()
    }

    fn version(&mut self) -> Result<Option<u32>, ConnectorError> {
        self.get("store_version")?
            .map(|v| v.parse().map_err(|_| corrupt("store_version")))
            .transpose()
    }

    fn migrate(&mut self) -> Result<u32, ConnectorError> {
        let now = self.version()?;
        let todo = cutover_state::pending(cutover_state::redis::MIGRATIONS, now, &self.describe())?;
        let newest = cutover_state::latest(cutover_state::redis::MIGRATIONS);
        if !todo.is_empty() {
            let key = self.layout.control("store_version");
            self.conn()?
                .query::<()>(redis::cmd("SET").arg(key).arg(newest))?;
        }
        Ok(newest)
    }

    fn phase(&mut self) -> Result<Option<String>, ConnectorError> {
        let key = self.layout.control("migration");
        self.conn()?.query(redis::cmd("HGET").arg(key).arg("phase"))
    }

    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError> {
        let key = self.layout.control("migration");
        let won: i64 = self.conn()?.query(
            redis::cmd("EVAL")
                .arg(SWAP_PHASE)
                .arg(1)
                .arg(key)
                .arg(if from.is_some() { "1" } else { "0" })
                .arg(from.unwrap_or(""))
                .arg(to),
        )?;
        Ok(won == 1)
    }

    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        self.get("checkpoint")?
            .map(|p| Position::new(&p).map_err(|_| corrupt("the checkpoint")))
            .transpose()
    }

    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError> {
        let layout = self.layout.clone();
        let c = self.conn()?;
        let mut out = Vec::new();
        for t in layout.tables(c)? {
            let plan: HashMap<u32, Vec<u8>> =
                c.query(redis::cmd("HGETALL").arg(layout.per_table("chunks", &t.name)))?;
            let done: HashMap<u32, u64> =
                c.query(redis::cmd("HGETALL").arg(layout.per_table("done", &t.name)))?;
            let mut chunks = plan
                .into_iter()
                .map(|(index, b)| {
                    Ok(StoredChunk {
                        table: t.name.clone(),
                        index,
                        range: decode_bounds(&b).ok_or_else(|| corrupt("a chunk's bounds"))?,
                        done: done.contains_key(&index),
                        rows: done.get(&index).copied(),
                    })
                })
                .collect::<Result<Vec<_>, ConnectorError>>()?;
            chunks.sort_by_key(|c| c.index);
            out.extend(chunks);
        }
        Ok(out)
    }

    fn status(&mut self) -> Result<Option<StoredStatus>, ConnectorError> {
        let key = self.layout.control("status");
        let m: HashMap<String, String> = self.conn()?.query(redis::cmd("HGETALL").arg(key))?;
        let applied = self.checkpoint()?;
        if m.is_empty() && applied.is_none() {
            return Ok(None);
        }
        let f = |k: &str| m.get(k).and_then(|v| v.parse::<f64>().ok());
        let u = |k: &str| m.get(k).and_then(|v| v.parse::<u64>().ok());
        Ok(Some(StoredStatus {
            applied,
            source: m.get("source_position").and_then(|p| Position::new(p).ok()),
            lag_bytes: u("lag_bytes"),
            lag_changes: u("lag_changes"),
            committed_at: f("committed_at"),
            changes_applied: u("changes_applied"),
            changes_per_sec: f("changes_per_sec"),
            updated_at: f("updated_at"),
        }))
    }

    /// No switch runs against Redis: there is never a journal.
    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        Ok(None)
    }

    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let key = self.layout.control("mismatches");
        let entries: Vec<Vec<u8>> = self
            .conn()?
            .query(redis::cmd("LRANGE").arg(key).arg(0).arg(limit - 1))?;
        entries
            .iter()
            .map(|e| decode_mismatch(e).ok_or_else(|| corrupt("a mismatch")))
            .collect()
    }
}

/// A mismatch as the verifier stores it (`verify.rs`): cutover-model's row codec.
fn decode_mismatch(b: &[u8]) -> Option<StoredMismatch> {
    let v = decode_row(b).ok()?;
    let text = |i: usize| match v.get(i) {
        Some(Value::Text(s)) => Some(s.clone()),
        _ => None,
    };
    let schema = match v.first()? {
        Value::Null => None,
        Value::Text(s) => Some(s.clone()),
        _ => return None,
    };
    Some(StoredMismatch {
        table: TableName::new(schema.as_deref(), &text(1)?),
        key: text(2)?,
        kind: text(3)?,
        columns: text(4)?
            .split('\u{1f}')
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect(),
        detail: text(5)?,
    })
}
