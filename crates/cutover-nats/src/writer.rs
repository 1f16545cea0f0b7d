//! Publishing a batch to JetStream: one message per row event, acknowledged by the stream
//! before the batch counts as written.
//!
//! Every message carries a `Nats-Msg-Id` that is the same each time the same event is sent:
//! a captured change is named by its transaction's position and its index in it
//! ([`ApplyOp::Origin`]), a row of the copy by its table, key and content. A batch published
//! again after a crash (its checkpoint was not yet in the state store) is then dropped by the
//! stream as duplicates, within the stream's de-duplication window.

use std::collections::{HashMap, VecDeque};
use std::time::SystemTime;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use cutover_connector::{runtime, ApplyOp, ConnectorError, ErrorKind, Writer, Written};
use cutover_debezium::{Event, Name, StreamTable};
use cutover_model::{Position, TableName, TableSchema};

use crate::endpoint::{check_stream_name, subject_token, NatsEndpoint};

/// Publishes not yet acknowledged, at most: the client holds one permit per publish until its
/// acknowledgement is read.
const IN_FLIGHT: usize = 2048;

/// One event to publish.
struct Message {
    subject: String,
    id: String,
    key: String,
    payload: Vec<u8>,
}

pub struct NatsWriter {
    js: jetstream::Context,
    endpoint: NatsEndpoint,
    migration: String,
    stream: String,
    subject: String,
    tables: HashMap<TableName, StreamTable>,
    /// Each prepared table's subject.
    subjects: HashMap<TableName, String>,
    /// The largest message the server takes (its `max_payload`).
    max_payload: usize,
}

fn map(context: impl std::fmt::Display, e: impl std::fmt::Display) -> ConnectorError {
    let text = e.to_string();
    let kind = if text.contains("timed out") || text.contains("timeout") {
        ErrorKind::Timeout
    } else if text.contains("onnect") || text.contains("broken pipe") || text.contains("closed") {
        ErrorKind::Connect
    } else if text.contains("uthoriz") || text.contains("uthentic") {
        ErrorKind::Auth
    } else {
        ErrorKind::Database
    };
    ConnectorError::new(kind, format!("{context}: {text}"))
}

impl NatsWriter {
    pub fn connect(endpoint: &NatsEndpoint, migration: &str) -> Result<NatsWriter, ConnectorError> {
        let stream = match &endpoint.stream {
            Some(s) => s.clone(),
            None => check_stream_name(&format!("cutover_{}", subject_token(migration)))?,
        };
        let subject = endpoint
            .subject
            .clone()
            .unwrap_or_else(|| format!("cutover.{}", subject_token(migration)));
        let e = endpoint.clone();
        let client = runtime::block_on(async move {
            let mut o = async_nats::ConnectOptions::new()
                .name("cutover")
                .connection_timeout(e.connect_timeout)
                .retry_on_initial_connect()
                .max_reconnects(Some(3));
            if let (Some(u), p) = (&e.user, &e.password) {
                o = o.user_and_password(u.clone(), p.clone().unwrap_or_default());
            }
            if let Some(t) = &e.token {
                o = o.token(t.clone());
            }
            if let Some(c) = &e.creds {
                o = o
                    .credentials_file(c)
                    .await
                    .map_err(|err| map(format!("reading the credentials file {c}"), err))?;
            }
            if let Some(ca) = &e.tls_ca {
                o = o.add_root_certificates(ca.into());
            }
            if e.tls {
                o = o.require_tls(true);
            }
            let servers: Vec<async_nats::ServerAddr> = e
                .servers
                .iter()
                .map(|s| {
                    let url = if e.tls {
                        format!("tls://{s}")
                    } else {
                        format!("nats://{s}")
                    };
                    url.parse()
                        .map_err(|err| map(format!("the server address {s}"), err))
                })
                .collect::<Result<_, _>>()?;
            tokio::time::timeout(e.connect_timeout * 2, o.connect(servers))
                .await
                .map_err(|_| {
                    ConnectorError::new(
                        ErrorKind::Connect,
                        format!(
                            "connecting to {}: no answer within {} s",
                            e.redacted(),
                            (e.connect_timeout * 2).as_secs()
                        ),
                    )
                })?
                .map_err(|err| map(format!("connecting to {}", e.redacted()), err))
        })?;
        let max_payload = match client.server_info().max_payload {
            0 => 1 << 20,
            n => n,
        };
        // The context spawns its acknowledgement task: built on the process's runtime.
        let js = runtime::block_on(async move {
            jetstream::ContextBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .max_ack_inflight(IN_FLIGHT)
                .backpressure_on_inflight(true)
                .build(client)
        });
        Ok(NatsWriter {
            js,
            endpoint: endpoint.clone(),
            migration: migration.to_owned(),
            stream,
            subject,
            tables: HashMap::new(),
            subjects: HashMap::new(),
            max_payload,
        })
    }

    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    fn table_subject(&self, t: &TableName) -> String {
        match &t.schema {
            Some(s) => format!(
                "{}.{}.{}",
                self.subject,
                subject_token(s),
                subject_token(&t.name)
            ),
            None => format!("{}.{}", self.subject, subject_token(&t.name)),
        }
    }

    /// A message of `event`, refused naming its table and key when larger than the server
    /// takes.
    fn message(&self, event: Event) -> Result<Message, ConnectorError> {
        let subject = self.subjects.get(&event.table).cloned().ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!(
                    "a change of {}, a table the stream was not prepared for",
                    event.table
                ),
            )
        })?;
        let id = match &event.name {
            Name::Copy { key, row } => format!("{}:r:{subject}:{key:x}:{row:x}", self.stream),
            Name::Change {
                position,
                index,
                content,
                part,
            } => format!("{}:{position}:{index}:{content:x}:{part}", self.stream),
        };
        let payload = serde_json::to_vec(&event.envelope)
            .map_err(|e| ConnectorError::new(ErrorKind::Database, e.to_string()))?;
        // Headers and the subject count too; a little room for them.
        if payload.len() + id.len() + 1024 > self.max_payload {
            let key = event.key.as_deref().unwrap_or_default();
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} key {}: its event is {} bytes, more than the NATS server takes in one message \
                     (max_payload {} bytes). Raise max_payload in the server's configuration (up to 64 MB), \
                     or leave the table out (--exclude-tables {})",
                    event.table,
                    cutover_connector::key_text(key),
                    payload.len(),
                    self.max_payload,
                    event.table
                ),
            ));
        }
        Ok(Message {
            subject,
            id,
            key: event.key_json.to_string(),
            payload,
        })
    }

    /// Publishes `messages` in order and waits for every acknowledgement.
    fn publish(&mut self, messages: Vec<Message>) -> Result<(), ConnectorError> {
        let js = self.js.clone();
        let stream = self.stream.clone();
        let duplicates = runtime::block_on(async move {
            let mut acks = VecDeque::with_capacity(IN_FLIGHT);
            let mut duplicates = 0u64;
            let wait = |ack: jetstream::context::PublishAckFuture| {
                let stream = stream.clone();
                async move {
                    ack.await
                        .map_err(|e| map(format!("publishing to the stream {stream}"), e))
                }
            };
            for m in messages {
                if acks.len() >= IN_FLIGHT / 2 {
                    if let Some(a) = acks.pop_front() {
                        let ack = wait(a).await?;
                        duplicates += u64::from(ack.duplicate);
                    }
                }
                let mut headers = HeaderMap::new();
                headers.insert("Nats-Msg-Id", m.id.as_str());
                headers.insert("Cutover-Key", m.key.as_str());
                let ack = js
                    .publish_with_headers(m.subject.clone(), headers, Bytes::from(m.payload))
                    .await
                    .map_err(|e| map(format!("publishing to {}", m.subject), e))?;
                acks.push_back(ack);
            }
            while let Some(a) = acks.pop_front() {
                let ack = wait(a).await?;
                duplicates += u64::from(ack.duplicate);
            }
            Ok::<_, ConnectorError>(duplicates)
        })?;
        if duplicates > 0 {
            tracing::info!(
                duplicates,
                stream = %self.stream,
                "the stream already held part of this batch (published before a restart): dropped as duplicates"
            );
        }
        Ok(())
    }
}

impl Writer for NatsWriter {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let mut seen: HashMap<String, &TableName> = HashMap::new();
        for t in tables {
            let subject = self.table_subject(&t.name);
            if let Some(other) = seen.insert(subject.clone(), &t.name) {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "tables {other} and {} would share the subject {subject}; leave one out (--exclude-tables)",
                        t.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.check(tables)?;
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![format!("{}.>", self.subject)],
            duplicate_window: self.endpoint.dedup_window,
            storage: stream::StorageType::File,
            num_replicas: self.endpoint.replicas,
            ..Default::default()
        };
        let js = self.js.clone();
        let name = self.stream.clone();
        let wanted = config.subjects[0].clone();
        let window = self.endpoint.dedup_window;
        runtime::block_on(async move {
            let mut s = js
                .get_or_create_stream(config)
                .await
                .map_err(|e| map(format!("creating or opening the stream {name}"), e))?;
            let info = s
                .info()
                .await
                .map_err(|e| map(format!("reading the stream {name}"), e))?;
            if !info.config.subjects.iter().any(|s| s == &wanted) {
                return Err(ConnectorError::new(
                    ErrorKind::Conflict,
                    format!(
                        "the stream {name} exists with subjects {:?}, not {wanted}: name another stream \
                         (?stream=) or the subjects it holds (?subject=)",
                        info.config.subjects
                    ),
                ));
            }
            if info.config.duplicate_window < window {
                tracing::warn!(
                    stream = %name,
                    window_s = info.config.duplicate_window.as_secs(),
                    "the stream's de-duplication window is shorter than asked: a sync that restarts \
                     later than that after a crash may publish its last batch again"
                );
            }
            Ok(())
        })?;
        for t in tables {
            self.tables.insert(t.name.clone(), StreamTable::new(t));
            self.subjects
                .insert(t.name.clone(), self.table_subject(&t.name));
        }
        Ok(())
    }

    fn write(&mut self, ops: &[ApplyOp], upto: &Position) -> Result<Written, ConnectorError> {
        let events =
            cutover_debezium::events(&self.migration, &mut self.tables, ops, SystemTime::now())?;
        let messages = events
            .into_iter()
            .map(|e| self.message(e))
            .collect::<Result<Vec<_>, _>>()?;
        self.publish(messages)
            .map_err(|e| e.context(format!("writing the batch up to {upto}")))?;
        after_publish()?;
        Ok(Written::Durable)
    }
}

/// Crash tests' failpoint `nats::writer::after-publish`: every message of the batch is in the
/// stream, its checkpoint not yet in the state store (feature `failpoints`).
fn after_publish() -> Result<(), ConnectorError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("nats::writer::after-publish", |_| {
        Err(ConnectorError::new(
            ErrorKind::Database,
            "failpoint nats::writer::after-publish",
        ))
    });
    Ok(())
}
