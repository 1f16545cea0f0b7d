//! The tables of a MySQL/MariaDB database as cutover's neutral schema, from
//! `information_schema`: columns in ordinal order with their neutral types (TYPES.md is the
//! map), `declared_type` exactly as `COLUMN_TYPE`, the primary key in key order, secondary
//! indexes.

use std::collections::{BTreeMap, HashSet};

use cutover_connector::{ConnectorError, ErrorKind};
use cutover_model::{Column, ColumnType, Index, TableName, TableSchema};
use mysql_async::{Params, Row};

use crate::client::Client;
use crate::endpoint::MySqlEndpoint;

/// Character sets whose bytes are UTF-8 (or raw bytes): what the binlog can carry as they are.
const UTF8_CHARSETS: &[&str] = &["utf8mb4", "utf8mb3", "utf8", "ascii", "binary"];

/// Spatial types: cutover has no neutral form for them.
const SPATIAL: &[&str] = &[
    "geometry",
    "point",
    "linestring",
    "polygon",
    "multipoint",
    "multilinestring",
    "multipolygon",
    "geometrycollection",
    "geomcollection",
];

/// One row of `information_schema.COLUMNS`, as read.
#[derive(Debug, Clone)]
pub(crate) struct RawColumn {
    pub table: String,
    pub name: String,
    pub data_type: String,
    pub column_type: String,
    pub nullable: bool,
    pub default: Option<String>,
    pub charset: Option<String>,
    pub max_len: Option<u64>,
    pub precision: Option<u64>,
    pub scale: Option<u64>,
    pub extra: String,
}

/// A value of a metadata row as text, whatever form the server sent it in.
pub(crate) fn text(row: &Row, i: usize) -> Option<String> {
    match row.as_ref(i)? {
        mysql_async::Value::NULL => None,
        mysql_async::Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        mysql_async::Value::Int(n) => Some(n.to_string()),
        mysql_async::Value::UInt(n) => Some(n.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn number(row: &Row, i: usize) -> Option<u64> {
    text(row, i)?.parse().ok()
}

/// Whether the user's selection (`name` or `database.name`) takes `table`.
fn selected(ep: &MySqlEndpoint, table: &str) -> bool {
    let is = |spec: &String| {
        spec == table
            || spec
                .split_once('.')
                .is_some_and(|(db, t)| db == ep.database && t == table)
    };
    if table.starts_with("_cutover") {
        return false;
    }
    (ep.tables.is_empty() || ep.tables.iter().any(is)) && !ep.exclude.iter().any(is)
}

pub(crate) fn raw_columns(
    client: &mut Client,
    database: &str,
) -> Result<Vec<RawColumn>, ConnectorError> {
    let rows: Vec<Row> = client.exec(
        "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE, \
                c.COLUMN_DEFAULT, c.CHARACTER_SET_NAME, c.CHARACTER_MAXIMUM_LENGTH, \
                c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.EXTRA \
         FROM information_schema.COLUMNS c \
         JOIN information_schema.TABLES t \
           ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
         WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' \
         ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
        Params::Positional(vec![database.into()]),
    )?;
    Ok(rows
        .iter()
        .map(|r| RawColumn {
            table: text(r, 0).unwrap_or_default(),
            name: text(r, 1).unwrap_or_default(),
            data_type: text(r, 2).unwrap_or_default().to_ascii_lowercase(),
            column_type: text(r, 3).unwrap_or_default(),
            nullable: text(r, 4).as_deref() == Some("YES"),
            default: text(r, 5),
            charset: text(r, 6),
            max_len: number(r, 7),
            precision: number(r, 8),
            scale: number(r, 9),
            extra: text(r, 10).unwrap_or_default(),
        })
        .collect())
}

/// The tables of the endpoint's database that the migration takes (the endpoint's `tables` and
/// `exclude`; never cutover's own `_cutover*` tables), sorted by name.
pub fn read_tables(
    client: &mut Client,
    ep: &MySqlEndpoint,
) -> Result<Vec<TableSchema>, ConnectorError> {
    let db = ep.database.clone();
    let mariadb = client.is_mariadb();
    let columns = raw_columns(client, &db)?;
    // MariaDB's JSON is LONGTEXT with a CHECK (json_valid(`col`)) constraint named as the column.
    let json: HashSet<(String, String)> = if mariadb {
        let rows: Vec<Row> = client.exec(
            "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = ?",
            Params::Positional(vec![db.clone().into()]),
        )?;
        rows.iter()
            .filter_map(|r| {
                let clause = text(r, 2)?.replace(' ', "").to_ascii_lowercase();
                let table = text(r, 0)?;
                let name = text(r, 1)?;
                (clause == format!("json_valid(`{}`)", name.to_ascii_lowercase()))
                    .then_some((table, name))
            })
            .collect()
    } else {
        HashSet::new()
    };
    let stats: Vec<Row> = client.exec(
        "SELECT TABLE_NAME, INDEX_NAME, NON_UNIQUE, SEQ_IN_INDEX, COLUMN_NAME \
         FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? \
         ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
        Params::Positional(vec![db.clone().into()]),
    )?;
    let tinyint_bool = ep.tinyint1_bool;
    let mut tables: BTreeMap<String, TableSchema> = BTreeMap::new();
    for c in columns.iter().filter(|c| selected(ep, &c.table)) {
        let is_json = json.contains(&(c.table.clone(), c.name.clone()));
        let ty = neutral_type(c, is_json, tinyint_bool).map_err(|why| {
            ConnectorError::new(
                ErrorKind::UnsupportedType,
                format!(
                    "table {}, column {}: {why}; leave the table out (--exclude {}) or change the column",
                    c.table, c.name, c.table
                ),
            )
        })?;
        let default = default_sql(c, mariadb);
        let t = tables
            .entry(c.table.clone())
            .or_insert_with(|| TableSchema {
                name: TableName::bare(&c.table),
                columns: Vec::new(),
                primary_key: Vec::new(),
                indexes: Vec::new(),
            });
        t.columns.push(Column {
            name: c.name.clone(),
            ty,
            declared_type: c.column_type.clone(),
            nullable: c.nullable,
            default,
        });
    }
    for r in &stats {
        let (Some(table), Some(index)) = (text(r, 0), text(r, 1)) else {
            continue;
        };
        let Some(t) = tables.get_mut(&table) else {
            continue;
        };
        let non_unique = number(r, 2).unwrap_or(1) != 0;
        // A functional key part (MySQL 8) has no column: such an index is left to the DDL side.
        let column = text(r, 4);
        if index == "PRIMARY" {
            if let Some(i) = column.as_deref().and_then(|c| t.column_index(c)) {
                t.primary_key.push(i);
            }
            continue;
        }
        match t.indexes.iter_mut().find(|i| i.name == index) {
            Some(ix) => match column {
                Some(c) => ix.columns.push(c),
                None => ix.definition = Some("expression".into()),
            },
            None => t.indexes.push(Index {
                name: index.clone(),
                columns: column.into_iter().collect(),
                unique: !non_unique,
                definition: None,
            }),
        }
    }
    for t in tables.values_mut() {
        // Indexes on expressions cannot be described neutrally: left out.
        t.indexes.retain(|i| i.definition.is_none());
    }
    Ok(tables.into_values().collect())
}

/// A default as SQL of the source engine, or `None` for none (MariaDB writes a missing default
/// as `NULL` and quotes literals; MySQL gives literals unquoted and marks expressions
/// `DEFAULT_GENERATED`).
fn default_sql(c: &RawColumn, mariadb: bool) -> Option<String> {
    let d = c.default.clone()?;
    if mariadb {
        return (d != "NULL").then_some(d);
    }
    let numeric = matches!(
        c.data_type.as_str(),
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" | "decimal" | "float" | "double"
    );
    if c.extra.contains("DEFAULT_GENERATED") || numeric {
        Some(d)
    } else {
        Some(format!("'{}'", d.replace('\'', "''")))
    }
}

fn int(bits: u8, unsigned: bool) -> ColumnType {
    ColumnType::Int { bits, unsigned }
}

fn len(n: Option<u64>) -> Option<u32> {
    n.and_then(|n| u32::try_from(n).ok())
}

/// The neutral type of a column (TYPES.md), or why there is none.
pub(crate) fn neutral_type(
    c: &RawColumn,
    is_json: bool,
    tinyint_bool: bool,
) -> Result<ColumnType, String> {
    let declared = c.column_type.to_ascii_lowercase();
    let unsigned = declared.contains("unsigned");
    let ty = match c.data_type.as_str() {
        "tinyint" if tinyint_bool && declared.starts_with("tinyint(1)") && !unsigned => {
            ColumnType::Bool
        }
        "tinyint" => int(8, unsigned),
        "smallint" => int(16, unsigned),
        "mediumint" => int(24, unsigned),
        "int" | "integer" => int(32, unsigned),
        "bigint" => int(64, unsigned),
        "year" => int(16, false),
        "decimal" | "numeric" => ColumnType::Decimal {
            precision: len(c.precision),
            scale: len(c.scale),
        },
        "float" => ColumnType::Float { bits: 32 },
        "double" | "real" => ColumnType::Float { bits: 64 },
        "char" | "varchar" => ColumnType::Text {
            max_len: len(c.max_len),
        },
        "tinytext" | "text" | "mediumtext" | "longtext" if is_json => {
            ColumnType::Json { binary: false }
        }
        "tinytext" | "text" | "mediumtext" | "longtext" => ColumnType::Text { max_len: None },
        "enum" | "set" => ColumnType::Text { max_len: None },
        "binary" | "varbinary" => ColumnType::Bytes {
            max_len: len(c.max_len),
        },
        "tinyblob" | "blob" | "mediumblob" | "longblob" => ColumnType::Bytes { max_len: None },
        "date" => ColumnType::Date,
        "time" => ColumnType::Time { zoned: false },
        "datetime" => ColumnType::Timestamp { zoned: false },
        "timestamp" => ColumnType::Timestamp { zoned: true },
        "json" => ColumnType::Json { binary: true },
        "uuid" => ColumnType::Uuid,
        "bit" => ColumnType::Other { name: "bit".into() },
        s if SPATIAL.contains(&s) => {
            return Err(format!(
                "the spatial type {} has no neutral form in cutover",
                c.column_type
            ))
        }
        other => ColumnType::Other {
            name: other.to_owned(),
        },
    };
    Ok(ty)
}

/// Columns of `tables` whose character set is not UTF-8 (or binary), as
/// (table, column, charset): the binlog carries their bytes in that character set.
pub(crate) fn non_utf8_columns(
    client: &mut Client,
    database: &str,
    tables: &[TableSchema],
) -> Result<Vec<(String, String, String)>, ConnectorError> {
    let names: HashSet<&str> = tables.iter().map(|t| t.name.name.as_str()).collect();
    Ok(raw_columns(client, database)?
        .into_iter()
        .filter(|c| names.contains(c.table.as_str()))
        .filter_map(|c| {
            let cs = c.charset?;
            (!UTF8_CHARSETS.contains(&cs.to_ascii_lowercase().as_str()))
                .then_some((c.table, c.name, cs))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(data_type: &str, column_type: &str) -> RawColumn {
        RawColumn {
            table: "t".into(),
            name: "c".into(),
            data_type: data_type.into(),
            column_type: column_type.into(),
            nullable: true,
            default: None,
            charset: None,
            max_len: Some(40),
            precision: Some(65),
            scale: Some(30),
            extra: String::new(),
        }
    }

    #[test]
    fn mysql_types_map_to_neutral_ones() {
        let t = |d: &str, c: &str| neutral_type(&raw(d, c), false, true).unwrap();
        assert_eq!(t("tinyint", "tinyint(1)"), ColumnType::Bool);
        assert_eq!(
            neutral_type(&raw("tinyint", "tinyint(1)"), false, false).unwrap(),
            int(8, false)
        );
        assert_eq!(t("tinyint", "tinyint(3) unsigned"), int(8, true));
        assert_eq!(t("mediumint", "mediumint(8) unsigned"), int(24, true));
        assert_eq!(t("bigint", "bigint(20) unsigned"), int(64, true));
        assert_eq!(t("year", "year(4)"), int(16, false));
        assert_eq!(
            t("decimal", "decimal(65,30)"),
            ColumnType::Decimal {
                precision: Some(65),
                scale: Some(30)
            }
        );
        assert_eq!(
            t("varchar", "varchar(40)"),
            ColumnType::Text { max_len: Some(40) }
        );
        assert_eq!(
            t("enum", "enum('a','b')"),
            ColumnType::Text { max_len: None }
        );
        assert_eq!(
            t("timestamp", "timestamp(6)"),
            ColumnType::Timestamp { zoned: true }
        );
        assert_eq!(
            t("datetime", "datetime(6)"),
            ColumnType::Timestamp { zoned: false }
        );
        assert_eq!(
            neutral_type(&raw("longtext", "longtext"), true, true).unwrap(),
            ColumnType::Json { binary: false }
        );
        assert_eq!(t("uuid", "uuid"), ColumnType::Uuid);
        assert!(neutral_type(&raw("point", "point"), false, true)
            .unwrap_err()
            .contains("spatial"));
    }

    #[test]
    fn the_selection_takes_names_and_database_qualified_names_never_cutovers_own() {
        let opts = cutover_connector::OpenOptions {
            tables: vec!["orders".into(), "shop.items".into(), "other.users".into()],
            exclude: vec!["shop.orders".into()],
            ..Default::default()
        };
        let ep = MySqlEndpoint::parse("mysql://root@h/shop", &opts).unwrap();
        assert!(selected(&ep, "items"));
        assert!(!selected(&ep, "orders"), "excluded");
        assert!(!selected(&ep, "users"), "another database's");
        let all = MySqlEndpoint::parse("mysql://root@h/shop", &Default::default()).unwrap();
        assert!(selected(&all, "anything"));
        assert!(!selected(&all, "_cutover_state"));
    }
}
