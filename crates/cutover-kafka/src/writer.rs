//! Producing a batch to Kafka: one message per row event, on its table's topic, in the
//! partition of its key, every acknowledgement awaited before the batch counts as written.
//!
//! **No message twice after a crash.** Kafka's idempotent producer drops a resent message only
//! within one producer session, and a batch is sent again by a *new* process after a crash
//! between the batch reaching Kafka and its checkpoint reaching the state store. So each
//! message names itself in its headers, and the writer reads the end of every partition back
//! before its first batch (and after any failed one, since what reached the broker is then
//! unknown):
//!
//! - `cutover.mark`: the last change in this partition up to and including this message, as
//!   `<ordinal>:<part>:<position>` (the source's position, the change's ordinal in its
//!   transaction, [`cutover_connector::ordinal`], and its part, see [`cutover_debezium::Name`]).
//!   Messages go to a partition in the source's order, so a change at or before the mark of a
//!   partition's last message is already in that partition and is not sent again.
//! - `cutover.batch`: `<session>:<n>`, the writer process and its batch. The copied rows of the
//!   batch at the end of a partition are remembered by name (`cutover.id`, hashes of the row's
//!   key and values): the chunk a crash interrupted, copied again, sends only rows that are
//!   not already there.
//! - `cutover.id`: the event's name, `<position>:<index>:<content>:<part>` for a change (the
//!   name a NATS target gives it too), `r:<key>:<row>` for a copied row.
//!
//! For the end of a partition to tell what it holds, nothing may be missing before it: within a
//! partition the writer sends one produce request at a time, each awaited, and the client
//! never retries a produce by itself (a retry after a lost answer could store a message twice;
//! the failed batch is sent again by the pipeline, after the read-back). Partitions are written
//! in parallel.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cutover_connector::{
    key_text, ordinal, runtime, ApplyOp, ConnectorError, ErrorKind, PositionOrder, Writer, Written,
};
use cutover_debezium::{Event, Name, StreamTable};
use cutover_model::{Position, TableName, TableSchema};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::{Record, RecordAndOffset};
use rskafka::BackoffConfig;

use crate::endpoint::{partition_of, topic, KafkaEndpoint};

/// Header: the event's name.
pub const HEADER_ID: &str = "cutover.id";
/// Header: the partition's last change up to this message.
pub const HEADER_MARK: &str = "cutover.mark";
/// Header: the writer's session and batch.
pub const HEADER_BATCH: &str = "cutover.batch";

/// Records read per request when reading a partition's end back.
const READ_BACK_WINDOW: i64 = 500;
/// Room for a record's framing and headers beyond its key and value.
const RECORD_OVERHEAD: usize = 512;

/// A change's place in the source's order: its position, its ordinal in its transaction and its
/// part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mark {
    pub position: Position,
    pub ordinal: u64,
    pub part: u32,
}

impl Mark {
    /// `<ordinal>:<part>:<position>` (the position last: it may hold `:`).
    pub fn text(&self) -> String {
        format!("{}:{}:{}", self.ordinal, self.part, self.position)
    }

    pub fn parse(text: &str) -> Option<Mark> {
        let (ordinal, rest) = text.split_once(':')?;
        let (part, position) = rest.split_once(':')?;
        Some(Mark {
            position: Position::new(position).ok()?,
            ordinal: ordinal.parse().ok()?,
            part: part.parse().ok()?,
        })
    }

    /// Whether `self` comes at or before `other` in the source's order; `None` when the
    /// positions are not ordered.
    pub fn at_or_before(&self, other: &Mark, order: &dyn PositionOrder) -> Option<bool> {
        Some(match order.compare(&self.position, &other.position)? {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => (self.ordinal, self.part) <= (other.ordinal, other.part),
        })
    }
}

struct Partition {
    client: Arc<PartitionClient>,
    /// The last change in this partition: read back, then as sent.
    mark: Option<Mark>,
    /// The names of the copied rows of the last batch that went to this partition (read back,
    /// then as sent): a batch sent again (its checkpoint failed) skips them.
    copies: HashSet<String>,
}

struct Topic {
    name: String,
    partitions: Vec<Partition>,
}

pub struct KafkaWriter {
    admin: Client,
    producer: Client,
    endpoint: KafkaEndpoint,
    migration: String,
    prefix: String,
    tables: HashMap<TableName, StreamTable>,
    topics: HashMap<TableName, Topic>,
    order: Option<&'static dyn PositionOrder>,
    session: u64,
    batch: u64,
    /// Whether the partitions' ends must be read back before the next batch: at the start, and
    /// after a failed batch.
    stale: bool,
    /// The last origin, for [`ordinal`].
    last_origin: Option<(Position, u32, u64)>,
    /// Messages not sent because the partition already held them (replays), since the start.
    pub skipped: u64,
}

fn map(context: impl std::fmt::Display, e: KafkaError) -> ConnectorError {
    let kind = match &e {
        KafkaError::Connection(_) | KafkaError::Request(_) => ErrorKind::Connect,
        KafkaError::Timeout => ErrorKind::Timeout,
        KafkaError::ServerError {
            protocol_error:
                ProtocolError::RequestTimedOut
                | ProtocolError::NotEnoughReplicas
                | ProtocolError::NotEnoughReplicasAfterAppend
                | ProtocolError::LeaderNotAvailable
                | ProtocolError::NotLeaderOrFollower,
            ..
        } => ErrorKind::Timeout,
        KafkaError::ServerError {
            protocol_error:
                ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::SaslAuthenticationFailed,
            ..
        } => ErrorKind::Permission,
        _ => ErrorKind::Database,
    };
    ConnectorError::new(kind, format!("{context}: {e}"))
}

fn backoff(deadline: Duration) -> BackoffConfig {
    BackoffConfig {
        init_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_secs(2),
        base: 3.0,
        deadline: Some(deadline),
    }
}

impl KafkaWriter {
    pub fn connect(
        endpoint: &KafkaEndpoint,
        migration: &str,
    ) -> Result<KafkaWriter, ConnectorError> {
        let prefix = match &endpoint.prefix {
            Some(p) => p.clone(),
            None => crate::endpoint::topic_part(migration),
        };
        let e = endpoint.clone();
        let (admin, producer) = runtime::block_on(async move {
            let build = |deadline: Duration| {
                ClientBuilder::new(e.brokers.clone())
                    .client_id("cutover")
                    .max_message_size(e.max_message_bytes.saturating_mul(4).max(64 << 20))
                    .backoff_config(backoff(deadline))
                    .build()
            };
            let connect = async {
                // Reads and topics are retried within the connect timeout; produce requests
                // are never retried by the client (see the module's docs).
                let admin = build(e.connect_timeout).await?;
                let producer = build(Duration::ZERO).await?;
                Ok::<_, KafkaError>((admin, producer))
            };
            match tokio::time::timeout(e.connect_timeout * 2, connect).await {
                Ok(r) => r.map_err(|err| map(format!("connecting to {}", e.redacted()), err)),
                Err(_) => Err(ConnectorError::new(
                    ErrorKind::Connect,
                    format!(
                        "connecting to {}: no answer within {} s",
                        e.redacted(),
                        (e.connect_timeout * 2).as_secs()
                    ),
                )),
            }
        })?;
        Ok(KafkaWriter {
            admin,
            producer,
            endpoint: endpoint.clone(),
            migration: migration.to_owned(),
            prefix,
            tables: HashMap::new(),
            topics: HashMap::new(),
            order: None,
            session: fastrand::u64(..),
            batch: 0,
            stale: true,
            last_origin: None,
            skipped: 0,
        })
    }

    /// The topics' prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A client of `partition` of `topic` that never retries, once the broker knows the topic
    /// (a topic just created may take a moment to show).
    async fn partition_client(
        producer: &Client,
        topic: &str,
        partition: i32,
        patience: Duration,
    ) -> Result<PartitionClient, ConnectorError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match producer
                .partition_client(topic, partition, UnknownTopicHandling::Error)
                .await
            {
                Ok(c) => return Ok(c),
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(topic, partition, error = %e, "waiting for the partition's leader");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    return Err(map(
                        format!("finding the leader of partition {partition} of topic {topic}"),
                        e,
                    ))
                }
            }
        }
    }

    /// Reads the end of every partition back: its last change and the copied rows of its last
    /// batch.
    fn read_back(&mut self) -> Result<(), ConnectorError> {
        let max_bytes =
            i32::try_from(self.endpoint.max_message_bytes.saturating_mul(2)).unwrap_or(i32::MAX);
        for t in self.topics.values_mut() {
            for (p, part) in t.partitions.iter_mut().enumerate() {
                let client = Arc::clone(&part.client);
                let what = format!("reading back the end of partition {p} of topic {}", t.name);
                let (mark, copies) = runtime::block_on(read_partition_end(client, max_bytes))
                    .map_err(|e| map(&what, e))?;
                tracing::debug!(
                    topic = %t.name,
                    partition = p,
                    mark = ?mark.as_ref().map(Mark::text),
                    copies = copies.len(),
                    "read back the end of a partition"
                );
                part.mark = mark;
                part.copies = copies;
            }
        }
        Ok(())
    }

    /// Sends the events of `ops`, skipping what the partitions already hold.
    fn send(&mut self, ops: &[ApplyOp]) -> Result<(), ConnectorError> {
        let events =
            cutover_debezium::events(&self.migration, &mut self.tables, ops, SystemTime::now())?;
        let batch = format!("{:016x}:{}", self.session, self.batch);
        let max = self.endpoint.max_message_bytes;
        // Per (topic, partition): the records to send, in order.
        let mut queues: HashMap<(TableName, usize), Vec<Record>> = HashMap::new();
        // Per (topic, partition) this batch goes to: the names of its copied rows, sent or
        // found there, which become the partition's `copies` once the batch is written (what a
        // read-back would find at its end).
        let mut copied: HashMap<(TableName, usize), HashSet<String>> = HashMap::new();
        let mut skipped = 0u64;
        let mut last_change: Option<(Position, u32, u64)> = None;
        let now = timestamp(SystemTime::now());
        for event in events {
            let Event {
                table,
                key,
                key_json,
                envelope,
                name,
                ..
            } = event;
            let t = self.topics.get_mut(&table).ok_or_else(|| {
                ConnectorError::new(
                    ErrorKind::SchemaMismatch,
                    format!("a change of {table}, a table the topics were not prepared for"),
                )
            })?;
            let (id, mark) = match &name {
                Name::Copy { key, row } => (format!("r:{key:x}:{row:x}"), None),
                Name::Change {
                    position,
                    index,
                    content,
                    part,
                } => {
                    // One change may make two events (a key that moves): one ordinal.
                    let ord = match &last_change {
                        Some((p, i, o)) if p == position && i == index => *o,
                        _ => ordinal(&mut self.last_origin, position, *index),
                    };
                    last_change = Some((position.clone(), *index, ord));
                    (
                        format!("{position}:{index}:{content:x}:{part}"),
                        Some(Mark {
                            position: position.clone(),
                            ordinal: ord,
                            part: *part,
                        }),
                    )
                }
            };
            let key_bytes = key.as_ref().map(|_| key_json.to_string().into_bytes());
            let value = serde_json::to_vec(&envelope)
                .map_err(|e| ConnectorError::new(ErrorKind::Database, e.to_string()))?;
            let size = value.len() + key_bytes.as_ref().map_or(0, Vec::len) + RECORD_OVERHEAD;
            if size > max {
                return Err(too_large(
                    &table,
                    key.as_deref().unwrap_or_default(),
                    size,
                    max,
                ));
            }
            // A truncate goes to every partition: each holds keys of the table.
            let partitions: Vec<usize> = match &key_bytes {
                Some(k) => {
                    let n = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
                    vec![usize::try_from(partition_of(k, n)).unwrap_or(0)]
                }
                None => (0..t.partitions.len()).collect(),
            };
            for p in partitions {
                if mark.is_none() {
                    copied
                        .entry((table.clone(), p))
                        .or_default()
                        .insert(id.clone());
                }
                let part = &mut t.partitions[p];
                let held = match (&mark, &part.mark, self.order) {
                    (Some(m), Some(last), Some(order)) => {
                        m.at_or_before(last, order).unwrap_or(false)
                    }
                    (None, _, _) => part.copies.contains(&id),
                    _ => false,
                };
                if held {
                    skipped += 1;
                    continue;
                }
                if let Some(m) = &mark {
                    part.mark = Some(m.clone());
                }
                let mut headers = std::collections::BTreeMap::new();
                headers.insert(HEADER_ID.to_owned(), id.clone().into_bytes());
                headers.insert(HEADER_BATCH.to_owned(), batch.clone().into_bytes());
                if let Some(m) = &part.mark {
                    headers.insert(HEADER_MARK.to_owned(), m.text().into_bytes());
                }
                queues.entry((table.clone(), p)).or_default().push(Record {
                    key: key_bytes.clone(),
                    value: Some(value.clone()),
                    headers,
                    timestamp: now,
                });
            }
        }
        let mut jobs = Vec::with_capacity(queues.len());
        for ((table, p), records) in queues {
            let t = &self.topics[&table];
            let client = Arc::clone(&t.partitions[p].client);
            let what = format!("producing to partition {p} of topic {}", t.name);
            jobs.push(async move {
                for request in requests(records, max) {
                    client
                        .produce(request, Compression::NoCompression)
                        .await
                        .map_err(|e| map(&what, e))?;
                }
                Ok::<_, ConnectorError>(())
            });
        }
        // Every acknowledgement (or failure) awaited: nothing of this batch is still on its way
        // when the next one, or a read-back, starts.
        let results = runtime::block_on(futures_util::future::join_all(jobs));
        results.into_iter().collect::<Result<Vec<()>, _>>()?;
        for ((table, p), names) in copied {
            if let Some(part) = self
                .topics
                .get_mut(&table)
                .and_then(|t| t.partitions.get_mut(p))
            {
                part.copies = names;
            }
        }
        if skipped > 0 {
            self.skipped += skipped;
            tracing::info!(
                skipped,
                prefix = %self.prefix,
                "the topics already held part of this batch (sent before a restart): not sent again"
            );
        }
        self.batch += 1;
        Ok(())
    }
}

/// A message's timestamp (the client's chrono is built without a clock).
fn timestamp(t: SystemTime) -> rskafka::chrono::DateTime<rskafka::chrono::Utc> {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    rskafka::chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// A message larger than the brokers take, named.
fn too_large(
    table: &TableName,
    key: &[cutover_model::Value],
    size: usize,
    max: usize,
) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::InvalidInput,
        format!(
            "{table} key {}: its event is {size} bytes, more than the Kafka brokers take in one message \
             ({max} bytes, ?max-message-bytes=). Raise the brokers' message.max.bytes and the topic's \
             max.message.bytes and pass ?max-message-bytes=BYTES, or leave the table out \
             (--exclude-tables {table})",
            key_text(key)
        ),
    )
}

/// `records` in produce requests of at most `max` bytes each (one record batch each), in order.
fn requests(records: Vec<Record>, max: usize) -> Vec<Vec<Record>> {
    let mut out: Vec<Vec<Record>> = Vec::new();
    let mut size = 0;
    for r in records {
        let s = r.approximate_size() + 64;
        match out.last_mut() {
            Some(last) if size + s <= max => last.push(r),
            _ => {
                out.push(vec![r]);
                size = 0;
            }
        }
        size += s;
    }
    out
}

/// The records of a partition from `from` up to `before` (exclusive; `None`: to the end), in
/// order, starting at the first stored batch that begins at or after `from`.
///
/// Read until the broker has nothing more rather than up to the high watermark it lists:
/// tansu's `ListOffsets` can lag behind what a fetch returns (seen: a high watermark of 1477
/// with records up to 1499 in the partition), and its fetch returns only batches that begin at
/// or after the offset asked for.
async fn records_from(
    client: &PartitionClient,
    from: i64,
    before: Option<i64>,
    max_bytes: i32,
) -> Result<Vec<RecordAndOffset>, KafkaError> {
    let mut records = Vec::new();
    let mut at = from;
    while before.is_none_or(|b| at < b) {
        let (got, _) = client.fetch_records(at, 1..max_bytes, 0).await?;
        let Some(last) = got.last().map(|r| r.offset) else {
            break;
        };
        records.extend(
            got.into_iter()
                .filter(|r| r.offset >= at && before.is_none_or(|b| r.offset < b)),
        );
        at = last + 1;
    }
    Ok(records)
}

/// The end of one partition: the mark of its last message, and the names of the copied rows of
/// the batch that message belongs to.
async fn read_partition_end(
    client: Arc<PartitionClient>,
    max_bytes: i32,
) -> Result<(Option<Mark>, HashSet<String>), KafkaError> {
    let low = client.get_offset(OffsetAt::Earliest).await?;
    let listed = client.get_offset(OffsetAt::Latest).await?;
    // The last records: from a little before the listed end to the real one, stepping back
    // while a stored batch longer than the step hides them.
    let mut from = (listed - READ_BACK_WINDOW).max(low);
    let mut records = loop {
        let r = records_from(&client, from, None, max_bytes).await?;
        if !r.is_empty() || from <= low {
            break r;
        }
        from = (from - READ_BACK_WINDOW).max(low);
    };
    let mut mark = None;
    let mut copies = HashSet::new();
    let mut batch: Option<Vec<u8>> = None;
    loop {
        for r in records.iter().rev() {
            let headers = &r.record.headers;
            let Some(b) = headers.get(HEADER_BATCH) else {
                // Not a message of cutover's: nothing to learn before it.
                return Ok((mark, copies));
            };
            match &batch {
                None => {
                    batch = Some(b.clone());
                    mark = headers
                        .get(HEADER_MARK)
                        .and_then(|m| std::str::from_utf8(m).ok())
                        .and_then(Mark::parse);
                }
                Some(tail) if tail != b => return Ok((mark, copies)),
                Some(_) => {}
            }
            if let Some(id) = headers.get(HEADER_ID) {
                if id.starts_with(b"r:") {
                    copies.insert(String::from_utf8_lossy(id).into_owned());
                }
            }
        }
        // The whole window is the tail batch: the records before it.
        let Some(first) = records.first().map(|r| r.offset) else {
            return Ok((mark, copies));
        };
        if first <= low {
            return Ok((mark, copies));
        }
        let mut from = (first - READ_BACK_WINDOW).max(low);
        records = loop {
            let r = records_from(&client, from, Some(first), max_bytes).await?;
            if !r.is_empty() || from <= low {
                break r;
            }
            from = (from - READ_BACK_WINDOW).max(low);
        };
        if records.is_empty() {
            return Ok((mark, copies));
        }
    }
}

impl Writer for KafkaWriter {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        let mut seen: HashMap<String, &TableName> = HashMap::new();
        for t in tables {
            let name = topic(&self.prefix, &t.name)?;
            if let Some(other) = seen.insert(name.clone(), &t.name) {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "tables {other} and {} would share the topic {name}; leave one out (--exclude-tables)",
                        t.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        self.check(tables)?;
        let names: Vec<(TableName, String)> = tables
            .iter()
            .map(|t| Ok((t.name.clone(), topic(&self.prefix, &t.name)?)))
            .collect::<Result<_, ConnectorError>>()?;
        let admin = &self.admin;
        let producer = &self.producer;
        let e = &self.endpoint;
        let topics = runtime::block_on(async move {
            let existing: HashMap<String, usize> = admin
                .list_topics()
                .await
                .map_err(|err| map(format!("listing the topics of {}", e.redacted()), err))?
                .into_iter()
                .map(|t| (t.name, t.partitions.len()))
                .collect();
            let controller = admin
                .controller_client()
                .map_err(|err| map("finding the controller", err))?;
            let mut out = HashMap::new();
            for (table, name) in names {
                let n = match existing.get(&name) {
                    Some(&n) if n > 0 => n,
                    _ => {
                        match controller
                            .create_topic(name.as_str(), e.partitions, e.replication, 30_000)
                            .await
                        {
                            Ok(()) => {}
                            Err(KafkaError::ServerError {
                                protocol_error: ProtocolError::TopicAlreadyExists,
                                ..
                            }) => {}
                            Err(err) => return Err(map(format!("creating the topic {name}"), err)),
                        }
                        usize::try_from(e.partitions).unwrap_or(1)
                    }
                };
                let mut partitions = Vec::with_capacity(n);
                for p in 0..n {
                    let p = i32::try_from(p).unwrap_or(i32::MAX);
                    let client =
                        KafkaWriter::partition_client(producer, &name, p, e.connect_timeout * 3)
                            .await?;
                    partitions.push(Partition {
                        client: Arc::new(client),
                        mark: None,
                        copies: HashSet::new(),
                    });
                }
                out.insert(table, Topic { name, partitions });
            }
            Ok::<_, ConnectorError>(out)
        })?;
        self.topics = topics;
        for t in tables {
            self.tables.insert(t.name.clone(), StreamTable::new(t));
        }
        self.stale = true;
        Ok(())
    }

    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        self.order = Some(order);
    }

    fn write(&mut self, ops: &[ApplyOp], upto: &Position) -> Result<Written, ConnectorError> {
        if self.stale {
            self.read_back()?;
            self.stale = false;
        }
        let origin = self.last_origin.clone();
        let sent = self.send(ops).and_then(|()| after_produce());
        if let Err(e) = sent {
            // What reached the broker is unknown: read the partitions back before sending
            // again, and name this batch's changes as the first time.
            self.stale = true;
            self.last_origin = origin;
            return Err(e.context(format!("writing the batch up to {upto}")));
        }
        Ok(Written::Durable)
    }
}

/// Crash tests' failpoint `kafka::writer::after-produce`: every message of the batch is
/// acknowledged, its checkpoint not yet in the state store (feature `failpoints`).
fn after_produce() -> Result<(), ConnectorError> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("kafka::writer::after-produce", |_| {
        Err(ConnectorError::new(
            ErrorKind::Database,
            "failpoint kafka::writer::after-produce",
        ))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Numbers;

    impl PositionOrder for Numbers {
        fn compare(&self, a: &Position, b: &Position) -> Option<std::cmp::Ordering> {
            let n = |p: &Position| p.as_str().parse::<u64>().ok();
            Some(n(a)?.cmp(&n(b)?))
        }
        fn distance(&self, _: &Position, _: &Position) -> cutover_connector::Distance {
            cutover_connector::Distance::default()
        }
    }

    fn mark(p: &str, ordinal: u64, part: u32) -> Mark {
        Mark {
            position: Position::new(p).unwrap(),
            ordinal,
            part,
        }
    }

    #[test]
    fn marks_read_back_as_written_and_order_by_position_ordinal_part() {
        let m = mark("lsn:0/16B3748", 7, 1);
        assert_eq!(Mark::parse(&m.text()), Some(m));
        assert_eq!(Mark::parse("x"), None);
        let o = &Numbers;
        assert_eq!(
            mark("5", 9, 0).at_or_before(&mark("6", 0, 0), o),
            Some(true)
        );
        assert_eq!(
            mark("6", 1, 0).at_or_before(&mark("6", 0, 1), o),
            Some(false)
        );
        assert_eq!(
            mark("6", 0, 1).at_or_before(&mark("6", 0, 1), o),
            Some(true)
        );
        assert_eq!(
            mark("6", 0, 0).at_or_before(&mark("6", 0, 1), o),
            Some(true)
        );
        assert_eq!(mark("x", 0, 0).at_or_before(&mark("6", 0, 1), o), None);
    }

    #[test]
    fn requests_stay_under_the_limit_and_keep_the_order() {
        let record = |n: usize| Record {
            key: None,
            value: Some(vec![0; n]),
            headers: Default::default(),
            timestamp: timestamp(SystemTime::now()),
        };
        let sizes = [400, 400, 400, 2000, 10];
        let r = requests(sizes.iter().map(|&n| record(n)).collect(), 1000);
        let got: Vec<Vec<usize>> = r
            .iter()
            .map(|q| q.iter().map(|r| r.approximate_size()).collect())
            .collect();
        assert_eq!(got, vec![vec![400, 400], vec![400], vec![2000], vec![10]]);
    }
}
