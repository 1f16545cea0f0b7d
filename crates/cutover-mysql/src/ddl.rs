//! The neutral schema as MySQL/MariaDB DDL: the target's type map (neutral → MySQL), one place.
//!
//! | neutral type | MySQL/MariaDB column |
//! |---|---|
//! | `Bool` | `tinyint(1)` |
//! | `Int { bits: 8/16/24/32/64, unsigned }` | `tinyint`/`smallint`/`mediumint`/`int`/`bigint` [`unsigned`] |
//! | `Float { 32 }`, `Float { 64 }` | `float`, `double` (NaN and ±Infinity refused per value) |
//! | `Decimal { p, s }` with p ≤ 65, s ≤ 30 | `decimal(p,s)` |
//! | `Decimal` unconstrained (PostgreSQL `numeric`) | `decimal(65,30)`; a value with more than 35 integer or 30 fractional digits, NaN or ±Infinity is refused per value |
//! | `Text { n }` | `varchar(n)` up to 1024, else `longtext`; key columns share InnoDB's 3072 key bytes (`varchar(768)` for a one-column text key, less beside other key columns; a longer value is refused) |
//! | `Bytes { n }` | `varbinary(n)` up to 1024, else `longblob`; key columns as text keys (`varbinary(3072)` alone) |
//! | `Date` | `date` (years 1–9999; BC and ±infinity refused per value) |
//! | `Time { zoned: false }` | `time(6)` |
//! | `Timestamp { zoned: false }` | `datetime(6)` |
//! | `Timestamp { zoned: true }` | `timestamp(6)` (an instant, read in UTC; 1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC, others refused per value) |
//! | `Uuid` | `char(36)` ascii, lower-case text (MariaDB's own `uuid` type refuses UUIDs whose variant bits are not RFC 4122's, which PostgreSQL accepts) |
//! | `Json` | `json` |
//! | `Other` (PostgreSQL enums, MySQL `bit`, …) | `longtext` (its exact text); key columns as text keys |
//! | `Time { zoned: true }`, `Interval`, `Array` | refused: no MySQL type holds them exactly |
//!
//! Text columns are created with a binary, no-pad collation (`utf8mb4_nopad_bin` on MariaDB,
//! `utf8mb4_0900_bin` on MySQL 8), so that keys that differ only in case or in trailing spaces
//! stay different rows, as they are in PostgreSQL and SQLite. A MySQL source keeps its own
//! declared types (enum labels, charsets, display widths) when the target is MySQL too.

use cutover_connector::{ConnectorError, ErrorKind};
use cutover_model::{Column, ColumnType, TableSchema};

use crate::client::ident;

/// What the target server is, for the type map's choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flavor {
    pub mariadb: bool,
    pub version: (u16, u16, u16),
}

impl Flavor {
    /// The binary, no-pad collation of utf8mb4 on this server.
    pub fn binary_collation(&self) -> &'static str {
        if self.mariadb {
            "utf8mb4_nopad_bin"
        } else if self.version.0 >= 8 {
            "utf8mb4_0900_bin"
        } else {
            "utf8mb4_bin"
        }
    }
}

/// The largest `varchar` kept inline (longer ones become `longtext`).
const VARCHAR_MAX: u32 = 1024;
/// InnoDB's limit on a key's bytes (all its columns together).
const KEY_BYTES: u32 = 3072;

/// Bytes each variable-length key column of `t` may take: InnoDB's 3072 bytes shared by them,
/// after at most 32 for each fixed-size key column.
fn key_share(t: &TableSchema) -> u32 {
    let variable = t
        .key_columns()
        .filter(|c| {
            matches!(
                c.ty,
                ColumnType::Text { .. } | ColumnType::Bytes { .. } | ColumnType::Other { .. }
            )
        })
        .count() as u32;
    let fixed = t.primary_key.len() as u32 - variable;
    (KEY_BYTES - 32 * fixed.min(64)) / variable.max(1)
}

fn refused(t: &TableSchema, c: &Column, target: &str, why: &str) -> ConnectorError {
    ConnectorError::new(
        ErrorKind::LossyConversion,
        format!(
            "table {} column {}: the source's type {} has no exact MySQL type ({target}: {why}); \
             leave the table out (--exclude {}) or change the column's type on the source",
            t.name, c.name, c.declared_type, t.name
        ),
    )
}

/// The MySQL column type for `c` of table `t` (`key`: `c` is part of the primary key).
pub fn column_type(
    t: &TableSchema,
    c: &Column,
    key: bool,
    flavor: Flavor,
) -> Result<String, ConnectorError> {
    let share = key_share(t);
    let key_chars = share / 4;
    let text = |n: Option<u32>| {
        let collate = flavor.binary_collation();
        match n {
            Some(n) if key && n <= key_chars => {
                format!("varchar({n}) CHARACTER SET utf8mb4 COLLATE {collate}")
            }
            _ if key => format!("varchar({key_chars}) CHARACTER SET utf8mb4 COLLATE {collate}"),
            Some(n) if n <= VARCHAR_MAX => {
                format!("varchar({n}) CHARACTER SET utf8mb4 COLLATE {collate}")
            }
            _ => format!("longtext CHARACTER SET utf8mb4 COLLATE {collate}"),
        }
    };
    Ok(match &c.ty {
        ColumnType::Bool => "tinyint(1)".to_owned(),
        ColumnType::Int { bits, unsigned } => {
            let base = match bits {
                0..=8 => "tinyint",
                9..=16 => "smallint",
                17..=24 => "mediumint",
                25..=32 => "int",
                _ => "bigint",
            };
            if *unsigned {
                format!("{base} unsigned")
            } else {
                base.to_owned()
            }
        }
        ColumnType::Float { bits } if *bits <= 32 => "float".to_owned(),
        ColumnType::Float { .. } => "double".to_owned(),
        ColumnType::Decimal {
            precision: Some(p),
            scale,
        } => {
            let s = scale.unwrap_or(0);
            if *p > 65 || s > 30 {
                return Err(refused(
                    t,
                    c,
                    "decimal",
                    "MySQL's decimal holds at most 65 digits, 30 after the point",
                ));
            }
            format!("decimal({p},{s})")
        }
        ColumnType::Decimal {
            precision: None, ..
        } => "decimal(65,30)".to_owned(),
        ColumnType::Text { max_len } => text(*max_len),
        ColumnType::Bytes { max_len } => match max_len {
            Some(n) if key && *n <= share => format!("varbinary({n})"),
            _ if key => format!("varbinary({share})"),
            Some(n) if *n <= VARCHAR_MAX => format!("varbinary({n})"),
            _ => "longblob".to_owned(),
        },
        ColumnType::Date => "date".to_owned(),
        ColumnType::Time { zoned: false } => "time(6)".to_owned(),
        ColumnType::Time { zoned: true } => {
            return Err(refused(t, c, "time", "MySQL times carry no zone offset"))
        }
        ColumnType::Timestamp { zoned: false } => "datetime(6)".to_owned(),
        ColumnType::Timestamp { zoned: true } => "timestamp(6)".to_owned(),
        ColumnType::Interval => {
            return Err(refused(t, c, "none", "MySQL has no interval type"));
        }
        ColumnType::Uuid => "char(36) CHARACTER SET ascii COLLATE ascii_bin".to_owned(),
        ColumnType::Json { .. } => "json".to_owned(),
        ColumnType::Array(_) => {
            return Err(refused(t, c, "none", "MySQL has no array type"));
        }
        ColumnType::Other { .. } => text(None),
    })
}

/// `CREATE TABLE IF NOT EXISTS` for `t`: columns, NOT NULL, the primary key; defaults only
/// from a MySQL source (`native`: the source is MySQL too, whose declared types and defaults
/// are kept as they are).
pub fn create_table(
    t: &TableSchema,
    flavor: Flavor,
    native: bool,
) -> Result<String, ConnectorError> {
    let mut parts = Vec::with_capacity(t.columns.len() + 1);
    for (i, c) in t.columns.iter().enumerate() {
        let key = t.primary_key.contains(&i);
        let ty = if native {
            c.declared_type.clone()
        } else {
            column_type(t, c, key, flavor)?
        };
        let mut s = format!("{} {ty}", ident(&c.name));
        s.push_str(if c.nullable { " NULL" } else { " NOT NULL" });
        match &c.default {
            Some(d) if native => s.push_str(&format!(" DEFAULT {d}")),
            Some(_) => {
                tracing::warn!(table = %t.name, column = %c.name,
                    "the source's default is another engine's SQL: the target's column has no default");
            }
            None => {}
        }
        parts.push(s);
    }
    if t.has_primary_key() {
        let keys: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
        parts.push(format!("PRIMARY KEY ({})", keys.join(", ")));
    }
    Ok(format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
        ident(&t.name.name),
        parts.join(", ")
    ))
}

/// The secondary indexes of `t` as `CREATE INDEX` statements with their names.
pub fn indexes(t: &TableSchema) -> Vec<(String, String)> {
    t.indexes
        .iter()
        .map(|index| {
            let cols: Vec<String> = index.columns.iter().map(|c| ident(c)).collect();
            (
                index.name.clone(),
                format!(
                    "CREATE {}INDEX {} ON {} ({})",
                    if index.unique { "UNIQUE " } else { "" },
                    ident(&index.name),
                    ident(&t.name.name),
                    cols.join(", ")
                ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::TableName;

    fn col(name: &str, ty: ColumnType, declared: &str) -> Column {
        Column {
            name: name.into(),
            ty,
            declared_type: declared.into(),
            nullable: false,
            default: None,
        }
    }

    const MARIADB: Flavor = Flavor {
        mariadb: true,
        version: (10, 11, 0),
    };

    #[test]
    fn the_type_map_keeps_keys_indexable_and_text_binary() {
        let t = TableSchema {
            name: TableName::new(Some("public"), "Notes"),
            columns: vec![
                col("id", ColumnType::Text { max_len: None }, "text"),
                col(
                    "n",
                    ColumnType::Decimal {
                        precision: None,
                        scale: None,
                    },
                    "numeric",
                ),
                col("at", ColumnType::Timestamp { zoned: true }, "timestamptz"),
                col("u", ColumnType::Uuid, "uuid"),
            ],
            primary_key: vec![0],
            indexes: vec![],
        };
        let sql = create_table(&t, MARIADB, false).unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE IF NOT EXISTS `Notes` (`id` varchar(768) CHARACTER SET utf8mb4 COLLATE \
             utf8mb4_nopad_bin NOT NULL, `n` decimal(65,30) NOT NULL, `at` timestamp(6) NOT NULL, \
             `u` char(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"
        );
        let mysql = Flavor {
            mariadb: false,
            version: (8, 0, 36),
        };
        assert!(column_type(&t, &t.columns[3], false, mysql)
            .unwrap()
            .starts_with("char(36)"));
        let composite = TableSchema {
            primary_key: vec![0, 3],
            columns: vec![
                col("tag", ColumnType::Text { max_len: None }, "text"),
                t.columns[1].clone(),
                t.columns[2].clone(),
                col(
                    "doc",
                    ColumnType::Int {
                        bits: 64,
                        unsigned: false,
                    },
                    "bigint",
                ),
            ],
            ..t.clone()
        };
        assert!(create_table(&composite, MARIADB, false)
            .unwrap()
            .starts_with("CREATE TABLE IF NOT EXISTS `Notes` (`tag` varchar(760) "));
        let bad = col("span", ColumnType::Interval, "interval");
        let e = column_type(&t, &bad, false, MARIADB)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("public.Notes column span") && e.contains("interval"),
            "{e}"
        );
    }
}
