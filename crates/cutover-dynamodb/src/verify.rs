//! Reads through cutover and verify: DynamoDB has no server-side hashing, so every digest is
//! computed here from a `Scan` (strongly consistent, one segment per [`Slice`]: verify's
//! parallel slices are DynamoDB's parallel scan segments). A checksum request reads its whole
//! segment and keeps the items of its range, so a verify costs a full scan of each table per
//! round of bisection (strongly consistent reads: one read capacity unit per 4 KB).

use std::cmp::Ordering;

use aws_sdk_dynamodb::Client;
use cutover_connector::{
    canonical, cmp_keys, runtime, CanonicalRow, ConnectorError, ErrorKind, KeyRange, Mismatch,
    RangeChecksum, RangeDigest, Slice, TableReader,
};
use cutover_model::{Key, Position, Row, TableSchema};

use crate::endpoint::{map, DynamoEndpoint};
use crate::table::{Item, Layout};

/// Every item of one scan segment (`segment` of `total`), strongly consistent.
pub fn scan_all(
    client: &Client,
    table: &str,
    segment: u32,
    total: u32,
) -> Result<Vec<Item>, ConnectorError> {
    let client = client.clone();
    let table = table.to_owned();
    runtime::block_on(async move {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        let mut attempt = 0u32;
        loop {
            let mut r = client
                .scan()
                .table_name(&table)
                .consistent_read(true)
                .set_exclusive_start_key(start.clone());
            if total > 1 {
                r = r
                    .segment(i32::try_from(segment).unwrap_or(0))
                    .total_segments(i32::try_from(total).unwrap_or(1));
            }
            match r.send().await {
                Ok(page) => {
                    attempt = 0;
                    out.extend(page.items.unwrap_or_default());
                    match page.last_evaluated_key {
                        Some(k) if !k.is_empty() => start = Some(k),
                        _ => return Ok(out),
                    }
                }
                Err(e) => {
                    let e = map(format!("scanning the DynamoDB table {table}"), e);
                    attempt += 1;
                    if e.kind() != ErrorKind::Busy || attempt >= 8 {
                        return Err(e);
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(6)))
                        .await;
                }
            }
        }
    })
}

fn in_range(key: &Key, range: &KeyRange) -> bool {
    range
        .start
        .as_ref()
        .is_none_or(|s| cmp_keys(key, s) != Ordering::Less)
        && range
            .end
            .as_ref()
            .is_none_or(|e| cmp_keys(key, e) == Ordering::Less)
}

/// A row's key and its columns' canonical texts.
type Canonical = (Key, Vec<Option<String>>);

/// Verify's and reads' side on DynamoDB.
pub struct DynamoReader {
    client: Client,
    prefix: String,
    /// The last table [`TableReader::scan`] read, whole and in key order: its pages are cut
    /// from this instead of scanning the table again for each (a pass starts from `after =
    /// None`, which scans afresh).
    scanned: Option<(String, Vec<(Key, Row)>)>,
}

impl DynamoReader {
    pub fn open(endpoint: &DynamoEndpoint) -> Result<DynamoReader, ConnectorError> {
        Ok(DynamoReader {
            client: endpoint.client()?,
            prefix: endpoint.prefix.clone(),
            scanned: None,
        })
    }

    fn layout(&self, table: &TableSchema) -> Result<Layout, ConnectorError> {
        Layout::new(&self.prefix, table)
    }

    /// The canonical rows of `slice` with keys in `range`, unordered.
    fn rows(
        &self,
        layout: &Layout,
        range: &KeyRange,
        slice: Slice,
    ) -> Result<Vec<Canonical>, ConnectorError> {
        let items = scan_all(&self.client, &layout.name, slice.index, slice.of)?;
        let mut out = Vec::with_capacity(items.len());
        for item in &items {
            let (key, values) = layout.canonical(item)?;
            if in_range(&key, range) {
                out.push((key, values));
            }
        }
        Ok(out)
    }

    fn get(&self, layout: &Layout, key: &Key) -> Result<Option<Item>, ConnectorError> {
        let k = layout.key_item(key)?;
        let client = self.client.clone();
        let name = layout.name.clone();
        runtime::block_on(async move {
            client
                .get_item()
                .table_name(&name)
                .set_key(Some(k))
                .consistent_read(true)
                .send()
                .await
                .map(|o| o.item)
                .map_err(|e| map(format!("reading an item of {name}"), e))
        })
    }
}

impl TableReader for DynamoReader {
    /// One full scan per pass, sorted here (DynamoDB's scans are not in key order); the pages
    /// after the first are cut from it.
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError> {
        let layout = self.layout(table)?;
        let fresh = after.is_none()
            || self
                .scanned
                .as_ref()
                .is_none_or(|(name, _)| *name != layout.name);
        if fresh {
            let items = scan_all(&self.client, &layout.name, 0, 1)?;
            let mut rows = Vec::with_capacity(items.len());
            for item in &items {
                rows.push((layout.key_of(item)?, layout.row(item)?));
            }
            rows.sort_by(|a, b| cmp_keys(&a.0, &b.0));
            self.scanned = Some((layout.name.clone(), rows));
        }
        let rows = self.scanned.as_ref().map_or(&[][..], |(_, r)| &r[..]);
        let from = after.map_or(0, |a| {
            rows.partition_point(|(k, _)| cmp_keys(k, a) != Ordering::Greater)
        });
        Ok(rows[from..]
            .iter()
            .take_while(|(k, _)| before.is_none_or(|b| cmp_keys(k, b) == Ordering::Less))
            .take(limit)
            .map(|(_, r)| r.clone())
            .collect())
    }
}

impl RangeChecksum for DynamoReader {
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        let layout = self.layout(table)?;
        let client = self.client.clone();
        runtime::block_on(async move {
            let d = client
                .describe_table()
                .table_name(&layout.name)
                .send()
                .await
                .map_err(|e| map(format!("describing the DynamoDB table {}", layout.name), e))?;
            Ok(d.table()
                .and_then(|t| t.item_count())
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0))
        })
    }

    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        bounds: &[Key],
        slice: Slice,
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let layout = self.layout(table)?;
        let mut digests = vec![RangeDigest::default(); bounds.len() + 1];
        for (key, values) in self.rows(&layout, range, slice)? {
            let bucket = bounds.partition_point(|b| cmp_keys(b, &key) != Ordering::Greater);
            let text = canonical::row_text(values.iter().map(|v| v.as_deref()));
            let d = &mut digests[bucket];
            d.rows += 1;
            d.sum = d.sum.wrapping_add(canonical::row_hash(&text) as u64);
        }
        Ok(digests)
    }

    fn split(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        parts: usize,
    ) -> Result<Vec<Key>, ConnectorError> {
        let layout = self.layout(table)?;
        let mut keys: Vec<Key> = self
            .rows(&layout, range, Slice::WHOLE)?
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort_by(|a, b| cmp_keys(a, b));
        if parts < 2 || keys.len() < 2 {
            return Ok(Vec::new());
        }
        let step = keys.len().div_ceil(parts).max(1);
        let mut out: Vec<Key> = keys.iter().skip(step).step_by(step).cloned().collect();
        if let Some(start) = &range.start {
            out.retain(|k| cmp_keys(k, start) == Ordering::Greater);
        }
        out.dedup();
        out.truncate(parts - 1);
        Ok(out)
    }

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let layout = self.layout(table)?;
        let mut rows = self.rows(&layout, range, Slice::WHOLE)?;
        rows.sort_by(|a, b| cmp_keys(&a.0, &b.0));
        Ok(rows
            .into_iter()
            .map(|(key, values)| CanonicalRow { key, values })
            .collect())
    }

    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let layout = self.layout(table)?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(item) = self.get(&layout, k)? {
                let (key, values) = layout.canonical(&item)?;
                out.push(CanonicalRow { key, values });
            }
        }
        Ok(out)
    }

    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let layout = self.layout(table)?;
        let mut out = Vec::new();
        for k in keys {
            if let Some(item) = self.get(&layout, k)? {
                out.push(layout.row(&item)?);
            }
        }
        Ok(out)
    }

    /// Puts `rows` and deletes `deletes`, one request each: DynamoDB has no transaction over
    /// more than 100 items, so a repair is not atomic (each item is).
    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Key],
    ) -> Result<(), ConnectorError> {
        let layout = self.layout(table)?;
        let columns: Vec<String> = table.columns.iter().map(|c| c.name.clone()).collect();
        for row in rows {
            let item = layout.item(&columns, row, &[], crate::endpoint::Oversize::Compress)?;
            let (client, name) = (self.client.clone(), layout.name.clone());
            runtime::block_on(async move {
                client
                    .put_item()
                    .table_name(&name)
                    .set_item(Some(item))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| map(format!("repairing an item of {name}"), e))
            })?;
        }
        for key in deletes {
            let k = layout.key_item(key)?;
            let (client, name) = (self.client.clone(), layout.name.clone());
            runtime::block_on(async move {
                client
                    .delete_item()
                    .table_name(&name)
                    .set_key(Some(k))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| map(format!("deleting an item of {name}"), e))
            })?;
        }
        Ok(())
    }

    /// DynamoDB keeps no mismatch table: verify's report is where differences are.
    fn record_mismatches(&mut self, found: &[Mismatch]) -> Result<(), ConnectorError> {
        if !found.is_empty() {
            tracing::info!(
                differences = found.len(),
                "a DynamoDB side keeps no mismatch table; the differences are in verify's report only"
            );
        }
        Ok(())
    }

    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(None)
    }

    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(None)
    }
}
