//! PostgreSQL's half of `cutover switch` and `cutover rollback`.
//!
//! State lives in the control stores: the original target's `_cutover` holds the migration's
//! phase (`replicating` → `switched` → `replicating` …) and the forward follower's checkpoint;
//! after a switch, the original source's `_cutover` holds the reverse follower's checkpoint.
//! The forward capture (slot and publication `cutover_<name>`) lives on the source, the reverse
//! one (`cutover_<name>_rev`) on the target.

use std::time::{Duration, Instant};

use cutover_connector::{
    ConnectorError, Direction, ErrorKind, Fence, Journal, Observation, SwitchControl, SwitchStep,
};
use cutover_model::{Key, Position, TableName};

use crate::blocking::Client;
use crate::copy;
use crate::endpoint::PgEndpoint;
use crate::error::map;
use crate::lsn;
use crate::schema::{self, ident, qualified, Selection};
use crate::source::{committed_position, CaptureNames};

pub use cutover_connector::Orientation;

/// The names of the reverse direction's capture, for migration `names`.
pub fn reverse_names(names: &CaptureNames) -> CaptureNames {
    let base = names.slot.trim_start_matches("cutover_");
    CaptureNames::for_migration(&format!("{base}_rev"))
}

/// Which way a migration's changes flow now, from its target's control store: `Reverse` after
/// a switch (the target is the primary), `Forward` otherwise (also before any sync).
pub fn direction(target: &PgEndpoint) -> Result<Direction, ConnectorError> {
    let mut c = target.connect()?;
    let ctx = "reading the migration's phase";
    let exists: bool = c
        .query_one("SELECT to_regclass('_cutover.migration') IS NOT NULL", &[])
        .map_err(|e| map(ctx, e))?
        .get(0);
    if !exists {
        return Ok(Direction::Forward);
    }
    let phase: Option<String> = c
        .query_opt("SELECT phase FROM _cutover.migration", &[])
        .map_err(|e| map(ctx, e))?
        .map(|r| r.get(0));
    Ok(if phase.as_deref() == Some("switched") {
        Direction::Reverse
    } else {
        Direction::Forward
    })
}

/// Removes everything the migration installed, in both directions: the slots and publications
/// on the source (forward) and the target (reverse, after a switch), and both control stores.
/// Before a switch, the target is also opened again to everyone (sync had made it read-only
/// for others); after one, the source keeps its fence. Returns what was done, for the user.
pub fn cleanup(
    source: &PgEndpoint,
    target: &PgEndpoint,
    names: &CaptureNames,
) -> Result<String, ConnectorError> {
    use cutover_connector::Source;
    let switched = direction(target)? == Direction::Reverse;
    let none = Selection::default();
    crate::source::PgSource::open(source, &none, names)?.stop_capture(&[])?;
    crate::source::PgSource::open(target, &none, &reverse_names(names))?.stop_capture(&[])?;
    for e in [source, target] {
        session(e)?
            .batch_execute("DROP SCHEMA IF EXISTS _cutover CASCADE")
            .map_err(|err| {
                map(
                    format!("removing the control store from {}", e.redacted()),
                    err,
                )
            })?;
    }
    if !switched {
        lift(&mut session(target)?, &Fence::ReadOnly)?;
    }
    Ok(format!(
        "removed replication slots and publications {} (source) and {} (target) and the control stores (_cutover); {}",
        names.slot,
        reverse_names(names).slot,
        if switched {
            "the source keeps its fence (writes go to the target)"
        } else {
            "the target takes everyone's writes again"
        }
    ))
}

/// Whether `endpoint`'s database makes new sessions read-only (a fence, or sync keeping the
/// target for itself until the switch).
pub fn refuses_writes(endpoint: &PgEndpoint) -> Result<bool, ConnectorError> {
    endpoint
        .connect()?
        .query_one(
            "SELECT coalesce(bool_or(s LIKE 'default_transaction_read_only=on'), false)
               FROM pg_db_role_setting, unnest(setconfig) s
              WHERE setrole = 0 AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .and_then(|r| r.try_get(0))
        .map_err(|e| map(format!("reading whether {} takes writes", endpoint.redacted()), e))
}

/// A session that may write even where writes are fenced (cutover's own bookkeeping).
fn session(endpoint: &PgEndpoint) -> Result<Client, ConnectorError> {
    let mut c = endpoint.connect_control()?;
    c.batch_execute("SET default_transaction_read_only = off; SET search_path = pg_catalog")
        .map_err(|e| map(format!("preparing a session on {}", endpoint.redacted()), e))?;
    Ok(c)
}

/// PostgreSQL's [`SwitchControl`] for one migration.
pub struct PgSwitch {
    orientation: Orientation,
    source: PgEndpoint,
    target: PgEndpoint,
    selection: Selection,
    forward: CaptureNames,
    reverse: CaptureNames,
    src: Client,
    tgt: Client,
    /// The schema, read before the pause (for the sequences).
    schema: Option<schema::SourceSchema>,
    /// The new primary's clock when the fence went up, and when the new primary opened: the
    /// application's sessions that began between the two started read-only.
    paused_since: Option<String>,
    opened_at: Option<String>,
}

/// One of the migration's two databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Source,
    Target,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Source => "source",
            Side::Target => "target",
        }
    }
}

impl PgSwitch {
    pub fn open(
        orientation: Orientation,
        source: &PgEndpoint,
        target: &PgEndpoint,
        selection: &Selection,
        names: &CaptureNames,
    ) -> Result<PgSwitch, ConnectorError> {
        Ok(PgSwitch {
            orientation,
            source: source.clone(),
            target: target.clone(),
            selection: selection.clone(),
            forward: names.clone(),
            reverse: reverse_names(names),
            src: session(source)?,
            tgt: {
                // A control store made by an older cutover gets the switch's tables.
                let mut tgt = session(target)?;
                let ctx = "preparing the switch journal on the target";
                let exists: bool = tgt
                    .query_one("SELECT to_regnamespace('_cutover') IS NOT NULL", &[])
                    .and_then(|r| r.try_get(0))
                    .map_err(|e| map(ctx, e))?;
                if exists {
                    crate::state::migrate(&mut tgt, "the target")?;
                }
                tgt
            },
            schema: None,
            paused_since: None,
            opened_at: None,
        })
    }

    /// The side writes move away from.
    fn old_side(&self) -> Side {
        match self.orientation {
            Orientation::Switch => Side::Source,
            Orientation::Rollback => Side::Target,
        }
    }

    fn client(&mut self, side: Side) -> &mut Client {
        match side {
            Side::Source => &mut self.src,
            Side::Target => &mut self.tgt,
        }
    }

    /// `--fence revoke` on `side`: every role but cutover's (and superusers, which no privilege
    /// stops) loses INSERT, UPDATE, DELETE and TRUNCATE on the migrated tables; the grants are
    /// noted in the target's control store first, so that an undo, a rollback or a recovery
    /// after a crash gives back exactly these. The sessions of those roles are ended (their
    /// open transactions roll back). Returns how many sessions were ended.
    fn revoke(&mut self, side: Side) -> Result<i64, ConnectorError> {
        let tables = self.tables_sql()?;
        let ctx = |what: &str| format!("fencing writes on the {}: {what}", side.name());
        let grants: Vec<(String, String, String)> = self
            .client(side)
            .query(
                "SELECT c.oid::regclass::text, coalesce(r.rolname, 'PUBLIC'), a.privilege_type
                   FROM pg_class c
                  CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) a
                   LEFT JOIN pg_roles r ON r.oid = a.grantee
                  WHERE c.oid = ANY($1::text[]::regclass[])
                    AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
                    AND (a.grantee = 0 OR (r.rolname <> current_user AND NOT r.rolsuper))",
                &[&tables],
            )
            .map_err(|e| {
                map(
                    ctx("reading the write privileges on the migrated tables"),
                    e,
                )
            })?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| map(ctx("reading the write privileges"), e))?;
        let mut tx = self
            .tgt
            .transaction()
            .map_err(|e| map(ctx("noting the privileges"), e))?;
        for (table, role, privilege) in &grants {
            tx.execute(
                "INSERT INTO _cutover.fence_grants VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                &[&side.name(), table, role, privilege],
            )
            .map_err(|e| map(ctx("noting the privileges"), e))?;
        }
        tx.commit()
            .map_err(|e| map(ctx("noting the privileges"), e))?;
        let roles: Vec<String> = grants.iter().map(|g| g.1.clone()).collect();
        let client = self.client(side);
        let mut tx = client.transaction().map_err(|e| map(ctx("revoking"), e))?;
        for (table, role, privilege) in &grants {
            tx.batch_execute(&format!(
                "REVOKE {privilege} ON {table} FROM {}",
                grantee(role)
            ))
            .map_err(|e| {
                map(
                    ctx(&format!("revoking {privilege} on {table} from {role}")),
                    e,
                )
            })?;
        }
        tx.commit().map_err(|e| map(ctx("revoking"), e))?;
        end_sessions(
            client,
            "datname = current_database() AND usename = ANY($1) AND application_name NOT LIKE 'cutover%'",
            &[&roles],
        )
        .map_err(|e| map(ctx("ending the sessions of the fenced roles"), e))
    }

    /// Gives back on `side` the privileges [`PgSwitch::revoke`] took there.
    fn regrant(&mut self, side: Side) -> Result<(), ConnectorError> {
        let ctx = |what: &str| format!("lifting the fence on the {}: {what}", side.name());
        let grants: Vec<(String, String, String)> = self
            .tgt
            .query(
                "SELECT table_name, role, privilege FROM _cutover.fence_grants WHERE side = $1",
                &[&side.name()],
            )
            .map_err(|e| map(ctx("reading the privileges to give back"), e))?
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(|e| map(ctx("reading the privileges to give back"), e))?;
        if grants.is_empty() {
            return Ok(());
        }
        let mut tx = self
            .client(side)
            .transaction()
            .map_err(|e| map(ctx("granting"), e))?;
        for (table, role, privilege) in &grants {
            tx.batch_execute(&format!(
                "GRANT {privilege} ON {table} TO {}",
                grantee(role)
            ))
            .map_err(|e| {
                map(
                    ctx(&format!("granting {privilege} on {table} to {role}")),
                    e,
                )
            })?;
        }
        tx.commit().map_err(|e| map(ctx("granting"), e))?;
        self.tgt
            .execute(
                "DELETE FROM _cutover.fence_grants WHERE side = $1",
                &[&side.name()],
            )
            .map_err(|e| map(ctx("forgetting the given-back privileges"), e))
            .map(drop)
    }

    /// The database writes move away from, and the one they move to.
    fn old_new(&mut self) -> (&mut Client, &mut Client) {
        match self.orientation {
            Orientation::Switch => (&mut self.src, &mut self.tgt),
            Orientation::Rollback => (&mut self.tgt, &mut self.src),
        }
    }

    fn old_primary(&self) -> &PgEndpoint {
        match self.orientation {
            Orientation::Switch => &self.source,
            Orientation::Rollback => &self.target,
        }
    }

    /// The capture that feeds the follower being switched away from, and the one being
    /// prepared as the way back.
    fn following(&self) -> (&CaptureNames, &CaptureNames) {
        match self.orientation {
            Orientation::Switch => (&self.forward, &self.reverse),
            Orientation::Rollback => (&self.reverse, &self.forward),
        }
    }

    /// The control store of the follower being switched away from: the target's going forward,
    /// the source's going back.
    fn follower_store(&mut self) -> &mut Client {
        match self.orientation {
            Orientation::Switch => &mut self.tgt,
            Orientation::Rollback => &mut self.src,
        }
    }

    fn slot_active(client: &mut Client, slot: &str) -> Result<Option<bool>, ConnectorError> {
        Ok(client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .map_err(|e| map("reading replication slots", e))?
            .map(|r| r.get(0)))
    }

    fn tables_sql(&mut self) -> Result<Vec<String>, ConnectorError> {
        let mut c = self.source.connect()?;
        let schema = schema::read(&mut c, &self.selection)?;
        let tables = schema
            .tables
            .iter()
            .filter(|t| t.has_data())
            .map(|t| qualified(&t.name))
            .collect();
        self.schema = Some(schema);
        Ok(tables)
    }

    fn create_capture(
        client: &mut Client,
        names: &CaptureNames,
        tables: &[String],
    ) -> Result<(), ConnectorError> {
        let ctx = |what: &str| format!("preparing the way back: {what}");
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {0}; CREATE PUBLICATION {0} FOR TABLE {1}",
                ident(&names.publication),
                tables.join(", ")
            ))
            .map_err(|e| map(ctx("creating the publication"), e))?;
        if Self::slot_active(client, &names.slot)?.is_none() {
            client
                .query_one(
                    "SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')",
                    &[&names.slot],
                )
                .map_err(|e| map(ctx(&format!("creating replication slot {}", names.slot)), e))?;
        }
        Ok(())
    }

    fn drop_capture(client: &mut Client, names: &CaptureNames) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Self::slot_active(client, &names.slot)? == Some(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Self::slot_active(client, &names.slot)?.is_some() {
            client
                .query_one("SELECT pg_drop_replication_slot($1)::text", &[&names.slot])
                .map_err(|e| map(format!("dropping replication slot {}", names.slot), e))?;
        }
        client
            .batch_execute(&format!(
                "DROP PUBLICATION IF EXISTS {}",
                ident(&names.publication)
            ))
            .map_err(|e| map("dropping a publication", e))
    }

    /// The fence chosen at the last switch (so a rollback can lift it), from the target.
    fn recorded_fence(&mut self) -> Result<Option<Fence>, ConnectorError> {
        let f: Option<String> = self
            .tgt
            .query_opt("SELECT fence FROM _cutover.migration", &[])
            .map_err(|e| map("reading the migration", e))?
            .and_then(|r| r.get(0));
        Ok(f.and_then(|f| f.parse().ok()))
    }
}

impl SwitchControl for PgSwitch {
    /// Remembers the fence used, so that a rollback lifts it on the old primary.
    fn record_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError> {
        self.tgt
            .execute(
                "UPDATE _cutover.migration SET fence = $1",
                &[&fence.to_string()],
            )
            .map_err(|e| map("recording the fence", e))
            .map(|_| ())
    }

    fn positions(&self) -> &'static dyn cutover_connector::PositionOrder {
        &lsn::LSNS
    }

    /// Schemas, views, materialized views, sequences, functions and procedures, triggers,
    /// rules and extensions of the old primary that the new one lacks, by name (cutover's own
    /// left out).
    fn missing_objects(&mut self) -> Result<Vec<String>, ConnectorError> {
        let (old, new) = self.old_new();
        let old = database_objects(old)?;
        let new = database_objects(new)?;
        Ok(old.difference(&new).cloned().collect())
    }

    fn observe(&mut self) -> Result<Observation, ConnectorError> {
        let phase: Option<String> = self
            .tgt
            .query_opt(
                "SELECT m.phase FROM _cutover.migration m WHERE to_regclass('_cutover.replication') IS NOT NULL",
                &[],
            )
            .map_err(|e| {
                map(
                    format!(
                        "reading the migration on {} (has `cutover sync` run there?)",
                        self.target.redacted()
                    ),
                    e,
                )
            })?
            .map(|r| r.get(0));
        let Some(phase) = phase else {
            return Err(ConnectorError::new(
                ErrorKind::NotFound,
                format!(
                    "{} holds no sync of cutover's: run `cutover sync` first",
                    self.target.redacted()
                ),
            ));
        };
        let direction = if phase == "switched" {
            Direction::Reverse
        } else {
            Direction::Forward
        };
        let (following, _) = self.following();
        let slot = following.slot.clone();
        let (from, _) = self.old_new();
        let current = committed_position(from)?;
        let running = Self::slot_active(from, &slot)?.unwrap_or(false);
        let applied: Option<String> = self
            .follower_store()
            .query_opt(
                "SELECT position FROM _cutover.replication WHERE to_regclass('_cutover.replication') IS NOT NULL",
                &[],
            )
            .ok()
            .flatten()
            .and_then(|r| r.get(0));
        let lag_bytes = applied
            .and_then(|a| a.parse::<Position>().ok())
            .and_then(|p| lsn::parse(&p))
            .map(|l| current.saturating_sub(l));
        Ok(Observation {
            phase,
            direction,
            lag_bytes,
            follower_running: running,
        })
    }

    fn request_handover(&mut self, wait: Duration) -> Result<(), ConnectorError> {
        self.follower_store()
            .execute(
                "UPDATE _cutover.replication SET handover_requested = true",
                &[],
            )
            .map_err(|e| map("asking the running sync to hand over", e))?;
        let slot = self.following().0.slot.clone();
        let deadline = Instant::now() + wait;
        loop {
            let (from, _) = self.old_new();
            if Self::slot_active(from, &slot)? != Some(true) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(ConnectorError::new(
                    ErrorKind::Busy,
                    format!(
                        "a sync is still reading replication slot {slot} after {}s; stop it (Ctrl-C), then switch again",
                        wait.as_secs()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn clear_handover(&mut self) -> Result<(), ConnectorError> {
        self.follower_store()
            .execute(
                "UPDATE _cutover.replication SET handover_requested = false",
                &[],
            )
            .map_err(|e| map("withdrawing the hand-over request", e))
            .map(|_| ())
    }

    fn fence(&mut self, fence: &Fence) -> Result<u64, ConnectorError> {
        let ctx = |what: &str| format!("fencing writes on the primary: {what}");
        // On the new primary's own clock (its sessions' backend_start is compared with it).
        let (_, to) = self.old_new();
        self.paused_since = Some(
            to.query_one("SELECT clock_timestamp()::text", &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| map(ctx("reading the new primary's clock"), e))?,
        );
        self.opened_at = None;
        let (from, _) = self.old_new();
        let ended: i64 = match fence {
            Fence::ReadOnly => {
                from.batch_execute(
                    "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
                )
                .map_err(|e| map(ctx("making the database read-only (needs its owner or a superuser)"), e))?;
                end_sessions(
                    from,
                    "datname = current_database() AND backend_type = 'client backend' AND application_name NOT LIKE 'cutover%'",
                    &[],
                )
                .map_err(|e| map(ctx("ending sessions"), e))?
            }
            Fence::Role(role) => {
                from.batch_execute(&format!("ALTER ROLE {} NOLOGIN", ident(role)))
                    .map_err(|e| map(ctx(&format!("stopping role {role} from logging in")), e))?;
                end_sessions(
                    from,
                    "datname = current_database() AND usename = $1",
                    &[role],
                )
                .map_err(|e| map(ctx(&format!("ending role {role}'s sessions")), e))?
            }
            Fence::Revoke => {
                let side = self.old_side();
                self.revoke(side)?
            }
            Fence::None => 0,
        };
        Ok(ended.max(0) as u64)
    }

    fn lift_fence(&mut self, fence: &Fence) -> Result<(), ConnectorError> {
        if *fence == Fence::Revoke {
            let side = self.old_side();
            return self.regrant(side);
        }
        let (from, _) = self.old_new();
        lift(from, fence)
    }

    fn primary_position(&mut self) -> Result<Position, ConnectorError> {
        let (from, _) = self.old_new();
        // Every commit made before the fence, also those not yet written out (asynchronous).
        Ok(lsn::position(committed_position(from)?))
    }

    fn lock(&mut self) -> Result<(), ConnectorError> {
        let got: bool = self
            .tgt
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended('cutover-switch:' || $1, 0))",
                &[&self.forward.slot],
            )
            .and_then(|r| r.try_get(0))
            .map_err(|e| map("taking the migration's switch lock", e))?;
        if got {
            return Ok(());
        }
        let holder = self.journal().ok().flatten();
        Err(ConnectorError::new(
            ErrorKind::Busy,
            match holder {
                Some(j) => format!(
                    "another cutover process (pid {}) is running a switch of this migration now (at step {}): wait for it to finish, or stop it (Ctrl-C undoes it)",
                    j.pid, j.step
                ),
                None => "another cutover process is running a switch or rollback of this migration now: wait for it to finish".to_owned(),
            },
        ))
    }

    fn unlock(&mut self) -> Result<(), ConnectorError> {
        self.tgt
            .query_one(
                "SELECT pg_advisory_unlock(hashtextextended('cutover-switch:' || $1, 0))",
                &[&self.forward.slot],
            )
            .map_err(|e| map("releasing the migration's switch lock", e))
            .map(drop)
    }

    fn journal(&mut self) -> Result<Option<Journal>, ConnectorError> {
        read_journal(&mut self.tgt)
    }

    fn record(&mut self, journal: &Journal) -> Result<(), ConnectorError> {
        self.tgt
            .execute(
                "INSERT INTO _cutover.switch_journal (id, want, fence, step, pid) VALUES (1, $1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET want = EXCLUDED.want, fence = EXCLUDED.fence,
                        step = EXCLUDED.step, pid = EXCLUDED.pid, updated_at = now()",
                &[
                    &journal.want.to_string(),
                    &journal.fence.to_string(),
                    &journal.step.name(),
                    &(journal.pid as i32),
                ],
            )
            .map_err(|e| map(format!("journaling the switch step {}", journal.step), e))
            .map(drop)
    }

    fn clear_journal(&mut self) -> Result<(), ConnectorError> {
        self.tgt
            .batch_execute("DELETE FROM _cutover.switch_journal")
            .map_err(|e| map("clearing the switch journal", e))
    }

    fn prepare_way_back(&mut self) -> Result<(), ConnectorError> {
        let tables = self.tables_sql()?;
        let way_back = self.following().1.clone();
        match self.orientation {
            Orientation::Switch => {
                // Capture on the target; the reverse follower's control store on the source,
                // every table already copied.
                Self::create_capture(&mut self.tgt, &way_back, &tables)?;
                let ctx = "preparing the way back: the source's control store";
                // How the source's triggers and rules stand now: disabled while it follows,
                // enabled as they are now if a rollback makes it the primary again.
                let switches = crate::schema::switches(&mut self.src)?;
                let mut tx = self.src.transaction().map_err(|e| map(ctx, e))?;
                tx.batch_execute("DROP SCHEMA IF EXISTS _cutover CASCADE")
                    .map_err(|e| map(ctx, e))?;
                crate::state::migrate(&mut tx, "the source")?;
                tx.execute(
                    "INSERT INTO _cutover.migration (id, source, phase, mode) VALUES (1, $1, 'replicating', 'sync')",
                    &[&self.target.redacted()],
                )
                .map_err(|e| map(ctx, e))?;
                for t in &tables {
                    tx.execute(
                        "INSERT INTO _cutover.chunks (table_schema, table_name, chunk, done, done_at)
                         SELECT n.nspname, c.relname, 0, true, now() FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                          WHERE c.oid = $1::text::regclass",
                        &[t],
                    )
                    .map_err(|e| map(ctx, e))?;
                }
                tx.execute(
                    "INSERT INTO _cutover.replication (id, slot, publication, direction) VALUES (1, $1, $2, 'reverse')",
                    &[&way_back.slot, &way_back.publication],
                )
                .map_err(|e| map(ctx, e))?;
                let switches: Vec<(&str, crate::schema::Switches)> = switches
                    .iter()
                    .map(|(name, s)| (name.as_str(), s.clone()))
                    .collect();
                copy::record_trigger_steps(&mut tx, 0, &switches, true)?;
                tx.commit().map_err(|e| map(ctx, e))?;
            }
            Orientation::Rollback => Self::create_capture(&mut self.src, &way_back, &tables)?,
        }
        Ok(())
    }

    fn undo_way_back(&mut self) -> Result<(), ConnectorError> {
        let way_back = self.following().1.clone();
        match self.orientation {
            Orientation::Switch => {
                Self::drop_capture(&mut self.tgt, &way_back)?;
                self.src
                    .batch_execute("DROP SCHEMA IF EXISTS _cutover CASCADE")
                    .map_err(|e| map("removing the source's control store", e))
            }
            Orientation::Rollback => Self::drop_capture(&mut self.src, &way_back),
        }
    }

    fn sync_sequences(&mut self) -> Result<(), ConnectorError> {
        let schema = match self.schema.take() {
            Some(s) => s,
            None => schema::read(&mut self.old_primary().connect()?, &self.selection)?,
        };
        let (from, to) = self.old_new();
        let result = copy::set_sequences(from, to, &schema);
        self.schema = Some(schema);
        result
    }

    fn flip(&mut self) -> Result<Direction, ConnectorError> {
        let (_, to) = self.old_new();
        // After the drain's own commits (asynchronous ones too), before any of the application's.
        let at = lsn::position(committed_position(to)?).to_string();
        let (store, from_phase, to_phase, direction) = match self.orientation {
            // The reverse follower starts where the target stands now: nothing written before
            // (the drain's own writes) flows back.
            Orientation::Switch => (&mut self.src, "replicating", "switched", Direction::Reverse),
            Orientation::Rollback => (&mut self.tgt, "switched", "replicating", Direction::Forward),
        };
        store
            .execute(
                "UPDATE _cutover.replication SET position = $1, handover_requested = false, updated_at = now()",
                &[&at],
            )
            .map_err(|e| map("recording where the way back starts", e))?;
        // The point of no return: the phase changes by compare-and-swap.
        let mut tx = self
            .tgt
            .transaction()
            .map_err(|e| map("recording the switch", e))?;
        let n = tx
            .execute(
                "UPDATE _cutover.migration SET phase = $2, updated_at = now() WHERE phase = $1",
                &[&from_phase, &to_phase],
            )
            .map_err(|e| map("recording the switch", e))?;
        if n != 1 {
            return Err(ConnectorError::new(
                ErrorKind::Conflict,
                format!("the migration is no longer in phase {from_phase} (another switch or rollback ran?); nothing was switched"),
            ));
        }
        tx.execute(
            "UPDATE _cutover.replication SET direction = $1, handover_requested = false, updated_at = now()",
            &[&direction.to_string()],
        )
        .map_err(|e| map("recording the switch", e))?;
        tx.commit().map_err(|e| map("recording the switch", e))?;
        Ok(direction)
    }

    fn open_new_primary(&mut self) -> Result<(), ConnectorError> {
        let fence = self.recorded_fence()?;
        let to_side = match self.old_side() {
            Side::Source => Side::Target,
            Side::Target => Side::Source,
        };
        // Whatever fenced it before (a rollback's fence, or sync's read-only default).
        self.regrant(to_side)?;
        let (from, to) = self.old_new();
        // Its triggers and rules act on the application's writes again, as on the old primary.
        match copy::enable_triggers(to) {
            Ok(0) => {}
            Ok(enabled) => tracing::info!(enabled, "triggers and rules enabled on the new primary"),
            Err(e) => {
                tracing::warn!(error = %e, "could not enable the new primary's triggers and rules: enable them by hand (`SELECT sql FROM _cutover.steps WHERE phase = 'enable' AND NOT done`)")
            }
        }
        // And no longer on the old primary, which now follows: they must not act on the rows
        // the way back replicates. A role that may not alter its tables leaves them enabled
        // (an apply session with session_replication_role = replica still keeps ordinary ones
        // from firing).
        if let Err(e) = copy::disable_triggers(from) {
            tracing::warn!(error = %e, "could not disable the old primary's triggers and rules: they may act on the rows replicated back to it");
        }
        lift(to, &Fence::ReadOnly)?;
        if let Some(f @ Fence::Role(_)) = fence {
            lift(to, &f)?;
        }
        // Sessions that start from now on take writes.
        let opened: String = to
            .query_one("SELECT clock_timestamp()::text", &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| map("reading the new primary's clock", e))?;
        self.opened_at = Some(opened);
        Ok(())
    }

    fn end_paused_sessions(&mut self) -> Result<u64, ConnectorError> {
        let (Some(since), Some(until)) = (self.paused_since.clone(), self.opened_at.clone()) else {
            return Ok(0);
        };
        let (_, to) = self.old_new();
        end_sessions(
            to,
            "datname = current_database() AND backend_type = 'client backend' AND application_name NOT LIKE 'cutover%'
             AND backend_start >= $1::text::timestamptz AND backend_start < $2::text::timestamptz",
            &[&since, &until],
        )
        .map(|n| n.max(0) as u64)
        .map_err(|e| {
            map(
                "ending the sessions that began on the new primary while it refused writes",
                e,
            )
        })
    }

    fn watched_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        keys_in(
            self.follower_store(),
            "SELECT table_schema, table_name, key FROM _cutover.watch",
            "reading the rows changed during the copy",
        )
    }

    fn recent_keys(&mut self) -> Result<Vec<(TableName, Key)>, ConnectorError> {
        keys_in(
            self.follower_store(),
            "SELECT table_schema, table_name, key FROM _cutover.recent ORDER BY n",
            "reading the rows changed last",
        )
    }

    fn retire_old_direction(&mut self) -> Result<(), ConnectorError> {
        let old = self.following().0.clone();
        match self.orientation {
            Orientation::Switch => Self::drop_capture(&mut self.src, &old),
            Orientation::Rollback => {
                Self::drop_capture(&mut self.tgt, &old)?;
                self.src
                    .batch_execute("DROP SCHEMA IF EXISTS _cutover CASCADE")
                    .map_err(|e| map("removing the source's reverse control store", e))
            }
        }
    }
}

/// The switch between two PostgreSQL databases, as [`crate::PgConnect`] offers it to a
/// PostgreSQL source ([`cutover_connector::TargetFactory::switchover`]).
pub struct PgSwitchover {
    /// The migration's source and target as opened (forward capture names).
    pub source: crate::PgConnect,
    pub target: crate::PgConnect,
}

impl PgSwitchover {
    /// `from` following nothing and `peer` taking its schema from it, with capture `names`.
    fn side(
        from: &crate::PgConnect,
        peer: &crate::PgConnect,
        names: &CaptureNames,
    ) -> crate::PgConnect {
        crate::PgConnect {
            endpoint: from.endpoint.clone(),
            peer: Some(peer.endpoint.clone()),
            names: names.clone(),
            truncate: false,
            ..from.clone()
        }
    }
}

impl cutover_connector::Switchover for PgSwitchover {
    fn sides(
        &self,
        orientation: Orientation,
    ) -> Result<cutover_connector::SwitchSides, ConnectorError> {
        let (s, t) = (&self.source, &self.target);
        Ok(match orientation {
            Orientation::Switch => (
                Box::new(Self::side(s, t, &s.names)),
                Box::new(Self::side(t, s, &s.names)),
            ),
            Orientation::Rollback => {
                let rev = reverse_names(&s.names);
                (
                    Box::new(Self::side(t, s, &rev)),
                    Box::new(Self::side(s, t, &rev)),
                )
            }
        })
    }

    fn control(
        &self,
        orientation: Orientation,
    ) -> Result<Box<dyn SwitchControl + Send>, ConnectorError> {
        Ok(Box::new(PgSwitch::open(
            orientation,
            &self.source.endpoint,
            &self.target.endpoint,
            &self.source.selection,
            &self.source.names,
        )?))
    }

    fn new_primary(&self, orientation: Orientation) -> String {
        match orientation {
            Orientation::Switch => self.target.endpoint.redacted().to_owned(),
            Orientation::Rollback => self.source.endpoint.redacted().to_owned(),
        }
    }

    fn direction(&self) -> Result<Direction, ConnectorError> {
        direction(&self.target.endpoint)
    }

    fn cleanup(&self) -> Result<String, ConnectorError> {
        cleanup(
            &self.source.endpoint,
            &self.target.endpoint,
            &self.source.names,
        )
    }
}

/// (table, key) rows of a control-store query whose keys are the model's binary encoding.
fn keys_in(
    client: &mut Client,
    sql: &str,
    ctx: &str,
) -> Result<Vec<(TableName, Key)>, ConnectorError> {
    let rows = match client.query(sql, &[]) {
        Ok(rows) => rows,
        // A control store from before these tables existed has none.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(map(ctx, e)),
    };
    rows.iter()
        .map(|r| {
            let schema: String = r.try_get(0).map_err(|e| map(ctx, e))?;
            let name: String = r.try_get(1).map_err(|e| map(ctx, e))?;
            let bytes: Vec<u8> = r.try_get(2).map_err(|e| map(ctx, e))?;
            let key = cutover_model::decode_row(&bytes).map_err(|e| {
                ConnectorError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{ctx}: a key of {schema}.{name} in the control store is unreadable ({e})"
                    ),
                )
            })?;
            let schema = (!schema.is_empty()).then_some(schema.as_str());
            Ok((TableName::new(schema, &name), key))
        })
        .collect()
}

/// Ends every session matching `filter` (not this one) and waits until they are gone: signals
/// them all at once, then watches them exit (a session ended mid-transaction rolls it back).
fn end_sessions(
    client: &mut Client,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<i64, tokio_postgres::Error> {
    let ended: Vec<i32> = client
        .query(
            &format!(
                // Materialized first: in one WHERE clause, nothing stops the planner from
                // calling pg_terminate_backend before the filter (ending other databases'
                // sessions).
                "WITH victims AS MATERIALIZED (SELECT pid FROM pg_stat_activity WHERE {filter} AND pid <> pg_backend_pid())
                 SELECT pid FROM victims WHERE pg_terminate_backend(pid)"
            ),
            params,
        )?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ended.is_empty() && Instant::now() < deadline {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)",
                &[&ended],
            )?
            .get(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(ended.len() as i64)
}

/// A role in GRANT/REVOKE: quoted, except the keyword PUBLIC.
fn grantee(role: &str) -> String {
    if role == "PUBLIC" {
        role.to_owned()
    } else {
        ident(role)
    }
}

fn lift(client: &mut Client, fence: &Fence) -> Result<(), ConnectorError> {
    let ctx = "lifting the fence";
    match fence {
        Fence::ReadOnly => client
            .batch_execute(
                "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', current_database()); END $$",
            )
            .map_err(|e| map(ctx, e)),
        Fence::Role(role) => client
            .batch_execute(&format!("ALTER ROLE {} LOGIN", ident(role)))
            .map_err(|e| map(ctx, e)),
        // Given back by `PgSwitch::regrant`, which knows what was taken.
        Fence::Revoke | Fence::None => Ok(()),
    }
}

/// The objects of the connected database an application may rely on besides its tables, as
/// `kind name` (names schema-qualified, functions with their argument types), for
/// [`SwitchControl::missing_objects`].
fn database_objects(
    client: &mut Client,
) -> Result<std::collections::BTreeSet<String>, ConnectorError> {
    let ctx = "listing the database's views, functions, triggers and other objects";
    let mut tx = client.transaction().map_err(|e| map(ctx, e))?;
    tx.batch_execute("SET LOCAL search_path = pg_catalog")
        .map_err(|e| map(ctx, e))?;
    let user_ns = "n.nspname NOT IN ('pg_catalog', 'information_schema', '_cutover') \
                   AND n.nspname NOT LIKE 'pg\\_%'";
    let not_extension = |class: &str, id: &str| {
        format!(
            "NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = '{class}'::regclass \
             AND d.objid = {id} AND d.deptype = 'e')"
        )
    };
    let sql = format!(
        "SELECT 'schema ' || n.nspname FROM pg_namespace n WHERE {user_ns}
         UNION ALL
         SELECT CASE c.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' ELSE 'sequence ' END
                || c.oid::regclass::text
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('v', 'm', 'S') AND {user_ns} AND {}
         UNION ALL
         SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' ELSE 'function ' END || p.oid::regprocedure::text
           FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE {user_ns} AND {}
         UNION ALL
         SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass::text
           FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE NOT t.tgisinternal AND {user_ns}
         UNION ALL
         SELECT 'rule ' || r.rulename || ' on ' || r.ev_class::regclass::text
           FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE r.rulename <> '_RETURN' AND {user_ns}
         UNION ALL
         SELECT 'extension ' || extname FROM pg_extension WHERE extname <> 'plpgsql'",
        not_extension("pg_class", "c.oid"),
        not_extension("pg_proc", "p.oid"),
    );
    let rows = tx.query(&sql, &[]).map_err(|e| map(ctx, e))?;
    let mut out = std::collections::BTreeSet::new();
    for r in rows {
        out.insert(r.try_get::<_, String>(0).map_err(|e| map(ctx, e))?);
    }
    tx.commit().map_err(|e| map(ctx, e))?;
    Ok(out)
}

/// The switch journal's entry on a target (`None`: no switch under way, or no store).
pub(crate) fn read_journal(client: &mut Client) -> Result<Option<Journal>, ConnectorError> {
    let ctx = "reading the switch journal";
    let row = match client.query_opt(
        "SELECT want, fence, step, pid FROM _cutover.switch_journal",
        &[],
    ) {
        Ok(row) => row,
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => {
            return Ok(None)
        }
        Err(e) => return Err(map(ctx, e)),
    };
    let Some(r) = row else { return Ok(None) };
    let text = |i: usize| r.try_get::<_, String>(i).map_err(|e| map(ctx, e));
    let bad = |what: &str, v: &str| {
        ConnectorError::new(
            ErrorKind::InvalidInput,
            format!("{ctx}: unreadable {what} {v:?}; run `cutover switch --abort` after checking both databases by hand"),
        )
    };
    let want = match text(0)?.as_str() {
        "reverse" => Direction::Reverse,
        "forward" => Direction::Forward,
        other => return Err(bad("direction", other)),
    };
    let fence_text = text(1)?;
    let fence = fence_text.parse().map_err(|_| bad("fence", &fence_text))?;
    let step_text = text(2)?;
    let step = SwitchStep::parse(&step_text).ok_or_else(|| bad("step", &step_text))?;
    let pid: i32 = r.try_get(3).map_err(|e| map(ctx, e))?;
    Ok(Some(Journal {
        want,
        fence,
        step,
        pid: pid.max(0) as u32,
    }))
}
