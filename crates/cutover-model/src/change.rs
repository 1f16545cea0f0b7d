//! Change events, as change capture delivers them.

use crate::{Column, Key, Position, Row, TableName};

/// One row-level change.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Insert {
        table: TableName,
        row: Row,
    },
    /// `old_key` identifies the row before the change (the key may itself change). `before` is
    /// the whole old row where the source provides it. `unchanged` lists columns the source did
    /// not send because they did not change (PostgreSQL's unchanged TOAST values); their slots
    /// in `row` hold `Value::Null` and must be left as they are on the target.
    Update {
        table: TableName,
        old_key: Key,
        before: Option<Row>,
        row: Row,
        unchanged: Vec<usize>,
    },
    Delete {
        table: TableName,
        old_key: Key,
        before: Option<Row>,
    },
    Truncate {
        tables: Vec<TableName>,
    },
    /// From this point of the stream on, rows of `table` have these columns, in this order
    /// (the source's table was altered, or the stream describes it again). Sources emit it
    /// before the first row of a table in a new shape; rows after it follow it.
    Schema {
        table: TableName,
        columns: Vec<Column>,
        /// The names of the table's columns on the source now, where the engine can tell: a
        /// column missing from `columns` and from these was dropped; one missing from `columns`
        /// but still here only comes later in the stream.
        current: Option<Vec<String>>,
    },
}

impl Change {
    /// The table a row change touches (`None` for truncate, which may touch several).
    pub fn table(&self) -> Option<&TableName> {
        match self {
            Change::Insert { table, .. }
            | Change::Update { table, .. }
            | Change::Delete { table, .. }
            | Change::Schema { table, .. } => Some(table),
            Change::Truncate { .. } => None,
        }
    }
}

/// A committed source transaction: its changes in order, and the position just past its
/// commit. A sink that has applied it records `position` as its checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Transaction {
    pub position: Position,
    /// The source engine's tag for the transaction, where it has one (PostgreSQL: its xid):
    /// what a chunk's read view (`ReadView` in `cutover-connector`) decides visibility by.
    pub tag: Option<u64>,
    /// When the source committed it, where the source says (PostgreSQL): for lag in seconds.
    pub committed_at: Option<std::time::SystemTime>,
    pub changes: Vec<Change>,
}
