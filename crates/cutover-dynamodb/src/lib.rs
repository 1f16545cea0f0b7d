//! Amazon DynamoDB as a cutover target (`dynamodb://TABLE_PREFIX?region=…`): every row becomes
//! an item of a table named `<prefix><table>` ([`table`], the type map in [`value`]), created
//! on demand; changes are applied per key in the source's order, each conditioned on the
//! source position the item holds, so a replay never overwrites a newer write ([`writer`]).
//!
//! DynamoDB has no transaction over a batch of any size, so the migration's state (checkpoint,
//! chunk plan, status) lives in a store of the user's choosing (`--state`, default a SQLite
//! file), joined with the writer by [`cutover_connector::StatefulSink`]: a batch is in DynamoDB
//! before its checkpoint is committed. Verify reads tables with scans and computes the
//! canonical text here ([`verify`]).

pub mod endpoint;
pub mod table;
pub mod value;
pub mod verify;
pub mod writer;

use std::any::Any;
use std::sync::Arc;

use cutover_connector::{
    ConnectorError, Engine, ErrorKind, OpenOptions, RangeChecksum, Sink, StatefulSink, TableReader,
    TargetFactory, VerifyFactory,
};
use cutover_model::TableSchema;

pub use endpoint::{DynamoEndpoint, Oversize};
pub use verify::DynamoReader;
pub use writer::DynamoWriter;

/// The engine's registration: a target and the target side of verify.
pub fn engine() -> Engine {
    Engine {
        name: "DynamoDB",
        schemes: &["dynamodb"],
        plain_paths: false,
        claims: None,
        example: endpoint::EXAMPLE,
        source: None,
        target: Some(open_target),
        verify: Some(open_verify),
    }
}

fn endpoint(url: &str, opts: &OpenOptions) -> Result<DynamoEndpoint, ConnectorError> {
    let prefix = opts.env_prefix.clone().unwrap_or_default();
    let env = move |k: &str| std::env::var(format!("{prefix}{k}")).ok();
    DynamoEndpoint::parse(url, &env)
}

fn open_target(url: &str, opts: &OpenOptions) -> Result<Box<dyn TargetFactory>, ConnectorError> {
    let endpoint = endpoint(url, opts)?;
    let name = opts.name.clone().unwrap_or_else(|| {
        let p = endpoint.prefix.trim_end_matches(['_', '-', '.']);
        if p.is_empty() {
            "cutover".to_owned()
        } else {
            p.to_owned()
        }
    });
    Ok(Box::new(DynamoTarget {
        endpoint,
        name,
        state: None,
    }))
}

fn open_verify(url: &str, opts: &OpenOptions) -> Result<Box<dyn VerifyFactory>, ConnectorError> {
    Ok(Box::new(DynamoVerify {
        endpoint: endpoint(url, opts)?,
    }))
}

/// A DynamoDB target and the state store it was given.
#[derive(Clone)]
pub struct DynamoTarget {
    pub endpoint: DynamoEndpoint,
    /// The migration's name (for the state store).
    pub name: String,
    state: Option<Arc<dyn TargetFactory>>,
}

impl DynamoTarget {
    fn state_factory(&self) -> Result<&dyn TargetFactory, ConnectorError> {
        self.state.as_deref().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::InvalidInput,
                "a DynamoDB target needs a state store (--state URL); none was given",
            )
        })
    }
}

impl TargetFactory for DynamoTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        let state = self.state_factory()?.sink()?;
        let writer = DynamoWriter::connect(&self.endpoint)?;
        Ok(Box::new(StatefulSink::new(writer, state)))
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Ok(Box::new(DynamoReader::open(&self.endpoint)?))
    }

    fn describe(&self) -> String {
        format!("DynamoDB {}", self.endpoint.redacted())
    }

    fn migration_name(&self) -> Option<String> {
        Some(self.name.clone())
    }

    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        self.state_factory()?.state()
    }

    fn needs_state(&self) -> bool {
        true
    }

    fn attach_state(&mut self, state: Box<dyn TargetFactory>) -> Result<(), ConnectorError> {
        self.state = Some(Arc::from(state));
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// DynamoDB as the target side of verify (the tables' schemas come from the source side).
pub struct DynamoVerify {
    pub endpoint: DynamoEndpoint,
}

impl VerifyFactory for DynamoVerify {
    fn tables(&self) -> Result<Vec<TableSchema>, ConnectorError> {
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            "DynamoDB keeps no column types, so it can only be the --target of verify (the \
             tables and their types come from --source)",
        ))
    }

    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError> {
        Ok(Box::new(DynamoReader::open(&self.endpoint)?))
    }

    fn describe(&self) -> String {
        format!("DynamoDB {}", self.endpoint.redacted())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
