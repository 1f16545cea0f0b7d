//! What the change-stream targets (NATS JetStream, Kafka) share: Debezium's change-event
//! envelope ([`envelope`], pure) and the turning of an apply batch into events, each named the
//! same way every time it is sent ([`events`]), so a stream can drop what it already holds.
//!
//! No I/O: each target sends the events with its own client and decides where they go
//! (subjects, topics and partitions) and how it keeps them from being stored twice.

pub mod envelope;
pub mod events;

pub use envelope::Op;
pub use events::{events, Event, Name, StreamTable};
