//! Reading table schemas from `sqlite_schema` and the table-info pragmas.

use cutover_connector::ConnectorError;
use cutover_model::{Column, ColumnType, Index, TableName, TableSchema};
use rusqlite::Connection;

use crate::error::map;

/// Tables cutover itself creates (control store, change log) start with this prefix and are
/// never migrated.
pub(crate) const INTERNAL_PREFIX: &str = "_cutover";

/// Every user table of the database, ordered by name.
pub(crate) fn read_tables(conn: &Connection) -> Result<Vec<TableSchema>, ConnectorError> {
    let names: Vec<String> = {
        let mut stmt = conn
            .prepare(
                "SELECT name FROM sqlite_schema WHERE type = 'table' \
                 AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
            )
            .map_err(|e| map("reading the list of tables", e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| map("reading the list of tables", e))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| map("reading the list of tables", e))?
    };
    names
        .iter()
        .filter(|n| !n.starts_with(INTERNAL_PREFIX))
        .map(|n| read_table(conn, n))
        .collect()
}

fn read_table(conn: &Connection, name: &str) -> Result<TableSchema, ConnectorError> {
    let ctx = || format!("reading the schema of table {name}");
    let mut columns = Vec::new();
    let mut pk: Vec<(i64, usize)> = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)")
            .map_err(|e| map(ctx(), e))?;
        let mut rows = stmt.query([name]).map_err(|e| map(ctx(), e))?;
        while let Some(r) = rows.next().map_err(|e| map(ctx(), e))? {
            let col_name: String = r.get(0).map_err(|e| map(ctx(), e))?;
            let declared: String = r.get(1).map_err(|e| map(ctx(), e))?;
            let not_null: bool = r.get(2).map_err(|e| map(ctx(), e))?;
            let default: Option<String> = r.get(3).map_err(|e| map(ctx(), e))?;
            let pk_pos: i64 = r.get(4).map_err(|e| map(ctx(), e))?;
            if pk_pos > 0 {
                pk.push((pk_pos, columns.len()));
            }
            columns.push(Column {
                name: col_name,
                ty: column_type(&declared),
                declared_type: declared,
                nullable: !not_null,
                default,
            });
        }
    }
    pk.sort();
    let mut indexes = Vec::new();
    {
        let mut stmt = conn
            .prepare(
                "SELECT il.name, il.\"unique\", s.sql FROM pragma_index_list(?1) il \
                 LEFT JOIN sqlite_schema s ON s.type = 'index' AND s.name = il.name \
                 WHERE il.origin <> 'pk' ORDER BY il.name",
            )
            .map_err(|e| map(ctx(), e))?;
        let list: Vec<(String, bool, Option<String>)> = stmt
            .query_map([name], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| map(ctx(), e))?
            .collect::<Result<_, _>>()
            .map_err(|e| map(ctx(), e))?;
        for (index_name, unique, sql) in list {
            let mut stmt = conn
                .prepare("SELECT name FROM pragma_index_info(?1) ORDER BY seqno")
                .map_err(|e| map(ctx(), e))?;
            let cols: Vec<Option<String>> = stmt
                .query_map([&index_name], |r| r.get(0))
                .map_err(|e| map(ctx(), e))?
                .collect::<Result<_, _>>()
                .map_err(|e| map(ctx(), e))?;
            indexes.push(Index {
                name: index_name,
                // Expression columns have no name; the definition carries them.
                columns: cols.into_iter().flatten().collect(),
                unique,
                definition: sql,
            });
        }
    }
    Ok(TableSchema {
        name: TableName::bare(name),
        columns,
        primary_key: pk.into_iter().map(|(_, i)| i).collect(),
        indexes,
    })
}

/// SQLite's type affinity rules (https://sqlite.org/datatype3.html §3.1) mapped to the model.
/// The declared types of cutover's own type map (`types`) come first: they name the neutral
/// type a SQLite target was given for a column from another engine.
pub(crate) fn column_type(declared: &str) -> ColumnType {
    let t = declared.to_ascii_uppercase();
    if let Some(ty) = crate::types::mapped_type(&t) {
        return ty;
    }
    if t.contains("INT") {
        ColumnType::Int {
            bits: 64,
            unsigned: false,
        }
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        ColumnType::Text { max_len: None }
    } else if t.contains("BLOB") {
        ColumnType::Bytes { max_len: None }
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        ColumnType::Float { bits: 64 }
    } else {
        ColumnType::Other {
            name: declared.to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_follows_sqlite_rules() {
        assert!(matches!(column_type("BIGINT"), ColumnType::Int { .. }));
        assert!(matches!(
            column_type("varchar(20)"),
            ColumnType::Text { .. }
        ));
        assert!(matches!(column_type("BLOB"), ColumnType::Bytes { .. }));
        assert!(matches!(
            column_type("double precision"),
            ColumnType::Float { .. }
        ));
        // "POINT" contains "INT": SQLite gives it integer affinity, and so do we.
        assert!(matches!(column_type("POINT"), ColumnType::Int { .. }));
        assert!(matches!(column_type(""), ColumnType::Other { .. }));
        assert!(matches!(column_type("NUMERIC"), ColumnType::Other { .. }));
    }
}
