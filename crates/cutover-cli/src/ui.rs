//! Progress while work runs (bars on a terminal, plain lines otherwise) and reports after.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cutover_pipeline::{Phase, Progress};
use cutover_verify::{DifferenceKind, VerifyReport};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// How progress is shown, set once from the command line (`--quiet`) and the environment
/// (`NO_COLOR`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// No progress at all; summaries, reports and errors still print.
    pub quiet: bool,
    /// Colours in bars and logs (off with `NO_COLOR`, and never off a terminal).
    pub color: bool,
}

static SETTINGS: std::sync::OnceLock<Settings> = std::sync::OnceLock::new();

pub fn configure(settings: Settings) {
    let _ = SETTINGS.set(settings);
}

fn settings() -> Settings {
    SETTINGS.get().copied().unwrap_or(Settings {
        quiet: false,
        color: colors_wanted(),
    })
}

/// Whether colours may be used at all: not when `NO_COLOR` is set to anything non-empty.
pub fn colors_wanted() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether stdout is a terminal (whatever process group is in front of it).
pub fn is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// Whether this process is in the foreground of the terminal on stdout: `cutover sync … &`
/// in a shell is not, and must not draw over what the foreground command prints.
fn in_foreground() -> bool {
    // SAFETY: both calls only read the process's and the terminal's process groups.
    let (front, ours) = unsafe { (libc::tcgetpgrp(libc::STDOUT_FILENO), libc::getpgrp()) };
    front == ours
}

/// How a running command shows its progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Nothing (`--quiet`).
    Silent,
    /// Bars redrawn in place: stdout is a terminal and this process is in its foreground.
    Bars,
    /// One plain line per interval: output redirected to a file or a pipe (every 2 s), or a
    /// terminal this process is in the background of (every 30 s, so as not to interleave
    /// with the foreground command's output more than needed).
    Lines(Duration),
}

/// The mode for a terminal state; pure, so that every combination is tested.
pub fn mode(quiet: bool, terminal: bool, foreground: bool) -> Mode {
    match (quiet, terminal, foreground) {
        (true, _, _) => Mode::Silent,
        (false, true, true) => Mode::Bars,
        (false, true, false) => Mode::Lines(Duration::from_secs(30)),
        (false, false, _) => Mode::Lines(Duration::from_secs(2)),
    }
}

fn current_mode() -> Mode {
    let terminal = is_terminal();
    mode(settings().quiet, terminal, terminal && in_foreground())
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Preparing => "preparing",
        Phase::Copying => "copying",
        Phase::Replicating => "replicating",
        Phase::Draining => "draining",
        Phase::Indexing => "building indexes and constraints",
        Phase::Stopped => "stopped",
    }
}

/// Shows the progress of a sync until `done` is set, in the [`Mode`] the terminal allows now:
/// one bar per table and a status line in the foreground of a terminal, plain lines otherwise
/// (the mode follows the process when a shell moves it to the background or back).
pub fn follow(progress: &Progress, done: &AtomicBool) {
    while !done.load(Ordering::Relaxed) {
        match current_mode() {
            Mode::Bars => follow_bars(progress, done),
            Mode::Lines(every) => follow_lines(progress, done, every),
            Mode::Silent => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Plain lines every `every`, until `done` or until the mode changes.
fn follow_lines(progress: &Progress, done: &AtomicBool, every: Duration) {
    let mut last = Instant::now();
    while !done.load(Ordering::Relaxed) && current_mode() == Mode::Lines(every) {
        std::thread::sleep(Duration::from_millis(100));
        if last.elapsed() >= every {
            last = Instant::now();
            println!("{}", status_line(progress));
        }
    }
}

pub fn status_line(progress: &Progress) -> String {
    let phase = progress.phase();
    if phase == Phase::Preparing {
        return "preparing: reading the schema, starting change capture, planning chunks"
            .to_owned();
    }
    let tables = progress.table_snapshot();
    let (mut copied, mut estimate, mut chunks, mut chunks_done) = (0, 0, 0, 0);
    // Row estimates come from the source's statistics; before ANALYZE they can be 0 or far
    // off, and then the share of chunks copied is the honest figure.
    let mut estimates_hold = true;
    for t in &tables {
        let rows = t.rows_copied.load(Ordering::Relaxed);
        let est = t.rows_estimate.load(Ordering::Relaxed);
        let (c, d) = (
            t.chunks_total.load(Ordering::Relaxed),
            t.chunks_done.load(Ordering::Relaxed),
        );
        estimates_hold &= est > 0 && rows <= est || (c > 0 && c == d);
        copied += rows;
        estimate += est.max(rows);
        chunks += c;
        chunks_done += d;
    }
    let share = if estimates_hold && estimate > 0 {
        Some(copied as f64 / estimate as f64)
    } else if chunks > 0 {
        Some(chunks_done as f64 / chunks as f64)
    } else {
        None
    };
    let pct = share.map_or_else(String::new, |s| {
        format!(" ({:.0}%)", (s * 100.0).min(100.0))
    });
    format!(
        "{}: {copied} rows copied{}, {chunks_done}/{chunks} chunks{pct}, {}, {} changes applied, lag {}",
        phase_name(phase),
        if estimates_hold {
            format!(" of about {estimate}")
        } else {
            String::new()
        },
        bytes(progress.bytes_copied.load(Ordering::Relaxed)),
        progress.changes_applied.load(Ordering::Relaxed),
        lag_text(progress),
    )
}

/// The lag in the source's own unit: WAL bytes for PostgreSQL, change-log entries for SQLite,
/// and in seconds where the source says when it committed.
pub fn lag_text(progress: &Progress) -> String {
    let Some(lag) = progress.lag() else {
        return "-".to_owned();
    };
    let amount = match (lag.bytes, lag.changes) {
        (Some(b), _) => bytes(b),
        (None, Some(c)) => format!("{c} changes"),
        (None, None) => return "-".to_owned(),
    };
    match (lag.is_zero(), progress.committed_at()) {
        (true, _) => format!("{amount}, 0 s"),
        (_, Some(at)) => match std::time::SystemTime::now().duration_since(at) {
            Ok(d) => format!("{amount}, {:.1} s", d.as_secs_f64()),
            Err(_) => amount,
        },
        _ => amount,
    }
}

fn follow_bars(progress: &Progress, done: &AtomicBool) {
    let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout_with_hz(10));
    let color = settings().color;
    let style = ProgressStyle::with_template(if color {
        "{prefix:>24.bold} [{bar:28.cyan/blue}] {human_pos:>10}/{human_len:10} rows eta {eta:>4} {msg}"
    } else {
        "{prefix:>24} [{bar:28}] {human_pos:>10}/{human_len:10} rows eta {eta:>4} {msg}"
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let total_style = ProgressStyle::with_template(if color {
        "{prefix:>24.bold.green} [{bar:28.green/blue}] {percent:>3}% {msg} elapsed {elapsed_precise} eta {eta}"
    } else {
        "{prefix:>24} [{bar:28}] {percent:>3}% {msg} elapsed {elapsed_precise} eta {eta}"
    })
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    let total = multi.add(ProgressBar::new(1));
    total.set_style(total_style);
    total.set_prefix("all tables");
    let status = multi.add(ProgressBar::new_spinner());
    status.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    let mut bars: Vec<ProgressBar> = Vec::new();
    // When each table's first rows arrived, for its rate.
    let mut first_rows: Vec<Option<Instant>> = Vec::new();
    while !done.load(Ordering::Relaxed) && current_mode() == Mode::Bars {
        let tables = progress.table_snapshot();
        while bars.len() < tables.len() {
            let t = &tables[bars.len()];
            let bar = multi.insert_before(&total, ProgressBar::new(1));
            bar.set_style(style.clone());
            bar.set_prefix(t.name.to_string());
            bars.push(bar);
            first_rows.push(None);
        }
        let (mut copied, mut estimate, mut bytes) = (0, 0, 0);
        for ((bar, t), first) in bars.iter().zip(&tables).zip(first_rows.iter_mut()) {
            let rows = t.rows_copied.load(Ordering::Relaxed);
            if rows > 0 && first.is_none() {
                *first = Some(Instant::now());
            }
            let done_chunks = t.chunks_done.load(Ordering::Relaxed);
            let all_chunks = t.chunks_total.load(Ordering::Relaxed);
            let rate = match first {
                Some(at) if done_chunks < all_chunks => {
                    format!(
                        "{:.0} rows/s",
                        rows as f64 / at.elapsed().as_secs_f64().max(1e-3)
                    )
                }
                _ => String::new(),
            };
            let est = t.rows_estimate.load(Ordering::Relaxed).max(rows);
            let b = t.bytes_copied.load(Ordering::Relaxed);
            (copied, estimate, bytes) = (copied + rows, estimate + est, bytes + b);
            bar.set_length(est.max(1));
            bar.set_position(rows);
            bar.set_message(format!(
                "{:>9} chunk {done_chunks}/{all_chunks} {rate}",
                self::bytes(b)
            ));
        }
        total.set_length(estimate.max(1));
        total.set_position(copied);
        let secs = started.elapsed().as_secs_f64().max(1e-3);
        total.set_message(format!(
            "{copied}/{estimate} rows, {} at {}/s",
            self::bytes(bytes),
            self::bytes((bytes as f64 / secs) as u64)
        ));
        status.set_message(status_line(progress));
        std::thread::sleep(Duration::from_millis(100));
    }
    if current_mode() != Mode::Bars {
        // Sent to the background: the bars go, the lines take over.
        for b in &bars {
            b.finish_and_clear();
        }
        total.finish_and_clear();
        status.finish_and_clear();
        return;
    }
    for b in &bars {
        b.finish();
    }
    total.finish();
    status.finish_and_clear();
}

/// Prints a verify report: a line per table, then the differences (the first 50 per table)
/// with the differing columns' values on both sides, then what --live and --repair did.
pub fn print_verify(report: &VerifyReport) {
    let width = report
        .tables
        .iter()
        .map(|t| t.table.to_string().len())
        .max()
        .unwrap_or(5)
        .max(5);
    println!(
        "{:<width$} {:>10} {:>10} {:>8} {:>8} {:>9}",
        "table", "source", "target", "missing", "extra", "different"
    );
    for t in &report.tables {
        println!(
            "{:<width$} {:>10} {:>10} {:>8} {:>8} {:>9}",
            t.table.to_string(),
            t.source_rows,
            t.target_rows,
            t.missing,
            t.extra,
            t.different
        );
    }
    for t in report
        .tables
        .iter()
        .filter(|t| t.note.is_some() || !t.is_equal())
    {
        if let Some(note) = &t.note {
            println!("note: {}: {note}", t.table);
        }
        for d in t.differences.iter().take(50) {
            let key: Vec<String> = t
                .key_columns
                .iter()
                .zip(&d.key)
                .map(|(c, v)| {
                    format!(
                        "{c}={}",
                        cutover_connector::key_text(std::slice::from_ref(v))
                            .trim_matches(|c| c == '(' || c == ')')
                    )
                })
                .collect();
            let what = match &d.kind {
                DifferenceKind::Missing => "missing on target".to_owned(),
                DifferenceKind::Extra => "extra on target".to_owned(),
                DifferenceKind::Different { columns } => {
                    let cols: Vec<String> = columns
                        .iter()
                        .map(|c| {
                            format!(
                                "{}: {} ≠ {}",
                                c.column,
                                cutover_verify::bisect::short(c.source.as_deref()),
                                cutover_verify::bisect::short(c.target.as_deref())
                            )
                        })
                        .collect();
                    format!("different: {}", cols.join("; "))
                }
            };
            println!("  {} ({}): {what}", t.table, key.join(", "));
        }
        if t.differences.len() > 50 {
            println!(
                "  … {} more in {} (see --json, or the target's mismatch table)",
                t.differences.len() - 50,
                t.table
            );
        }
    }
    if let Some(l) = &report.live {
        println!(
            "live: {} differences seen on the first pass, {} gone once the applier passed {}",
            l.candidates,
            l.resolved,
            l.waited_for
                .as_ref()
                .map_or_else(|| "them".to_owned(), |p| p.to_string())
        );
    }
    if report.is_equal() {
        println!(
            "equal: {} rows compared, no differences",
            report.rows_compared()
        );
    } else {
        println!("DIFFERENT: {} differences", report.differences());
    }
    if let Some(r) = &report.repair {
        println!(
            "repair: {} rows rewritten from the source, {} deleted; {}",
            r.upserted,
            r.deleted,
            if r.still_different == 0 {
                "re-checked: the target is now equal".to_owned()
            } else {
                format!("{} still differ", r.still_different)
            }
        );
        for t in &r.skipped_tables {
            println!("repair: skipped {t}: no primary key to address rows by");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_only_in_the_foreground_of_a_terminal() {
        assert_eq!(mode(false, true, true), Mode::Bars);
        assert_eq!(
            mode(false, true, false),
            Mode::Lines(Duration::from_secs(30)),
            "a background sync prints a line now and then, never bars"
        );
        assert_eq!(
            mode(false, false, false),
            Mode::Lines(Duration::from_secs(2))
        );
        assert_eq!(
            mode(false, false, true),
            Mode::Lines(Duration::from_secs(2))
        );
        for (t, f) in [(true, true), (true, false), (false, false)] {
            assert_eq!(mode(true, t, f), Mode::Silent);
        }
    }
    use cutover_pipeline::TableProgress;
    use std::sync::Arc;

    fn table(estimate: u64, copied: u64, chunks: u64, done: u64) -> Arc<TableProgress> {
        Arc::new(TableProgress {
            name: cutover_model::TableName::bare("t"),
            rows_estimate: estimate.into(),
            rows_copied: copied.into(),
            bytes_copied: 0.into(),
            chunks_total: chunks.into(),
            chunks_done: done.into(),
        })
    }

    fn line(tables: Vec<Arc<TableProgress>>) -> String {
        let p = Progress::default();
        p.set_phase(Phase::Copying);
        *p.tables.lock().unwrap() = tables;
        status_line(&p)
    }

    #[test]
    fn progress_never_claims_impossible_figures_before_analyze() {
        // No statistics yet (estimate 0): the share of chunks, not 33046/0 (100%).
        let l = line(vec![table(0, 33_046, 40, 10)]);
        assert!(l.contains("33046 rows copied, 10/40 chunks (25%)"), "{l}");
        // An estimate that copied rows already passed: not 321479/100000.
        let l = line(vec![table(100_000, 321_479, 10, 9)]);
        assert!(l.contains("321479 rows copied, 9/10 chunks (90%)"), "{l}");
        // Sound estimates: rows of about the estimate.
        let l = line(vec![table(1_000, 250, 4, 1)]);
        assert!(
            l.contains("250 rows copied of about 1000, 1/4 chunks (25%)"),
            "{l}"
        );
        let p = Progress::default();
        assert!(
            status_line(&p).starts_with("preparing"),
            "{}",
            status_line(&p)
        );
    }
}
