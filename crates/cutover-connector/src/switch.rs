//! What a switch (or a rollback) needs from an engine: fences, positions, the way back and the
//! flip, on the migration's two databases. The order of the steps, the pause clock and the undo
//! live in `cutover-switch`; this is the engine's half.

use std::fmt;
use std::time::Duration;

use cutover_model::{Key, Position, TableName};

use crate::{Connect, ConnectorError};

/// Which way a switch goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orientation {
    /// Source → target (`cutover switch`).
    Switch,
    /// Target → source (`cutover rollback`).
    Rollback,
}

impl Orientation {
    /// The command's verb: `switch` or `rollback`.
    pub fn verb(self) -> &'static str {
        match self {
            Orientation::Switch => "switch",
            Orientation::Rollback => "rollback",
        }
    }
}

/// The two sides of a switch in one orientation: (primary, follower).
pub type SwitchSides = (Box<dyn Connect>, Box<dyn Connect>);

/// A switch between two particular engines: what `cutover switch`, `rollback` and `cleanup`,
/// and a `sync` of a switched migration, need beyond the sides any pair has. The target's
/// factory offers it for a source it can trade places with ([`crate::TargetFactory::switchover`]);
/// the switch's steps, pause clock and undo (`cutover-switch`) run on the sides and the
/// [`SwitchControl`] it hands out, so nothing outside the engine crate knows which engines
/// these are.
///
/// Contract: `sides(Switch)` is (the source, the target) as the migration was opened;
/// `sides(Rollback)` is (the target, the source), with the way back's change capture. Both
/// sides of one orientation hand out sources and sinks that follow each other with
/// `cutover-pipeline`, exactly as the forward sync does. `control(o)` acts on `sides(o)`.
pub trait Switchover: Send + Sync {
    /// (primary, follower) of a switch in `orientation`: the database writes leave and the one
    /// they go to.
    fn sides(&self, orientation: Orientation) -> Result<SwitchSides, ConnectorError>;
    /// The engine's side of a switch in `orientation`.
    fn control(
        &self,
        orientation: Orientation,
    ) -> Result<Box<dyn SwitchControl + Send>, ConnectorError>;
    /// Where writes go after a switch in `orientation`, for messages and `--on-switch` (never a
    /// password).
    fn new_primary(&self, orientation: Orientation) -> String;
    /// Which way the migration's changes flow now: [`Direction::Reverse`] once switched, so
    /// that a `sync` follows the way back ([`Switchover::sides`] of [`Orientation::Rollback`]).
    fn direction(&self) -> Result<Direction, ConnectorError>;
    /// Removes what both directions created: change capture, fences, the switch's state.
    /// Returns what was done, for the user.
    fn cleanup(&self) -> Result<String, ConnectorError>;
}

/// How writes on the old primary are stopped. Whatever the fence, the switch checks after
/// the drain that no change reached the migrated tables past the fence, and is undone if one
/// did (a session can set `default_transaction_read_only = off`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fence {
    /// New transactions are read-only; sessions are ended so that none keeps writing.
    ReadOnly,
    /// The application's role may not log in; its sessions are ended.
    Role(String),
    /// Every role but cutover's loses its write privileges on the migrated tables (given back
    /// on undo or rollback); the sessions of those roles are ended.
    Revoke,
    /// The application has stopped writing; the switch only checks that nothing was written.
    None,
}

impl fmt::Display for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fence::ReadOnly => f.write_str("read-only"),
            Fence::Role(r) => write!(f, "role:{r}"),
            Fence::Revoke => f.write_str("revoke"),
            Fence::None => f.write_str("none"),
        }
    }
}

impl std::str::FromStr for Fence {
    type Err = String;
    fn from_str(s: &str) -> Result<Fence, String> {
        match s {
            "read-only" => Ok(Fence::ReadOnly),
            "revoke" => Ok(Fence::Revoke),
            "none" => Ok(Fence::None),
            _ => match s.strip_prefix("role:") {
                Some(r) if !r.is_empty() => Ok(Fence::Role(r.to_owned())),
                _ => Err(format!(
                    "{s:?} is not a fence: use read-only, revoke, role:NAME or none"
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

/// The steps of a switch that change something, in order; the journal records each before it
/// runs, so that a switch interrupted anywhere (even by `kill -9`) can be completed or undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SwitchStep {
    /// Asking a running sync to hand over.
    Handover,
    /// Preparing the way back (capture on the new primary).
    WayBack,
    /// Fencing the old primary (the write pause starts).
    Fence,
    /// Recording the switch (the point of no return).
    Flip,
    /// Letting the application write on the new primary.
    Open,
    /// Removing the old direction's capture.
    Retire,
}

impl SwitchStep {
    pub fn name(self) -> &'static str {
        match self {
            SwitchStep::Handover => "hand-over",
            SwitchStep::WayBack => "way back",
            SwitchStep::Fence => "fence",
            SwitchStep::Flip => "flip",
            SwitchStep::Open => "open",
            SwitchStep::Retire => "retire",
        }
    }

    pub fn parse(s: &str) -> Option<SwitchStep> {
        [
            SwitchStep::Handover,
            SwitchStep::WayBack,
            SwitchStep::Fence,
            SwitchStep::Flip,
            SwitchStep::Open,
            SwitchStep::Retire,
        ]
        .into_iter()
        .find(|x| x.name() == s)
    }
}

impl fmt::Display for SwitchStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A switch in progress, as its journal (in the control store) records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// Which way the switch moves writes: [`Direction::Reverse`] for a switch to the target,
    /// [`Direction::Forward`] for a rollback.
    pub want: Direction,
    pub fence: Fence,
    /// The last step begun.
    pub step: SwitchStep,
    /// The process that ran it, for messages.
    pub pid: u32,
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
    /// Objects the old primary has and the new one lacks (views, functions, triggers, …), as
    /// `kind name`: the application would break on them after the flip. None by default.
    fn missing_objects(&mut self) -> Result<Vec<String>, ConnectorError> {
        Ok(Vec::new())
    }
    /// Remembers the fence a switch puts up, so that a rollback lifts it on the old primary.
    /// Nothing by default.
    fn record_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError> {
        let _ = fence;
        Ok(())
    }
    /// Asks a follower running elsewhere to stop, and waits (at most `wait`) until it has.
    fn request_handover(&mut self, wait: Duration) -> Result<(), ConnectorError>;
    /// Withdraws [`SwitchControl::request_handover`] (the switch did not happen).
    fn clear_handover(&mut self) -> Result<(), ConnectorError>;
    /// Stops writes on `from`; returns how many sessions were ended.
    fn fence(&mut self, fence: &Fence) -> Result<u64, ConnectorError>;
    /// Lets writes on `from` again (undo of [`SwitchControl::fence`]; harmless when the fence
    /// was not, or only partly, put up).
    fn lift_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError>;
    /// `from`'s change-stream position now: what a drain must reach.
    fn primary_position(&mut self) -> Result<Position, ConnectorError>;
    /// How the primary's engine orders and measures those positions.
    fn positions(&self) -> &'static dyn crate::PositionOrder;
    /// Takes the migration's switch lock: only one switch, rollback or recovery at a time. Held
    /// until this value is dropped or its process ends (a crash included). Fails with
    /// [`crate::ErrorKind::Busy`] naming the holder when another process has it.
    fn lock(&mut self) -> Result<(), ConnectorError>;
    /// Releases [`SwitchControl::lock`].
    fn unlock(&mut self) -> Result<(), ConnectorError>;
    /// The journal of a switch that began and did not finish (crashed, killed, or still
    /// running elsewhere: take [`SwitchControl::lock`] first).
    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError>;
    /// Records, before it runs, that `journal.step` begins.
    fn record(&mut self, journal: &Journal) -> Result<(), ConnectorError>;
    /// The switch finished or was undone: no journal any more.
    fn clear_journal(&mut self) -> Result<(), ConnectorError>;
    /// Change capture on `to` and a control store on `from`, so that changes can flow back.
    fn prepare_way_back(&mut self) -> Result<(), ConnectorError>;
    /// Removes what [`SwitchControl::prepare_way_back`] created.
    fn undo_way_back(&mut self) -> Result<(), ConnectorError>;
    /// Gives `to`'s sequences `from`'s values (sequences are not replicated).
    fn sync_sequences(&mut self) -> Result<(), ConnectorError>;
    /// Records the switch: `to` is the primary, changes flow back from its position now. The
    /// point of no return: a compare-and-swap of the phase, so it happens once or not at all.
    fn flip(&mut self) -> Result<Direction, ConnectorError>;
    /// Lets the application write on `to` (lifts any fence there).
    fn open_new_primary(&mut self) -> Result<(), ConnectorError>;
    /// After [`SwitchControl::open_new_primary`]: ends the application's sessions on `to` that
    /// began during the write pause (since [`SwitchControl::fence`]) and before it opened.
    /// Those sessions started while `to` refused writes, and a session keeps the defaults it
    /// started with (a read-only one stays read-only after the open): ended, the application
    /// reconnects and writes. Sessions older than the pause are left alone. Returns how many
    /// were ended; none by default.
    fn end_paused_sessions(&mut self) -> Result<u64, ConnectorError> {
        Ok(0)
    }
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
