//! The schema applier for a PostgreSQL target whose source is another engine: tables created
//! from the neutral [`TableSchema`] through a documented type map (README, "Type map"), instead
//! of from a PostgreSQL peer's catalog.
//!
//! Type map (neutral → PostgreSQL):
//!
//! | neutral type                   | PostgreSQL                 |
//! |--------------------------------|----------------------------|
//! | `Bool`                         | `boolean`                  |
//! | `Int` signed ≤16 / ≤32 / ≤64   | `smallint` / `integer` / `bigint` |
//! | `Int` unsigned ≤8 / ≤16 / ≤32  | `smallint` / `integer` / `bigint` |
//! | `Int` unsigned 64              | `numeric(20)` (bigint cannot hold 2^63 and above) |
//! | `Float` 32 / 64                | `real` / `double precision` |
//! | `Decimal(p, s)`                | `numeric(p, s)` (`numeric` when unbounded or p > 1000) |
//! | `Text(n)` / `Text`             | `character varying(n)` / `text` |
//! | `Bytes`                        | `bytea`                    |
//! | `Date`, `Time`, `Time` zoned   | `date`, `time`, `time with time zone` |
//! | `Timestamp` / zoned            | `timestamp` / `timestamp with time zone` |
//! | `Interval`, `Uuid`             | `interval`, `uuid`         |
//! | `Json` / binary                | `json` / `jsonb`           |
//! | `Array(t)`                     | the type of `t`, `[]`      |
//! | `Other` (SQLite NUMERIC affinity or no type, unknown types) | refused: no type holds its values exactly |
//!
//! Identifiers keep their exact spelling (always quoted). A table without a schema (SQLite's)
//! goes into [`DEFAULT_SCHEMA`]. Defaults are carried when they are plain literals; any other
//! expression is left out with a warning. Pure: builds SQL, runs nothing.

use cutover_model::{Column, ColumnType, TableName, TableSchema, Value};

use crate::schema::{ident, literal, qualified};

/// Where tables of a source without schemas (SQLite) are created.
pub const DEFAULT_SCHEMA: &str = "public";

/// A column whose values no PostgreSQL type can hold exactly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "table {table} column {column}: the source's type {source_type} cannot be mapped to PostgreSQL \
     {target_type} without loss ({why}); give the column an exact type on the source, or leave the table out"
)]
pub struct TypeMapError {
    pub table: String,
    pub column: String,
    pub source_type: String,
    pub target_type: String,
    pub why: String,
}

/// The table's name on the target: with [`DEFAULT_SCHEMA`] when the source has none.
pub fn target_name(name: &TableName) -> TableName {
    match &name.schema {
        Some(_) => name.clone(),
        None => TableName::new(Some(DEFAULT_SCHEMA), &name.name),
    }
}

/// The PostgreSQL type that holds every value of `column` exactly.
pub fn pg_type(table: &TableName, column: &Column) -> Result<String, TypeMapError> {
    map_type(&column.ty).map_err(|(target, why)| TypeMapError {
        table: table.to_string(),
        column: column.name.clone(),
        source_type: if column.declared_type.is_empty() {
            "(none)".to_owned()
        } else {
            column.declared_type.clone()
        },
        target_type: target.to_owned(),
        why,
    })
}

/// The type, or the nearest candidate and why it is refused.
fn map_type(ty: &ColumnType) -> Result<String, (&'static str, String)> {
    Ok(match ty {
        ColumnType::Bool => "boolean".to_owned(),
        ColumnType::Int {
            bits,
            unsigned: false,
        } => match bits {
            0..=16 => "smallint".to_owned(),
            17..=32 => "integer".to_owned(),
            33..=64 => "bigint".to_owned(),
            _ => {
                return Err((
                    "bigint",
                    format!("a {bits}-bit integer is wider than 64 bits"),
                ))
            }
        },
        ColumnType::Int {
            bits,
            unsigned: true,
        } => match bits {
            0..=8 => "smallint".to_owned(),
            9..=16 => "integer".to_owned(),
            17..=32 => "bigint".to_owned(),
            33..=64 => "numeric(20)".to_owned(),
            _ => {
                return Err((
                    "numeric(20)",
                    format!("an unsigned {bits}-bit integer is wider than 64 bits"),
                ))
            }
        },
        ColumnType::Float { bits: 32 } => "real".to_owned(),
        ColumnType::Float { bits: 64 } => "double precision".to_owned(),
        ColumnType::Float { bits } => {
            return Err((
                "double precision",
                format!("a {bits}-bit float is not a 32- or 64-bit IEEE float"),
            ))
        }
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } if (1..=1000).contains(p) => match scale {
            Some(s) if *s <= *p => format!("numeric({p},{s})"),
            Some(_) => "numeric".to_owned(),
            None => format!("numeric({p})"),
        },
        ColumnType::Decimal { .. } => "numeric".to_owned(),
        ColumnType::Text { max_len: Some(n) } if (1..=10_485_760).contains(n) => {
            format!("character varying({n})")
        }
        ColumnType::Text { .. } => "text".to_owned(),
        ColumnType::Bytes { .. } => "bytea".to_owned(),
        ColumnType::Date => "date".to_owned(),
        ColumnType::Time { zoned: false } => "time".to_owned(),
        ColumnType::Time { zoned: true } => "time with time zone".to_owned(),
        ColumnType::Timestamp { zoned: false } => "timestamp".to_owned(),
        ColumnType::Timestamp { zoned: true } => "timestamp with time zone".to_owned(),
        ColumnType::Interval => "interval".to_owned(),
        ColumnType::Uuid => "uuid".to_owned(),
        ColumnType::Json { binary: false } => "json".to_owned(),
        ColumnType::Json { binary: true } => "jsonb".to_owned(),
        ColumnType::Array(inner) => match map_type(inner) {
            Ok(t) => format!("{t}[]"),
            Err((_, why)) => return Err(("an array", format!("its elements: {why}"))),
        },
        ColumnType::Other { .. } => {
            return Err((
                "text",
                "the column has no declared storage type: it may hold integers, reals, text and \
                 blobs side by side (SQLite NUMERIC affinity or no type), and text would turn \
                 numbers into strings"
                    .to_owned(),
            ))
        }
    })
}

/// Whether `value` can be written into a column of neutral type `ty` and read back as itself.
/// A value of another kind (SQLite lets any column hold any storage class) is refused by the
/// sink, naming table, column and key, rather than converted by PostgreSQL's input function.
pub fn fits(ty: &ColumnType, value: &Value) -> bool {
    match (ty, value) {
        (_, Value::Null) => true,
        (ColumnType::Bool, Value::Bool(_)) => true,
        (
            ColumnType::Int {
                unsigned: false, ..
            },
            Value::Int(_),
        ) => true,
        (ColumnType::Int { unsigned: true, .. }, Value::Int(_) | Value::UInt(_)) => true,
        (ColumnType::Float { bits: 32 }, Value::Float32(_)) => true,
        (ColumnType::Float { bits: 64 }, Value::Float64(_)) => true,
        (ColumnType::Decimal { .. }, Value::Decimal(_)) => true,
        (ColumnType::Text { .. }, Value::Text(_)) => true,
        (ColumnType::Bytes { .. }, Value::Bytes(_)) => true,
        (ColumnType::Date, Value::Date(_)) => true,
        (ColumnType::Time { zoned: false }, Value::Time(_)) => true,
        (ColumnType::Time { zoned: true }, Value::TimeTz(_)) => true,
        (ColumnType::Timestamp { zoned: false }, Value::Timestamp(_)) => true,
        (ColumnType::Timestamp { zoned: true }, Value::TimestampTz(_)) => true,
        (ColumnType::Interval, Value::Interval(_)) => true,
        (ColumnType::Uuid, Value::Uuid(_)) => true,
        (ColumnType::Json { .. }, Value::Json(_)) => true,
        (ColumnType::Array(inner), Value::Array(a)) => a.elements.iter().all(|e| fits(inner, e)),
        _ => false,
    }
}

/// The column's default as PostgreSQL SQL, when it is a portable literal: a number, a quoted
/// string, NULL, or true/false (also 0/1 for a boolean). `None`: no default, or not portable
/// (the caller warns).
pub fn portable_default(column: &Column) -> Option<String> {
    let mut d = column.default.as_deref()?.trim();
    while let Some(inner) = d.strip_prefix('(').and_then(|s| s.strip_suffix(')')) {
        d = inner.trim();
    }
    let upper = d.to_ascii_uppercase();
    if upper == "NULL" {
        return Some("NULL".to_owned());
    }
    if column.ty == ColumnType::Bool {
        return match upper.as_str() {
            "1" | "TRUE" | "'T'" | "'TRUE'" | "'1'" => Some("true".to_owned()),
            "0" | "FALSE" | "'F'" | "'FALSE'" | "'0'" => Some("false".to_owned()),
            _ => None,
        };
    }
    let numeric = matches!(
        column.ty,
        ColumnType::Int { .. } | ColumnType::Float { .. } | ColumnType::Decimal { .. }
    );
    if numeric && d.parse::<cutover_model::Decimal>().is_ok() && !d.is_empty() {
        let digits = d.trim_start_matches(['-', '+']);
        if digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
            return Some(d.to_owned());
        }
    }
    // A single-quoted string whose only quotes are doubled ones; not into numbers, where
    // PostgreSQL's input function would parse it differently from the source.
    if !numeric {
        if let Some(body) = d.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')) {
            if !body.replace("''", "").contains('\'') {
                return Some(literal(&body.replace("''", "'")));
            }
        }
    }
    None
}

/// `CREATE TABLE` for `t` (its columns, NOT NULL, portable defaults; no keys), and the columns
/// whose defaults were left out.
pub fn create_table_sql(t: &TableSchema) -> Result<(String, Vec<String>), TypeMapError> {
    let mut cols = Vec::with_capacity(t.columns.len());
    let mut dropped = Vec::new();
    for c in &t.columns {
        let mut s = format!("{} {}", ident(&c.name), pg_type(&t.name, c)?);
        match portable_default(c) {
            Some(d) => s.push_str(&format!(" DEFAULT {d}")),
            None if c.default.is_some() => dropped.push(c.name.clone()),
            None => {}
        }
        if !c.nullable {
            s.push_str(" NOT NULL");
        }
        cols.push(s);
    }
    Ok((
        format!(
            "CREATE TABLE {} ({})",
            qualified(&target_name(&t.name)),
            cols.join(", ")
        ),
        dropped,
    ))
}

/// `ALTER TABLE … ADD PRIMARY KEY`, if `t` has one (before the data: every write is an upsert).
pub fn primary_key_sql(t: &TableSchema) -> Option<String> {
    if !t.has_primary_key() {
        return None;
    }
    let cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
    Some(format!(
        "ALTER TABLE {} ADD PRIMARY KEY ({})",
        qualified(&target_name(&t.name)),
        cols.join(", ")
    ))
}

/// `CREATE [UNIQUE] INDEX` for each secondary index over plain columns (built after the data),
/// and the names of those left out (expression indexes have no portable definition).
pub fn index_sql(t: &TableSchema) -> (Vec<String>, Vec<String>) {
    let mut sql = Vec::new();
    let mut skipped = Vec::new();
    for i in &t.indexes {
        if i.columns.is_empty() || i.columns.iter().any(|c| t.column_index(c).is_none()) {
            skipped.push(i.name.clone());
            continue;
        }
        let cols: Vec<String> = i.columns.iter().map(|c| ident(c)).collect();
        sql.push(format!(
            "CREATE {}INDEX IF NOT EXISTS {} ON {} ({})",
            if i.unique { "UNIQUE " } else { "" },
            ident(&i.name),
            qualified(&target_name(&t.name)),
            cols.join(", ")
        ));
    }
    (sql, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::Index;

    fn col(name: &str, ty: ColumnType, declared: &str) -> Column {
        Column {
            name: name.into(),
            ty,
            declared_type: declared.into(),
            nullable: true,
            default: None,
        }
    }

    #[test]
    fn every_neutral_type_has_its_postgres_type() {
        let cases: Vec<(ColumnType, &str)> = vec![
            (ColumnType::Bool, "boolean"),
            (
                ColumnType::Int {
                    bits: 16,
                    unsigned: false,
                },
                "smallint",
            ),
            (
                ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                },
                "integer",
            ),
            (
                ColumnType::Int {
                    bits: 64,
                    unsigned: false,
                },
                "bigint",
            ),
            (
                ColumnType::Int {
                    bits: 32,
                    unsigned: true,
                },
                "bigint",
            ),
            (
                ColumnType::Int {
                    bits: 64,
                    unsigned: true,
                },
                "numeric(20)",
            ),
            (ColumnType::Float { bits: 32 }, "real"),
            (ColumnType::Float { bits: 64 }, "double precision"),
            (
                ColumnType::Decimal {
                    precision: Some(12),
                    scale: Some(2),
                },
                "numeric(12,2)",
            ),
            (
                ColumnType::Decimal {
                    precision: None,
                    scale: None,
                },
                "numeric",
            ),
            (
                ColumnType::Text { max_len: Some(40) },
                "character varying(40)",
            ),
            (ColumnType::Text { max_len: None }, "text"),
            (ColumnType::Bytes { max_len: None }, "bytea"),
            (
                ColumnType::Timestamp { zoned: true },
                "timestamp with time zone",
            ),
            (ColumnType::Interval, "interval"),
            (ColumnType::Uuid, "uuid"),
            (ColumnType::Json { binary: true }, "jsonb"),
            (
                ColumnType::Array(Box::new(ColumnType::Int {
                    bits: 32,
                    unsigned: false,
                })),
                "integer[]",
            ),
        ];
        let t = TableName::bare("t");
        for (ty, want) in cases {
            assert_eq!(
                pg_type(&t, &col("c", ty.clone(), "x")).unwrap(),
                want,
                "{ty:?}"
            );
        }
    }

    #[test]
    fn a_lossy_mapping_names_table_column_and_both_types() {
        let e = pg_type(
            &TableName::bare("Order Items"),
            &col(
                "Price",
                ColumnType::Other {
                    name: "NUMERIC".into(),
                },
                "NUMERIC",
            ),
        )
        .unwrap_err();
        let text = e.to_string();
        for part in ["Order Items", "Price", "NUMERIC", "text"] {
            assert!(text.contains(part), "{part} missing: {text}");
        }
    }

    #[test]
    fn tables_keep_their_identifiers_and_portable_defaults() {
        let mut id = col(
            "Id",
            ColumnType::Int {
                bits: 64,
                unsigned: false,
            },
            "INTEGER",
        );
        id.nullable = false;
        let mut note = col("CamelCol", ColumnType::Text { max_len: None }, "TEXT");
        note.default = Some("('it''s')".into());
        let mut at = col("at", ColumnType::Text { max_len: None }, "TEXT");
        at.default = Some("CURRENT_TIMESTAMP".into());
        let mut flag = col("flag", ColumnType::Bool, "BOOLEAN");
        flag.default = Some("0".into());
        let t = TableSchema {
            name: TableName::bare("Order Items"),
            columns: vec![id, note, at, flag],
            primary_key: vec![0],
            indexes: vec![
                Index {
                    name: "by note".into(),
                    columns: vec!["CamelCol".into()],
                    unique: false,
                    definition: Some("CREATE INDEX …".into()),
                },
                Index {
                    name: "expr".into(),
                    columns: vec![],
                    unique: false,
                    definition: None,
                },
            ],
        };
        let (sql, dropped) = create_table_sql(&t).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE \"public\".\"Order Items\" (\"Id\" bigint NOT NULL, \"CamelCol\" text DEFAULT 'it''s', \"at\" text, \"flag\" boolean DEFAULT false)"
        );
        assert_eq!(dropped, ["at"]);
        assert_eq!(
            primary_key_sql(&t).unwrap(),
            "ALTER TABLE \"public\".\"Order Items\" ADD PRIMARY KEY (\"Id\")"
        );
        let (idx, skipped) = index_sql(&t);
        assert_eq!(
            idx,
            ["CREATE INDEX IF NOT EXISTS \"by note\" ON \"public\".\"Order Items\" (\"CamelCol\")"]
        );
        assert_eq!(skipped, ["expr"]);
    }

    #[test]
    fn values_fit_only_columns_that_read_them_back_unchanged() {
        let int = ColumnType::Int {
            bits: 64,
            unsigned: false,
        };
        assert!(fits(&int, &Value::Int(1)));
        assert!(fits(&int, &Value::Null));
        assert!(!fits(&int, &Value::Text(" 1".into())));
        assert!(!fits(&ColumnType::Float { bits: 32 }, &Value::Float64(0.1)));
        assert!(fits(
            &ColumnType::Int {
                bits: 64,
                unsigned: true
            },
            &Value::UInt(u64::MAX)
        ));
    }
}
