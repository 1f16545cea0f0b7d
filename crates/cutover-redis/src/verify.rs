//! Verify's side on Redis, and the reader: rows read back in key order (`ZRANGEBYLEX` pages and
//! pipelined `HGETALL`/`GET`) and hashed **client-side** into `docs/CANONICAL.md`'s canonical
//! text — Redis has no place to compute it (its Lua has no MD5), so unlike the SQL engines every
//! row of a compared range crosses the network once per checksum.

use cutover_connector::canonical::{row_hash, row_text, value_text};
use cutover_connector::{
    CanonicalRow, ConnectorError, KeyRange, Mismatch, RangeChecksum, RangeDigest, Slice,
    TableReader,
};
use cutover_model::{encode_row, Key, Position, Row, TableSchema, Value};

use crate::endpoint::{Conn, RedisEndpoint};
use crate::keys;
use crate::layout::Layout;

pub struct RedisVerifier {
    conn: Conn,
    layout: Layout,
}

impl RedisVerifier {
    pub fn open(endpoint: &RedisEndpoint) -> Result<RedisVerifier, ConnectorError> {
        Ok(RedisVerifier {
            conn: endpoint.connect()?,
            layout: Layout::of(endpoint),
        })
    }

    /// The tables whose schemas the sink stored.
    pub fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        self.layout.tables(&mut self.conn)
    }

    /// The stored schema of `table` (the target's columns, whatever the other side says).
    fn stored(&mut self, t: &TableSchema) -> Result<TableSchema, ConnectorError> {
        Ok(self
            .tables()?
            .into_iter()
            .find(|s| s.name == t.name)
            .unwrap_or_else(|| t.clone()))
    }

    fn range_rows(
        &mut self,
        t: &TableSchema,
        range: &KeyRange,
        mut each: impl FnMut(Key, Row) -> Result<(), ConnectorError>,
    ) -> Result<(), ConnectorError> {
        let min = keys::lex_bound(t, range.start.as_ref(), true, true)?;
        let max = keys::lex_bound(t, range.end.as_ref(), false, false)?;
        self.layout
            .scan(&mut self.conn, t, &min, &max, usize::MAX, &mut each)
    }
}

fn canonical(t: &TableSchema, key: Key, row: &[Value]) -> Result<CanonicalRow, ConnectorError> {
    let values = t
        .columns
        .iter()
        .zip(row)
        .map(|(c, v)| value_text(v).map_err(|e| e.at(&t.name, &c.name, &key)))
        .collect::<Result<_, _>>()?;
    Ok(CanonicalRow { key, values })
}

impl RangeChecksum for RedisVerifier {
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        self.conn
            .query(redis::cmd("ZCARD").arg(keys::index_key(&self.layout.prefix, &table.name)))
    }

    /// One slice holds every row (Redis has no physical order to slice by): slices other than
    /// 0 are empty.
    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        bounds: &[Key],
        slice: Slice,
    ) -> Result<Vec<RangeDigest>, ConnectorError> {
        let t = self.stored(table)?;
        let mut digests = vec![RangeDigest::default(); bounds.len() + 1];
        if slice.index != 0 {
            return Ok(digests);
        }
        let cuts: Vec<Vec<u8>> = bounds
            .iter()
            .map(|b| keys::member(&t, b))
            .collect::<Result<_, _>>()?;
        self.range_rows(&t, range, |key, row| {
            let m = keys::member(&t, &key)?;
            let bucket = cuts.partition_point(|c| *c <= m);
            let r = canonical(&t, key, &row)?;
            let hash = row_hash(&row_text(r.values.iter().map(|v| v.as_deref())));
            digests[bucket] = digests[bucket]
                + RangeDigest {
                    rows: 1,
                    sum: hash as u64,
                };
            Ok(())
        })?;
        Ok(digests)
    }

    fn split(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
        parts: usize,
    ) -> Result<Vec<Key>, ConnectorError> {
        let t = self.stored(table)?;
        let min = keys::lex_bound(&t, range.start.as_ref(), true, true)?;
        let max = keys::lex_bound(&t, range.end.as_ref(), false, false)?;
        let index = keys::index_key(&self.layout.prefix, &t.name);
        let n: usize = self
            .conn
            .query(redis::cmd("ZLEXCOUNT").arg(&index).arg(&min).arg(&max))?;
        if parts < 2 || n < 2 {
            return Ok(Vec::new());
        }
        let mut at: Vec<usize> = (1..parts)
            .map(|i| i * n / parts)
            .filter(|p| *p > 0)
            .collect();
        at.dedup();
        let mut out = Vec::with_capacity(at.len());
        for p in at {
            if let Some(m) = self
                .layout
                .members(&mut self.conn, &t, &min, &max, p, 1)?
                .first()
            {
                out.push(keys::key_of_member(&t, m)?);
            }
        }
        Ok(out)
    }

    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &KeyRange,
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let t = self.stored(table)?;
        let mut out = Vec::new();
        self.range_rows(&t, range, |key, row| {
            out.push(canonical(&t, key, &row)?);
            Ok(())
        })?;
        Ok(out)
    }

    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys_: &[Key],
    ) -> Result<Vec<CanonicalRow>, ConnectorError> {
        let t = self.stored(table)?;
        let rows = self.layout.read_rows(&mut self.conn, &t, keys_)?;
        keys_
            .iter()
            .zip(rows)
            .filter_map(|(k, r)| r.map(|r| canonical(&t, k.clone(), &r)))
            .collect()
    }

    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys_: &[Key],
    ) -> Result<Vec<Row>, ConnectorError> {
        let t = self.stored(table)?;
        Ok(self
            .layout
            .read_rows(&mut self.conn, &t, keys_)?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Upserts `rows` and deletes `deletes` in one `MULTI`/`EXEC`.
    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[Row],
        deletes: &[Key],
    ) -> Result<(), ConnectorError> {
        let t = self.stored(table)?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for k in deletes {
            self.layout.delete_row(&mut pipe, &t, k)?;
        }
        for r in rows {
            self.layout.put_row(&mut pipe, &t, r, None)?;
        }
        self.conn.pipe(&pipe)
    }

    fn record_mismatches(&mut self, found: &[Mismatch]) -> Result<(), ConnectorError> {
        if found.is_empty() {
            return Ok(());
        }
        let key = self.layout.control("mismatches");
        let now = cutover_connector::epoch_secs(std::time::SystemTime::now());
        let mut pipe = redis::pipe();
        for m in found {
            let entry = encode_row(&[
                m.table.schema.clone().map_or(Value::Null, Value::Text),
                Value::Text(m.table.name.clone()),
                Value::Text(m.key.clone()),
                Value::Text(m.kind.to_owned()),
                Value::Text(m.columns.join("\u{1f}")),
                Value::Text(m.detail.clone()),
                Value::Float64(now),
            ]);
            pipe.cmd("LPUSH").arg(&key).arg(entry).ignore();
        }
        self.conn.pipe(&pipe)
    }

    fn current_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        Ok(None)
    }

    fn applied_position(&mut self) -> Result<Option<Position>, ConnectorError> {
        let p: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.layout.control("checkpoint")))?;
        Ok(p.and_then(|p| Position::new(&p).ok()))
    }
}

impl TableReader for RedisVerifier {
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError> {
        let t = self.stored(table)?;
        let min = keys::lex_bound(&t, after, false, true)?;
        let max = keys::lex_bound(&t, before, false, false)?;
        let mut out = Vec::new();
        self.layout
            .scan(&mut self.conn, &t, &min, &max, limit, |_, r| {
                out.push(r);
                Ok(())
            })?;
        Ok(out)
    }
}
