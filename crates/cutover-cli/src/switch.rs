//! `cutover switch` and `cutover rollback`.

use std::time::Duration;

use anyhow::bail;
use clap::Args;
use cutover_connector::{Direction, Fence, Orientation, Switchover};
use cutover_switch::{Step, SwitchError, SwitchOptions, SwitchReport};

use crate::{Endpoints, EXIT_ERROR};

#[derive(Args)]
pub struct SwitchArgs {
    #[command(flatten)]
    endpoints: Endpoints,
    #[command(flatten)]
    tables: crate::TableArgs,
    /// How to stop writes on the old primary: read-only (the database refuses new write
    /// transactions and its sessions are ended), revoke (every role but cutover's loses
    /// INSERT/UPDATE/DELETE/TRUNCATE on the migrated tables, given back on undo or rollback; a
    /// session cannot opt out of it as it can of read-only), role:NAME (that role may not log
    /// in and its sessions are ended), or none (the application has stopped writing). Whatever
    /// the fence, the switch is undone if a change reached the migrated tables after it.
    #[arg(long, default_value = "read-only", value_parser = parse_fence)]
    fence: Fence,
    /// A shell command run during the pause, just before the flip: point the application at
    /// the new primary (config, DNS, pooler). It gets CUTOVER_DIRECTION and CUTOVER_NEW_PRIMARY
    /// (URL without password). A non-zero exit undoes the switch.
    #[arg(long, value_name = "CMD")]
    on_switch: Option<String>,
    /// Undo the switch instead of pausing writes longer than this.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    max_pause_ms: u64,
    /// Refuse to start if the follower is more than this many bytes (of WAL) behind.
    #[arg(long, default_value_t = 16 << 20, value_name = "BYTES")]
    max_lag: u64,
    /// Verify at most this many of the most recently changed rows during the pause.
    #[arg(long, default_value_t = 2000, value_name = "ROWS")]
    verify_recent: usize,
    /// The migration's name, as given to sync [default: the target's database name].
    #[arg(long)]
    name: Option<String>,
    /// Print one JSON document (write_pause_ms, writes_refused_ms, drain_ms, verified_rows,
    /// direction, steps, each with its start_ms since the epoch).
    #[arg(long)]
    json: bool,
    /// Only finish or undo a switch (or rollback) that was interrupted (a crash, a kill, an
    /// undo that could not finish): past its point of no return it is completed, before it
    /// the old primary takes writes again. Switches nothing new.
    #[arg(long)]
    abort: bool,
    /// Switch even though the new primary lacks views, functions, triggers, rules, sequences,
    /// schemas or extensions the old one has (listed); without it the switch refuses, since the
    /// application could break on them after the flip.
    #[arg(long)]
    allow_missing_objects: bool,
}

fn parse_fence(s: &str) -> Result<Fence, String> {
    s.parse()
}

pub fn switch(args: &SwitchArgs) -> anyhow::Result<u8> {
    run(args, Orientation::Switch)
}

pub fn rollback(args: &SwitchArgs) -> anyhow::Result<u8> {
    run(args, Orientation::Rollback)
}

fn run(args: &SwitchArgs, orientation: Orientation) -> anyhow::Result<u8> {
    let (ends, file) = args.endpoints.resolve()?;
    let (source, target) = (ends.source.clone(), ends.target.clone());
    let open = args
        .tables
        .open_options(&file, args.name.as_ref(), Default::default());
    let (s, t) = crate::endpoint::engines().pair(&source, &target, &open, &ends.env)?;
    let Some(pair) = t.switchover(s.as_ref()) else {
        bail!(
            "{} → {}: these two engines cannot trade places as primary (a switch needs change \
             capture both ways and a fence on the old primary); switch and rollback work between \
             two PostgreSQL databases so far. The demo shows the SQLite switch",
            s.describe(),
            t.describe()
        );
    };
    let mut sync = cutover_pipeline::SyncOptions::default();
    if let Some(j) = file.jobs {
        sync.jobs = j.max(1);
    }
    let want = match orientation {
        Orientation::Switch => Direction::Reverse,
        Orientation::Rollback => Direction::Forward,
    };
    let new_primary = pair.new_primary(orientation);
    let mut opts = SwitchOptions::new(want);
    opts.fence = args.fence.clone();
    opts.on_switch = args.on_switch.clone();
    opts.on_switch_env = vec![
        ("CUTOVER_DIRECTION".into(), want.to_string()),
        ("CUTOVER_NEW_PRIMARY".into(), new_primary.clone()),
    ];
    opts.max_pause = Some(Duration::from_millis(args.max_pause_ms));
    opts.max_lag = args.max_lag;
    opts.verify_recent = args.verify_recent;
    opts.allow_missing_objects = args.allow_missing_objects;
    let verb = orientation.verb();
    let json = args.json;
    let mut on_step = |step: &Step| {
        if !json {
            eprintln!(
                "{verb}: {:<22} {:>9.1} ms{}  {}",
                step.name,
                step.elapsed.as_secs_f64() * 1e3,
                if step.paused { " (paused)" } else { "" },
                step.detail
            );
        }
    };
    if args.abort {
        return match recover(pair.as_ref()) {
            Ok(Some(done)) => {
                println!("{done}");
                Ok(0)
            }
            Ok(None) => {
                println!("no interrupted switch or rollback to finish or undo");
                Ok(0)
            }
            Err(e) => {
                eprintln!("error: {e}");
                Ok(EXIT_ERROR)
            }
        };
    }
    let (primary, follower) = pair.sides(orientation)?;
    let mut control = pair.control(orientation)?;
    if orientation == Orientation::Switch {
        control.record_fence(&args.fence)?;
    }
    // Ctrl-C or SIGTERM before the flip undoes the switch; after it, the switch finishes.
    let cancel = crate::signals::install(
        Duration::from_secs(60),
        "The switch is journaled: `cutover switch --abort` (or `cutover sync`) finishes or undoes it.",
    );
    match cutover_switch::run(
        primary.as_ref(),
        follower.as_ref(),
        control.as_mut(),
        &opts,
        &sync,
        &cancel,
        &mut on_step,
    ) {
        Ok(report) => {
            print_report(verb, &report, json, &new_primary);
            Ok(0)
        }
        Err(SwitchError::Refused(why)) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "switched": false, "refused": why })
                );
            }
            eprintln!("error: {why}");
            Ok(EXIT_ERROR)
        }
        Err(e) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "switched": false, "error": e.to_string() })
                );
            }
            eprintln!("error: {e}");
            Ok(EXIT_ERROR)
        }
    }
}

/// Finishes or undoes an interrupted switch or rollback of the migration (see
/// [`cutover_switch::recover`]), whichever way it was going.
pub fn recover(pair: &dyn Switchover) -> Result<Option<String>, SwitchError> {
    let refused = |e: cutover_connector::ConnectorError| SwitchError::Refused(e.to_string());
    let mut probe = pair.control(Orientation::Switch).map_err(refused)?;
    let orientation = match probe.journal().map_err(refused)? {
        None => return Ok(None),
        Some(j) if j.want == Direction::Forward => Orientation::Rollback,
        Some(_) => Orientation::Switch,
    };
    drop(probe);
    let mut control = pair.control(orientation).map_err(refused)?;
    cutover_switch::recover(control.as_mut())
}

/// Milliseconds since the Unix epoch (with microseconds), for lining steps up with other clocks.
fn epoch_ms(t: std::time::SystemTime) -> f64 {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn print_report(verb: &str, r: &SwitchReport, json: bool, new_primary: &str) {
    let ms = |d: Duration| (d.as_secs_f64() * 1e4).round() / 10.0;
    if json {
        let steps: Vec<serde_json::Value> = r
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "step": s.name,
                    "ms": ms(s.elapsed),
                    "start_ms": epoch_ms(s.started),
                    "paused": s.paused,
                    "detail": s.detail,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::json!({
                "switched": true,
                "direction": r.direction.to_string(),
                "new_primary": new_primary,
                "write_pause_ms": ms(r.write_pause),
                "writes_refused_ms": ms(r.writes_refused),
                "paused_sessions_ended": r.paused_sessions_ended,
                "drain_ms": ms(r.drain),
                "verified_rows": r.verified_rows,
                "verified_copy_rows": r.verified_copy_rows,
                "sessions_ended": r.sessions_ended,
                "fenced_at": r.fenced_at.to_string(),
                "steps": steps,
            })
        );
        return;
    }
    println!(
        "{verb} done: writes now go to {} (write pause {} ms; every session takes writes after {} ms, {} begun during the pause ended; drain {} ms, {} recently changed rows verified in the pause, {} rows changed during the copy verified before it, {} sessions ended)",
        new_primary,
        ms(r.write_pause),
        ms(r.writes_refused),
        r.paused_sessions_ended,
        ms(r.drain),
        r.verified_rows,
        r.verified_copy_rows,
        r.sessions_ended
    );
    println!(
        "changes now flow {}: a `cutover sync` that handed over goes on in this direction by itself (if none runs, start the same `cutover sync` command); {}",
        r.direction,
        match r.direction {
            Direction::Reverse => "`cutover rollback` goes back without losing them",
            Direction::Forward => "`cutover switch` moves writes to the target again",
        }
    );
}
