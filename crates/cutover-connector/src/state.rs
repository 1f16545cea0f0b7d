//! The migration's state, wherever it is kept: the contract every state store meets.
//!
//! A migration's state is where it stands (its phase), how far the target has applied the
//! source's changes (the checkpoint), the chunk plan with typed keys and which chunks are done,
//! what the running sync last reported (for `cutover status`), the switch journal and the rows
//! verify found different. Its schema and its versioned migrations are `cutover-state`'s; the
//! backends are engine crates' (PostgreSQL: the `_cutover` schema, SQLite: the `_cutover_*`
//! tables), because only engine crates hold drivers.
//!
//! A transactional target hosts the store and writes it in the same transaction as the data
//! (the [`Sink`](crate::Sink) does those writes); [`TargetFactory::state`](crate::TargetFactory)
//! opens the store it hosts, for everything that reads or steers the migration from outside the
//! sync: `cutover status`, a switch's phase compare-and-swap, the journal, the mismatches.

use cutover_model::{Position, TableName};

use crate::{ConnectorError, KeyRange};

/// One chunk of the stored plan, with the keys as typed values (an integer key reads back as an
/// integer, a UUID as a UUID), never their text.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    pub table: TableName,
    pub index: u32,
    pub range: KeyRange,
    pub done: bool,
    /// Rows the chunk copied, where the store counts them.
    pub rows: Option<u64>,
}

/// What the running sync last reported (about once a second), as `cutover status` shows it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoredStatus {
    /// The target's applied position (the checkpoint).
    pub applied: Option<Position>,
    /// The source's position when last asked.
    pub source: Option<Position>,
    pub lag_bytes: Option<u64>,
    pub lag_changes: Option<u64>,
    /// When the last applied transaction committed on the source (seconds since the epoch).
    pub committed_at: Option<f64>,
    pub changes_applied: Option<u64>,
    pub changes_per_sec: Option<f64>,
    /// When the sync last reported (seconds since the epoch, the store's clock).
    pub updated_at: Option<f64>,
}

/// A row verify found different, as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredMismatch {
    pub table: TableName,
    /// The key as messages show it: `(42, 'abc')`.
    pub key: String,
    /// `missing`, `extra` or `different`.
    pub kind: String,
    pub columns: Vec<String>,
    pub detail: String,
}

/// The migration's state. Contract (the sentences `cutover_state::suite` tests on every
/// backend):
/// - [`version`](StateStore::version) is `None` where no store exists, and nothing reads as
///   state there: [`phase`](StateStore::phase), [`checkpoint`](StateStore::checkpoint) and
///   [`status`](StateStore::status) are `None`, the lists empty. Reading never creates it.
/// - [`migrate`](StateStore::migrate) creates the store, or upgrades an older one in place, to
///   the newest version this build knows, all in one transaction, and returns that version;
///   again, it changes nothing. A store written by a newer cutover is refused
///   (`ErrorKind::InvalidInput`, naming both versions) and left as it is.
/// - [`swap_phase`](StateStore::swap_phase) is a compare-and-swap: it moves the phase from
///   `from` to `to` only if the phase is `from` at that moment (`None`: no phase yet) and says
///   whether it did; of two processes swapping from the same phase, one wins.
/// - [`chunks`](StateStore::chunks) returns the plan as the sync stored it: ordered by table and
///   index, keys as the typed values given, which chunks are done.
pub trait StateStore: Send {
    /// Where the store is, for messages, without passwords.
    fn describe(&self) -> String;
    /// The store's schema version; `None`: there is no store.
    fn version(&mut self) -> Result<Option<u32>, ConnectorError>;
    /// Creates or upgrades the store (see the contract); returns its version.
    fn migrate(&mut self) -> Result<u32, ConnectorError>;
    /// Where the migration stands: `copying`, `replicating`, `switched`, ….
    fn phase(&mut self) -> Result<Option<String>, ConnectorError>;
    /// Moves the phase from `from` to `to` if it is `from` now; whether it did.
    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError>;
    /// The target's applied position.
    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError>;
    /// The stored chunk plan of every table.
    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError>;
    /// What the sync last reported.
    fn status(&mut self) -> Result<Option<StoredStatus>, ConnectorError>;
    /// The switch journal's entry, if a switch or rollback is under way or was cut off.
    fn journal(&mut self) -> Result<Option<crate::Journal>, ConnectorError>;
    /// The newest `limit` mismatches verify recorded, newest first.
    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError>;
}

impl<S: StateStore + ?Sized> StateStore for Box<S> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn version(&mut self) -> Result<Option<u32>, ConnectorError> {
        (**self).version()
    }
    fn migrate(&mut self) -> Result<u32, ConnectorError> {
        (**self).migrate()
    }
    fn phase(&mut self) -> Result<Option<String>, ConnectorError> {
        (**self).phase()
    }
    fn swap_phase(&mut self, from: Option<&str>, to: &str) -> Result<bool, ConnectorError> {
        (**self).swap_phase(from, to)
    }
    fn checkpoint(&mut self) -> Result<Option<Position>, ConnectorError> {
        (**self).checkpoint()
    }
    fn chunks(&mut self) -> Result<Vec<StoredChunk>, ConnectorError> {
        (**self).chunks()
    }
    fn status(&mut self) -> Result<Option<StoredStatus>, ConnectorError> {
        (**self).status()
    }
    fn journal(&mut self) -> Result<Option<crate::Journal>, ConnectorError> {
        (**self).journal()
    }
    fn mismatches(&mut self, limit: usize) -> Result<Vec<StoredMismatch>, ConnectorError> {
        (**self).mismatches(limit)
    }
}
