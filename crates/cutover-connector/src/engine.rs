//! Engines as the binary sees them: object-safe factories registered under URL schemes, so that
//! any source composes with any target without a `match` on engine pairs.
//!
//! An engine crate exports one [`Engine`]: its name, its URL schemes, and constructors for the
//! sides it offers ([`SourceFactory`], [`TargetFactory`], [`VerifyFactory`]; any may be absent).
//! The binary lists engines in an [`Engines`] registry and opens each side by its URL. Where
//! two particular engines can do better together (PostgreSQL → PostgreSQL copies its DDL
//! natively and hashes rows with a cheaper function), the factories find out by looking at each
//! other ([`TargetFactory::pair`], [`VerifyFactory::negotiate`], [`TargetFactory::bulk_copy`],
//! [`TargetFactory::switchover`]); nothing outside the two engine crates knows.

use std::any::Any;

use cutover_model::TableSchema;

use crate::{ConnectorError, ErrorKind, RangeChecksum, Sink, Source, TableReader};

/// What every side of a migration is opened with, besides its URL.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OpenOptions {
    /// Tables to migrate (empty: all), as the user wrote them (`name` or `schema.name`).
    pub tables: Vec<String>,
    /// Tables to leave out.
    pub exclude: Vec<String>,
    /// The migration's name (names the source's change capture and the target's state);
    /// `None`: the engine's default (PostgreSQL: the target database's name).
    pub name: Option<String>,
    /// As a target: empty tables that already exist instead of refusing them.
    pub truncate: bool,
    /// Parallel work the engine may do by itself (index builds).
    pub jobs: usize,
    /// Leave constraints that reference tables outside the selection off the target instead
    /// of refusing the migration (`--skip-foreign-keys`).
    pub skip_foreign_keys: bool,
    /// Also carry privileges (`--grants`), where the engines can.
    pub grants: bool,
    /// Where this side's connection settings are read from in the environment: the engine's
    /// own variables under this prefix (`OLD_` → PostgreSQL reads `OLD_PGHOST`,
    /// `OLD_PGPASSWORD`, … and no plain `PG*` variable); `None`: the engine's plain variables.
    /// [`Engines::pair`] sets it for each side from [`EnvPrefixes`].
    pub env_prefix: Option<String>,
    /// Where a target that does not host the migration's state keeps it (`--state URL`: a
    /// SQLite file, a PostgreSQL or MySQL database); `None`: a SQLite file named after the
    /// migration in [`OpenOptions::state_dir`].
    pub state: Option<String>,
    /// The directory of the default state file (the directory of the migration's config file,
    /// where there is one); `None`: the current directory.
    pub state_dir: Option<std::path::PathBuf>,
}

/// The environment prefix of each side of a migration ([`OpenOptions::env_prefix`]), so that
/// the source and the target can take different credentials from the environment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvPrefixes {
    pub source: Option<String>,
    pub target: Option<String>,
}

/// The source half of an engine: opens as many [`Source`]s and readers as the pipeline needs,
/// one per thread. Shared by reference across threads.
pub trait SourceFactory: Send + Sync {
    fn source(&self) -> Result<Box<dyn Source + Send>, ConnectorError>;
    /// A reader of the source's tables in key order (the demo's check).
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError>;
    /// Where this connects, for messages, with any password removed.
    fn describe(&self) -> String;
    /// For [`TargetFactory::pair`]: lets a target of the same engine recognise its peer.
    fn as_any(&self) -> &dyn Any;
}

/// The target half of an engine: opens [`Sink`]s (which host the migration's state where the
/// target is transactional) and readers.
pub trait TargetFactory: Send + Sync {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError>;
    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError>;
    fn describe(&self) -> String;
    /// The migration's name when the user gives none (PostgreSQL: the target database's
    /// name); it names what change capture creates on the source. `None`: `cutover`.
    fn migration_name(&self) -> Option<String> {
        None
    }
    /// Called once with the source before anything is opened: a target that can do better
    /// with a source of its own engine (native DDL, a bulk path) recognises it here, through
    /// [`SourceFactory::as_any`]. Any other source is fed through the neutral schema. Refuses a
    /// source it cannot take at all, naming why.
    fn pair(&mut self, source: &dyn SourceFactory) -> Result<(), ConnectorError> {
        let _ = source;
        Ok(())
    }
    /// The migration's state store this target hosts (`cutover status`, the switch's phase,
    /// the journal, verify's mismatches); `None`: it hosts none (a target that is not
    /// transactional keeps its state in a store of the user's choosing).
    fn state(&self) -> Result<Option<Box<dyn crate::StateStore>>, ConnectorError> {
        Ok(None)
    }
    /// Whether this target keeps the migration's state in a store of the user's choosing
    /// (`--state URL`, [`OpenOptions::state`]) instead of hosting it: a target without
    /// transactions (a change stream, files). `false` by default.
    fn needs_state(&self) -> bool {
        false
    }
    /// Gives a target that [`TargetFactory::needs_state`] the store its state goes to: the
    /// target of another engine that hosts state (SQLite, PostgreSQL, MySQL), whose sink then
    /// keeps only the control store. [`Engines::target`] calls it.
    fn attach_state(&mut self, state: Box<dyn TargetFactory>) -> Result<(), ConnectorError> {
        let _ = state;
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            format!(
                "{} keeps the migration's state itself; --state is for targets without transactions",
                self.describe()
            ),
        ))
    }
    /// The bulk copy this target shares with `source`'s engine, if any (PostgreSQL →
    /// PostgreSQL: binary `COPY` in one snapshot): `cutover copy` runs it, and `cutover sync`
    /// runs it before following changes (see [`crate::BulkCopy`]). `None` by default: the
    /// pair copies through the change applier, as any pair can.
    fn bulk_copy(&self, source: &dyn SourceFactory) -> Option<Box<dyn crate::BulkCopy + '_>> {
        let _ = source;
        None
    }
    /// The switch this target can make with `source` (the two trade places as primary, and
    /// changes flow back), if any (see [`crate::Switchover`]). `None` by default: `switch` and
    /// `rollback` are refused for the pair, naming it.
    fn switchover(&self, source: &dyn SourceFactory) -> Option<Box<dyn crate::Switchover + '_>> {
        let _ = source;
        None
    }
    /// For capabilities two particular engines share (a switch between them).
    fn as_any(&self) -> &dyn Any;
}

/// An engine that offers both sides (a switch runs both ways between two of them).
pub trait Connect: SourceFactory + TargetFactory {}
impl<T: SourceFactory + TargetFactory> Connect for T {}

/// One side of `verify`: the tables it holds and connections that hash them.
pub trait VerifyFactory: Send + Sync {
    /// The tables of this side (cutover's own left out).
    fn tables(&self) -> Result<Vec<TableSchema>, ConnectorError>;
    fn open(&self) -> Result<Box<dyn RangeChecksum + Send>, ConnectorError>;
    fn describe(&self) -> String;
    /// Whether `verify --live` can wait on this side's change stream position.
    fn live(&self) -> bool {
        false
    }
    /// Called with the other side before any hashing: two sides of one engine may agree on a
    /// cheaper row hash than the canonical one, as long as both compute the same.
    fn negotiate(&mut self, peer: &dyn VerifyFactory) {
        let _ = peer;
    }
    fn as_any(&self) -> &dyn Any;
}

/// A migration's source and target, opened.
pub type Sides = (Box<dyn SourceFactory>, Box<dyn TargetFactory>);

type Open<T> = fn(url: &str, opts: &OpenOptions) -> Result<T, ConnectorError>;

/// An engine crate's entry: how the binary finds and opens it.
#[derive(Clone, Copy)]
pub struct Engine {
    /// `PostgreSQL`, `SQLite`: for messages.
    pub name: &'static str,
    /// URL schemes, lower case, without `://` (`postgres`, `postgresql`).
    pub schemes: &'static [&'static str],
    /// Whether a URL without a scheme (a plain path) names this engine.
    pub plain_paths: bool,
    /// A string without a scheme that this engine recognises as its own (PostgreSQL: a
    /// `host=… dbname=…` keyword/value string, or an empty one that takes everything from the
    /// environment). Checked before [`Engine::plain_paths`].
    pub claims: Option<fn(&str) -> bool>,
    /// A URL to show in help and errors: `postgres://user@host:5432/db`.
    pub example: &'static str,
    pub source: Option<Open<Box<dyn SourceFactory>>>,
    pub target: Option<Open<Box<dyn TargetFactory>>>,
    pub verify: Option<Open<Box<dyn VerifyFactory>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("name", &self.name)
            .field("schemes", &self.schemes)
            .field("source", &self.source.is_some())
            .field("target", &self.target.is_some())
            .field("verify", &self.verify.is_some())
            .finish()
    }
}

/// Which side of a migration a URL is opened as, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Source,
    Target,
    Verify,
}

impl Role {
    fn noun(self) -> &'static str {
        match self {
            Role::Source => "a source",
            Role::Target => "a target",
            Role::Verify => "a side of verify",
        }
    }
}

/// The engines this build knows, found by URL scheme.
#[derive(Debug, Clone, Default)]
pub struct Engines {
    engines: Vec<Engine>,
}

impl Engines {
    pub fn new(engines: impl IntoIterator<Item = Engine>) -> Engines {
        Engines {
            engines: engines.into_iter().collect(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Engine> {
        self.engines.iter()
    }

    /// The engine `url` names, or an error listing the URLs this build understands.
    pub fn find(&self, url: &str) -> Result<&Engine, ConnectorError> {
        let scheme = scheme_of(url);
        let found = match &scheme {
            Some(s) => self
                .engines
                .iter()
                .find(|e| e.schemes.contains(&s.as_str())),
            None => self
                .engines
                .iter()
                .find(|e| e.claims.is_some_and(|claims| claims(url)))
                .or_else(|| self.engines.iter().find(|e| e.plain_paths)),
        };
        found.ok_or_else(|| {
            let what = match &scheme {
                Some(s) => format!("{s}:// is not a database this build of cutover knows"),
                None => format!("{url:?} is not a database URL"),
            };
            ConnectorError::new(
                ErrorKind::InvalidInput,
                format!("{what}; use one of: {}", self.examples(|_| true)),
            )
        })
    }

    fn examples(&self, offers: impl Fn(&Engine) -> bool) -> String {
        let list: Vec<String> = self
            .engines
            .iter()
            .filter(|e| offers(e))
            .map(|e| format!("{} ({})", e.example, e.name))
            .collect();
        list.join(", ")
    }

    fn side<T>(
        &self,
        url: &str,
        role: Role,
        pick: impl Fn(&Engine) -> Option<Open<T>>,
        opts: &OpenOptions,
    ) -> Result<T, ConnectorError> {
        let engine = self.find(url)?;
        let Some(open) = pick(engine) else {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "{} cannot be {} in this build; engines that can: {}",
                    engine.name,
                    role.noun(),
                    self.examples(|e| pick(e).is_some())
                ),
            ));
        };
        open(url, opts)
    }

    pub fn source(
        &self,
        url: &str,
        opts: &OpenOptions,
    ) -> Result<Box<dyn SourceFactory>, ConnectorError> {
        self.side(url, Role::Source, |e| e.source, opts)
    }

    /// Opens a target; one that keeps its state elsewhere ([`TargetFactory::needs_state`]) gets
    /// its state store opened here, from [`OpenOptions::state`] or the default file.
    pub fn target(
        &self,
        url: &str,
        opts: &OpenOptions,
    ) -> Result<Box<dyn TargetFactory>, ConnectorError> {
        let mut t = self.side(url, Role::Target, |e| e.target, opts)?;
        if !t.needs_state() {
            if let Some(state) = &opts.state {
                return Err(ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "--state {state}: {} keeps the migration's state itself (in the same \
                         transactions as the data); leave --state out",
                        t.describe()
                    ),
                ));
            }
            return Ok(t);
        }
        let state_url = match &opts.state {
            Some(url) => url.clone(),
            None => {
                let name = opts
                    .name
                    .clone()
                    .or_else(|| t.migration_name())
                    .unwrap_or_else(|| "cutover".to_owned());
                let file = format!("{}.cutover-state.sqlite", sanitize_file_name(&name));
                let path = match &opts.state_dir {
                    Some(dir) => dir.join(file),
                    None => std::path::PathBuf::from(file),
                };
                path.to_string_lossy().into_owned()
            }
        };
        let state_opts = OpenOptions {
            state: None,
            tables: Vec::new(),
            exclude: Vec::new(),
            truncate: false,
            ..opts.clone()
        };
        let state = self
            .side(&state_url, Role::Target, |e| e.target, &state_opts)
            .map_err(|e| {
                e.context(format!(
                    "opening the migration's state store (--state {state_url})"
                ))
            })?;
        if state.needs_state() {
            return Err(ConnectorError::new(
                ErrorKind::InvalidInput,
                format!(
                    "--state {state_url}: {} cannot keep a migration's state; use a SQLite file, \
                     a PostgreSQL or a MySQL database",
                    state.describe()
                ),
            ));
        }
        t.attach_state(state)?;
        Ok(t)
    }

    pub fn verifier(
        &self,
        url: &str,
        opts: &OpenOptions,
    ) -> Result<Box<dyn VerifyFactory>, ConnectorError> {
        self.side(url, Role::Verify, |e| e.verify, opts)
    }

    /// Opens the source and the target of a migration (the migration named as the target
    /// names it unless `opts` does) and lets the target recognise its source
    /// ([`TargetFactory::pair`]). Each side is opened with its own prefix from `env`
    /// (`opts.env_prefix` is not used).
    pub fn pair(
        &self,
        source: &str,
        target: &str,
        opts: &OpenOptions,
        env: &EnvPrefixes,
    ) -> Result<Sides, ConnectorError> {
        let mut t = self.target(
            target,
            &OpenOptions {
                env_prefix: env.target.clone(),
                ..opts.clone()
            },
        )?;
        let mut opts = OpenOptions {
            env_prefix: env.source.clone(),
            ..opts.clone()
        };
        if opts.name.is_none() {
            opts.name = Some(t.migration_name().unwrap_or_else(|| "cutover".to_owned()));
        }
        let s = self.source(source, &opts)?;
        t.pair(s.as_ref())?;
        Ok((s, t))
    }
}

/// `name` as a file name: letters, digits, `-`, `_` and `.` kept, anything else `_`.
fn sanitize_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The lower-case scheme of `url` (`postgres` of `postgres://…`), `None` for a plain path.
/// A URL part with its `%XX` escapes decoded; `what` names the part in the error (`user`,
/// `password`, a parameter).
pub fn percent_decode(s: &str, what: &str) -> Result<String, ConnectorError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ConnectorError::new(
                        ErrorKind::InvalidInput,
                        format!("bad percent-escape in the URL's {what}"),
                    )
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| {
        ConnectorError::new(
            ErrorKind::InvalidInput,
            format!("the URL's {what} is not UTF-8"),
        )
    })
}

pub fn scheme_of(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once("://")?;
    let ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    ok.then(|| scheme.to_ascii_lowercase())
}

// A boxed contract is the contract: every method forwards, defaults included, so that an
// engine's own overrides are never shadowed by a default.

impl<S: Source + ?Sized> Source for Box<S> {
    fn positions(&self) -> &'static dyn crate::PositionOrder {
        (**self).positions()
    }
    fn tables(&mut self) -> Result<Vec<TableSchema>, ConnectorError> {
        (**self).tables()
    }
    fn estimate(&mut self, table: &TableSchema) -> Result<crate::TableEstimate, ConnectorError> {
        (**self).estimate(table)
    }
    fn plan_chunks(
        &mut self,
        table: &TableSchema,
        rows_per_chunk: u64,
    ) -> Result<Vec<crate::KeyRange>, ConnectorError> {
        (**self).plan_chunks(table, rows_per_chunk)
    }
    fn read_chunk(
        &mut self,
        table: &TableSchema,
        range: &crate::KeyRange,
    ) -> Result<crate::ChunkRows, ConnectorError> {
        (**self).read_chunk(table, range)
    }
    fn check_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        (**self).check_capture(tables)
    }
    fn start_capture(
        &mut self,
        tables: &[TableSchema],
    ) -> Result<cutover_model::Position, ConnectorError> {
        (**self).start_capture(tables)
    }
    fn abandon_capture(&mut self) -> Result<(), ConnectorError> {
        (**self).abandon_capture()
    }
    fn current_position(&mut self) -> Result<cutover_model::Position, ConnectorError> {
        (**self).current_position()
    }
    fn read_changes(
        &mut self,
        tables: &[TableSchema],
        after: cutover_model::Position,
        max_changes: usize,
    ) -> Result<Vec<cutover_model::Transaction>, ConnectorError> {
        (**self).read_changes(tables, after, max_changes)
    }
    fn release(&mut self, upto: cutover_model::Position) -> Result<(), ConnectorError> {
        (**self).release(upto)
    }
    fn fetch_rows(
        &mut self,
        table: &TableSchema,
        keys: &[cutover_model::Key],
    ) -> Result<Vec<cutover_model::Row>, ConnectorError> {
        (**self).fetch_rows(table, keys)
    }
    fn history_bytes(&mut self) -> Result<Option<u64>, ConnectorError> {
        (**self).history_bytes()
    }
    fn stop_capture(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        (**self).stop_capture(tables)
    }
}

impl<S: Sink + ?Sized> Sink for Box<S> {
    fn check(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        (**self).check(tables)
    }
    fn prepare(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        (**self).prepare(tables)
    }
    fn chunk_plan(
        &mut self,
        table: &TableSchema,
        plan: &mut dyn FnMut() -> Result<Vec<crate::KeyRange>, ConnectorError>,
    ) -> Result<Vec<crate::PlannedChunk>, ConnectorError> {
        (**self).chunk_plan(table, plan)
    }
    fn apply(
        &mut self,
        ops: &[crate::ApplyOp],
        checkpoint: cutover_model::Position,
    ) -> Result<(), ConnectorError> {
        (**self).apply(ops, checkpoint)
    }
    fn checkpoint(&mut self) -> Result<Option<cutover_model::Position>, ConnectorError> {
        (**self).checkpoint()
    }
    fn columns(
        &mut self,
        table: &TableSchema,
    ) -> Result<Vec<cutover_model::Column>, ConnectorError> {
        (**self).columns(table)
    }
    fn finish_tables(&mut self, tables: &[TableSchema]) -> Result<(), ConnectorError> {
        (**self).finish_tables(tables)
    }
    fn durable(
        &mut self,
        applied: cutover_model::Position,
    ) -> Result<Option<cutover_model::Position>, ConnectorError> {
        (**self).durable(applied)
    }
    fn set_order(&mut self, order: &'static dyn crate::PositionOrder) {
        (**self).set_order(order)
    }
    fn handover_requested(&mut self) -> Result<bool, ConnectorError> {
        (**self).handover_requested()
    }
    fn record_recent(
        &mut self,
        keys: &[(cutover_model::TableName, cutover_model::Key)],
    ) -> Result<(), ConnectorError> {
        (**self).record_recent(keys)
    }
    fn note(&mut self, progress: &crate::Progress) -> Result<(), ConnectorError> {
        (**self).note(progress)
    }
    fn cleanup(&mut self) -> Result<(), ConnectorError> {
        (**self).cleanup()
    }
    fn wants_origins(&self) -> bool {
        (**self).wants_origins()
    }
    fn close(&mut self) -> Result<(), ConnectorError> {
        (**self).close()
    }
}

impl<R: TableReader + ?Sized> TableReader for Box<R> {
    fn scan(
        &mut self,
        table: &TableSchema,
        after: Option<&cutover_model::Key>,
        before: Option<&cutover_model::Key>,
        limit: usize,
    ) -> Result<Vec<cutover_model::Row>, ConnectorError> {
        (**self).scan(table, after, before, limit)
    }
}

impl<C: RangeChecksum + ?Sized> RangeChecksum for Box<C> {
    fn positions(&self) -> Option<&'static dyn crate::PositionOrder> {
        (**self).positions()
    }
    fn estimate_rows(&mut self, table: &TableSchema) -> Result<u64, ConnectorError> {
        (**self).estimate_rows(table)
    }
    fn checksum(
        &mut self,
        table: &TableSchema,
        range: &crate::KeyRange,
        bounds: &[cutover_model::Key],
        slice: crate::Slice,
    ) -> Result<Vec<crate::RangeDigest>, ConnectorError> {
        (**self).checksum(table, range, bounds, slice)
    }
    fn split(
        &mut self,
        table: &TableSchema,
        range: &crate::KeyRange,
        parts: usize,
    ) -> Result<Vec<cutover_model::Key>, ConnectorError> {
        (**self).split(table, range, parts)
    }
    fn canonical_rows(
        &mut self,
        table: &TableSchema,
        range: &crate::KeyRange,
    ) -> Result<Vec<crate::CanonicalRow>, ConnectorError> {
        (**self).canonical_rows(table, range)
    }
    fn canonical_rows_by_key(
        &mut self,
        table: &TableSchema,
        keys: &[cutover_model::Key],
    ) -> Result<Vec<crate::CanonicalRow>, ConnectorError> {
        (**self).canonical_rows_by_key(table, keys)
    }
    fn exact_rows(
        &mut self,
        table: &TableSchema,
        keys: &[cutover_model::Key],
    ) -> Result<Vec<cutover_model::Row>, ConnectorError> {
        (**self).exact_rows(table, keys)
    }
    fn repair(
        &mut self,
        table: &TableSchema,
        rows: &[cutover_model::Row],
        deletes: &[cutover_model::Key],
    ) -> Result<(), ConnectorError> {
        (**self).repair(table, rows, deletes)
    }
    fn record_mismatches(&mut self, found: &[crate::Mismatch]) -> Result<(), ConnectorError> {
        (**self).record_mismatches(found)
    }
    fn current_position(&mut self) -> Result<Option<cutover_model::Position>, ConnectorError> {
        (**self).current_position()
    }
    fn applied_position(&mut self) -> Result<Option<cutover_model::Position>, ConnectorError> {
        (**self).applied_position()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(name: &'static str, schemes: &'static [&'static str], paths: bool) -> Engine {
        Engine {
            name,
            schemes,
            plain_paths: paths,
            claims: None,
            example: "x://",
            source: None,
            target: None,
            verify: None,
        }
    }

    #[test]
    fn urls_find_their_engine_by_scheme_and_unknown_ones_are_named() {
        let engines = Engines::new([
            engine("PostgreSQL", &["postgres", "postgresql"], false),
            engine("SQLite", &["sqlite", "file"], true),
        ]);
        assert_eq!(
            engines.find("POSTGRESQL://h/db").unwrap().name,
            "PostgreSQL"
        );
        assert_eq!(engines.find("sqlite://a.db").unwrap().name, "SQLite");
        assert_eq!(engines.find("data/app.db").unwrap().name, "SQLite");
        let mut pg = engine("PostgreSQL", &["postgres"], false);
        pg.claims = Some(|s| s.trim().is_empty() || s.contains('='));
        let engines = Engines::new([pg, engine("SQLite", &["sqlite"], true)]);
        assert_eq!(
            engines.find("host=db dbname=app").unwrap().name,
            "PostgreSQL"
        );
        assert_eq!(engines.find("").unwrap().name, "PostgreSQL");
        assert_eq!(engines.find("data/app.db").unwrap().name, "SQLite");
        let e = engines.find("mysql://h/db").unwrap_err().to_string();
        assert!(e.contains("mysql:// is not a database"), "{e}");
        let e = engines
            .source("postgres://h/db", &OpenOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("PostgreSQL cannot be a source"), "{e}");
    }
}
