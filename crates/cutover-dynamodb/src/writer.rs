//! Writing a batch to DynamoDB: chunk rows with `BatchWriteItem` (25 items a request, several
//! requests at once, unprocessed items and throttling retried with backoff), captured changes
//! one request per change, each conditioned on the source position the item holds
//! ([`POS`]), so a replayed or delayed write never overwrites a newer one.
//!
//! Order: the ops of a batch are cut into runs of chunk rows and runs of changes, run one
//! after the other. Inside a run of changes, the changes of one key go in order and different
//! keys in parallel (a run with a key that moves goes in order as a whole).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, DeleteRequest, KeySchemaElement, KeyType,
    PutRequest, ScalarAttributeType, TableStatus, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use cutover_connector::{
    ordinal, runtime, ApplyOp, ConnectorError, ErrorKind, PositionOrder, Writer, Written,
};
use cutover_model::{Change, Position, TableName, TableSchema};
use tokio::task::JoinSet;

use crate::endpoint::{map, DynamoEndpoint};
use crate::table::{Item, Layout, POS};

struct Table {
    layout: Layout,
    /// The columns rows of this table carry now ([`ApplyOp::Columns`]).
    columns: Vec<String>,
}

/// One conditional write of a change.
#[derive(Debug, Clone)]
enum Action {
    Put(Item),
    /// Set these attributes, leave the others (an update without its unchanged TOAST values).
    Update {
        key: Item,
        set: Item,
    },
    Delete(Item),
}

#[derive(Debug, Clone)]
struct CondWrite {
    table: String,
    key_id: String,
    action: Action,
    /// The sort key of the change's position; `None`: unconditional.
    pos: Option<String>,
}

enum Run {
    Rows(Vec<(String, String, Item)>),
    Changes {
        writes: Vec<CondWrite>,
        ordered: bool,
    },
    /// Every item of a DynamoDB table deleted (a truncate).
    Empty(Layout),
}

/// Spreads writes over time to stay under `?max-wcu=`.
#[derive(Clone)]
struct Limiter {
    per_sec: Option<u32>,
    next: Arc<Mutex<Instant>>,
}

impl Limiter {
    /// Waits until `units` write capacity units may be spent.
    async fn take(&self, units: u64) {
        let Some(rate) = self.per_sec else { return };
        let wait = {
            let Ok(mut next) = self.next.lock() else {
                return;
            };
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_secs_f64(units as f64 / f64::from(rate));
            start.saturating_duration_since(now)
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// Write capacity units of an item: one per started KB.
fn units(item: &Item) -> u64 {
    (crate::table::item_size(item) as u64).div_ceil(1024).max(1)
}

/// Tries of one request before its error goes to the caller (whose retry policy takes over).
const TRIES: u32 = 8;

fn backoff(attempt: u32) -> Duration {
    let base = 50u64.saturating_mul(1 << attempt.min(7));
    Duration::from_millis(base.min(5_000) + fastrand::u64(0..=base.min(5_000) / 2))
}

pub struct DynamoWriter {
    client: Client,
    endpoint: DynamoEndpoint,
    tables: HashMap<TableName, Table>,
    order: Option<&'static dyn PositionOrder>,
    warned: bool,
    /// The last origin: (position, its index, the offset added to indexes at this position:
    /// the pieces of one large transaction restart their index).
    last: Option<(Position, u32, u64)>,
    limiter: Limiter,
    /// Conditional writes skipped because the item held a newer change (replays).
    pub skipped: Arc<std::sync::atomic::AtomicU64>,
}

impl DynamoWriter {
    pub fn connect(endpoint: &DynamoEndpoint) -> Result<DynamoWriter, ConnectorError> {
        Ok(DynamoWriter {
            client: endpoint.client()?,
            endpoint: endpoint.clone(),
            tables: HashMap::new(),
            order: None,
            warned: false,
            last: None,
            limiter: Limiter {
                per_sec: endpoint.max_wcu,
                next: Arc::new(Mutex::new(Instant::now())),
            },
            skipped: Arc::default(),
        })
    }

    fn table(&self, name: &TableName) -> Result<&Table, ConnectorError> {
        self.tables.get(name).ok_or_else(|| {
            ConnectorError::new(
                ErrorKind::SchemaMismatch,
                format!("a change of {name}, a table the DynamoDB target was not prepared for"),
            )
        })
    }

    /// The sort key of a change: its position's, then its index (fixed width).
    fn origin_key(&mut self, position: &Position, index: u32) -> Option<String> {
        let index = ordinal(&mut self.last, position, index);
        let key = self.order.and_then(|o| o.sort_key(position));
        if key.is_none() && !self.warned {
            self.warned = true;
            tracing::warn!(
                %position,
                "the source's positions have no sort key: DynamoDB writes of changes are \
                 unconditional, so a write replayed after a crash may briefly put back an \
                 older state of an item until the replay reaches its newer change"
            );
        }
        Some(format!("{}.{index:012x}", key?))
    }

    fn runs(&mut self, ops: &[ApplyOp]) -> Result<Vec<Run>, ConnectorError> {
        let mut runs: Vec<Run> = Vec::new();
        let mut pos: Option<String> = None;
        let oversize = self.endpoint.oversize;
        for op in ops {
            match op {
                ApplyOp::Origin {
                    position, index, ..
                } => pos = self.origin_key(position, *index),
                ApplyOp::Columns { table, columns } => {
                    if let Some(t) = self.tables.get_mut(table) {
                        t.columns = columns.clone();
                    }
                }
                ApplyOp::Upsert { table, row } => {
                    let t = self.table(table)?;
                    let key = t.layout.schema.key_of(row);
                    let item = t.layout.item(&t.columns, row, &[], oversize)?;
                    let entry = (t.layout.name.clone(), t.layout.key_id(&key), item);
                    match runs.last_mut() {
                        Some(Run::Rows(rows)) => rows.push(entry),
                        _ => runs.push(Run::Rows(vec![entry])),
                    }
                }
                ApplyOp::Change(change) => {
                    let mut writes = Vec::new();
                    let mut ordered = false;
                    match change {
                        Change::Insert { table, row } => {
                            let t = self.table(table)?;
                            let key = t.layout.schema.key_of(row);
                            writes.push(CondWrite {
                                table: t.layout.name.clone(),
                                key_id: t.layout.key_id(&key),
                                action: Action::Put(t.layout.item(
                                    &t.columns,
                                    row,
                                    &[],
                                    oversize,
                                )?),
                                pos: pos.clone(),
                            });
                        }
                        Change::Update {
                            table,
                            old_key,
                            row,
                            unchanged,
                            ..
                        } => {
                            let t = self.table(table)?;
                            let key = t.layout.schema.key_of(row);
                            if &key != old_key {
                                ordered = true;
                                writes.push(CondWrite {
                                    table: t.layout.name.clone(),
                                    key_id: t.layout.key_id(old_key),
                                    action: Action::Delete(t.layout.key_item(old_key)?),
                                    pos: pos.clone(),
                                });
                            }
                            let item = t.layout.item(&t.columns, row, unchanged, oversize)?;
                            let action = if unchanged.is_empty() {
                                Action::Put(item)
                            } else {
                                let key_item = t.layout.key_item(&key)?;
                                let set = item
                                    .into_iter()
                                    .filter(|(k, _)| !key_item.contains_key(k))
                                    .collect();
                                Action::Update { key: key_item, set }
                            };
                            writes.push(CondWrite {
                                table: t.layout.name.clone(),
                                key_id: t.layout.key_id(&key),
                                action,
                                pos: pos.clone(),
                            });
                        }
                        Change::Delete { table, old_key, .. } => {
                            let t = self.table(table)?;
                            writes.push(CondWrite {
                                table: t.layout.name.clone(),
                                key_id: t.layout.key_id(old_key),
                                action: Action::Delete(t.layout.key_item(old_key)?),
                                pos: pos.clone(),
                            });
                        }
                        Change::Truncate { tables } => {
                            for name in tables {
                                if let Ok(t) = self.table(name) {
                                    runs.push(Run::Empty(t.layout.clone()));
                                }
                            }
                            continue;
                        }
                        Change::Schema { .. } => continue,
                    }
                    match runs.last_mut() {
                        Some(Run::Changes {
                            writes: w,
                            ordered: o,
                        }) => {
                            w.extend(writes);
                            *o |= ordered;
                        }
                        _ => runs.push(Run::Changes { writes, ordered }),
                    }
                }
                // DynamoDB has no columns to alter; the state store keeps the control ops.
                ApplyOp::Alter { .. } | ApplyOp::ChunkDone { .. } | ApplyOp::Watch { .. } => {}
            }
        }
        Ok(runs)
    }

    fn run_rows(&self, rows: Vec<(String, String, Item)>) -> Result<(), ConnectorError> {
        // Requests of at most 25 items, none naming a key twice (DynamoDB refuses that); a
        // key met again starts a new wave, so its writes stay in order.
        let mut waves: Vec<Vec<Vec<(String, Item)>>> = vec![Vec::new()];
        let mut seen = std::collections::HashSet::new();
        for (table, id, item) in rows {
            if !seen.insert(id) {
                seen.clear();
                waves.push(Vec::new());
            }
            let Some(wave) = waves.last_mut() else {
                continue;
            };
            match wave.last_mut() {
                Some(req) if req.len() < 25 => req.push((table, item)),
                _ => wave.push(vec![(table, item)]),
            }
        }
        for wave in waves {
            let client = self.client.clone();
            let limiter = self.limiter.clone();
            let parallel = self.endpoint.parallel;
            runtime::block_on(async move {
                let mut set = JoinSet::new();
                for req in wave {
                    while set.len() >= parallel {
                        if let Some(r) = set.join_next().await {
                            r.map_err(join_error)??;
                        }
                    }
                    set.spawn(batch_write(client.clone(), limiter.clone(), req));
                }
                while let Some(r) = set.join_next().await {
                    r.map_err(join_error)??;
                }
                Ok::<(), ConnectorError>(())
            })?;
        }
        Ok(())
    }

    fn run_changes(&self, writes: Vec<CondWrite>, ordered: bool) -> Result<(), ConnectorError> {
        let mut lanes: Vec<Vec<CondWrite>> = Vec::new();
        if ordered {
            lanes.push(writes);
        } else {
            let mut by_key: HashMap<String, usize> = HashMap::new();
            for w in writes {
                let lane = *by_key.entry(w.key_id.clone()).or_insert_with(|| {
                    lanes.push(Vec::new());
                    lanes.len() - 1
                });
                lanes[lane].push(w);
            }
        }
        let client = self.client.clone();
        let limiter = self.limiter.clone();
        let parallel = self.endpoint.parallel;
        let skipped = self.skipped.clone();
        runtime::block_on(async move {
            let mut set = JoinSet::new();
            for lane in lanes {
                while set.len() >= parallel {
                    if let Some(r) = set.join_next().await {
                        r.map_err(join_error)??;
                    }
                }
                let (client, limiter, skipped) = (client.clone(), limiter.clone(), skipped.clone());
                set.spawn(async move {
                    for w in lane {
                        if !conditional(&client, &limiter, &w).await? {
                            skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    Ok::<(), ConnectorError>(())
                });
            }
            while let Some(r) = set.join_next().await {
                r.map_err(join_error)??;
            }
            Ok::<(), ConnectorError>(())
        })
    }

    /// Deletes every item of a table (a truncate on the source).
    fn empty(&self, layout: &Layout) -> Result<(), ConnectorError> {
        let keys: Vec<String> = layout.key_schema().into_iter().map(|(n, _)| n).collect();
        let items = crate::verify::scan_all(&self.client, &layout.name, 0, 1)?;
        let rows: Vec<Item> = items
            .into_iter()
            .map(|i| i.into_iter().filter(|(k, _)| keys.contains(k)).collect())
            .collect();
        for chunk in rows.chunks(25) {
            let req = chunk
                .iter()
                .map(|k| {
                    DeleteRequest::builder()
                        .set_key(Some(k.clone()))
                        .build()
                        .map(|d| WriteRequest::builder().delete_request(d).build())
                        .map_err(|e| ConnectorError::new(ErrorKind::Database, e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let client = self.client.clone();
            let table = layout.name.clone();
            runtime::block_on(send_batch(client, table, req))?;
        }
        Ok(())
    }
}

fn join_error(e: tokio::task::JoinError) -> ConnectorError {
    ConnectorError::new(ErrorKind::Database, format!("a DynamoDB request task: {e}"))
}

/// One `BatchWriteItem` of puts, its unprocessed items sent again with backoff.
async fn batch_write(
    client: Client,
    limiter: Limiter,
    req: Vec<(String, Item)>,
) -> Result<(), ConnectorError> {
    let mut by_table: HashMap<String, Vec<WriteRequest>> = HashMap::new();
    let mut total = 0;
    for (table, item) in req {
        total += units(&item);
        let put = PutRequest::builder()
            .set_item(Some(item))
            .build()
            .map_err(|e| ConnectorError::new(ErrorKind::Database, e.to_string()))?;
        by_table
            .entry(table)
            .or_default()
            .push(WriteRequest::builder().put_request(put).build());
    }
    limiter.take(total).await;
    for (table, writes) in by_table {
        send_batch(client.clone(), table, writes).await?;
    }
    Ok(())
}

async fn send_batch(
    client: Client,
    table: String,
    mut writes: Vec<WriteRequest>,
) -> Result<(), ConnectorError> {
    let mut attempt = 0;
    while !writes.is_empty() {
        let sent = client
            .batch_write_item()
            .request_items(table.clone(), writes.clone())
            .send()
            .await;
        match sent {
            Ok(out) => {
                writes = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&table))
                    .unwrap_or_default();
                if writes.is_empty() {
                    return Ok(());
                }
            }
            Err(e) => {
                let e = map(format!("writing items to the DynamoDB table {table}"), e);
                if e.kind() != ErrorKind::Busy || attempt + 1 >= TRIES {
                    return Err(e);
                }
            }
        }
        attempt += 1;
        if attempt >= TRIES {
            return Err(ConnectorError::new(
                ErrorKind::Busy,
                format!(
                    "DynamoDB left {} items of {table} unprocessed after {TRIES} tries \
                     (throttled); raise the table's capacity or lower ?max-wcu=",
                    writes.len()
                ),
            ));
        }
        tokio::time::sleep(backoff(attempt)).await;
    }
    Ok(())
}

/// Sends a request conditioned by [`newer`]; on failure, whether the condition failed (the
/// item holds a newer change) and the error.
macro_rules! conditioned {
    ($req:expr, $pos:expr, $names:expr, $values:expr, $what:expr) => {{
        let (cond, names, values) = newer($pos, $names, $values);
        $req.set_condition_expression(cond)
            .set_expression_attribute_names(names)
            .set_expression_attribute_values(values)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| (is_condition(&e), map($what, e)))
    }};
}

/// One change's write, conditioned on the position the item holds. `false`: the item holds a
/// newer change (this one is a replay), nothing written.
async fn conditional(
    client: &Client,
    limiter: &Limiter,
    w: &CondWrite,
) -> Result<bool, ConnectorError> {
    let mut attempt = 0;
    loop {
        let sent = match &w.action {
            Action::Put(item) => {
                limiter.take(units(item)).await;
                let mut item = item.clone();
                if let Some(p) = &w.pos {
                    item.insert(POS.to_owned(), AttributeValue::S(p.clone()));
                }
                conditioned!(
                    client.put_item().table_name(&w.table).set_item(Some(item)),
                    &w.pos,
                    HashMap::new(),
                    HashMap::new(),
                    format!("writing an item of {}", w.table)
                )
            }
            Action::Update { key, set } => {
                limiter.take(units(set)).await;
                let mut names = HashMap::new();
                let mut values = HashMap::new();
                let mut parts = Vec::new();
                for (i, (name, v)) in set.iter().enumerate() {
                    names.insert(format!("#c{i}"), name.clone());
                    values.insert(format!(":c{i}"), v.clone());
                    parts.push(format!("#c{i} = :c{i}"));
                }
                if parts.is_empty() {
                    return Ok(true);
                }
                if w.pos.is_some() {
                    parts.push("#p = :p".to_owned());
                }
                conditioned!(
                    client
                        .update_item()
                        .table_name(&w.table)
                        .set_key(Some(key.clone()))
                        .update_expression(format!("SET {}", parts.join(", "))),
                    &w.pos,
                    names,
                    values,
                    format!("updating an item of {}", w.table)
                )
            }
            Action::Delete(key) => {
                limiter.take(1).await;
                conditioned!(
                    client
                        .delete_item()
                        .table_name(&w.table)
                        .set_key(Some(key.clone())),
                    &w.pos,
                    HashMap::new(),
                    HashMap::new(),
                    format!("deleting an item of {}", w.table)
                )
            }
        };
        match sent {
            Ok(()) => return Ok(true),
            Err((true, _)) => return Ok(false),
            Err((false, e)) => {
                attempt += 1;
                if e.kind() != ErrorKind::Busy || attempt >= TRIES {
                    return Err(e);
                }
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
    }
}

/// The condition that the item holds no newer change than `pos` (none without a position),
/// with the names and values the expressions use.
#[allow(clippy::type_complexity)]
fn newer(
    pos: &Option<String>,
    mut names: HashMap<String, String>,
    mut values: Item,
) -> (
    Option<String>,
    Option<HashMap<String, String>>,
    Option<Item>,
) {
    let cond = pos.as_ref().map(|p| {
        names.insert("#p".to_owned(), POS.to_owned());
        values.insert(":p".to_owned(), AttributeValue::S(p.clone()));
        "attribute_not_exists(#p) OR #p < :p".to_owned()
    });
    (
        cond,
        (!names.is_empty()).then_some(names),
        (!values.is_empty()).then_some(values),
    )
}

fn is_condition<E: aws_sdk_dynamodb::error::ProvideErrorMetadata, R>(
    e: &aws_sdk_dynamodb::error::SdkError<E, R>,
) -> bool {
    e.as_service_error()
        .and_then(|s| s.code())
        .is_some_and(|c| c == "ConditionalCheckFailedException")
}

impl Writer for DynamoWriter {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        for t in tables {
            Layout::new(&self.endpoint.prefix, t)?;
        }
        Ok(())
    }

    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        for t in tables {
            let layout = Layout::new(&self.endpoint.prefix, t)?;
            ensure_table(&self.client, &layout)?;
            self.tables.insert(
                t.name.clone(),
                Table {
                    columns: t.columns.iter().map(|c| c.name.clone()).collect(),
                    layout,
                },
            );
        }
        Ok(())
    }

    fn write(&mut self, ops: &[ApplyOp], _upto: &Position) -> Result<Written, ConnectorError> {
        let done = self.runs(ops).and_then(|runs| {
            for run in runs {
                match run {
                    Run::Rows(rows) => self.run_rows(rows)?,
                    Run::Changes { writes, ordered } => self.run_changes(writes, ordered)?,
                    Run::Empty(layout) => self.empty(&layout)?,
                }
            }
            Ok(())
        });
        if done.is_err() {
            // The caller retries from its checkpoint: a transaction sent again then is a
            // redelivery, not the next piece of one.
            self.last = None;
        }
        done?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("dynamodb::writer::after-write", |_| {
            Err(ConnectorError::new(
                ErrorKind::Database,
                "failpoint dynamodb::writer::after-write",
            ))
        });
        Ok(Written::Durable)
    }

    fn set_order(&mut self, order: &'static dyn PositionOrder) {
        self.order = Some(order);
    }
}

/// Creates the table (on demand capacity) when it is missing and waits until it is ACTIVE; an
/// existing table must have the key this table maps to.
pub fn ensure_table(client: &Client, layout: &Layout) -> Result<(), ConnectorError> {
    let client = client.clone();
    let layout = layout.clone();
    runtime::block_on(async move {
        let name = layout.name.clone();
        let want = layout.key_schema();
        let described = client.describe_table().table_name(&name).send().await;
        match described {
            Ok(d) => {
                let have: Vec<String> = d
                    .table()
                    .map(|t| {
                        t.key_schema()
                            .iter()
                            .map(|k| k.attribute_name().to_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                let want_names: Vec<String> = want.iter().map(|(n, _)| n.clone()).collect();
                if have != want_names {
                    return Err(ConnectorError::new(
                        ErrorKind::SchemaMismatch,
                        format!(
                            "the DynamoDB table {name} exists with the key {have:?}, but {} \
                             maps to the key {want_names:?}; drop that table or choose another \
                             table prefix (dynamodb://PREFIX)",
                            layout.schema.name
                        ),
                    ));
                }
            }
            Err(e) => {
                let e = map(format!("describing the DynamoDB table {name}"), e);
                if e.kind() != ErrorKind::NotFound {
                    return Err(e);
                }
                let mut r = client
                    .create_table()
                    .table_name(&name)
                    .billing_mode(BillingMode::PayPerRequest);
                for (i, (attr, ty)) in want.iter().enumerate() {
                    let ty = match *ty {
                        "N" => ScalarAttributeType::N,
                        "B" => ScalarAttributeType::B,
                        _ => ScalarAttributeType::S,
                    };
                    let build = |e: aws_sdk_dynamodb::error::BuildError| {
                        ConnectorError::new(ErrorKind::Database, e.to_string())
                    };
                    r = r
                        .attribute_definitions(
                            AttributeDefinition::builder()
                                .attribute_name(attr)
                                .attribute_type(ty)
                                .build()
                                .map_err(build)?,
                        )
                        .key_schema(
                            KeySchemaElement::builder()
                                .attribute_name(attr)
                                .key_type(if i == 0 {
                                    KeyType::Hash
                                } else {
                                    KeyType::Range
                                })
                                .build()
                                .map_err(build)?,
                        );
                }
                if let Err(e) = r.send().await {
                    let e = map(format!("creating the DynamoDB table {name}"), e);
                    // Created meanwhile by another run: wait for it below.
                    if e.kind() != ErrorKind::Busy {
                        return Err(e);
                    }
                }
                tracing::info!(table = %name, "created the DynamoDB table (on-demand capacity)");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let d = client
                .describe_table()
                .table_name(&name)
                .send()
                .await
                .map_err(|e| map(format!("describing the DynamoDB table {name}"), e))?;
            if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    format!("the DynamoDB table {name} did not become ACTIVE within 5 minutes"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limiter_spreads_write_units_over_time() {
        let limiter = Limiter {
            per_sec: Some(100),
            next: Arc::new(Mutex::new(Instant::now())),
        };
        let t0 = Instant::now();
        runtime::block_on(async {
            limiter.take(50).await; // at once
            limiter.take(50).await; // after 0.5 s
            limiter.take(1).await; // after 1 s
        });
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(950) && took < Duration::from_secs(5),
            "{took:?}"
        );
        let free = Limiter {
            per_sec: None,
            next: Arc::new(Mutex::new(Instant::now())),
        };
        let t0 = Instant::now();
        runtime::block_on(free.take(1_000_000));
        assert!(t0.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn pieces_of_one_transaction_keep_ordering_their_changes() {
        let (p, q): (Position, Position) =
            ("lsn:0/10".parse().unwrap(), "lsn:0/20".parse().unwrap());
        let mut last = None;
        // Piece 1: indexes 0..=2; piece 2 at the same position restarts at 0.
        let got: Vec<u64> = [0, 1, 2, 0, 1]
            .iter()
            .map(|&i| ordinal(&mut last, &p, i))
            .collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
        // A new position starts over.
        assert_eq!(ordinal(&mut last, &q, 0), 0);
        assert_eq!(ordinal(&mut last, &q, 5), 5);
    }
}
