//! PostgreSQL for cutover (and PG-wire engines): the schema as the catalog describes it, and a
//! fast, resumable, throttled parallel copy that streams binary `COPY … TO STDOUT` into binary
//! `COPY … FROM STDIN` chunk by chunk, each chunk committed with its "done" mark.

pub mod applier;
mod blocking;
mod changes;
mod connect;
pub mod conninfo;
pub mod copy;
mod endpoint;
mod error;
pub mod lsn;
pub mod pgoutput;
pub mod pgtext;
mod pipelined;
mod replication;
pub mod schema;
mod sink;
mod source;
mod state;
mod stream;
mod switch;
pub mod verify;

pub use blocking::Client;
pub use connect::{engine, PgConnect};
pub use endpoint::{redact, PgEndpoint, TlsMode};
pub use sink::PgSink;
pub use source::{retained_wal, CaptureNames, PgRows, PgSource, COMMITTED_POSITION_SQL};
pub use state::PgState;
pub use switch::{
    cleanup, direction, refuses_writes, reverse_names, Orientation, PgSwitch, PgSwitchover,
};
