//! Ordered reads for verify.

use std::path::Path;

use cutover_connector::{ConnectorError, ErrorKind, TableReader};
use cutover_model::{Key, Row, TableSchema};
use rusqlite::{params_from_iter, Connection};

use crate::error::map;
use crate::sql::select_range;
use crate::types::typed_row;
use crate::value::{from_ref, Param};

pub struct SqliteReader {
    conn: Connection,
    in_snapshot: bool,
}

impl SqliteReader {
    pub fn open(path: &Path) -> Result<SqliteReader, ConnectorError> {
        Ok(SqliteReader {
            conn: crate::open_existing(path)?,
            in_snapshot: false,
        })
    }

    /// Pins a read snapshot: every later `scan` sees the database as it is now, whatever other
    /// connections write, until [`SqliteReader::end_snapshot`].
    pub fn begin_snapshot(&mut self) -> Result<(), ConnectorError> {
        let ctx = "starting a read snapshot";
        self.conn.execute_batch("BEGIN").map_err(|e| map(ctx, e))?;
        // A deferred transaction takes its snapshot at the first read.
        self.conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(|e| map(ctx, e))?;
        self.in_snapshot = true;
        Ok(())
    }

    pub fn end_snapshot(&mut self) -> Result<(), ConnectorError> {
        if self.in_snapshot {
            self.in_snapshot = false;
            self.conn
                .execute_batch("COMMIT")
                .map_err(|e| map("ending a read snapshot", e))?;
        }
        Ok(())
    }
}

impl TableReader for SqliteReader {
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError> {
        let ctx = || format!("scanning table {}", table.name);
        let (sql, params) = select_range(
            table,
            after.map(|k| (k.as_slice(), false)),
            before.map(|k| k.as_slice()),
            Some(limit),
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| map(ctx(), e))?;
        let mut rows = stmt
            .query(params_from_iter(params.into_iter().map(Param)))
            .map_err(|e| map(ctx(), e))?;
        let n = table.columns.len();
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
            let row: Option<Row> = (0..n)
                .map(|i| r.get_ref(i).ok().and_then(from_ref))
                .collect();
            out.push(
                row.map(|row| typed_row(table.columns.iter(), row))
                    .ok_or_else(|| {
                        ConnectorError::new(
                            ErrorKind::UnsupportedType,
                            format!("{}: a row holds text that is not valid UTF-8", ctx()),
                        )
                    })?,
            );
        }
        Ok(out)
    }
}
