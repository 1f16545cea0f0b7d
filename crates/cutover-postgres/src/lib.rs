//! PostgreSQL for cutover (and PG-wire engines): the schema as the catalog describes it, and a
//! fast, resumable, throttled parallel copy that streams binary `COPY … TO STDOUT` into binary
//! `COPY … FROM STDIN` chunk by chunk, each chunk committed with its "done" mark.

pub mod copy;
mod endpoint;
mod error;
pub mod pgoutput;
pub mod schema;
mod stream;
pub mod verify;

pub use endpoint::{redact, PgEndpoint, TlsMode};
