//! Kafka as a cutover target (`kafka://host:9092?prefix=…`): every row of the copy and every
//! captured change becomes one message in Debezium's envelope ([`cutover_debezium`]) on the
//! topic `<prefix>.<schema>.<table>`, keyed by the row's primary key (Debezium's record key,
//! `{"id": 42}`) and put in the partition Kafka's default partitioner gives that key, so one
//! key's changes stay in one partition, in order, and consumers written for Debezium read them
//! unchanged.
//!
//! A topic is not transactional with the migration's state, so the state (checkpoint, chunk
//! plan, status) lives in a store of the user's choosing (`--state`, default a SQLite file),
//! joined with the topics by [`cutover_connector::StatefulSink`]: a batch is acknowledged by
//! every partition it went to (`acks=all`) before its checkpoint is committed. A crash between
//! the two makes cutover send the batch again; the writer reads the end of each partition back
//! first and sends only what is not there yet ([`writer`] says how), so no change is in a topic
//! twice, whichever consumer (any isolation level) reads it.

pub mod endpoint;
pub mod writer;

use std::any::Any;

use cutover_connector::{
    AttachedState, ConnectorError, Engine, ErrorKind, OpenOptions, Sink, TableReader, TargetFactory,
};

pub use endpoint::KafkaEndpoint;
pub use writer::KafkaWriter;

/// The engine's registration: a target only.
pub fn engine() -> Engine {
    Engine {
        name: "Kafka",
        schemes: &["kafka"],
        plain_paths: false,
        claims: None,
        example: "kafka://127.0.0.1:9092?prefix=school",
        source: None,
        target: Some(open_target),
        verify: None,
    }
}

fn open_target(url: &str, opts: &OpenOptions) -> Result<Box<dyn TargetFactory>, ConnectorError> {
    let endpoint = KafkaEndpoint::parse(url)?;
    let name = opts
        .name
        .clone()
        .or_else(|| endpoint.prefix.clone())
        .unwrap_or_else(|| "cutover".to_owned());
    Ok(Box::new(KafkaTarget {
        endpoint,
        name,
        state: AttachedState::default(),
    }))
}

/// A Kafka target and the state store it was given.
#[derive(Clone)]
pub struct KafkaTarget {
    pub endpoint: KafkaEndpoint,
    /// The migration's name: Debezium's logical server name in every event, and the topics'
    /// prefix unless `?prefix=` names one.
    pub name: String,
    state: AttachedState,
}

impl KafkaTarget {
    /// The topics' prefix.
    pub fn prefix(&self) -> String {
        self.endpoint
            .prefix
            .clone()
            .unwrap_or_else(|| endpoint::topic_part(&self.name))
    }
}

impl TargetFactory for KafkaTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        self.state.sink("a Kafka target", || {
            KafkaWriter::connect(&self.endpoint, &self.name)
        })
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            "Kafka topics hold events, not rows: they cannot be read back or verified by cutover; \
             consume the topics to check them",
        ))
    }

    fn describe(&self) -> String {
        format!(
            "Kafka {} (topics {}.*)",
            self.endpoint.redacted(),
            self.prefix()
        )
    }

    fn migration_name(&self) -> Option<String> {
        Some(self.name.clone())
    }

    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        self.state.state("a Kafka target")
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
