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
use cutover_connector::{canonical, runtime, ApplyOp, ConnectorError, ErrorKind, Writer, Written};
use cutover_model::{Change, Key, Position, Row, TableName, TableSchema};
use serde_json::Value as Json;

use crate::endpoint::{check_stream_name, subject_token, NatsEndpoint};
use crate::envelope::{self, Op, Source};

/// Publishes not yet acknowledged, at most: the client holds one permit per publish until its
/// acknowledgement is read.
const IN_FLIGHT: usize = 2048;

struct Table {
    schema: TableSchema,
    /// The columns rows of this table carry now ([`ApplyOp::Columns`]).
    columns: Vec<String>,
    subject: String,
}

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
    tables: HashMap<TableName, Table>,
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

    fn table(&self, name: &TableName) -> Result<&Table, ConnectorError> {
        self.tables.get(name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!("a change of {name}, a table the stream was not prepared for"),
            )
        })
    }

    fn event(
        &self,
        table: &TableName,
        op: Op,
        before: Json,
        after: Json,
        origin: Option<&Origin>,
    ) -> Json {
        envelope::event(
            op,
            before,
            after,
            &Source {
                name: &self.migration,
                table,
                position: origin.map(|o| &o.position),
                tx: origin.and_then(|o| o.tag),
                committed_at: origin.and_then(|o| o.committed_at),
                snapshot: op == Op::Read,
            },
            SystemTime::now(),
        )
    }

    fn message(
        &self,
        t: &Table,
        key: &Key,
        id: String,
        event: &Json,
    ) -> Result<Message, ConnectorError> {
        let key_json = envelope::key(&t.schema, key).map_err(|e| at(&t.schema.name, key, e))?;
        let payload = serde_json::to_vec(event)
            .map_err(|e| ConnectorError::new(ErrorKind::Database, e.to_string()))?;
        // Headers and the subject count too; a little room for them.
        if payload.len() + id.len() + 1024 > self.max_payload {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} key {}: its event is {} bytes, more than the NATS server takes in one message \
                     (max_payload {} bytes). Raise max_payload in the server's configuration (up to 64 MB), \
                     or leave the table out (--exclude-tables {})",
                    t.schema.name,
                    cutover_connector::key_text(key),
                    payload.len(),
                    self.max_payload,
                    t.schema.name
                ),
            ));
        }
        Ok(Message {
            subject: t.subject.clone(),
            id,
            key: key_json.to_string(),
            payload,
        })
    }

    /// The messages of one batch, in order.
    fn messages(&self, ops: &[ApplyOp]) -> Result<Vec<Message>, ConnectorError> {
        let mut out = Vec::with_capacity(ops.len());
        let mut origin: Option<Origin> = None;
        let mut columns: HashMap<&TableName, &[String]> = HashMap::new();
        for op in ops {
            match op {
                ApplyOp::Origin {
                    position,
                    index,
                    committed_at,
                    tag,
                } => {
                    origin = Some(Origin {
                        position: position.clone(),
                        index: *index,
                        committed_at: *committed_at,
                        tag: *tag,
                    })
                }
                ApplyOp::Columns { table, columns: c } => {
                    columns.insert(table, c.as_slice());
                }
                ApplyOp::Upsert { table, row } => {
                    let t = self.table(table)?;
                    let cols = columns.get(table).copied().unwrap_or(&t.columns);
                    let key = t.schema.key_of(row);
                    let after = envelope::row(cols, row, &[]).map_err(|e| at(table, &key, e))?;
                    let id = format!(
                        "{}:r:{}:{:x}:{:x}",
                        self.stream,
                        t.subject,
                        hash_values(&key).map_err(|e| at(table, &key, e))?,
                        hash_values(row).map_err(|e| at(table, &key, e))?
                    );
                    let event = self.event(table, Op::Read, Json::Null, after, None);
                    out.push(self.message(t, &key, id, &event)?);
                }
                ApplyOp::Change(change) => {
                    let Some(o) = &origin else {
                        return Err(ConnectorError::new(
                            ErrorKind::Database,
                            "a change reached the NATS target without its origin (a bug in the applier)",
                        ));
                    };
                    // The change's content too: pieces of one large transaction share a
                    // position and restart their index.
                    let content = change_hash(change).map_err(|e| {
                        ConnectorError::new(
                            ErrorKind::LossyConversion,
                            format!("a change at {}: {e}", o.position),
                        )
                    })?;
                    let id = |part: u32| {
                        format!(
                            "{}:{}:{}:{content:x}:{part}",
                            self.stream, o.position, o.index
                        )
                    };
                    match change {
                        Change::Insert { table, row } => {
                            let t = self.table(table)?;
                            let cols = columns.get(table).copied().unwrap_or(&t.columns);
                            let key = t.schema.key_of(row);
                            let after =
                                envelope::row(cols, row, &[]).map_err(|e| at(table, &key, e))?;
                            let event = self.event(table, Op::Create, Json::Null, after, Some(o));
                            out.push(self.message(t, &key, id(0), &event)?);
                        }
                        Change::Update {
                            table,
                            old_key,
                            before,
                            row,
                            unchanged,
                        } => {
                            let t = self.table(table)?;
                            let cols = columns.get(table).copied().unwrap_or(&t.columns);
                            let key = t.schema.key_of(row);
                            let before_json = match before {
                                Some(b) => envelope::row(cols, b, &[]),
                                None => Ok(Json::Null),
                            }
                            .map_err(|e| at(table, old_key, e))?;
                            let after = envelope::row(cols, row, unchanged)
                                .map_err(|e| at(table, &key, e))?;
                            if &key != old_key {
                                // Debezium's way with a key that changes: a delete of the old
                                // key, then a create of the new one.
                                let old = match before {
                                    Some(_) => before_json,
                                    None => envelope::key_row(&t.schema, cols, old_key)
                                        .map_err(|e| at(table, old_key, e))?,
                                };
                                let del = self.event(table, Op::Delete, old, Json::Null, Some(o));
                                out.push(self.message(t, old_key, id(0), &del)?);
                                let ins = self.event(table, Op::Create, Json::Null, after, Some(o));
                                out.push(self.message(t, &key, id(1), &ins)?);
                            } else {
                                let event =
                                    self.event(table, Op::Update, before_json, after, Some(o));
                                out.push(self.message(t, &key, id(0), &event)?);
                            }
                        }
                        Change::Delete {
                            table,
                            old_key,
                            before,
                        } => {
                            let t = self.table(table)?;
                            let cols = columns.get(table).copied().unwrap_or(&t.columns);
                            let before = match before {
                                Some(b) => envelope::row(cols, b, &[]),
                                None => envelope::key_row(&t.schema, cols, old_key),
                            }
                            .map_err(|e| at(table, old_key, e))?;
                            let event = self.event(table, Op::Delete, before, Json::Null, Some(o));
                            out.push(self.message(t, old_key, id(0), &event)?);
                        }
                        Change::Truncate { tables } => {
                            for (i, table) in tables.iter().enumerate() {
                                let Ok(t) = self.table(table) else { continue };
                                let event = self.event(
                                    table,
                                    Op::Truncate,
                                    Json::Null,
                                    Json::Null,
                                    Some(o),
                                );
                                let part = u32::try_from(i).unwrap_or(u32::MAX);
                                out.push(Message {
                                    subject: t.subject.clone(),
                                    id: id(part),
                                    key: "null".to_owned(),
                                    payload: serde_json::to_vec(&event).map_err(|e| {
                                        ConnectorError::new(ErrorKind::Database, e.to_string())
                                    })?,
                                });
                            }
                        }
                        // Shapes are the applier's business; the events carry column names.
                        Change::Schema { .. } => {}
                    }
                }
                // A stream has no columns to alter; the state store keeps the control ops.
                ApplyOp::Alter { .. } | ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. } => {}
            }
        }
        Ok(out)
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

struct Origin {
    position: Position,
    index: u32,
    committed_at: Option<SystemTime>,
    tag: Option<u64>,
}

fn at(table: &TableName, key: &[cutover_model::Value], e: String) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::LossyConversion,
        format!(
            "{table} key {}: {e}; the event cannot be written",
            cutover_connector::key_text(key)
        ),
    )
}

/// The canonical row hash of `values` (`docs/CANONICAL.md`), as the id of a copied row.
fn hash_values(values: &Row) -> Result<u64, String> {
    let texts: Vec<Option<String>> = values
        .iter()
        .map(canonical::value_text)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let text = canonical::row_text(texts.iter().map(|t| t.as_deref()));
    Ok(canonical::row_hash(&text) as u64)
}

/// A hash of a change's canonical content: its kind, table, old key and row.
fn change_hash(change: &Change) -> Result<u64, String> {
    let (kind, table, key, row): (&str, String, Option<&Key>, Option<&Row>) = match change {
        Change::Insert { table, row } => ("c", table.to_string(), None, Some(row)),
        Change::Update {
            table,
            old_key,
            row,
            ..
        } => ("u", table.to_string(), Some(old_key), Some(row)),
        Change::Delete { table, old_key, .. } => ("d", table.to_string(), Some(old_key), None),
        Change::Truncate { tables } => (
            "t",
            tables
                .iter()
                .map(|t| t.to_string())
                .collect::<Vec<_>>()
                .join(","),
            None,
            None,
        ),
        Change::Schema { table, .. } => ("s", table.to_string(), None, None),
    };
    let mut texts: Vec<Option<String>> = vec![Some(kind.to_owned()), Some(table)];
    for v in key.into_iter().flatten().chain(row.into_iter().flatten()) {
        texts.push(canonical::value_text(v).map_err(|e| e.to_string())?);
    }
    Ok(canonical::row_hash(&canonical::row_text(texts.iter().map(|t| t.as_deref()))) as u64)
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
            self.tables.insert(
                t.name.clone(),
                Table {
                    schema: t.clone(),
                    columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                    subject: self.table_subject(&t.name),
                },
            );
        }
        Ok(())
    }

    fn write(&mut self, ops: &[ApplyOp], upto: &Position) -> Result<Written, ConnectorError> {
        let messages = self.messages(ops)?;
        // Columns announced in this batch hold for the batches after it.
        for op in ops {
            if let ApplyOp::Columns { table, columns } = op {
                if let Some(t) = self.tables.get_mut(table) {
                    t.columns = columns.clone();
                }
            }
        }
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
