//! The demo's application: a school platform's database and a live workload against it.
//!
//! Used by `cutover demo` to show a migration under load; kept here because it is SQLite
//! application code (only engine crates talk to a database driver).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover_connector::ConnectorError;
use rusqlite::{params, Connection};

use crate::error::map;

/// How many rows of each table a dataset of `rows` rows has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetShape {
    pub schools: i64,
    pub students: i64,
    pub sessions: i64,
    pub annotations: i64,
    pub attachments: i64,
}

impl DatasetShape {
    pub fn for_rows(rows: u64) -> DatasetShape {
        let rows = rows.max(100) as i64;
        let schools = (rows / 1_000).max(1);
        let attachments = (rows / 200).max(1);
        let students = rows / 5;
        let sessions = rows / 2;
        let annotations = (rows - schools - attachments - students - sessions).max(0);
        DatasetShape {
            schools,
            students,
            sessions,
            annotations,
            attachments,
        }
    }

    pub fn total(&self) -> i64 {
        self.schools + self.students + self.sessions + self.annotations + self.attachments
    }
}

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
CREATE TABLE schools (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    country TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE TABLE students (
    id INTEGER PRIMARY KEY,
    school_id INTEGER NOT NULL REFERENCES schools (id),
    name TEXT NOT NULL,
    email TEXT NOT NULL,
    grade INTEGER NOT NULL,
    profile TEXT
);
CREATE UNIQUE INDEX students_email ON students (email);
CREATE INDEX students_school ON students (school_id);
CREATE TABLE sessions (
    id INTEGER PRIMARY KEY,
    student_id INTEGER NOT NULL REFERENCES students (id),
    started_at TEXT NOT NULL,
    duration_s REAL,
    score REAL,
    answers TEXT NOT NULL
);
CREATE INDEX sessions_student ON sessions (student_id);
CREATE TABLE annotations (
    session_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    color TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE attachments (
    id INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL,
    mime TEXT NOT NULL,
    content BLOB NOT NULL
);
";

const WORDS: &[&str] = &[
    "photosynthesis",
    "fraction",
    "ode",
    "volcano",
    "equation",
    "haiku",
    "tectonic",
    "moiety",
    "résumé",
    "Ωmega",
    "数学",
    "vector",
    "sonnet",
    "glacier",
    "enzyme",
    "parabola",
];

fn sentence(rng: &mut fastrand::Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(WORDS[rng.usize(..WORDS.len())]);
    }
    s
}

fn answers_json(rng: &mut fastrand::Rng) -> String {
    let n = rng.usize(1..6);
    let items: Vec<String> = (0..n)
        .map(|q| {
            let words = rng.usize(1..8);
            format!(
                "{{\"q\":{q},\"answer\":\"{}\",\"correct\":{},\"ms\":{}}}",
                sentence(rng, words),
                rng.bool(),
                rng.u32(200..90_000)
            )
        })
        .collect();
    format!("{{\"version\":2,\"answers\":[{}]}}", items.join(","))
}

fn timestamp(rng: &mut fastrand::Rng) -> String {
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        rng.u32(1..13),
        rng.u32(1..29),
        rng.u32(0..24),
        rng.u32(0..60),
        rng.u32(0..60),
        rng.u32(0..1000)
    )
}

/// Attachment sizes from 1 KB to 600 KB, log-uniform: many small, a few large.
fn attachment(rng: &mut fastrand::Rng) -> Vec<u8> {
    let size = (1024.0 * (600.0f64).powf(rng.f64())) as usize;
    let mut b = vec![0u8; size];
    rng.fill(&mut b);
    b
}

/// Creates a fresh school-platform database at `path` with about `rows` rows in all, calling
/// `progress(rows_written)` as it goes. Deterministic for a given `seed`.
pub fn create_dataset(
    path: &Path,
    rows: u64,
    seed: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<DatasetShape, ConnectorError> {
    let ctx = || format!("creating the demo source database {}", path.display());
    let shape = DatasetShape::for_rows(rows);
    let conn = Connection::open(path).map_err(|e| map(ctx(), e))?;
    conn.execute_batch(SCHEMA).map_err(|e| map(ctx(), e))?;
    let mut rng = fastrand::Rng::with_seed(seed);
    let tx = conn.unchecked_transaction().map_err(|e| map(ctx(), e))?;
    let mut written = 0u64;
    let mut tick = |n: &mut u64| {
        *n += 1;
        if n.is_multiple_of(5_000) {
            progress(*n);
        }
    };
    {
        let mut st = tx
            .prepare("INSERT INTO schools (id, name, country, created_at) VALUES (?1, ?2, ?3, ?4)")
            .map_err(|e| map(ctx(), e))?;
        for id in 1..=shape.schools {
            let country = ["NZ", "US", "IN", "BR", "NG", "DE"][rng.usize(..6)];
            st.execute(params![
                id,
                format!("{} School {id}", sentence(&mut rng, 1)),
                country,
                timestamp(&mut rng)
            ])
            .map_err(|e| map(ctx(), e))?;
            tick(&mut written);
        }
        let mut st = tx
            .prepare("INSERT INTO students (id, school_id, name, email, grade, profile) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(|e| map(ctx(), e))?;
        for id in 1..=shape.students {
            let profile = if rng.u8(..10) == 0 {
                None
            } else {
                Some(format!(
                    "{{\"lang\":\"{}\",\"goals\":[\"{}\"],\"accessibility\":{{\"dyslexia_font\":{}}}}}",
                    ["en", "mi", "hi", "pt"][rng.usize(..4)],
                    sentence(&mut rng, 3),
                    rng.bool()
                ))
            };
            st.execute(params![
                id,
                rng.i64(1..=shape.schools),
                format!("Student {id}"),
                format!("student{id}@school.example"),
                rng.i64(1..14),
                profile
            ])
            .map_err(|e| map(ctx(), e))?;
            tick(&mut written);
        }
        let mut st = tx
            .prepare("INSERT INTO sessions (id, student_id, started_at, duration_s, score, answers) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
            .map_err(|e| map(ctx(), e))?;
        for id in 1..=shape.sessions {
            let score: rusqlite::types::Value = match rng.u8(..20) {
                0 => rusqlite::types::Value::Null,
                1 => rusqlite::types::Value::Text("97.50".into()),
                _ => rusqlite::types::Value::Real(f64::from(rng.u32(0..10_000)) / 100.0),
            };
            st.execute(params![
                id,
                rng.i64(1..=shape.students.max(1)),
                timestamp(&mut rng),
                rng.f64() * 3600.0,
                score,
                answers_json(&mut rng)
            ])
            .map_err(|e| map(ctx(), e))?;
            tick(&mut written);
        }
        let mut st = tx
            .prepare(
                "INSERT INTO annotations (session_id, seq, body, color) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| map(ctx(), e))?;
        let mut made = 0;
        let mut session = 1;
        while made < shape.annotations {
            for seq in 0..rng.i64(1..6) {
                if made == shape.annotations {
                    break;
                }
                let words = rng.usize(3..40);
                st.execute(params![
                    session,
                    seq,
                    sentence(&mut rng, words),
                    ["#ffcc00", "#00aaff", "#ff4488"][rng.usize(..3)]
                ])
                .map_err(|e| map(ctx(), e))?;
                made += 1;
                tick(&mut written);
            }
            session += 1;
        }
        let mut st = tx
            .prepare(
                "INSERT INTO attachments (id, session_id, mime, content) VALUES (?1, ?2, ?3, ?4)",
            )
            .map_err(|e| map(ctx(), e))?;
        for id in 1..=shape.attachments {
            st.execute(params![
                id,
                rng.i64(1..=shape.sessions.max(1)),
                ["image/png", "application/pdf", "audio/ogg"][rng.usize(..3)],
                attachment(&mut rng)
            ])
            .map_err(|e| map(ctx(), e))?;
            tick(&mut written);
        }
    }
    tx.commit().map_err(|e| map(ctx(), e))?;
    progress(written);
    Ok(shape)
}

/// Counts of what the workload did on the source: transactions, and rows inserted, updated and
/// deleted (as SQLite reported them), so that they add up to the row changes sync captured.
#[derive(Debug, Default)]
pub struct WorkloadStats {
    pub transactions: AtomicU64,
    pub inserts: AtomicU64,
    pub updates: AtomicU64,
    pub deletes: AtomicU64,
    /// Transactions committed on the database the workload was moved to (not counted above).
    pub after_switch: AtomicU64,
}

/// Rows one transaction changed.
#[derive(Debug, Default, Clone, Copy)]
struct Changed {
    inserted: u64,
    updated: u64,
    deleted: u64,
}

/// A steady stream of application writes against whichever database is current. Writes go
/// through a gate: [`Workload::fence`] takes it (waiting for the transaction in flight), so no
/// write happens until [`Fence::switch_to`] or the fence is dropped.
pub struct Workload {
    gate: Mutex<PathBuf>,
    stop: AtomicBool,
    pub stats: WorkloadStats,
    shape: DatasetShape,
    rate: u32,
    /// Longest time between two consecutive commits, as the application saw it (µs).
    longest_gap_us: AtomicU64,
}

/// Holds the workload's writes paused.
pub struct Fence<'w> {
    guard: std::sync::MutexGuard<'w, PathBuf>,
    pub fenced_at: Instant,
}

impl Fence<'_> {
    /// Points the workload at another database; it resumes there when the fence is dropped.
    pub fn switch_to(&mut self, path: &Path) {
        *self.guard = path.to_owned();
    }
}

impl Workload {
    /// A workload of about `rate` transactions per second against `path`.
    pub fn new(path: &Path, shape: DatasetShape, rate: u32) -> Workload {
        Workload {
            gate: Mutex::new(path.to_owned()),
            stop: AtomicBool::new(false),
            stats: WorkloadStats::default(),
            shape,
            rate: rate.max(1),
            longest_gap_us: AtomicU64::new(0),
        }
    }

    pub fn fence(&self) -> Fence<'_> {
        let guard = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        Fence {
            guard,
            fenced_at: Instant::now(),
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The longest pause between two commits the application saw.
    pub fn longest_gap(&self) -> Duration {
        Duration::from_micros(self.longest_gap_us.load(Ordering::Relaxed))
    }

    /// Resets the longest-gap measure (to measure only the switch, not start-up).
    pub fn reset_gap(&self) {
        self.longest_gap_us.store(0, Ordering::Relaxed);
    }

    /// Runs until [`Workload::stop`]. Touches rows across the whole key space, so rows are
    /// changed while their chunks are being copied.
    pub fn run(&self, seed: u64) -> Result<(), ConnectorError> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let interval = Duration::from_secs_f64(1.0 / f64::from(self.rate));
        let mut conn: Option<(PathBuf, Connection)> = None;
        let mut next_session = self.shape.sessions + 1_000_000;
        let mut switched_from: Option<PathBuf> = None;
        let mut last_commit: Option<Instant> = None;
        let mut next = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now < next {
                std::thread::sleep(next - now);
            }
            next += interval;
            let path = self.gate.lock().unwrap_or_else(|p| p.into_inner());
            if conn.as_ref().is_none_or(|(p, _)| p != &*path) {
                if let Some((old, _)) = &conn {
                    switched_from = Some(old.clone());
                }
                let c = Connection::open(&*path)
                    .map_err(|e| map(format!("opening {}", path.display()), e))?;
                c.busy_timeout(Duration::from_secs(30))
                    .map_err(|e| map("configuring the workload", e))?;
                conn = Some((path.clone(), c));
            }
            let Some((_, c)) = &conn else { continue };
            let changed = self
                .transaction(c, &mut rng, &mut next_session)
                .map_err(|e| map("running the demo workload", e))?;
            let committed = Instant::now();
            drop(path);
            if let Some(prev) = last_commit {
                let gap = committed.duration_since(prev).as_micros() as u64;
                self.longest_gap_us.fetch_max(gap, Ordering::Relaxed);
            }
            last_commit = Some(committed);
            if switched_from.is_some() {
                self.stats.after_switch.fetch_add(1, Ordering::Relaxed);
            } else {
                let st = &self.stats;
                st.transactions.fetch_add(1, Ordering::Relaxed);
                st.inserts.fetch_add(changed.inserted, Ordering::Relaxed);
                st.updates.fetch_add(changed.updated, Ordering::Relaxed);
                st.deletes.fetch_add(changed.deleted, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn transaction(
        &self,
        c: &Connection,
        rng: &mut fastrand::Rng,
        next_session: &mut i64,
    ) -> rusqlite::Result<Changed> {
        let s = &self.shape;
        let tx = c.unchecked_transaction()?;
        let mut n = Changed::default();
        let count = |rows: usize| rows as u64;
        match rng.u8(..10) {
            // A student starts a session and annotates it.
            0..=2 => {
                *next_session += 1;
                n.inserted += count(tx.execute(
                    "INSERT INTO sessions (id, student_id, started_at, duration_s, score, answers) VALUES (?1, ?2, ?3, NULL, NULL, ?4)",
                    params![*next_session, rng.i64(1..=s.students.max(1)), timestamp(rng), answers_json(rng)],
                )?);
                for seq in 0..rng.i64(1..4) {
                    n.inserted += count(tx.execute(
                        "INSERT INTO annotations (session_id, seq, body, color) VALUES (?1, ?2, ?3, '#ffcc00')",
                        params![*next_session, seq, sentence(rng, 6)],
                    )?);
                }
            }
            // A session is graded: JSON answers and the score change.
            3..=5 => {
                n.updated += count(tx.execute(
                    "UPDATE sessions SET score = ?2, duration_s = ?3, answers = ?4 WHERE id = ?1",
                    params![
                        rng.i64(1..=s.sessions.max(1)),
                        f64::from(rng.u32(0..10_000)) / 100.0,
                        rng.f64() * 3600.0,
                        answers_json(rng)
                    ],
                )?);
            }
            // A student edits their profile.
            6 => {
                n.updated += count(tx.execute(
                    "UPDATE students SET profile = json_set(coalesce(profile, '{}'), '$.edited', ?2), grade = grade + 1 WHERE id = ?1",
                    params![rng.i64(1..=s.students.max(1)), rng.u32(..1_000_000)],
                )?);
            }
            // Annotations are erased or rewritten.
            7 | 8 => {
                let session = rng.i64(1..=s.sessions.max(1));
                n.deleted += count(tx.execute(
                    "DELETE FROM annotations WHERE session_id = ?1 AND seq = 0",
                    [session],
                )?);
                n.updated += count(tx.execute(
                    "UPDATE annotations SET body = ?2, color = NULL WHERE session_id = ?1",
                    params![session, sentence(rng, 4)],
                )?);
            }
            // An attachment is replaced or removed.
            _ => {
                let id = rng.i64(1..=s.attachments.max(1));
                if rng.bool() {
                    n.deleted += count(tx.execute("DELETE FROM attachments WHERE id = ?1", [id])?);
                } else {
                    n.updated += count(tx.execute(
                        "UPDATE attachments SET content = ?2 WHERE id = ?1",
                        params![id, attachment(rng)],
                    )?);
                }
            }
        }
        tx.commit()?;
        Ok(n)
    }
}
