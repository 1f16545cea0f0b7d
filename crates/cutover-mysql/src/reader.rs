//! Key-range reads: the statements chunk reads and verify's scans share (keyset pagination in
//! key order, never `OFFSET`), rows decoded with the table, column and key named on failure, and
//! [`MySqlReader`], verify's [`TableReader`].

use cutover_connector::{key_text, ConnectorError, TableReader};
use cutover_model::{Key, Row, TableSchema, Value};
use mysql_async::{Params, Value as My};

use crate::client::{ident, qualified, Client};
use crate::endpoint::{MySqlEndpoint, ZeroDate};
use crate::value::{decode, param, DecodeError};

/// `(a, b) > (?, ?)` written out as `a > ? OR (a = ? AND b > ?)` (`>=` for the last column when
/// `inclusive`), so that every server uses the key's index for it.
pub(crate) fn key_condition(
    table: &TableSchema,
    key: &Key,
    op: &str,
    inclusive: bool,
) -> (String, Vec<My>) {
    let cols: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
    let n = cols.len().min(key.len());
    let mut ors = Vec::new();
    let mut params = Vec::new();
    for i in 0..n {
        let mut ands = Vec::new();
        for j in 0..i {
            ands.push(format!("{} = ?", cols[j]));
            params.push(param(&key[j]));
        }
        let last = i + 1 == n;
        let o = if last && inclusive {
            format!("{op}=")
        } else {
            op.to_owned()
        };
        ands.push(format!("{} {o} ?", cols[i]));
        params.push(param(&key[i]));
        ors.push(format!("({})", ands.join(" AND ")));
    }
    (format!("({})", ors.join(" OR ")), params)
}

/// `SELECT every column FROM table WHERE key in range ORDER BY key [LIMIT n]`.
pub(crate) fn select_range(
    database: &str,
    table: &TableSchema,
    start: Option<(&Key, bool)>,
    end: Option<&Key>,
    limit: Option<usize>,
) -> (String, Vec<My>) {
    let cols: Vec<String> = table.columns.iter().map(|c| ident(&c.name)).collect();
    let mut conds = Vec::new();
    let mut params = Vec::new();
    if let Some((k, inclusive)) = start {
        let (c, p) = key_condition(table, k, ">", inclusive);
        conds.push(c);
        params.extend(p);
    }
    if let Some(k) = end {
        let (c, p) = key_condition(table, k, "<", false);
        conds.push(c);
        params.extend(p);
    }
    let mut sql = format!(
        "SELECT {} FROM {}",
        cols.join(", "),
        qualified(database, &table.name.name)
    );
    if !conds.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conds.join(" AND "));
    }
    sql.push_str(&order_by_key(table));
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    (sql, params)
}

pub(crate) fn order_by_key(table: &TableSchema) -> String {
    let keys: Vec<String> = table.key_columns().map(|c| ident(&c.name)).collect();
    if keys.is_empty() {
        String::new()
    } else {
        format!(" ORDER BY {}", keys.join(", "))
    }
}

pub(crate) fn params(p: Vec<My>) -> Params {
    if p.is_empty() {
        Params::Empty
    } else {
        Params::Positional(p)
    }
}

/// A row of the driver as the table's row, naming table, column and key when a value cannot be
/// decoded.
pub(crate) fn decode_row(
    table: &TableSchema,
    row: &mysql_async::Row,
    zero_date: ZeroDate,
) -> Result<Row, ConnectorError> {
    let values = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, col)| decode(row.as_ref(i).unwrap_or(&My::NULL), col, zero_date));
    row_of(table, values, "")
}

/// The row of `values` (one per column of `table`, in order), or the first value's error with
/// the table, column and the row's key named (`at`: more of where, such as ` (binlog
/// position …)`).
pub(crate) fn row_of(
    table: &TableSchema,
    values: impl Iterator<Item = Result<Value, DecodeError>>,
    at: &str,
) -> Result<Row, ConnectorError> {
    let mut out = Vec::with_capacity(table.columns.len());
    let mut failed = None;
    for (v, col) in values.zip(&table.columns) {
        match v {
            Ok(v) => out.push(v),
            Err(e) => {
                failed.get_or_insert((col.name.clone(), e));
                out.push(Value::Null);
            }
        }
    }
    match failed {
        None => Ok(out),
        Some((column, e)) => Err(ConnectorError::new(
            e.kind(),
            format!(
                "table {}, column {column}, key {}{at}: {e}",
                table.name,
                key_text(&table.key_of(&out))
            ),
        )),
    }
}

/// Reads tables in key order for verify.
pub struct MySqlReader {
    client: Client,
    endpoint: MySqlEndpoint,
}

impl MySqlReader {
    pub fn open(endpoint: &MySqlEndpoint) -> Result<MySqlReader, ConnectorError> {
        Ok(MySqlReader {
            client: Client::connect(endpoint, Some(&endpoint.database))?,
            endpoint: endpoint.clone(),
        })
    }
}

impl TableReader for MySqlReader {
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&Key>,
        before: Option<&Key>,
        limit: usize,
    ) -> Result<Vec<Row>, ConnectorError> {
        if self.client.is_broken() {
            self.client = Client::connect(&self.endpoint, Some(&self.endpoint.database))?;
        }
        let (sql, p) = select_range(
            &self.endpoint.database,
            table,
            after.map(|k| (k, false)),
            before,
            Some(limit.max(1)),
        );
        let rows: Vec<mysql_async::Row> = self.client.exec(&sql, params(p))?;
        rows.iter()
            .map(|r| decode_row(table, r, self.endpoint.zero_date))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType, TableName};

    #[test]
    fn composite_key_ranges_are_written_out() {
        let c = |n: &str| Column {
            name: n.into(),
            ty: ColumnType::Int {
                bits: 32,
                unsigned: false,
            },
            declared_type: "int".into(),
            nullable: false,
            default: None,
        };
        let t = TableSchema {
            name: TableName::bare("t"),
            columns: vec![c("a"), c("b"), c("v")],
            primary_key: vec![0, 1],
            indexes: vec![],
        };
        let k1 = vec![Value::Int(1), Value::Int(2)];
        let k2 = vec![Value::Int(5), Value::Int(0)];
        let (sql, p) = select_range("d", &t, Some((&k1, true)), Some(&k2), Some(10));
        assert_eq!(
            sql,
            "SELECT `a`, `b`, `v` FROM `d`.`t` WHERE ((`a` > ?) OR (`a` = ? AND `b` >= ?)) \
             AND ((`a` < ?) OR (`a` = ? AND `b` < ?)) ORDER BY `a`, `b` LIMIT 10"
        );
        assert_eq!(p.len(), 6);
    }
}
