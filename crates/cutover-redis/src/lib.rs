//! Redis as a cutover target (`redis://host:port/db?prefix=…&format=hash|json`): each row a
//! hash (or a JSON string) at `{prefix}{table}:{key}`, each table's keys in order in the sorted
//! set `{prefix}{table}`, every batch with its checkpoint in one `MULTI`/`EXEC`, the migration's
//! state under `{prefix}_cutover:*`, and a side of verify that hashes rows client-side.
//!
//! Every call is blocking over the `redis` crate's async connection on the process's one
//! runtime (`cutover_connector::runtime::block_on`). Redis is not a source.

mod endpoint;
mod keys;
mod layout;
mod sink;
mod state;
mod value;
mod verify;

pub use endpoint::{redact, Format, RedisEndpoint};
pub use sink::RedisSink;
pub use state::RedisState;
pub use verify::RedisVerifier;

use std::any::Any;

use cutover_connector::{
    ConnectorError, Engine, OpenOptions, RangeChecksum, Sink, StateStore, TableReader,
    TargetFactory, VerifyFactory,
};

/// A Redis server as a target and a side of verify.
#[derive(Debug, Clone)]
pub struct RedisConnect {
    endpoint: RedisEndpoint,
}

impl RedisConnect {
    pub fn new(endpoint: RedisEndpoint) -> RedisConnect {
        RedisConnect { endpoint }
    }

    pub fn endpoint(&self) -> &RedisEndpoint {
        &self.endpoint
    }
}

impl TargetFactory for RedisConnect {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        Ok(Box::new(RedisSink::open(&self.endpoint)?))
    }
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(RedisVerifier::open(&self.endpoint)?))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    fn migration_name(&self) -> Option<String> {
        Some(self.endpoint.migration_name())
    }
    fn state(&self) -> Result<Option<Box<dyn StateStore>>, ConnectorError> {
        Ok(Some(Box::new(RedisState::open(&self.endpoint))))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl VerifyFactory for RedisConnect {
    fn tables(&self) -> Result<Vec<cutover_model::TableSchema>, ConnectorError> {
        RedisVerifier::open(&self.endpoint)?.tables()
    }
    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError> {
        Ok(Box::new(RedisVerifier::open(&self.endpoint)?))
    }
    fn describe(&self) -> String {
        self.endpoint.describe()
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// Redis as the binary registers it: `redis://…` (target and verify).
pub fn engine() -> Engine {
    Engine {
        name: "Redis",
        schemes: &["redis", "rediss"],
        plain_paths: false,
        claims: None,
        example: "redis://host:6379/0",
        source: None,
        target: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(RedisConnect::new(RedisEndpoint::parse(
                url, opts,
            )?)))
        }),
        verify: Some(|url, opts: &OpenOptions| {
            Ok(Box::new(RedisConnect::new(RedisEndpoint::parse(
                url, opts,
            )?)))
        }),
    }
}
