//! Switch and rollback: move the application's writes from one database to the other with a
//! measured pause, and keep a way back.
//!
//! ```text
//!  recover an interrupted switch (journal)  →  check (phase, lag)  →  hand-over from a running
//!  sync  →  follow in-process until caught up  →  verify the rows changed during the copy
//!  →  prepare the way back (capture on the new primary)  →  close in (the follower applies
//!  what the primary committed a moment ago, so the drain in the pause is short)
//!  ┌ pause ───────────────────────────────────────────────────────────────────────────────┐
//!  │ fence the old primary → sequences → --on-switch command → drain to where it stands now │
//!  │ → fence check (no change after the fence) → verify recently changed rows               │
//!  │ → FLIP (point of no return) → open the new primary → end its sessions begun in pause   │
//!  └────────────────────────────────────────────────────────────────────────────────────────┘
//!  →  retire the old direction's capture
//! ```
//! Every step that changes something is journaled before it runs, under the migration's switch
//! lock. Any failure before the flip (and Ctrl-C/SIGTERM) undoes what the journal says was
//! begun (the fence is lifted, the way back removed, the hand-over withdrawn) and leaves the
//! old primary writable; a crash leaves the journal to [`recover`], which the next switch,
//! rollback, sync or `switch --abort` runs. `--max-pause-ms` turns an over-long pause into such
//! a failure.

mod decide;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use cutover_connector::{
    CancellationToken, Connect, ConnectorError, Direction, ErrorKind, Fence, Journal,
    PositionOrderExt, Progress, Source, SwitchControl, SwitchStep,
};
use cutover_model::{Key, Position, TableName, TableSchema};
use cutover_pipeline::{Control, SyncOptions, SyncReport};

pub use decide::{decide, Decision, Policy};

#[derive(Debug, Clone)]
pub struct SwitchOptions {
    /// Switch to the target ([`Direction::Reverse`] afterwards) or roll back ([`Direction::Forward`]).
    pub want: Direction,
    pub fence: Fence,
    /// A shell command run just before the flip (e.g. pointing the application at the new
    /// primary); a failure undoes the switch.
    pub on_switch: Option<String>,
    /// Environment for `on_switch`.
    pub on_switch_env: Vec<(String, String)>,
    /// Undo the switch rather than pause writes longer than this.
    pub max_pause: Option<Duration>,
    /// Refuse to start when the follower is further behind than this (bytes).
    pub max_lag: u64,
    /// Verify at most this many of the most recently changed rows during the pause.
    pub verify_recent: usize,
    /// How long to wait for the in-process follower to catch up before fencing.
    pub catch_up_timeout: Duration,
    /// How long to wait for a running sync to hand over.
    pub handover_wait: Duration,
    /// Switch even though the new primary lacks objects of the old one
    /// ([`SwitchControl::missing_objects`]); refused otherwise.
    pub allow_missing_objects: bool,
}

impl SwitchOptions {
    pub fn new(want: Direction) -> SwitchOptions {
        SwitchOptions {
            want,
            fence: Fence::ReadOnly,
            on_switch: None,
            on_switch_env: Vec::new(),
            max_pause: None,
            max_lag: 16 << 20,
            verify_recent: 2_000,
            catch_up_timeout: Duration::from_secs(120),
            handover_wait: Duration::from_secs(30),
            allow_missing_objects: false,
        }
    }
}

/// How long a wait on the follower's progress (close-in, drain) sleeps at most before it looks
/// at the clock and at a stop again; the follower's moves wake it at once.
const POLL: Duration = Duration::from_millis(5);

/// One step, as it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub name: &'static str,
    /// When it started, by the wall clock (to line it up with what clients saw).
    pub started: SystemTime,
    pub elapsed: Duration,
    /// Inside the write pause.
    pub paused: bool,
    pub detail: String,
}

#[derive(Debug, Clone)]
pub struct SwitchReport {
    /// Which way changes flow now.
    pub direction: Direction,
    /// From the fence to the new primary taking writes (from sessions that start then).
    pub write_pause: Duration,
    /// From the fence until every session of the application on the new primary takes writes:
    /// those that began during the pause (read-only, as the new primary was) are ended then.
    /// The longest an application write can be refused; an application sees this plus its own
    /// time to notice and reconnect.
    pub writes_refused: Duration,
    /// Sessions on the new primary that began during the pause, ended once it opened.
    pub paused_sessions_ended: u64,
    pub drain: Duration,
    /// Rows verified inside the pause: the ones changed last.
    pub verified_rows: u64,
    /// Rows verified before the fence: the ones changed while their table was copied.
    pub verified_copy_rows: u64,
    pub sessions_ended: u64,
    /// Where the old primary stood when fenced; the new primary has everything up to it.
    pub fenced_at: Position,
    pub steps: Vec<Step>,
}

#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// Nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// Another process is running a switch of this migration now; nothing was changed.
    #[error("{0}")]
    Running(String),
    /// A step failed; everything before the flip was undone (see `undo`).
    #[error("{step} failed: {error}; {undo}")]
    Failed {
        step: &'static str,
        error: String,
        kind: ErrorKind,
        /// What was undone, or what could not be.
        undo: String,
    },
}

impl SwitchError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            SwitchError::Refused(_) => ErrorKind::Conflict,
            SwitchError::Running(_) => ErrorKind::Busy,
            SwitchError::Failed { kind, .. } => *kind,
        }
    }
}

/// Runs a switch (or rollback) of the migration whose changes flow from `primary` to
/// `follower` now, driving `control` (the engine's steps) and following changes in-process.
/// `on_step` hears of each step as it ends. Cancelling `cancel` (Ctrl-C, SIGTERM) before the flip
/// undoes the switch; after the flip it is finished.
///
/// Each step that changes something is journaled in the control store before it runs, under
/// the migration's switch lock, so a switch interrupted anywhere, even by `kill -9`, is
/// completed (past the flip) or undone (before it) by the next switch, rollback, sync or
/// `switch --abort` ([`recover`]).
pub fn run<C: SwitchControl + ?Sized>(
    primary: &dyn Connect,
    follower: &dyn Connect,
    control: &mut C,
    opts: &SwitchOptions,
    sync: &SyncOptions,
    cancel: &CancellationToken,
    on_step: &mut dyn FnMut(&Step),
) -> Result<SwitchReport, SwitchError> {
    lock(control)?;
    let result = run_locked(primary, follower, control, opts, sync, cancel, on_step);
    if let Err(e) = control.unlock() {
        tracing::debug!(error = %e, "the switch lock is released when the session ends");
    }
    result
}

fn lock<C: SwitchControl + ?Sized>(control: &mut C) -> Result<(), SwitchError> {
    control.lock().map_err(|e| match e.kind() {
        ErrorKind::Busy => SwitchError::Running(e.to_string()),
        _ => SwitchError::Refused(e.to_string()),
    })
}

fn run_locked<C: SwitchControl + ?Sized>(
    primary: &dyn Connect,
    follower: &dyn Connect,
    control: &mut C,
    opts: &SwitchOptions,
    sync: &SyncOptions,
    cancel: &CancellationToken,
    on_step: &mut dyn FnMut(&Step),
) -> Result<SwitchReport, SwitchError> {
    let mut steps: Vec<Step> = Vec::new();
    let mut record = |steps: &mut Vec<Step>, name, t: Instant, paused, detail: String| {
        let elapsed = t.elapsed();
        let s = Step {
            name,
            started: SystemTime::now() - elapsed,
            elapsed,
            paused,
            detail,
        };
        tracing::info!(
            step = name,
            ms = s.elapsed.as_secs_f64() * 1e3,
            "{}",
            s.detail
        );
        on_step(&s);
        steps.push(s);
    };

    let t = Instant::now();
    if let Some(note) = recover_locked(control)? {
        record(&mut steps, "recover", t, false, note);
    }
    let t = Instant::now();
    let obs = control
        .observe()
        .map_err(|e| SwitchError::Refused(e.to_string()))?;
    let policy = Policy {
        want: opts.want,
        max_lag: opts.max_lag,
    };
    if let Decision::Refuse(why) = decide(&obs, &policy) {
        return Err(SwitchError::Refused(why));
    }
    let missing = control
        .missing_objects()
        .map_err(|e| SwitchError::Refused(e.to_string()))?;
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(20).map(String::as_str).collect();
        let more = missing.len().saturating_sub(shown.len());
        let list = format!(
            "{}{}",
            shown.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        );
        if !opts.allow_missing_objects {
            return Err(SwitchError::Refused(format!(
                "the new primary lacks {} object(s) the application may use: {list}. Create them \
                 there (cutover copies tables, their keys, indexes, constraints and sequences; \
                 not these yet), or pass --allow-missing-objects to switch without them",
                missing.len()
            )));
        }
        tracing::warn!(objects = %list, "switching although the new primary lacks these objects (--allow-missing-objects)");
    }
    record(
        &mut steps,
        "check",
        t,
        false,
        format!(
            "phase {}, follower {} bytes behind{}",
            obs.phase,
            obs.lag_bytes.unwrap_or(0),
            if obs.follower_running {
                ", running"
            } else {
                ""
            }
        ),
    );

    let mut journal = Journal {
        want: opts.want,
        fence: opts.fence.clone(),
        step: SwitchStep::Handover,
        pid: std::process::id(),
    };
    let fail = |control: &mut C,
                journal: Option<&Journal>,
                step: &'static str,
                e: String,
                kind: ErrorKind| {
        SwitchError::Failed {
            step,
            error: e,
            kind,
            undo: match journal {
                Some(j) => undo(control, j),
                None => "nothing had been changed".to_owned(),
            },
        }
    };
    let interrupted = |step: &'static str| {
        (
            step,
            format!("interrupted (Ctrl-C or SIGTERM) before {step}"),
            ErrorKind::Timeout,
        )
    };
    // Journals `step` before it runs; the journal then says what to undo.
    let begin = |control: &mut C, journal: &mut Journal, step: SwitchStep| {
        journal.step = step;
        control.record(journal)
    };

    if obs.follower_running {
        let t = Instant::now();
        if let Err(e) = begin(control, &mut journal, SwitchStep::Handover)
            .and_then(|()| control.request_handover(opts.handover_wait))
        {
            return Err(fail(
                control,
                Some(&journal),
                "hand-over",
                e.to_string(),
                e.kind(),
            ));
        }
        fail_point("switch::after-handover");
        record(
            &mut steps,
            "hand-over",
            t,
            false,
            "the running sync stopped; it continues once this switch is done".into(),
        );
    }
    // From here on, a failure undoes what the journal says was begun.
    let journaled = obs.follower_running;

    // The tables, read now so that the pause does not pay for it.
    let (mut primary_rows, mut follower_rows, tables) = match open_readers(primary, follower) {
        Ok(x) => x,
        Err(e) => {
            return Err(fail(
                control,
                journaled.then_some(&journal),
                "reading the tables",
                e.to_string(),
                e.kind(),
            ))
        }
    };

    let stop_follower = Control::default();
    let progress = Progress::default();
    let sync = SyncOptions {
        recent_keys: opts.verify_recent,
        stop_when_caught_up: false,
        ..sync.clone()
    };
    let finished = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let follow = scope.spawn(|| {
            let r = cutover_pipeline::run(primary, follower, &sync, &stop_follower, &progress);
            finished.store(true, Ordering::SeqCst);
            // Wakes the close-in and the drain, which wait on the follower's progress.
            progress.nudge();
            r
        });
        let stop = |follow: std::thread::ScopedJoinHandle<'_, _>| {
            stop_follower.stop();
            let _ = follow.join();
        };
        let cancelled = || cancel.is_cancelled();

        // Catch up.
        let t = Instant::now();
        let caught_up = loop {
            if finished.load(Ordering::SeqCst) {
                break Err(ConnectorError::new(
                    ErrorKind::Database,
                    "the follower stopped",
                ));
            }
            if cancelled() {
                break Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    interrupted("the fence").1,
                ));
            }
            let order = control.positions();
            let lag = match (control.primary_position(), progress.caught_up_to()) {
                (Ok(p), Some(a)) => order.distance(&a, &p).amount(),
                (Err(e), _) => break Err(e),
                _ => None,
            };
            if lag.is_some_and(|l| l <= opts.max_lag) {
                break Ok(lag.unwrap_or(0));
            }
            if t.elapsed() > opts.catch_up_timeout {
                break Err(ConnectorError::new(
                    ErrorKind::Timeout,
                    format!(
                        "the follower did not come within --max-lag {} bytes of the primary in {}s (still {} bytes behind)",
                        opts.max_lag,
                        opts.catch_up_timeout.as_secs(),
                        lag.map_or("?".into(), |l| l.to_string())
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let lag = match caught_up {
            Ok(l) => l,
            Err(e) => {
                stop_follower.stop();
                let detail = match follow.join() {
                    Ok(Err(fe)) => fe.to_string(),
                    _ => e.to_string(),
                };
                return Err(fail(
                    control,
                    journaled.then_some(&journal),
                    "catching up",
                    detail,
                    e.kind(),
                ));
            }
        };
        record(
            &mut steps,
            "catch up",
            t,
            false,
            format!("{lag} bytes behind"),
        );

        // The rows where the copy and the change stream met, compared on both sides while
        // writes still flow: a difference that outlives the follower catching up with it is a
        // divergence, and the switch is refused before anything is paused.
        let t = Instant::now();
        let checked = (|| -> Result<u64, (String, ErrorKind)> {
            let err = |e: ConnectorError| (e.to_string(), e.kind());
            let mut pending = control.watched_keys().map_err(err)?;
            let mut total = None;
            for round in 0.. {
                let (checked, differing) =
                    compare_keys(&mut primary_rows, &mut follower_rows, &tables, &pending)
                        .map_err(err)?;
                let total = *total.get_or_insert(checked);
                if differing.is_empty() {
                    return Ok(total);
                }
                if round == 5 {
                    return Err((
                        format!(
                            "{} of the {total} rows changed while their table was copied differ between the two sides: {} — \
                             nothing was switched; find and repair them with `cutover verify --live --repair`, then switch again",
                            differing.len(),
                            name_keys(&differing)
                        ),
                        ErrorKind::Conflict,
                    ));
                }
                // Perhaps still in flight: re-check once the follower passed where the primary
                // is now.
                let now = control.primary_position().map_err(err)?;
                let deadline = Instant::now() + Duration::from_secs(30);
                let order = control.positions();
                while !progress
                    .applied_position()
                    .is_some_and(|a| order.reached(&a, &now))
                {
                    if finished.load(Ordering::SeqCst) || Instant::now() > deadline || cancelled() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                pending = differing;
            }
            Ok(0)
        })();
        let verified_copy = match checked {
            Ok(n) => n,
            Err((e, kind)) => {
                stop(follow);
                return Err(fail(
                    control,
                    journaled.then_some(&journal),
                    "verify the copy",
                    e,
                    kind,
                ));
            }
        };
        record(
            &mut steps,
            "verify the copy",
            t,
            false,
            format!("{verified_copy} rows changed during the copy are equal on both sides"),
        );
        let recorded_recent = control.recent_keys().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the keys the running sync changed last");
            Vec::new()
        });

        if cancelled() {
            stop(follow);
            let (step, e, kind) = interrupted("preparing the way back");
            return Err(fail(control, journaled.then_some(&journal), step, e, kind));
        }
        let t = Instant::now();
        if let Err(e) = begin(control, &mut journal, SwitchStep::WayBack)
            .and_then(|()| control.prepare_way_back())
        {
            stop(follow);
            return Err(fail(
                control,
                Some(&journal),
                "preparing the way back",
                e.to_string(),
                e.kind(),
            ));
        }
        fail_point("switch::after-way-back");
        record(
            &mut steps,
            "prepare the way back",
            t,
            false,
            "capture on the new primary".into(),
        );

        // Close in: what the drain applies inside the pause is what the primary committed
        // after the follower last caught up, and preparing the way back took a while. Wait
        // (writes still flow) until the follower applied everything committed a moment ago,
        // so the pause drains only the last few milliseconds of writes.
        let t = Instant::now();
        let closed_in = (|| -> Result<String, ConnectorError> {
            let goal = control.primary_position()?;
            let order = control.positions();
            let deadline = Instant::now() + opts.catch_up_timeout.min(Duration::from_secs(10));
            let mut seen = progress.moves();
            loop {
                let applied = progress.caught_up_to();
                if applied.as_ref().is_some_and(|a| order.reached(a, &goal)) {
                    return Ok(format!("applied up to {goal}, where the primary stood"));
                }
                if finished.load(Ordering::SeqCst) || cancelled() || Instant::now() > deadline {
                    // The fence goes on; the drain applies the rest (within --max-pause-ms).
                    return Ok(format!(
                        "not yet at {goal} (applied {}); the drain applies the rest",
                        applied.map_or("nothing".into(), |a| a.to_string())
                    ));
                }
                // Woken by the follower's next applied position (or its end); the timeout
                // bounds how late a stop or the deadline is seen.
                seen = progress.wait_for_move(seen, POLL);
            }
        })();
        match closed_in {
            Ok(note) => record(&mut steps, "close in", t, false, note),
            Err(e) => {
                stop(follow);
                return Err(fail(
                    control,
                    Some(&journal),
                    "catching up",
                    e.to_string(),
                    e.kind(),
                ));
            }
        }

        if cancelled() {
            stop(follow);
            let (step, e, kind) = interrupted("the fence");
            return Err(fail(control, Some(&journal), step, e, kind));
        }
        if let Err(e) = begin(control, &mut journal, SwitchStep::Fence) {
            stop(follow);
            return Err(fail(
                control,
                Some(&journal),
                "fence",
                e.to_string(),
                e.kind(),
            ));
        }
        // The write pause starts at the fence.
        let paused = Instant::now();
        let over_budget = |step: &'static str| -> Option<(String, ErrorKind)> {
            let max = opts.max_pause?;
            (paused.elapsed() > max).then(|| {
                (
                    format!(
                        "the write pause reached {} ms at {step}, more than --max-pause-ms {}",
                        paused.elapsed().as_millis(),
                        max.as_millis()
                    ),
                    ErrorKind::Timeout,
                )
            })
        };
        let sessions_ended = match control.fence(&opts.fence) {
            Ok(n) => n,
            Err(e) => {
                stop(follow);
                return Err(fail(
                    control,
                    Some(&journal),
                    "fence",
                    e.to_string(),
                    e.kind(),
                ));
            }
        };
        fail_point("switch::after-fence");
        record(
            &mut steps,
            "fence",
            paused,
            true,
            format!("{}: {sessions_ended} sessions ended", opts.fence),
        );

        // Where the old primary stands behind its fence: everything it committed before is
        // drained to the new one.
        let fenced_at = match control.primary_position() {
            Ok(p) => p,
            Err(e) => {
                stop(follow);
                return Err(fail(
                    control,
                    Some(&journal),
                    "drain",
                    e.to_string(),
                    e.kind(),
                ));
            }
        };

        let t = Instant::now();
        if let Err(e) = control.sync_sequences() {
            stop(follow);
            return Err(fail(
                control,
                Some(&journal),
                "sequences",
                e.to_string(),
                e.kind(),
            ));
        }
        record(
            &mut steps,
            "sequences",
            t,
            true,
            "set from the old primary".into(),
        );

        if let Some(cmd) = &opts.on_switch {
            let t = Instant::now();
            let give_up = || {
                if cancelled() {
                    return Some("interrupted (Ctrl-C or SIGTERM)".to_owned());
                }
                over_budget("--on-switch").map(|(e, _)| e)
            };
            if let Err(e) = run_hook(cmd, &opts.on_switch_env, &give_up) {
                stop(follow);
                return Err(fail(
                    control,
                    Some(&journal),
                    "--on-switch",
                    e,
                    ErrorKind::InvalidInput,
                ));
            }
            record(&mut steps, "on-switch", t, true, cmd.clone());
        }
        // Drain, and check that the fence held: the follower applies everything the old
        // primary wrote up to now; a change it finds after the fence position means a session
        // got past the fence (writes it made after the flip would be lost).
        let t = Instant::now();
        // When the follower had applied up to the drain's position (it then records what it
        // did and stops): where the drain's time goes.
        let mut reached: Option<Duration> = None;
        let drained = (|| -> Result<(), (&'static str, String, ErrorKind)> {
            let now = control
                .primary_position()
                .map_err(|e| ("drain", e.to_string(), e.kind()))?;
            let order = control.positions();
            let goal = order.later(now, fenced_at.clone());
            let mut seen = progress.moves();
            stop_follower.drain_to(goal.clone());
            while !finished.load(Ordering::SeqCst) {
                if reached.is_none()
                    && progress
                        .applied_position()
                        .is_some_and(|a| order.reached(&a, &goal))
                {
                    reached = Some(t.elapsed());
                }
                if let Some((e, kind)) = over_budget("drain") {
                    return Err(("drain", e, kind));
                }
                if cancelled() {
                    return Err(interrupted("the flip"));
                }
                // Woken when the follower applies (or stops after the drain position); the
                // timeout bounds how late the pause budget or a stop is seen.
                seen = progress.wait_for_move(seen, POLL);
            }
            Ok(())
        })();
        if let Err((step, e, kind)) = drained {
            stop(follow);
            return Err(fail(control, Some(&journal), step, e, kind));
        }
        let report: SyncReport = match follow.join() {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                return Err(fail(
                    control,
                    Some(&journal),
                    "drain",
                    e.to_string(),
                    e.kind(),
                ))
            }
            Err(_) => {
                return Err(fail(
                    control,
                    Some(&journal),
                    "drain",
                    "the follower panicked".into(),
                    ErrorKind::Database,
                ))
            }
        };
        let drain = t.elapsed();
        record(
            &mut steps,
            "drain",
            t,
            true,
            format!(
                "applied up to {}{}",
                report.position,
                reached.map_or(String::new(), |r| format!(
                    " (there after {:.1} ms; the follower then recorded its state and stopped)",
                    r.as_secs_f64() * 1e3
                ))
            ),
        );
        let t = Instant::now();
        let order = control.positions();
        if let Some((at, table)) = progress
            .last_change()
            .filter(|(at, _)| order.after(at, &fenced_at))
        {
            return Err(fail(
                control,
                Some(&journal),
                "fence check",
                format!(
                    "a write reached {table} on the old primary at {at}, after the fence at {fenced_at}: a session got past the --fence {} \
                     (one that set default_transaction_read_only = off, a superuser, or an application still writing with --fence none); \
                     writes after the flip would have been lost. Stop those writers, or use --fence revoke",
                    opts.fence
                ),
                ErrorKind::Conflict,
            ));
        }
        record(
            &mut steps,
            "fence check",
            t,
            true,
            format!("nothing written to the migrated tables after {fenced_at}"),
        );

        let t = Instant::now();
        let recent = recent_keys(recorded_recent, &report.recent_keys, opts.verify_recent);
        let verified = match verify_recent(&mut primary_rows, &mut follower_rows, &tables, &recent)
        {
            Ok(n) => n,
            Err(e) => {
                return Err(fail(
                    control,
                    Some(&journal),
                    "verify",
                    e.to_string(),
                    e.kind(),
                ))
            }
        };
        record(
            &mut steps,
            "verify",
            t,
            true,
            format!("{verified} recently changed rows equal on both sides"),
        );

        if let Some((e, kind)) = over_budget("the flip") {
            return Err(fail(control, Some(&journal), "pause budget", e, kind));
        }
        if cancelled() {
            let (step, e, kind) = interrupted("the flip");
            return Err(fail(control, Some(&journal), step, e, kind));
        }

        // The point of no return. From here on the switch is finished, whatever happens: a
        // crash is completed by the next `recover`.
        let t = Instant::now();
        let direction = match begin(control, &mut journal, SwitchStep::Flip).and_then(|()| {
            fail_point("switch::before-flip");
            control.flip()
        }) {
            Ok(d) => d,
            Err(e) => {
                // The flip is a compare-and-swap: if it did not happen, undo; if its outcome
                // is unknown (the connection broke), the journal leaves it to `recover`.
                return Err(match control.observe() {
                    Ok(o) if o.phase == phase_after(opts.want) => SwitchError::Failed {
                        step: "flip",
                        error: e.to_string(),
                        kind: e.kind(),
                        undo: "the switch was recorded before the error: run `cutover switch --abort`, which finishes it".into(),
                    },
                    Ok(_) => fail(control, Some(&journal), "flip", e.to_string(), e.kind()),
                    Err(_) => SwitchError::Failed {
                        step: "flip",
                        error: e.to_string(),
                        kind: e.kind(),
                        undo: "whether the switch was recorded is unknown (the target is unreachable): once it is reachable, `cutover switch --abort` finishes or undoes it".into(),
                    },
                });
            }
        };
        fail_point("switch::after-flip");
        record(
            &mut steps,
            "flip",
            t,
            true,
            format!("changes now flow {direction}"),
        );
        let t = Instant::now();
        if let Err(e) =
            begin(control, &mut journal, SwitchStep::Open).and_then(|()| control.open_new_primary())
        {
            // Switched, but the new primary is still fenced: the journal says so.
            return Err(SwitchError::Failed {
                step: "opening the new primary",
                error: e.to_string(),
                kind: e.kind(),
                undo: "the switch itself is recorded (past the point of no return); `cutover switch --abort` (or `cutover sync`) opens the new primary".into(),
            });
        }
        let write_pause = paused.elapsed();
        fail_point("switch::after-open");
        record(
            &mut steps,
            "open the new primary",
            t,
            true,
            "writes accepted".into(),
        );
        // Sessions the application opened during the pause started read-only and stay so:
        // ended, it reconnects and writes.
        let t = Instant::now();
        let paused_sessions_ended = match control.end_paused_sessions() {
            Ok(n) => {
                record(
                    &mut steps,
                    "end read-only sessions",
                    t,
                    true,
                    format!("{n} sessions that began on the new primary during the pause ended"),
                );
                n
            }
            Err(e) => {
                record(
                    &mut steps,
                    "end read-only sessions",
                    t,
                    true,
                    format!("could not end the sessions that began during the pause ({e}); they refuse writes until they reconnect"),
                );
                0
            }
        };
        let writes_refused = paused.elapsed();

        let t = Instant::now();
        let retired = begin(control, &mut journal, SwitchStep::Retire)
            .and_then(|()| control.retire_old_direction());
        match retired {
            Ok(()) => record(&mut steps, "retire", t, false, "old direction's capture removed".into()),
            Err(e) => record(
                &mut steps,
                "retire",
                t,
                false,
                format!("could not remove the old direction's capture ({e}); run `cutover cleanup` later"),
            ),
        }
        if let Err(e) = control.clear_journal() {
            tracing::warn!(error = %e, "the switch is done, but its journal could not be cleared; the next command clears it");
        }
        Ok(SwitchReport {
            direction,
            write_pause,
            writes_refused,
            paused_sessions_ended,
            drain,
            verified_rows: verified,
            verified_copy_rows: verified_copy,
            sessions_ended,
            fenced_at,
            steps,
        })
    })
}

/// The phase of the migration once a switch that wants `want` has flipped.
fn phase_after(want: Direction) -> &'static str {
    match want {
        Direction::Reverse => "switched",
        Direction::Forward => "replicating",
    }
}

/// Finishes or undoes a switch that was interrupted (crashed, killed, or stopped while its
/// undo failed), from its journal: past the flip it is completed (the new primary opened, the
/// old direction retired), before it everything it began is undone (the fence lifted, the way
/// back removed, the hand-over withdrawn). Takes the switch lock first: a switch still running
/// elsewhere is refused. Returns what it did, or `None` when nothing was interrupted.
pub fn recover<C: SwitchControl + ?Sized>(control: &mut C) -> Result<Option<String>, SwitchError> {
    lock(control)?;
    let result = recover_locked(control);
    if let Err(e) = control.unlock() {
        tracing::debug!(error = %e, "the switch lock is released when the session ends");
    }
    result
}

fn recover_locked<C: SwitchControl + ?Sized>(
    control: &mut C,
) -> Result<Option<String>, SwitchError> {
    let journal = control
        .journal()
        .map_err(|e| SwitchError::Refused(e.to_string()))?;
    let Some(journal) = journal else {
        return Ok(None);
    };
    let obs = control
        .observe()
        .map_err(|e| SwitchError::Refused(e.to_string()))?;
    let verb = match journal.want {
        Direction::Reverse => "switch",
        Direction::Forward => "rollback",
    };
    if obs.phase == phase_after(journal.want) {
        let failed = |step: &'static str, e: ConnectorError| SwitchError::Failed {
            step,
            error: e.to_string(),
            kind: e.kind(),
            undo: "the switch is recorded; run `cutover switch --abort` again once this is fixed"
                .into(),
        };
        control
            .open_new_primary()
            .map_err(|e| failed("opening the new primary", e))?;
        let retired = control.retire_old_direction();
        control
            .clear_journal()
            .map_err(|e| failed("clearing the switch journal", e))?;
        return Ok(Some(format!(
            "finished the {verb} that process {} left after its point of no return (at step {}): the new primary takes writes{}",
            journal.pid,
            journal.step,
            match retired {
                Ok(()) => String::new(),
                Err(e) => format!("; the old direction's capture could not be removed ({e}): `cutover cleanup` removes it"),
            }
        )));
    }
    let undone = undo(control, &journal);
    if undone.contains("FAILED") || undone.contains("could not") {
        return Err(SwitchError::Failed {
            step: "recovering an interrupted switch",
            error: format!(
                "the {verb} that process {} left at step {}",
                journal.pid, journal.step
            ),
            kind: ErrorKind::Database,
            undo: undone,
        });
    }
    Ok(Some(format!(
        "undid the {verb} that process {} left before its point of no return (at step {}): {undone}",
        journal.pid, journal.step
    )))
}

/// A named failpoint (tests): `FAILPOINTS=switch::after-fence=panic` with the `failpoints`
/// feature makes the process die there, as `kill -9` would.
fn fail_point(name: &str) {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name);
    let _ = name;
}

type Readers = (
    Box<dyn Source + Send>,
    Box<dyn Source + Send>,
    HashMap<TableName, TableSchema>,
);

fn open_readers(primary: &dyn Connect, follower: &dyn Connect) -> Result<Readers, ConnectorError> {
    let mut a = primary.source()?;
    let tables = a
        .tables()?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    let mut b = follower.source()?;
    b.tables()?;
    Ok((a, b, tables))
}

/// Compares the rows with `keys` on both sides; returns how many were compared and the keys
/// whose rows differ (missing on one side, or different values).
fn compare_keys<A: Source + Send, B: Source>(
    a: &mut A,
    b: &mut B,
    tables: &HashMap<TableName, TableSchema>,
    keys: &[(TableName, Key)],
) -> Result<(u64, Vec<(TableName, Key)>), ConnectorError> {
    let mut by_table: HashMap<&TableName, Vec<Key>> = HashMap::new();
    for (t, k) in keys {
        by_table.entry(t).or_default().push(k.clone());
    }
    let mut checked = 0u64;
    let mut differing = Vec::new();
    for (name, keys) in by_table {
        let Some(schema) = tables.get(name) else {
            continue;
        };
        let index = |rows: Vec<cutover_model::Row>| -> HashMap<Key, cutover_model::Row> {
            rows.into_iter().map(|r| (schema.key_of(&r), r)).collect()
        };
        for keys in keys.chunks(5_000) {
            // Both sides at once: this may run inside the write pause.
            let (left, right) = std::thread::scope(|s| {
                let l = s.spawn(|| a.fetch_rows(schema, keys));
                let r = b.fetch_rows(schema, keys);
                (l.join(), r)
            });
            let left = index(left.map_err(|_| {
                ConnectorError::new(ErrorKind::Database, "reading rows to verify panicked")
            })??);
            let right = index(right?);
            for k in keys {
                checked += 1;
                let same = match (left.get(k), right.get(k)) {
                    (None, None) => true,
                    (Some(x), Some(y)) => {
                        x.len() == y.len()
                            && x.iter()
                                .zip(y)
                                .all(|(p, q)| cutover_verify::same_value(p, q))
                    }
                    _ => false,
                };
                if !same {
                    differing.push((name.clone(), k.clone()));
                }
            }
        }
    }
    Ok((checked, differing))
}

/// Names the first few differing keys, for messages.
fn name_keys(keys: &[(TableName, Key)]) -> String {
    let mut named: Vec<String> = keys
        .iter()
        .take(5)
        .map(|(t, k)| format!("{t} {}", cutover_connector::key_text(k)))
        .collect();
    if keys.len() > 5 {
        named.push(format!("and {} more", keys.len() - 5));
    }
    named.join(", ")
}

/// Compares the rows with `keys` on both sides after the drain; an error names those that
/// differ (nothing is in flight any more, so any difference is real).
fn verify_recent<A: Source + Send, B: Source>(
    a: &mut A,
    b: &mut B,
    tables: &HashMap<TableName, TableSchema>,
    keys: &[(TableName, Key)],
) -> Result<u64, ConnectorError> {
    let (checked, differing) = compare_keys(a, b, tables, keys)?;
    if differing.is_empty() {
        return Ok(checked);
    }
    Err(ConnectorError::new(
        ErrorKind::Conflict,
        format!(
            "rows differ between the two sides after the drain: {} — investigate with `cutover verify` before switching",
            name_keys(&differing)
        ),
    ))
}

/// The keys a switch verifies inside the pause: those the follower that handed over changed
/// last, then those the in-process follower changed, newest last, each once, at most `max`.
fn recent_keys(
    recorded: Vec<(TableName, Key)>,
    followed: &[(TableName, Key)],
    max: usize,
) -> Vec<(TableName, Key)> {
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<(TableName, Key)> = followed
        .iter()
        .rev()
        .chain(recorded.iter().rev())
        .filter(|k| seen.insert((*k).clone()))
        .take(max)
        .cloned()
        .collect();
    out.reverse();
    out
}

/// Runs the `--on-switch` command; it is ended (and the switch fails) when `give_up` says so
/// (cancelled, or the pause budget spent).
fn run_hook(
    cmd: &str,
    env: &[(String, String)],
    give_up: &dyn Fn() -> Option<String>,
) -> Result<(), String> {
    use std::io::Read;
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    // Its error output is read as it comes, so a chatty command cannot block on a full pipe.
    let mut stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut text);
        }
        text
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
        if let Some(why) = give_up() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} was ended: {why}"));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stderr = reader.join().unwrap_or_default();
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "{cmd:?} exited with {status}: {}",
        stderr.trim().chars().take(500).collect::<String>()
    ))
}

/// Undoes what a switch began before its flip, as its journal says (each undo is harmless when
/// its step had not, or only partly, run); clears the journal when everything was undone.
/// Returns what happened, for messages.
fn undo<C: SwitchControl + ?Sized>(control: &mut C, journal: &Journal) -> String {
    let mut notes = Vec::new();
    let mut failed = false;
    if journal.step >= SwitchStep::Fence {
        match control.lift_fence(&journal.fence) {
            Ok(()) => {
                notes.push("the fence was lifted: the old primary takes writes again".to_owned())
            }
            Err(e) => {
                failed = true;
                notes.push(format!("LIFTING THE FENCE FAILED ({e})"))
            }
        }
    }
    if journal.step >= SwitchStep::WayBack {
        if let Err(e) = control.undo_way_back() {
            notes.push(format!(
                "the way back could not be removed ({e}); `cutover cleanup` removes it"
            ));
        }
    }
    match control.clear_handover() {
        Ok(()) if journal.step >= SwitchStep::Handover => notes.push(
            "the sync that handed over continues (if it still runs; otherwise start it again)"
                .to_owned(),
        ),
        Ok(()) => {}
        Err(e) => notes.push(format!(
            "the hand-over request could not be withdrawn ({e})"
        )),
    }
    if failed {
        notes.push("the journal keeps the switch: run `cutover switch --abort` once the old primary is reachable".into());
    } else if let Err(e) = control.clear_journal() {
        notes.push(format!("the switch journal could not be cleared ({e})"));
    }
    format!("switch undone: {}", notes.join("; "))
}
