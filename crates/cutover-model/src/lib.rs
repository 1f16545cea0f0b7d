//! cutover's shared data model: the types every engine, the pipeline and verify agree on.
//!
//! Pure: no I/O, no async, no database drivers. Every engine converts its native values into
//! [`Value`] and back without loss; where it cannot, the engine returns an error instead of
//! bending the value (see DESIGN.md, promise 2).

mod change;
mod codec;
mod decimal;
mod position;
mod schema;
mod time;
mod value;

pub use change::{Change, Transaction};
pub use codec::{decode_row, decode_value, encode_row, encode_value, DecodeError};
pub use decimal::{Decimal, ParseDecimalError};
pub use position::{ParsePositionError, Position};
pub use schema::{Column, ColumnType, Index, TableName, TableSchema};
pub use time::{Date, Interval, ParseTimeError, Time, TimeTz, Timestamp};
pub use value::{Array, Key, Row, Value};
