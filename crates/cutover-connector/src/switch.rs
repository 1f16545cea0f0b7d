//! What a switch (or a rollback) needs from an engine: fences, positions, the way back and the
//! flip, on the migration's two databases. The order of the steps, the pause clock and the undo
//! live in `cutover-switch`; this is the engine's half.

use std::fmt;
use std::time::Duration;

use cutover_model::{Key, Position, TableName};

use crate::ConnectorError;

/// How writes on the old primary are stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// New transactions are read-only; sessions are ended so that none keeps writing.
    ReadOnly,
    /// The application's role may not log in; its sessions are ended.
    Role(String),
    /// The application has stopped writing; the switch only checks that nothing was written.
    None,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fence::ReadOnly => f.write_str("read-only"),
            Fence::Role(r) => write!(f, "role:{r}"),
            Fence::None => f.write_str("none"),
        }
    }
}

impl std::str::FromStr for Fence {
    type Err = String;
    fn from_str(s: &str) -> Result<Fence, String> {
        match s {
            "read-only" => Ok(Fence::ReadOnly),
            "none" => Ok(Fence::None),
            _ => match s.strip_prefix("role:") {
                Some(r) if !r.is_empty() => Ok(Fence::Role(r.to_owned())),
                _ => Err(format!(
                    "{s:?} is not a fence: use read-only, role:NAME or none"
                )),
            },
        }
    }
}

/// Which way changes flow: from the original source to the target (before a switch, or after
/// a rollback), or back (after a switch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Reverse,
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Forward => "forward",
            Direction::Reverse => "reverse",
        })
    }
}

/// Where a migration stands, as its control store tells.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// `copying`, `replicating`, `switched`, …
    pub phase: String,
    pub direction: Direction,
    /// How far the follower is behind the primary, in the source's units (WAL bytes).
    pub lag_bytes: Option<u64>,
    /// Whether a follower process is running now.
    pub follower_running: bool,
}

/// The engine's side of a switch from the current primary (`from`) to the database that
/// follows it (`to`). Steps before [`SwitchControl::flip`] can be undone; `flip` is the point of
/// no return.
pub trait SwitchControl {
    /// The migration's phase, direction and lag.
    fn observe(&mut self) -> Result<Observation, ConnectorError>;
    /// Asks a follower running elsewhere to stop, and waits (at most `wait`) until it has.
    fn request_handover(&mut self, wait: Duration) -> Result<(), ConnectorError>;
    /// Withdraws [`SwitchControl::request_handover`] (the switch did not happen).
    fn clear_handover(&mut self) -> Result<(), ConnectorError>;
    /// Stops writes on `from`; returns how many sessions were ended.
    fn fence(&mut self, fence: &Fence) -> Result<u64, ConnectorError>;
    /// Lets writes on `from` again (undo of [`SwitchControl::fence`]).
    fn lift_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError>;
    /// `from`'s change-stream position now: what a drain must reach.
    fn primary_position(&mut self) -> Result<Position, ConnectorError>;
    /// With [`Fence::None`]: fails if anything was written on `from` since `fence_mark` was
    /// taken (with [`SwitchControl::write_mark`]) at the fence.
    fn check_quiet(&mut self, fence_mark: u64) -> Result<(), ConnectorError>;
    /// A number that moves whenever `from` writes (for [`SwitchControl::check_quiet`]).
    fn write_mark(&mut self) -> Result<u64, ConnectorError>;
    /// Change capture on `to` and a control store on `from`, so that changes can flow back.
    fn prepare_way_back(&mut self) -> Result<(), ConnectorError>;
    /// Removes what [`SwitchControl::prepare_way_back`] created.
    fn undo_way_back(&mut self) -> Result<(), ConnectorError>;
    /// Gives `to`'s sequences `from`'s values (sequences are not replicated).
    fn sync_sequences(&mut self) -> Result<(), ConnectorError>;
    /// Records the switch: `to` is the primary, changes flow back from its position now.
    fn flip(&mut self) -> Result<Direction, ConnectorError>;
    /// Lets the application write on `to` (lifts any fence there).
    fn open_new_primary(&mut self) -> Result<(), ConnectorError>;
    /// After the switch: removes the old direction's change capture on `from`.
    fn retire_old_direction(&mut self) -> Result<(), ConnectorError>;
    /// Rows to verify before the fence: the keys changed while their table was being copied
    /// (where chunks and the change stream met; [`crate::ApplyOp::Watch`]). None by default.
    fn watched_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        Ok(Vec::new())
    }
    /// The keys a follower that stopped (or handed over) changed last, newest last
    /// ([`crate::Sink::record_recent`]). None by default.
    fn recent_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        Ok(Vec::new())
    }
}
