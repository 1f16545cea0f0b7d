//! Table schemas: what a source describes and a sink creates.

use std::fmt;

/// A table's name, with its schema (namespace) where the engine has one. Names keep their exact
/// case; engines quote them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName {
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    pub fn new(schema: Option<&str>, name: &str) -> TableName {
        TableName {
            schema: schema.map(str::to_owned),
            name: name.to_owned(),
        }
    }

    /// A name without a schema (SQLite's `main`).
    pub fn bare(name: &str) -> TableName {
        TableName::new(None, name)
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// A column's type, engine-neutral. The engine's own spelling is kept in
/// [`Column::declared_type`], so a same-engine copy recreates the column exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Bool,
    Int {
        bits: u8,
        unsigned: bool,
    },
    Float {
        bits: u8,
    },
    Decimal {
        precision: Option<u32>,
        scale: Option<u32>,
    },
    Text {
        max_len: Option<u32>,
    },
    Bytes {
        max_len: Option<u32>,
    },
    Date,
    Time {
        zoned: bool,
    },
    Timestamp {
        zoned: bool,
    },
    Interval,
    Uuid,
    Json {
        binary: bool,
    },
    Array(Box<ColumnType>),
    /// SQLite's untyped column (any storage class) or an engine type cutover does not model;
    /// values travel as they are or as [`crate::Value::Raw`].
    Other {
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    /// The type as the source engine spells it (`varchar(40)`, `INTEGER`, `public.mood`).
    pub declared_type: String,
    pub nullable: bool,
    /// The default expression in the source engine's SQL, if any.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    pub name: String,
    pub columns: Vec<String>,
    pub unique: bool,
    /// The engine's full definition where it has one (`CREATE INDEX …`), for same-engine copies
    /// of expression and partial indexes.
    pub definition: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSchema {
    pub name: TableName,
    pub columns: Vec<Column>,
    /// Positions in `columns` of the primary key's columns, in key order. Empty: no primary key.
    pub primary_key: Vec<usize>,
    /// Secondary indexes (not the primary key's).
    pub indexes: Vec<Index>,
}

impl TableSchema {
    pub fn has_primary_key(&self) -> bool {
        !self.primary_key.is_empty()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn key_columns(&self) -> impl Iterator<Item = &Column> + '_ {
        self.primary_key.iter().filter_map(|&i| self.columns.get(i))
    }

    /// The primary-key values of a full row, in key order.
    pub fn key_of(&self, row: &[crate::Value]) -> crate::Key {
        self.primary_key
            .iter()
            .filter_map(|&i| row.get(i).cloned())
            .collect()
    }
}
