//! SQL text for key ranges and row access, shared by source, sink and reader.

use cutover_model::{TableSchema, Value};

use crate::error::ident;

/// `"a", "b", "c"`: every column, in table order.
pub(crate) fn column_list(t: &TableSchema) -> String {
    t.columns
        .iter()
        .map(|c| ident(&c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The key columns as a comparable expression: `"id"` or `("a", "b")`.
pub(crate) fn key_tuple(t: &TableSchema) -> String {
    let cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
    if cols.len() == 1 {
        cols[0].clone()
    } else {
        format!("({})", cols.join(", "))
    }
}

/// `?, ?` placeholders matching the key tuple's shape: `?` or `(?, ?)`.
pub(crate) fn key_placeholders(t: &TableSchema) -> String {
    let n = t.primary_key.len();
    if n == 1 {
        "?".to_owned()
    } else {
        format!("({})", vec!["?"; n].join(", "))
    }
}

/// `"a" IS ? AND "b" IS ?`: matches one row by key.
pub(crate) fn key_match(t: &TableSchema) -> String {
    t.key_columns()
        .map(|c| format!("{} = ?", ident(&c.name)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// `ORDER BY "a", "b"`.
pub(crate) fn order_by_key(t: &TableSchema) -> String {
    let cols: Vec<String> = t.key_columns().map(|c| ident(&c.name)).collect();
    format!("ORDER BY {}", cols.join(", "))
}

/// ` WHERE key >= ? AND key < ?` (empty for an unbounded range) and its parameters in order.
pub(crate) fn range_where<'a>(
    t: &TableSchema,
    lower: Option<(&'a [Value], bool)>,
    upper: Option<&'a [Value]>,
) -> (String, Vec<&'a Value>) {
    let mut params = Vec::new();
    let mut conds = Vec::new();
    if let Some((key, inclusive)) = lower {
        let op = if inclusive { ">=" } else { ">" };
        conds.push(format!("{} {op} {}", key_tuple(t), key_placeholders(t)));
        params.extend(key.iter());
    }
    if let Some(key) = upper {
        conds.push(format!("{} < {}", key_tuple(t), key_placeholders(t)));
        params.extend(key.iter());
    }
    if conds.is_empty() {
        (String::new(), params)
    } else {
        (format!(" WHERE {}", conds.join(" AND ")), params)
    }
}

/// A SELECT of every column with keys in a range, ordered by key. Returns the SQL and the
/// parameters in order.
pub(crate) fn select_range<'a>(
    t: &TableSchema,
    lower: Option<(&'a [Value], bool)>,
    upper: Option<&'a [Value]>,
    limit: Option<usize>,
) -> (String, Vec<&'a Value>) {
    let (filter, params) = range_where(t, lower, upper);
    let mut sql = format!(
        "SELECT {} FROM {}{filter}",
        column_list(t),
        ident(&t.name.name)
    );
    if t.has_primary_key() {
        sql.push(' ');
        sql.push_str(&order_by_key(t));
    }
    if let Some(n) = limit {
        sql.push_str(&format!(" LIMIT {n}"));
    }
    (sql, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cutover_model::{Column, ColumnType, TableName};

    fn table(pk: Vec<usize>) -> TableSchema {
        let col = |n: &str| Column {
            name: n.to_owned(),
            ty: ColumnType::Int {
                bits: 64,
                unsigned: false,
            },
            declared_type: "INTEGER".to_owned(),
            nullable: false,
            default: None,
        };
        TableSchema {
            name: TableName::bare("order"),
            columns: vec![col("a"), col("b\"q"), col("c")],
            primary_key: pk,
            indexes: vec![],
        }
    }

    #[test]
    fn range_selects_quote_names_and_use_row_values() {
        let t = table(vec![0, 1]);
        let k = [Value::Int(1), Value::Int(2)];
        let (sql, params) = select_range(&t, Some((&k, true)), Some(&k), Some(10));
        assert_eq!(
            sql,
            "SELECT \"a\", \"b\"\"q\", \"c\" FROM \"order\" WHERE (\"a\", \"b\"\"q\") >= (?, ?) \
             AND (\"a\", \"b\"\"q\") < (?, ?) ORDER BY \"a\", \"b\"\"q\" LIMIT 10"
        );
        assert_eq!(params.len(), 4);
        let t = table(vec![2]);
        let (sql, _) = select_range(&t, Some((&k[..1], false)), None, None);
        assert_eq!(
            sql,
            "SELECT \"a\", \"b\"\"q\", \"c\" FROM \"order\" WHERE \"c\" > ? ORDER BY \"c\""
        );
    }
}
