//! Column changes of the source during sync: what the target needs so that rows of a new shape
//! can be written, decided without I/O.
//!
//! The applier compares each new shape of a table (a [`Change::Schema`] of the stream, or the
//! columns a chunk was read with) with the target's columns. Added columns and type widenings
//! are carried to the target; a column missing from a stream shape is dropped on the target
//! only if the source no longer has it (otherwise its `ADD` merely comes later in the stream,
//! or the target got it early); a type change the target cannot hold without loss always
//! stops. With [`DdlPolicy::Stop`] every needed change stops sync instead, naming it.
//!
//! [`Change::Schema`]: cutover_model::Change::Schema

use cutover_connector::{ApplyOp, ColumnChange, ConnectorError, ErrorKind};
use cutover_model::{Column, ColumnType, Position, TableName, TableSchema};

/// What sync does when the source's columns change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DdlPolicy {
    /// Carry added and dropped columns and widened types to the target, at the position in
    /// the stream where they happened.
    #[default]
    Auto,
    /// Stop before the change, naming it and the statement to run on the target.
    Stop,
}

/// Why a new shape cannot be written as it is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Refusal {
    /// The policy says stop; these changes would be needed.
    Needed(Vec<ColumnChange>),
    /// No policy can carry this: a type the target's column cannot hold, or a key column gone.
    Impossible(String),
}

/// The changes that make `target` able to take rows with the columns `incoming` of `table`.
/// `gone(name)` says whether a column the target has is no longer on the source at all (only
/// known for stream shapes; chunk shapes pass `|_| false`). `key` names the primary key.
pub(crate) fn reconcile(
    table: &TableName,
    target: &[Column],
    incoming: &[Column],
    key: &[String],
    gone: impl Fn(&str) -> bool,
) -> Result<Vec<ColumnChange>, Refusal> {
    let mut out = Vec::new();
    for c in incoming {
        match target.iter().find(|t| t.name == c.name) {
            None => out.push(ColumnChange::Add(c.clone())),
            Some(t) if holds(t, c) => {}
            Some(t) if holds(c, t) => out.push(ColumnChange::Retype(c.clone())),
            Some(t) => {
                return Err(Refusal::Impossible(format!(
                    "column {} of {table} changed its type on the source from {} to {}, which the target's column cannot hold without loss",
                    c.name, t.declared_type, c.declared_type
                )))
            }
        }
    }
    for t in target {
        if !incoming.iter().any(|c| c.name == t.name) && gone(&t.name) {
            if key.contains(&t.name) {
                return Err(Refusal::Impossible(format!(
                    "column {} of {table}, part of its primary key, was dropped on the source",
                    t.name
                )));
            }
            out.push(ColumnChange::Drop(t.name.clone()));
        }
    }
    Ok(out)
}

/// `reconcile`, then the policy: the changes to carry, or why not.
pub(crate) fn decide(
    policy: DdlPolicy,
    table: &TableName,
    target: &[Column],
    incoming: &[Column],
    key: &[String],
    gone: impl Fn(&str) -> bool,
) -> Result<Vec<ColumnChange>, Refusal> {
    let changes = reconcile(table, target, incoming, key, gone)?;
    if policy == DdlPolicy::Stop && !changes.is_empty() {
        return Err(Refusal::Needed(changes));
    }
    Ok(changes)
}

/// Brings `target` (a table's columns on the target) to where it can take rows with the
/// columns `incoming`, per `policy`: the changes are pushed to `ops` (applied in the batch's
/// transaction) and made to `target`; a change sync will not carry is the error that stops it
/// (`at`: where in the stream).
#[allow(clippy::too_many_arguments)]
pub(crate) fn carry(
    policy: DdlPolicy,
    table: &TableName,
    target: &mut Vec<Column>,
    incoming: &[Column],
    key: &[String],
    gone: impl Fn(&str) -> bool,
    at: Option<Position>,
    ops: &mut Vec<ApplyOp>,
) -> Result<(), ConnectorError> {
    let changes = decide(policy, table, target, incoming, key, gone)
        .map_err(|r| refusal_error(table, r, at))?;
    for change in changes {
        tracing::warn!(table = %table, "{}: carried to the target", describe(table, &change).0);
        apply(target, &change);
        ops.push(ApplyOp::Alter {
            table: table.clone(),
            change,
        });
    }
    Ok(())
}

/// A table of these columns, with the primary key (named by `key`) among them.
pub(crate) fn shape(table: &TableName, columns: Vec<Column>, key: &[String]) -> TableSchema {
    TableSchema {
        name: table.clone(),
        primary_key: key
            .iter()
            .filter_map(|k| columns.iter().position(|c| &c.name == k))
            .collect(),
        columns,
        indexes: Vec::new(),
    }
}

/// The error that stops sync at a change it will not carry, with what to do.
pub(crate) fn refusal_error(
    table: &TableName,
    refusal: Refusal,
    at: Option<Position>,
) -> ConnectorError {
    let at = at.map(|p| format!(" (at {p})")).unwrap_or_default();
    const READ_ONLY: &str = "in a session with SET default_transaction_read_only = off: cutover keeps the target read-only for others until the switch";
    let message = match refusal {
        Refusal::Needed(changes) => {
            let (what, sql): (Vec<String>, Vec<String>) =
                changes.iter().map(|c| describe(table, c)).unzip();
            format!(
                "{}{at}; nothing from that change on was applied. Make the same change on the target ({}; {READ_ONLY}), \
                 then run the same command again, or run sync with --ddl auto to carry such changes by itself",
                what.join(", "),
                sql.join("; ")
            )
        }
        Refusal::Impossible(why) => format!(
            "{why}{at}; nothing from that change on was applied. Change the target's table by hand ({READ_ONLY}), then run the same command again"
        ),
    };
    ConnectorError::new(ErrorKind::SchemaMismatch, message)
}

/// The target's columns after `change`.
pub(crate) fn apply(columns: &mut Vec<Column>, change: &ColumnChange) {
    match change {
        ColumnChange::Add(c) => {
            if !columns.iter().any(|x| x.name == c.name) {
                columns.push(c.clone());
            }
        }
        ColumnChange::Drop(name) => columns.retain(|c| &c.name != name),
        ColumnChange::Retype(c) => {
            if let Some(x) = columns.iter_mut().find(|x| x.name == c.name) {
                x.ty = c.ty.clone();
                x.declared_type = c.declared_type.clone();
            }
        }
    }
}

/// The change as a sentence, and the statement that makes it (for messages).
pub(crate) fn describe(table: &TableName, change: &ColumnChange) -> (String, String) {
    match change {
        ColumnChange::Add(c) => (
            format!(
                "column {} ({}) was added to {table} on the source",
                c.name, c.declared_type
            ),
            format!(
                "ALTER TABLE {table} ADD COLUMN {} {}{}",
                c.name,
                c.declared_type,
                c.default
                    .as_deref()
                    .map(|d| format!(" DEFAULT {d}"))
                    .unwrap_or_default()
            ),
        ),
        ColumnChange::Drop(name) => (
            format!("column {name} was dropped from {table} on the source"),
            format!("ALTER TABLE {table} DROP COLUMN {name}"),
        ),
        ColumnChange::Retype(c) => (
            format!(
                "column {} of {table} was widened to {} on the source",
                c.name, c.declared_type
            ),
            format!(
                "ALTER TABLE {table} ALTER COLUMN {} TYPE {}",
                c.name, c.declared_type
            ),
        ),
    }
}

/// Whether a column of type `wide` holds every value of a column of type `narrow` exactly.
fn holds(wide: &Column, narrow: &Column) -> bool {
    if wide
        .declared_type
        .eq_ignore_ascii_case(&narrow.declared_type)
    {
        return true;
    }
    widens(&narrow.ty, &wide.ty)
}

/// Whether every value of `from` is a value of `to`, unchanged.
fn widens(from: &ColumnType, to: &ColumnType) -> bool {
    use ColumnType as T;
    /// Decimal digits an integer of `bits` needs.
    fn digits(bits: u8) -> u32 {
        match bits {
            0..=8 => 3,
            9..=16 => 5,
            17..=32 => 10,
            _ => 20,
        }
    }
    let len_ok = |a: &Option<u32>, b: &Option<u32>| match (a, b) {
        (_, None) => true,
        (Some(a), Some(b)) => b >= a,
        (None, Some(_)) => false,
    };
    match (from, to) {
        (T::Other { name: a }, T::Other { name: b }) => a.eq_ignore_ascii_case(b),
        (T::Other { .. }, _) | (_, T::Other { .. }) => false,
        (
            T::Int {
                bits: a,
                unsigned: ua,
            },
            T::Int {
                bits: b,
                unsigned: ub,
            },
        ) => (ua == ub && b >= a) || (*ua && !ub && b > a),
        (T::Int { bits, .. }, T::Decimal { precision, scale }) => match precision {
            None => true,
            Some(p) => p.saturating_sub(scale.unwrap_or(0)) >= digits(*bits),
        },
        (T::Float { bits: a }, T::Float { bits: b }) => b >= a,
        (
            T::Decimal {
                precision: p1,
                scale: s1,
            },
            T::Decimal {
                precision: p2,
                scale: s2,
            },
        ) => match (p1, p2) {
            (_, None) => true,
            (None, Some(_)) => false,
            (Some(p1), Some(p2)) => {
                let (s1, s2) = (s1.unwrap_or(0), s2.unwrap_or(0));
                s2 >= s1 && p2.saturating_sub(s2) >= p1.saturating_sub(s1)
            }
        },
        (T::Text { max_len: a }, T::Text { max_len: b }) => len_ok(a, b),
        (T::Bytes { max_len: a }, T::Bytes { max_len: b }) => len_ok(a, b),
        (T::Array(a), T::Array(b)) => a == b,
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn col(name: &str, declared: &str, ty: ColumnType) -> Column {
        Column {
            name: name.into(),
            ty,
            declared_type: declared.into(),
            nullable: true,
            default: None,
        }
    }
    fn int(bits: u8) -> ColumnType {
        ColumnType::Int {
            bits,
            unsigned: false,
        }
    }
    fn text(n: Option<u32>) -> ColumnType {
        ColumnType::Text { max_len: n }
    }

    #[test]
    fn shapes_reconcile_into_adds_drops_and_widenings_or_refusals() {
        let t = TableName::new(Some("public"), "students");
        let key = vec!["id".to_owned()];
        let id = col("id", "integer", int(32));
        let name = col("name", "character varying(20)", text(Some(20)));
        let target = vec![id.clone(), name.clone()];
        let none = |_: &str| false;
        // Same shape: nothing.
        assert_eq!(reconcile(&t, &target, &target, &key, none), Ok(vec![]));
        // Added.
        let nick = col("nickname", "text", text(None));
        let with_nick = vec![id.clone(), name.clone(), nick.clone()];
        assert_eq!(
            reconcile(&t, &target, &with_nick, &key, none),
            Ok(vec![ColumnChange::Add(nick.clone())])
        );
        // Missing from the stream but still on the source: added later, nothing to do.
        assert_eq!(reconcile(&t, &with_nick, &target, &key, none), Ok(vec![]));
        // Missing and gone from the source: dropped.
        assert_eq!(
            reconcile(&t, &with_nick, &target, &key, |n| n == "nickname"),
            Ok(vec![ColumnChange::Drop("nickname".into())])
        );
        // A key column gone: impossible.
        assert!(matches!(
            reconcile(&t, &target, std::slice::from_ref(&name), &key, |n| n == "id"),
            Err(Refusal::Impossible(m)) if m.contains("primary key")
        ));
        // Widened: int -> bigint, varchar(20) -> varchar(40) / text.
        let big_id = col("id", "bigint", int(64));
        let long_name = col("name", "character varying(40)", text(Some(40)));
        assert_eq!(
            reconcile(
                &t,
                &target,
                &[big_id.clone(), long_name.clone()],
                &key,
                none
            ),
            Ok(vec![
                ColumnChange::Retype(big_id.clone()),
                ColumnChange::Retype(long_name.clone())
            ])
        );
        // Narrower than the target (the target was widened first): written as it is.
        assert_eq!(
            reconcile(&t, &[big_id.clone(), long_name], &target, &key, none),
            Ok(vec![])
        );
        // Not a widening: refused whatever the policy.
        let text_id = col("id", "text", text(None));
        let r = reconcile(&t, &target, &[text_id, name.clone()], &key, none);
        assert!(
            matches!(&r, Err(Refusal::Impossible(m)) if m.contains("from integer to text")),
            "{r:?}"
        );
        // The policy.
        assert_eq!(
            decide(DdlPolicy::Stop, &t, &target, &with_nick, &key, none),
            Err(Refusal::Needed(vec![ColumnChange::Add(nick.clone())]))
        );
        assert_eq!(
            decide(DdlPolicy::Stop, &t, &target, &target, &key, none),
            Ok(vec![])
        );
        let mut cols = target.clone();
        apply(&mut cols, &ColumnChange::Add(nick.clone()));
        apply(&mut cols, &ColumnChange::Retype(big_id.clone()));
        apply(&mut cols, &ColumnChange::Drop("name".into()));
        assert_eq!(cols, vec![big_id, nick]);
    }

    #[test]
    fn widenings_are_exact_only() {
        let dec = |p: Option<u32>, s: Option<u32>| ColumnType::Decimal {
            precision: p,
            scale: s,
        };
        assert!(widens(&int(16), &int(64)));
        assert!(!widens(&int(64), &int(32)));
        assert!(widens(&int(32), &dec(None, None)));
        assert!(widens(&int(32), &dec(Some(12), Some(2))));
        assert!(!widens(&int(64), &dec(Some(12), Some(2))));
        assert!(widens(&dec(Some(10), Some(2)), &dec(Some(12), Some(4))));
        assert!(!widens(&dec(Some(10), Some(2)), &dec(Some(12), Some(6))));
        assert!(widens(
            &ColumnType::Float { bits: 32 },
            &ColumnType::Float { bits: 64 }
        ));
        assert!(widens(&text(Some(5)), &text(None)));
        assert!(!widens(&text(None), &text(Some(5))));
        assert!(!widens(
            &ColumnType::Timestamp { zoned: false },
            &ColumnType::Timestamp { zoned: true }
        ));
        assert!(!widens(
            &ColumnType::Json { binary: false },
            &ColumnType::Json { binary: true }
        ));
    }
}
