//! The source's schema from the catalog, and the DDL that recreates it on the target, in
//! `pg_restore`'s order: pre-data (schemas, extensions, types, sequences, tables with their
//! columns, defaults and NOT NULL), then the data, then post-data (primary keys, indexes;
//! unique, check and exclusion constraints; foreign keys; sequence values). Like pg_restore,
//! primary keys are built after the data: one sort instead of a btree insert per row. Copy's
//! exactly-once comes from each chunk's done mark, and building the key still proves uniqueness.
//!
//! Catalog reads run with `search_path = pg_catalog`, so every name that `format_type`,
//! `pg_get_expr` and `pg_get_*def` print is schema-qualified and the DDL means the same thing on
//! the target whatever its search path.

use std::collections::{BTreeSet, HashMap};

use cutover_connector::{ConnectorError, ErrorKind};
use cutover_model::{Column, ColumnType, Index, TableName, TableSchema};

use crate::blocking::Client;
use crate::error::map;

/// Schemas never migrated.
const SYSTEM_SCHEMAS: &str = "('pg_catalog', 'information_schema', '_cutover')";

/// `"a""b"`.
pub(crate) fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'it''s'`.
pub(crate) fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

pub(crate) fn qualified(t: &TableName) -> String {
    match &t.schema {
        Some(s) => format!("{}.{}", ident(s), ident(&t.name)),
        None => ident(&t.name),
    }
}

/// A column, with what PostgreSQL needs beyond the model.
#[derive(Debug, Clone)]
pub struct PgColumn {
    pub name: String,
    /// `format_type` output, schema-qualified where not built in.
    pub type_sql: String,
    /// The type's OID on the source (what change capture's relation messages name).
    pub type_oid: u32,
    pub not_null: bool,
    pub default: Option<String>,
    /// `a` (ALWAYS) or `d` (BY DEFAULT) for identity columns.
    pub identity: Option<char>,
    /// The expression of a `GENERATED ALWAYS AS (…) STORED` column (never copied: computed).
    pub generated: Option<String>,
    pub collation: Option<String>,
    /// The binary COPY form of this type embeds a type OID that differs between clusters
    /// (arrays and composites of user-defined types): the table is copied in text format.
    pub needs_text_copy: bool,
}

/// A table (or partition) of the source.
#[derive(Debug, Clone)]
pub struct PgTable {
    pub name: TableName,
    /// `r` table, `p` partitioned table (holds no rows itself).
    pub kind: char,
    pub unlogged: bool,
    pub columns: Vec<PgColumn>,
    pub primary_key: Option<(String, Vec<String>)>,
    /// The primary key is inherited from a partitioned parent (not declared here).
    pub primary_key_inherited: bool,
    pub partition_of: Option<(TableName, String)>,
    pub partition_key: Option<String>,
    pub rows_estimate: u64,
    pub bytes: u64,
    pub replica_identity: char,
    /// `pg_stats.correlation` of the first key column: near ±1 when key order follows the heap.
    pub key_correlation: Option<f64>,
}

impl PgTable {
    /// Columns whose values are copied (generated columns are computed by the target).
    pub fn copied_columns(&self) -> impl Iterator<Item = &PgColumn> + '_ {
        self.columns.iter().filter(|c| c.generated.is_none())
    }

    /// Holds rows (partitioned parents do not; their partitions do).
    pub fn has_data(&self) -> bool {
        self.kind == 'r'
    }

    pub fn binary_copy(&self) -> bool {
        !self.copied_columns().any(|c| c.needs_text_copy)
    }

    /// The engine-neutral schema.
    pub fn model(&self) -> TableSchema {
        let columns: Vec<Column> = self.columns.iter().map(PgColumn::model).collect();
        let primary_key = self
            .primary_key
            .as_ref()
            .map(|(_, cols)| {
                cols.iter()
                    .filter_map(|k| columns.iter().position(|c| &c.name == k))
                    .collect()
            })
            .unwrap_or_default();
        TableSchema {
            name: self.name.clone(),
            columns,
            primary_key,
            indexes: Vec::<Index>::new(),
        }
    }
}

impl PgColumn {
    /// The engine-neutral column.
    pub(crate) fn model(&self) -> Column {
        Column {
            name: self.name.clone(),
            ty: column_type(&self.type_sql),
            declared_type: self.type_sql.clone(),
            nullable: !self.not_null,
            default: self.default.clone(),
        }
    }

    /// A plain column: nullable, no default.
    pub(crate) fn plain(name: &str, type_sql: &str, type_oid: u32) -> PgColumn {
        PgColumn {
            name: name.into(),
            type_sql: type_sql.into(),
            type_oid,
            not_null: false,
            default: None,
            identity: None,
            generated: None,
            collation: None,
            needs_text_copy: false,
        }
    }
}

impl PgTable {
    /// An ordinary table with these columns and primary key (for unit tests).
    #[cfg(test)]
    pub(crate) fn plain(name: TableName, columns: Vec<PgColumn>, key: &[&str]) -> PgTable {
        PgTable {
            name,
            kind: 'r',
            unlogged: false,
            columns,
            primary_key: Some(("t_pkey".into(), key.iter().map(|k| (*k).into()).collect())),
            primary_key_inherited: false,
            partition_of: None,
            partition_key: None,
            rows_estimate: 0,
            bytes: 0,
            replica_identity: 'd',
            key_correlation: None,
        }
    }
}

/// Maps a `format_type` spelling to the model's type.
pub(crate) fn column_type(t: &str) -> ColumnType {
    if let Some(elem) = t.strip_suffix("[]") {
        return ColumnType::Array(Box::new(column_type(elem)));
    }
    let base = t.split('(').next().unwrap_or(t).trim();
    // `(n)` or `(p,s)` right after the name: lengths and precisions.
    let modifiers: Vec<u32> = t
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('('))
        .and_then(|rest| rest.split_once(')'))
        .filter(|(_, after)| after.is_empty())
        .map(|(inside, _)| {
            inside
                .split(',')
                .filter_map(|n| n.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default();
    match base {
        "boolean" => ColumnType::Bool,
        "smallint" => ColumnType::Int {
            bits: 16,
            unsigned: false,
        },
        "integer" => ColumnType::Int {
            bits: 32,
            unsigned: false,
        },
        "bigint" => ColumnType::Int {
            bits: 64,
            unsigned: false,
        },
        "real" => ColumnType::Float { bits: 32 },
        "double precision" => ColumnType::Float { bits: 64 },
        "numeric" => ColumnType::Decimal {
            precision: modifiers.first().copied(),
            scale: modifiers.get(1).copied().or(modifiers.first().map(|_| 0)),
        },
        "character varying" | "character" => ColumnType::Text {
            max_len: modifiers.first().copied(),
        },
        "text" | "name" | "citext" => ColumnType::Text { max_len: None },
        "bytea" => ColumnType::Bytes { max_len: None },
        "date" => ColumnType::Date,
        "time without time zone" => ColumnType::Time { zoned: false },
        "time with time zone" => ColumnType::Time { zoned: true },
        "timestamp without time zone" => ColumnType::Timestamp { zoned: false },
        "timestamp with time zone" => ColumnType::Timestamp { zoned: true },
        "interval" => ColumnType::Interval,
        "uuid" => ColumnType::Uuid,
        "json" => ColumnType::Json { binary: false },
        "jsonb" => ColumnType::Json { binary: true },
        _ => ColumnType::Other { name: t.to_owned() },
    }
}

/// Which tables to take.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// `name` or `schema.name`; all when empty.
    pub tables: Vec<String>,
    pub exclude: Vec<String>,
    /// Leave foreign keys to tables outside the selection off the target (otherwise such a
    /// key refuses the migration before anything is copied: [`SourceSchema::check_foreign_keys`]).
    pub skip_foreign_keys: bool,
    /// Also carry the privileges granted on tables, views, sequences, functions and schemas
    /// (`--grants`; the roles must exist on the target, or the grants are named as not made).
    pub grants: bool,
}

impl Selection {
    fn matches(list: &[String], t: &TableName) -> bool {
        let schema = t.schema.as_deref().unwrap_or("public");
        list.iter().any(|n| match n.split_once('.') {
            Some((s, name)) => s == schema && name == t.name,
            None => n == &t.name,
        })
    }

    fn wants(&self, t: &TableName) -> bool {
        (self.tables.is_empty() || Self::matches(&self.tables, t))
            && !Self::matches(&self.exclude, t)
    }
}

/// The correlation between key order and heap order measured on about 200 sampled pages
/// (`TABLESAMPLE SYSTEM`): the planner's `pg_stats.correlation` when statistics are missing.
/// `None` when the sample holds too few rows to tell.
fn sampled_correlation(
    client: &mut Client,
    t: &PgTable,
    key: &[String],
) -> Result<Option<f64>, ConnectorError> {
    let pages = (t.bytes / 8192).max(1) as f64;
    let pct = (200.0 / pages * 100.0).clamp(0.01, 100.0);
    let order: Vec<String> = key.iter().map(|k| ident(k)).collect();
    let sql = format!(
        "SELECT corr(blk, rk)::float8, count(*) FROM (
           SELECT (ctid::text::point)[0] AS blk, row_number() OVER (ORDER BY {}) AS rk
             FROM ONLY {} TABLESAMPLE SYSTEM ({pct})) s",
        order.join(", "),
        qualified(&t.name)
    );
    let ctx = || format!("sampling the key order of {}", t.name);
    let r = client.query_one(&sql, &[]).map_err(|e| map(ctx(), e))?;
    let corr: Option<f64> = r.try_get(0).map_err(|e| map(ctx(), e))?;
    let n: i64 = r.try_get(1).map_err(|e| map(ctx(), e))?;
    Ok(corr.filter(|_| n >= 100))
}

/// A database object other than a table, as [`SourceSchema::objects`] carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// `view public.v`, `function public.f(integer)`, `trigger t on public.x`: for messages.
    pub name: String,
    /// The statement that creates it (search_path = pg_catalog, names qualified).
    pub sql: String,
    /// A trigger or rule: it acts on writes, so it must not act on the rows cutover writes:
    /// created after the copy, and disabled while the database follows another
    /// ([`Object::disable`]) until it becomes the primary ([`Object::enable`]).
    pub fires: bool,
    /// A trigger's or a table rule's `ALTER TABLE … DISABLE TRIGGER|RULE …`.
    pub disable: Option<String>,
    /// The statement that gives it the state it has on the source (`ENABLE`, `ENABLE REPLICA`
    /// or `ENABLE ALWAYS`); `None` where it is disabled there.
    pub enable: Option<String>,
}

/// A statement after the data that builds on one table: a primary key, an index, a unique,
/// check or exclusion constraint. On a partitioned table it builds on every partition too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableStep {
    pub table: TableName,
    pub sql: String,
}

/// What the source holds, and the statements that recreate it.
#[derive(Debug, Clone, Default)]
pub struct SourceSchema {
    pub tables: Vec<PgTable>,
    /// Statements before the data, in order.
    pub pre_data: Vec<String>,
    /// Primary keys: after the data for `copy`, before it for `sync` (upserts need them).
    pub primary_keys: Vec<TableStep>,
    /// Statements after the data that may run in parallel (indexes, unique, check and exclusion
    /// constraints).
    pub post_data: Vec<TableStep>,
    /// Foreign keys: after every index exists.
    pub foreign_keys: Vec<String>,
    /// Foreign keys of selected tables that reference a table left out of the selection:
    /// (table, constraint, referenced table). Never among `foreign_keys` (they could not be
    /// created on the target).
    pub dangling_foreign_keys: Vec<(TableName, String, String)>,
    /// Sequences whose values are set after the data: (qualified name, for messages).
    pub sequences: Vec<String>,
    /// Extensions the tables need: (name, schema).
    pub extensions: Vec<(String, String)>,
    /// What an application relies on besides its tables, in the order they are created after
    /// the data: schemas, extensions, functions and procedures, views, materialized views
    /// (with their data), then triggers and rules (see [`Object::fires`]). Each is one
    /// statement; one that fails for a dependency is tried again after the others.
    pub objects: Vec<Object>,
    /// Objects that could not be carried (named), for the report.
    pub not_copied: Vec<String>,
}

/// The columns of the relations `oids` now (generated ones too), each with its relation's oid,
/// in column order.
fn columns_of(client: &mut Client, oids: &[u32]) -> Result<Vec<(u32, PgColumn)>, ConnectorError> {
    let ctx = "reading the columns of the source's tables";
    // Types named as in `read`: qualified unless built in, whatever the session's search_path.
    let mut tx = client.transaction().map_err(|e| map(ctx, e))?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .map_err(|e| map(ctx, e))?;
    let rows = tx
        .query(
            "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    CASE WHEN a.attgenerated = '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
                    a.attidentity::text,
                    CASE WHEN a.attgenerated <> '' THEN pg_get_expr(ad.adbin, ad.adrelid) END,
                    CASE WHEN a.attcollation <> t.typcollation AND a.attcollation <> 0 THEN
                         (SELECT format('%I.%I', cn.nspname, co.collname) FROM pg_catalog.pg_collation co
                            JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace WHERE co.oid = a.attcollation) END,
                    (t.typcategory = 'A' AND t.typelem >= 16384) OR (t.typtype = 'c' AND t.oid >= 16384)
                      OR (t.typtype = 'd' AND EXISTS (SELECT 1 FROM pg_catalog.pg_type b WHERE b.oid = t.typbasetype
                          AND ((b.typcategory = 'A' AND b.typelem >= 16384) OR b.typtype = 'c'))),
                    a.atttypid
               FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
               LEFT JOIN pg_catalog.pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
              WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attrelid, a.attnum",
            &[&oids],
        )
        .map_err(|e| map(ctx, e))?;
    tx.commit().map_err(|e| map(ctx, e))?;
    rows.iter()
        .map(|r| {
            let get = |e| map(ctx, e);
            let identity: String = r.try_get(5).map_err(get)?;
            Ok((
                r.try_get(0).map_err(get)?,
                PgColumn {
                    name: r.try_get(1).map_err(get)?,
                    type_sql: r.try_get(2).map_err(get)?,
                    not_null: r.try_get(3).map_err(get)?,
                    default: r.try_get(4).map_err(get)?,
                    identity: identity.chars().next(),
                    generated: r.try_get(6).map_err(get)?,
                    collation: r.try_get(7).map_err(get)?,
                    needs_text_copy: r.try_get(8).map_err(get)?,
                    type_oid: r.try_get(9).map_err(get)?,
                },
            ))
        })
        .collect()
}

/// The columns relation `relid` has now (as change capture sees them: not generated ones).
pub(crate) fn live_columns(
    client: &mut Client,
    relid: u32,
) -> Result<Vec<PgColumn>, ConnectorError> {
    Ok(columns_of(client, &[relid])?
        .into_iter()
        .map(|(_, c)| c)
        .filter(|c| c.generated.is_none())
        .collect())
}

/// The oid of table `name` (its `regclass`).
pub(crate) fn relation_oid(client: &mut Client, name: &TableName) -> Result<u32, ConnectorError> {
    client
        .query_one("SELECT $1::text::regclass::oid", &[&qualified(name)])
        .and_then(|r| r.try_get(0))
        .map_err(|e| map(format!("finding table {name} on the source"), e))
}

/// `format_type` of each (type oid, type modifier).
pub(crate) fn format_types(
    client: &mut Client,
    types: &[(u32, i32)],
) -> Result<Vec<String>, ConnectorError> {
    let (oids, mods): (Vec<u32>, Vec<i32>) = types.iter().copied().unzip();
    let rows = client
        .query(
            "SELECT format_type(o, m) FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS u(o, m, n) ORDER BY n",
            &[&oids, &mods],
        )
        .map_err(|e| map("naming the types of a changed table", e))?;
    rows.iter()
        .map(|r| {
            r.try_get(0)
                .map_err(|e| map("naming the types of a changed table", e))
        })
        .collect()
}

fn q(
    client: &mut Client,
    sql: &str,
    ctx: &str,
) -> Result<Vec<tokio_postgres::Row>, ConnectorError> {
    client.query(sql, &[]).map_err(|e| map(ctx, e))
}

/// Reads the selected tables and everything they depend on.
pub fn read(client: &mut Client, selection: &Selection) -> Result<SourceSchema, ConnectorError> {
    let ctx = "reading the source schema";
    client
        .batch_execute("SET search_path = pg_catalog")
        .map_err(|e| map(ctx, e))?;
    let rows = q(
        client,
        &format!(
            "SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relpersistence::text,
                    greatest(c.reltuples, 0)::bigint, pg_table_size(c.oid), c.relreplident::text,
                    (SELECT pn.nspname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                       JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE i.inhrelid = c.oid AND c.relispartition),
                    (SELECT pc.relname FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
                      WHERE i.inhrelid = c.oid AND c.relispartition),
                    CASE WHEN c.relispartition THEN pg_get_expr(c.relpartbound, c.oid) END,
                    CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN {SYSTEM_SCHEMAS}
                AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                                 AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY n.nspname, c.relname"
        ),
        ctx,
    )?;
    let mut tables = Vec::new();
    let mut oids: Vec<u32> = Vec::new();
    for r in &rows {
        let name = TableName::new(Some(r.get::<_, &str>(1)), r.get::<_, &str>(2));
        let parent = match (r.get::<_, Option<String>>(8), r.get::<_, Option<String>>(9)) {
            (Some(s), Some(n)) => Some(TableName::new(Some(&s), &n)),
            _ => None,
        };
        // A partition is taken with its parent; the parent is taken if selected.
        let selected =
            selection.wants(&name) || parent.as_ref().is_some_and(|p| selection.wants(p));
        if !selected {
            continue;
        }
        oids.push(r.get(0));
        tables.push(PgTable {
            name,
            kind: r.get::<_, String>(3).chars().next().unwrap_or('r'),
            unlogged: r.get::<_, String>(4) == "u",
            columns: Vec::new(),
            primary_key: None,
            primary_key_inherited: false,
            partition_of: parent.zip(r.get::<_, Option<String>>(10)),
            partition_key: r.get(11),
            rows_estimate: r.get::<_, i64>(5).max(0) as u64,
            bytes: r.get::<_, i64>(6).max(0) as u64,
            replica_identity: r.get::<_, String>(7).chars().next().unwrap_or('d'),
            key_correlation: None,
        });
    }
    for wanted in &selection.tables {
        if !tables
            .iter()
            .any(|t| Selection::matches(std::slice::from_ref(wanted), &t.name))
        {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!("table {wanted} (from --tables) does not exist on the source"),
            ));
        }
    }
    let index_of: HashMap<u32, usize> = oids.iter().enumerate().map(|(i, o)| (*o, i)).collect();

    // Columns.
    for (relid, column) in columns_of(client, &oids)? {
        if let Some(&i) = index_of.get(&relid) {
            tables[i].columns.push(column);
        }
    }

    // Primary keys.
    let pks = client
        .query(
            "SELECT c.conrelid, c.conname, c.conparentid <> 0,
                    array(SELECT a.attname FROM unnest(c.conkey) WITH ORDINALITY k(n, o)
                            JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.n ORDER BY k.o)::text[]
               FROM pg_constraint c WHERE c.contype = 'p' AND c.conrelid = ANY($1)",
            &[&oids],
        )
        .map_err(|e| map(ctx, e))?;
    for r in &pks {
        if let Some(&i) = index_of.get(&r.get::<_, u32>(0)) {
            tables[i].primary_key = Some((r.get(1), r.get(3)));
            tables[i].primary_key_inherited = r.get(2);
        }
    }

    // How well key order follows the heap order, for chunk planning.
    for t in tables.iter_mut() {
        let Some((_, cols)) = &t.primary_key else {
            continue;
        };
        let corr = client
            .query_opt(
                "SELECT correlation::float8 FROM pg_stats WHERE schemaname = $1 AND tablename = $2 AND attname = $3",
                &[&t.name.schema, &t.name.name, &cols[0]],
            )
            .map_err(|e| map(ctx, e))?
            .and_then(|r| r.get::<_, Option<f64>>(0));
        t.key_correlation = match corr {
            Some(c) => Some(c),
            // Never analyzed (a database just restored): measured on a sample of pages, so
            // that a key scattered over the heap (random UUIDs) is still read by sequential
            // scans rather than by index ranges that visit pages at random.
            None if t.kind == 'r' && t.bytes > 0 => sampled_correlation(client, t, cols)?,
            None => None,
        };
    }

    let mut schemas: BTreeSet<String> = tables
        .iter()
        .filter_map(|t| t.name.schema.clone())
        .collect();
    let mut pre_data = Vec::new();

    // Extensions (their objects come with them).
    let mut extensions = Vec::new();
    for r in q(
        client,
        "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
          WHERE e.extname <> 'plpgsql' ORDER BY e.oid",
        ctx,
    )? {
        let (name, schema): (String, String) = (r.get(0), r.get(1));
        schemas.insert(schema.clone());
        extensions.push((name, schema));
    }

    // User-defined types: enums, composites, domains, ranges, in creation (OID) order. A
    // range's multirange (PostgreSQL 14+) is named as the source names it.
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| map(ctx, e))?;
    let multirange = if version >= 140_000 {
        "'MULTIRANGE_TYPE_NAME = ' || r.rngmultitypid::regtype::text"
    } else {
        "NULL"
    };
    let types = q(
        client,
        &format!(
            "SELECT t.oid, n.nspname, t.typname, t.typtype::text,
                    array(SELECT e.enumlabel::text FROM pg_enum e WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder),
                    format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                    array(SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c WHERE c.contypid = t.oid ORDER BY c.conname),
                    array(SELECT format('%I %s', a.attname, format_type(a.atttypid, a.atttypmod)) FROM pg_attribute a
                           WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
                    (SELECT concat_ws(', ', 'SUBTYPE = ' || format_type(r.rngsubtype, NULL),
                                      'SUBTYPE_OPCLASS = ' || quote_ident(on_.nspname) || '.' || quote_ident(o.opcname),
                                      CASE WHEN r.rngcollation <> 0 THEN 'COLLATION = ' || quote_ident(cn.nspname) || '.' || quote_ident(co.collname) END,
                                      CASE WHEN r.rngcanonical <> 0 THEN 'CANONICAL = ' || r.rngcanonical::regproc::text END,
                                      CASE WHEN r.rngsubdiff <> 0 THEN 'SUBTYPE_DIFF = ' || r.rngsubdiff::regproc::text END,
                                      {multirange})
                       FROM pg_range r JOIN pg_opclass o ON o.oid = r.rngsubopc JOIN pg_namespace on_ ON on_.oid = o.opcnamespace
                       LEFT JOIN pg_collation co ON co.oid = r.rngcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
                      WHERE r.rngtypid = t.oid)
               FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
              WHERE n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'
                AND (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
              ORDER BY t.oid"
        ),
        ctx,
    )?;
    let mut type_sql = Vec::new();
    for r in &types {
        let schema: String = r.get(1);
        let name = format!("{}.{}", ident(&schema), ident(r.get::<_, &str>(2)));
        schemas.insert(schema);
        let kind: String = r.get(3);
        let sql = match kind.as_str() {
            "e" => {
                let labels: Vec<String> = r.get(4);
                format!(
                    "CREATE TYPE {name} AS ENUM ({})",
                    labels
                        .iter()
                        .map(|l| literal(l))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
            "d" => {
                let mut s = format!("CREATE DOMAIN {name} AS {}", r.get::<_, String>(5));
                if let Some(d) = r.get::<_, Option<String>>(7) {
                    s.push_str(&format!(" DEFAULT {d}"));
                }
                if r.get::<_, bool>(6) {
                    s.push_str(" NOT NULL");
                }
                for c in r.get::<_, Vec<String>>(8) {
                    s.push(' ');
                    s.push_str(&c);
                }
                s
            }
            // Its constructor functions and multirange come with it.
            "r" => format!(
                "CREATE TYPE {name} AS RANGE ({})",
                r.get::<_, Option<String>>(10).unwrap_or_default()
            ),
            _ => format!(
                "CREATE TYPE {name} AS ({})",
                r.get::<_, Vec<String>>(9).join(", ")
            ),
        };
        type_sql.push(sql);
    }

    // Sequences that are not identity sequences (those come with their columns).
    let seqs = q(
        client,
        &format!(
            "SELECT n.nspname, c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                    s.seqmin, s.seqmax, s.seqcache, s.seqcycle,
                    (SELECT format('%I.%I.%I', tn.nspname, tc.relname, a.attname) FROM pg_depend d
                       JOIN pg_class tc ON tc.oid = d.refobjid JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'a'),
                    EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'i')
               FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname NOT IN {SYSTEM_SCHEMAS}
                AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
              ORDER BY n.nspname, c.relname"
        ),
        ctx,
    )?;
    let mut seq_sql = Vec::new();
    let mut owned_by = Vec::new();
    let mut sequences = Vec::new();
    for r in &seqs {
        let schema: String = r.get(0);
        let name = format!("{}.{}", ident(&schema), ident(r.get::<_, &str>(1)));
        sequences.push(name.clone());
        if r.get::<_, bool>(10) {
            continue; // identity sequence
        }
        schemas.insert(schema);
        seq_sql.push(format!(
            "CREATE SEQUENCE {name} AS {} START {} INCREMENT {} MINVALUE {} MAXVALUE {} CACHE {}{}",
            r.get::<_, String>(2),
            r.get::<_, i64>(3),
            r.get::<_, i64>(4),
            r.get::<_, i64>(5),
            r.get::<_, i64>(6),
            r.get::<_, i64>(7),
            if r.get::<_, bool>(8) { " CYCLE" } else { "" }
        ));
        if let Some(owner) = r.get::<_, Option<String>>(9) {
            // Only when the owning table is migrated.
            let owner_table = owner
                .rsplit_once('.')
                .map(|(t, _)| t.to_owned())
                .unwrap_or_default();
            if tables
                .iter()
                .any(|t| qualified(&t.name).replace('"', "") == owner_table.replace('"', ""))
            {
                owned_by.push(format!("ALTER SEQUENCE {name} OWNED BY {owner}"));
            }
        }
    }

    // Tables: parents before partitions.
    let mut table_sql = Vec::new();
    let mut ordered: Vec<&PgTable> = tables.iter().filter(|t| t.partition_of.is_none()).collect();
    ordered.extend(tables.iter().filter(|t| t.partition_of.is_some()));
    for t in ordered {
        table_sql.push(create_table_sql(t));
    }

    // Post-data.
    let indexes = client
        .query(
            "SELECT i.indrelid, pg_get_indexdef(i.indexrelid) FROM pg_index i
              WHERE i.indrelid = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x'))
                AND NOT EXISTS (SELECT 1 FROM pg_inherits h WHERE h.inhrelid = i.indexrelid)
              ORDER BY i.indrelid, i.indexrelid",
            &[&oids],
        )
        .map_err(|e| map(ctx, e))?;
    let primary_keys: Vec<TableStep> = tables
        .iter()
        .filter_map(|t| {
            primary_key_sql(t).map(|sql| TableStep {
                table: t.name.clone(),
                sql,
            })
        })
        .collect();
    let mut post_data = Vec::new();
    for r in &indexes {
        if let Some(&i) = index_of.get(&r.try_get::<_, u32>(0).map_err(|e| map(ctx, e))?) {
            post_data.push(TableStep {
                table: tables[i].name.clone(),
                sql: r.try_get(1).map_err(|e| map(ctx, e))?,
            });
        }
    }
    let cons = client
        .query(
            "SELECT c.conrelid, c.conname, c.contype::text, pg_get_constraintdef(c.oid), c.confrelid,
                    c.confrelid::regclass::text
               FROM pg_constraint c
              WHERE c.conrelid = ANY($1) AND c.contype IN ('u', 'c', 'x', 'f') AND c.conparentid = 0 AND c.conislocal
              ORDER BY c.conrelid, c.conname",
            &[&oids],
        )
        .map_err(|e| map(ctx, e))?;
    let mut foreign_keys = Vec::new();
    let mut dangling_foreign_keys = Vec::new();
    for r in &cons {
        let Some(&i) = index_of.get(&r.get::<_, u32>(0)) else {
            continue;
        };
        let references: u32 = r.try_get(4).map_err(|e| map(ctx, e))?;
        if r.get::<_, String>(2) == "f" && !index_of.contains_key(&references) {
            dangling_foreign_keys.push((
                tables[i].name.clone(),
                r.try_get::<_, String>(1).map_err(|e| map(ctx, e))?,
                r.try_get::<_, String>(5).map_err(|e| map(ctx, e))?,
            ));
            continue;
        }
        let sql = format!(
            "ALTER TABLE {} ADD CONSTRAINT {} {}",
            qualified(&tables[i].name),
            ident(r.get::<_, &str>(1)),
            r.get::<_, String>(3)
        );
        if r.get::<_, String>(2) == "f" {
            foreign_keys.push(sql);
        } else {
            post_data.push(TableStep {
                table: tables[i].name.clone(),
                sql,
            });
        }
    }

    let objects = read_objects(client, selection.grants)?;
    // Filled by the copy with the objects that could not be created on the target.
    let not_copied: Vec<String> = Vec::new();

    for s in &schemas {
        if s != "public" {
            pre_data.push(format!("CREATE SCHEMA IF NOT EXISTS {}", ident(s)));
        }
    }
    for (name, schema) in &extensions {
        pre_data.push(format!(
            "CREATE EXTENSION IF NOT EXISTS {} WITH SCHEMA {}",
            ident(name),
            ident(schema)
        ));
    }
    pre_data.extend(type_sql);
    pre_data.extend(seq_sql);
    pre_data.extend(table_sql);
    pre_data.extend(owned_by);
    client
        .batch_execute("RESET search_path")
        .map_err(|e| map(ctx, e))?;
    Ok(SourceSchema {
        tables,
        pre_data,
        primary_keys,
        post_data,
        foreign_keys,
        dangling_foreign_keys,
        sequences,
        extensions,
        objects,
        not_copied,
    })
}

/// The source's schemas, extensions, functions, procedures, views, materialized views,
/// triggers and rules (not members of extensions, not cutover's), as statements in creation
/// order. Read with `search_path = pg_catalog`, so every name in the definitions is qualified.
fn read_objects(client: &mut Client, grants: bool) -> Result<Vec<Object>, ConnectorError> {
    let ctx = "reading the source's views, functions, triggers and rules";
    let (not_clone, user_ns) = object_filters(client, ctx)?;
    let not_member = |class: &str, id: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{class}'::regclass AND d.objid = {id} AND d.deptype IN ('e', 'i'))"
        )
    };
    let grantee =
        "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END";
    let option = "CASE WHEN a.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END";
    let grants_sql = if grants {
        format!(
            "UNION ALL
         SELECT 8, 'grant ' || a.privilege_type || ' on ' || c.oid::regclass::text || ' to ' || {grantee},
                format('GRANT %s ON %s %s TO %s%s', a.privilege_type,
                       CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass, {grantee}, {option}), false
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, aclexplode(c.relacl) a
          WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S') AND a.grantee <> c.relowner AND {user_ns}
         UNION ALL
         SELECT 8, 'grant ' || a.privilege_type || ' on function ' || p.oid::regprocedure::text || ' to ' || {grantee},
                format('GRANT %s ON %s %s TO %s%s', a.privilege_type,
                       CASE p.prokind WHEN 'p' THEN 'PROCEDURE' ELSE 'FUNCTION' END, p.oid::regprocedure, {grantee}, {option}), false
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace, aclexplode(p.proacl) a
          WHERE p.prokind IN ('f', 'p') AND a.grantee <> p.proowner AND {user_ns}
         UNION ALL
         SELECT 8, 'grant ' || a.privilege_type || ' on schema ' || n.nspname || ' to ' || {grantee},
                format('GRANT %s ON SCHEMA %I TO %s%s', a.privilege_type, n.nspname, {grantee}, {option}), false
           FROM pg_namespace n, aclexplode(n.nspacl) a
          WHERE a.grantee <> n.nspowner AND {user_ns}"
        )
    } else {
        String::new()
    };
    let sql = format!(
        "SELECT 0, 'schema ' || n.nspname, format('CREATE SCHEMA IF NOT EXISTS %I', n.nspname), false
           FROM pg_namespace n WHERE {user_ns} AND n.nspname <> 'public'
         UNION ALL
         SELECT 1, 'extension ' || e.extname,
                format('CREATE EXTENSION IF NOT EXISTS %I WITH SCHEMA %I', e.extname, n.nspname), false
           FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql'
         UNION ALL
         SELECT 2, CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END || p.oid::regprocedure::text,
                'SET LOCAL check_function_bodies = off; ' || pg_get_functiondef(p.oid), false
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE {user_ns} AND p.prokind IN ('f', 'p') AND {}
         UNION ALL
         SELECT 2, 'aggregate ' || p.oid::regprocedure::text,
                format('CREATE AGGREGATE %I.%I(%s) (SFUNC = %s, STYPE = %s%s%s%s)', n.nspname, p.proname,
                       pg_get_function_identity_arguments(p.oid), a.aggtransfn::regproc,
                       format_type(a.aggtranstype, NULL),
                       CASE WHEN a.aggfinalfn <> 0 THEN ', FINALFUNC = ' || a.aggfinalfn::regproc ELSE '' END,
                       CASE WHEN a.agginitval IS NOT NULL THEN ', INITCOND = ' || quote_literal(a.agginitval) ELSE '' END,
                       CASE WHEN a.aggcombinefn <> 0 THEN ', COMBINEFUNC = ' || a.aggcombinefn::regproc ELSE '' END),
                false
           FROM pg_proc p JOIN pg_aggregate a ON a.aggfnoid = p.oid JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE {user_ns} AND p.prokind = 'a' AND a.aggkind = 'n' AND {}
         UNION ALL
         SELECT 3, 'view ' || c.oid::regclass::text,
                format('CREATE OR REPLACE VIEW %s AS %s', c.oid::regclass, pg_get_viewdef(c.oid)), false
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'v' AND {user_ns} AND {}
         UNION ALL
         SELECT 4, 'materialized view ' || c.oid::regclass::text,
                format('CREATE MATERIALIZED VIEW IF NOT EXISTS %s AS %s WITH DATA', c.oid::regclass,
                       rtrim(pg_get_viewdef(c.oid), ';')), false
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'm' AND {user_ns} AND {}
         UNION ALL
         SELECT 5, 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text, pg_get_triggerdef(t.oid), true
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT t.tgisinternal AND {not_clone} AND {user_ns}
         UNION ALL
         SELECT 7, 'comment on ' || CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'table ' END
                || c.oid::regclass::text,
                format('COMMENT ON %s %s IS %L',
                       CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE 'TABLE' END,
                       c.oid::regclass, d.description), false
           FROM pg_description d JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid AND d.objsubid = 0
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'p', 'v', 'm') AND {user_ns}
         UNION ALL
         SELECT 7, 'comment on column ' || c.oid::regclass::text || '.' || quote_ident(a.attname),
                format('COMMENT ON COLUMN %s.%I IS %L', c.oid::regclass, a.attname, d.description), false
           FROM pg_description d JOIN pg_class c ON d.classoid = 'pg_class'::regclass AND d.objoid = c.oid
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.objsubid
           JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE d.objsubid > 0 AND c.relkind IN ('r', 'p', 'v', 'm') AND {user_ns}
         UNION ALL
         SELECT 7, 'comment on function ' || p.oid::regprocedure::text,
                format('COMMENT ON %s %s IS %L', CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
                       p.oid::regprocedure, d.description), false
           FROM pg_description d JOIN pg_proc p ON d.classoid = 'pg_proc'::regclass AND d.objoid = p.oid
           JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE {user_ns}
         UNION ALL
         SELECT 7, 'comment on schema ' || n.nspname, format('COMMENT ON SCHEMA %I IS %L', n.nspname, d.description), false
           FROM pg_description d JOIN pg_namespace n ON d.classoid = 'pg_namespace'::regclass AND d.objoid = n.oid
          WHERE {user_ns}
         UNION ALL
         SELECT 6, 'rule ' || r.rulename || ' on ' || r.ev_class::regclass::text, pg_get_ruledef(r.oid), true
           FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE r.rulename <> '_RETURN' AND {user_ns}
         {grants_sql}
         ORDER BY 1, 2",
        not_member("pg_proc", "p.oid"),
        not_member("pg_proc", "p.oid"),
        not_member("pg_class", "c.oid"),
        not_member("pg_class", "c.oid"),
    );
    let rows = client.query(&sql, &[]).map_err(|e| map(ctx, e))?;
    let mut switches = switches(client)?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(1).map_err(|e| map(ctx, e))?;
            let Switches { disable, enable } = switches.remove(&name).unwrap_or_default();
            Ok(Object {
                sql: r.try_get(2).map_err(|e| map(ctx, e))?,
                fires: r.try_get(3).map_err(|e| map(ctx, e))?,
                name,
                disable,
                enable,
            })
        })
        .collect()
}

/// The filters of objects cutover carries: a trigger not cloned from a partitioned parent's
/// (which comes with the parent's; PostgreSQL 13+ says which they are), and a schema of the
/// user's.
fn object_filters(
    client: &mut Client,
    ctx: &str,
) -> Result<(&'static str, String), ConnectorError> {
    let version: i32 = client
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .and_then(|r| r.try_get(0))
        .map_err(|e| map(ctx, e))?;
    let not_clone = if version >= 130_000 {
        "t.tgparentid = 0"
    } else {
        "true"
    };
    let user_ns = format!("n.nspname NOT IN {SYSTEM_SCHEMAS} AND n.nspname NOT LIKE 'pg\\_%'");
    Ok((not_clone, user_ns))
}

/// How a trigger or table rule is turned off and back to its state (see [`Object::disable`],
/// [`Object::enable`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Switches {
    pub disable: Option<String>,
    pub enable: Option<String>,
}

/// Per trigger and table rule (named as [`read_objects`] names them): the statement that
/// disables it, and the one that gives it its current state (`None` if disabled now). Rules
/// of views are left out: they act on the view, which cutover never writes.
pub(crate) fn switches(client: &mut Client) -> Result<HashMap<String, Switches>, ConnectorError> {
    let ctx = "reading the state of the source's triggers and rules";
    let (not_clone, user_ns) = object_filters(client, ctx)?;
    let state = |kind: &str, flag: &str, table: &str, name: &str| {
        format!(
            "format('ALTER TABLE %s DISABLE {kind} %I', {table}::regclass, {name}),
             CASE {flag} WHEN 'O' THEN format('ALTER TABLE %s ENABLE {kind} %I', {table}::regclass, {name})
                         WHEN 'R' THEN format('ALTER TABLE %s ENABLE REPLICA {kind} %I', {table}::regclass, {name})
                         WHEN 'A' THEN format('ALTER TABLE %s ENABLE ALWAYS {kind} %I', {table}::regclass, {name}) END"
        )
    };
    let sql = format!(
        "SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text, {}
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT t.tgisinternal AND {not_clone} AND {user_ns}
         UNION ALL
         SELECT 'rule ' || r.rulename || ' on ' || r.ev_class::regclass::text, {}
           FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE r.rulename <> '_RETURN' AND c.relkind IN ('r', 'p') AND {user_ns}",
        state("TRIGGER", "t.tgenabled", "t.tgrelid", "t.tgname"),
        state("RULE", "r.ev_enabled", "r.ev_class", "r.rulename"),
    );
    // Names qualified whatever the session's search_path (the statements run in other sessions).
    let mut tx = client.transaction().map_err(|e| map(ctx, e))?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .map_err(|e| map(ctx, e))?;
    let rows = tx.query(&sql, &[]).map_err(|e| map(ctx, e))?;
    tx.commit().map_err(|e| map(ctx, e))?;
    rows.iter()
        .map(|r| {
            let name: String = r.try_get(0).map_err(|e| map(ctx, e))?;
            let disable = r.try_get(1).map_err(|e| map(ctx, e))?;
            let enable = r.try_get(2).map_err(|e| map(ctx, e))?;
            Ok((name, Switches { disable, enable }))
        })
        .collect()
}

impl SourceSchema {
    /// Refuses, before anything is copied, foreign keys that reference tables left out of the
    /// selection (the target could never create them), naming each and the two ways out;
    /// with `skip`, lets them be left off the target and says which.
    pub fn check_foreign_keys(&self, skip: bool) -> Result<(), ConnectorError> {
        if self.dangling_foreign_keys.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = self
            .dangling_foreign_keys
            .iter()
            .map(|(t, c, r)| format!("{t}.{c} → {r}"))
            .collect();
        if skip {
            tracing::warn!(
                keys = %list.join(", "),
                "foreign keys to tables left out are not created on the target (--skip-foreign-keys)"
            );
            return Ok(());
        }
        let referenced: std::collections::BTreeSet<&str> = self
            .dangling_foreign_keys
            .iter()
            .map(|(_, _, r)| r.as_str())
            .collect();
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} foreign key(s) reference tables left out by --tables/--exclude-tables: {}. \
                 Include {} in the migration, or pass --skip-foreign-keys to leave these \
                 constraints off the target",
                list.len(),
                list.join(", "),
                referenced.into_iter().collect::<Vec<_>>().join(", ")
            ),
        ))
    }
}

/// The primary key, added after the data as pg_restore does: one index build instead of a btree
/// insert per row. `None` for tables without one, or whose key comes from a partitioned parent.
pub(crate) fn primary_key_sql(t: &PgTable) -> Option<String> {
    match (&t.primary_key, t.primary_key_inherited) {
        (Some((name, cols)), false) => Some(format!(
            "ALTER TABLE {} ADD CONSTRAINT {} PRIMARY KEY ({})",
            qualified(&t.name),
            ident(name),
            cols.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
        )),
        _ => None,
    }
}

pub(crate) fn create_table_sql(t: &PgTable) -> String {
    let name = qualified(&t.name);
    let unlogged = if t.unlogged { "UNLOGGED " } else { "" };
    if let Some((parent, bound)) = &t.partition_of {
        return format!(
            "CREATE {unlogged}TABLE {name} PARTITION OF {} {bound}",
            qualified(parent)
        );
    }
    let parts: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let mut s = format!("{} {}", ident(&c.name), c.type_sql);
            if let Some(coll) = &c.collation {
                s.push_str(&format!(" COLLATE {coll}"));
            }
            if let Some(expr) = &c.generated {
                s.push_str(&format!(" GENERATED ALWAYS AS ({expr}) STORED"));
            } else if let Some(d) = &c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            match c.identity {
                Some('a') => s.push_str(" GENERATED ALWAYS AS IDENTITY"),
                Some('d') => s.push_str(" GENERATED BY DEFAULT AS IDENTITY"),
                _ => {}
            }
            if c.not_null {
                s.push_str(" NOT NULL");
            }
            s
        })
        .collect();
    let mut sql = format!("CREATE {unlogged}TABLE {name} ({})", parts.join(", "));
    if let Some(key) = &t.partition_key {
        sql.push_str(&format!(" PARTITION BY {key}"));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_map_to_the_model() {
        assert_eq!(
            column_type("integer[]"),
            ColumnType::Array(Box::new(ColumnType::Int {
                bits: 32,
                unsigned: false
            }))
        );
        assert_eq!(
            column_type("numeric(6,2)"),
            ColumnType::Decimal {
                precision: Some(6),
                scale: Some(2)
            }
        );
        assert_eq!(
            column_type("numeric"),
            ColumnType::Decimal {
                precision: None,
                scale: None
            }
        );
        assert_eq!(
            column_type("character varying(20)"),
            ColumnType::Text { max_len: Some(20) }
        );
        assert_eq!(
            column_type("character varying"),
            ColumnType::Text { max_len: None }
        );
        assert!(matches!(
            column_type("public.mood"),
            ColumnType::Other { .. }
        ));
    }

    #[test]
    fn selection_matches_bare_and_qualified_names() {
        let s = Selection {
            tables: vec!["school.students".into(), "sessions".into()],
            exclude: vec!["public.sessions".into()],
            ..Default::default()
        };
        assert!(s.wants(&TableName::new(Some("school"), "students")));
        assert!(!s.wants(&TableName::new(Some("public"), "students")));
        assert!(!s.wants(&TableName::new(Some("public"), "sessions")));
        assert!(s.wants(&TableName::new(Some("other"), "sessions")));
    }

    #[test]
    fn quoting_survives_awkward_names() {
        assert_eq!(ident("Order \"x\""), "\"Order \"\"x\"\"\"");
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(
            qualified(&TableName::new(Some("Sch"), "select")),
            "\"Sch\".\"select\""
        );
    }
}
