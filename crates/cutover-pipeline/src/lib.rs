//! The migration engine: backfill (chunked copy) and replicate (change capture) run together
//! and meet in one ordered applier, so copy and changes never race.
//!
//! ```text
//!  plan (control store) ─▶ chunk jobs ─▶ N reader threads ─(ChunkRows: rows, low, high)─┐
//!                                                                                    ▼
//!  source change stream ──────────── transactions in commit order ─────────────▶ applier ─▶ sink
//!                                                                   (one target transaction per
//!                                                                    batch: rows, changes, chunk
//!                                                                    marks and checkpoint)
//! ```
//!
//! The applier emits a chunk once it has applied the stream up to the chunk's `high` position,
//! minus rows whose keys changed after the chunk's `low` (DBLog's watermark rule). The sink
//! commits each batch with its checkpoint, so a restart resumes exactly where it stopped.

mod ddl;
mod retry;
mod sync;

pub use cutover_connector::{Phase, Progress, TableProgress};
pub use ddl::DdlPolicy;
pub use sync::{run, Control, SyncError, SyncOptions, SyncReport};
