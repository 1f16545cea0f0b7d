//! NATS JetStream as a cutover target (`nats://host:4222?stream=…`): every row of the copy and
//! every captured change becomes one message in Debezium's envelope ([`cutover_debezium`]) on the
//! subject `<subject>.<schema>.<table>`, so consumers written for Debezium read it unchanged.
//!
//! A stream is not transactional, so the migration's state (checkpoint, chunk plan, status)
//! lives in a store of the user's choosing (`--state`, default a SQLite file), joined with the
//! stream by [`cutover_connector::StatefulSink`]: a batch is acknowledged by the stream before
//! its checkpoint is committed, and each message's `Nats-Msg-Id` names its event the same way
//! every time, so the batch a crash makes cutover publish again is dropped by the stream as
//! duplicates ([`writer`]).

pub mod endpoint;
pub mod writer;

use std::any::Any;

use cutover_connector::{
    AttachedState, ConnectorError, Engine, ErrorKind, OpenOptions, Sink, TableReader, TargetFactory,
};

pub use endpoint::NatsEndpoint;
pub use writer::NatsWriter;

/// The engine's registration: a target only.
pub fn engine() -> Engine {
    Engine {
        name: "NATS JetStream",
        schemes: &["nats", "tls"],
        plain_paths: false,
        claims: None,
        example: "nats://127.0.0.1:4222?stream=school",
        source: None,
        target: Some(open_target),
        verify: None,
    }
}

fn open_target(url: &str, opts: &OpenOptions) -> Result<Box<dyn TargetFactory>, ConnectorError> {
    let prefix = opts.env_prefix.clone().unwrap_or_default();
    let env = move |k: &str| std::env::var(format!("{prefix}{k}")).ok();
    let endpoint = NatsEndpoint::parse(url, &env)?;
    let name = opts
        .name
        .clone()
        .or_else(|| endpoint.stream.clone())
        .unwrap_or_else(|| "cutover".to_owned());
    Ok(Box::new(NatsTarget {
        endpoint,
        name,
        state: AttachedState::default(),
    }))
}

/// A JetStream target and the state store it was given.
#[derive(Clone)]
pub struct NatsTarget {
    pub endpoint: NatsEndpoint,
    /// The migration's name: the default stream (`cutover_<name>`) and subjects
    /// (`cutover.<name>.…`).
    pub name: String,
    state: AttachedState,
}

impl TargetFactory for NatsTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        self.state.sink("a NATS target", || {
            NatsWriter::connect(&self.endpoint, &self.name)
        })
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            "a NATS stream holds events, not rows: it cannot be read back or verified by cutover; \
             consume the stream to check it",
        ))
    }

    fn describe(&self) -> String {
        let stream = self
            .endpoint
            .stream
            .clone()
            .unwrap_or_else(|| format!("cutover_{}", endpoint::subject_token(&self.name)));
        format!(
            "NATS JetStream {} (stream {stream})",
            self.endpoint.redacted()
        )
    }

    fn migration_name(&self) -> Option<String> {
        Some(self.name.clone())
    }

    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        self.state.state("a NATS target")
    }

    fn needs_state(&self) -> bool {
        true
    }

    fn attach_state(&mut self, state: Box<dyn TargetFactory>) -> Result<(), ConnectorError> {
        self.state.attach(state);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
