//! The conformance suite, run for every engine (see the crate's documentation).

#[cfg(feature = "dynamodb")]
#[path = "it/dynamodb.rs"]
mod dynamodb_target;
#[path = "it/kafka.rs"]
mod kafka_target;
#[path = "it/mariadb.rs"]
mod mariadb;
#[path = "it/nats.rs"]
mod nats_target;
#[path = "it/parquet.rs"]
mod parquet_target;
#[path = "it/postgres.rs"]
mod postgres;
#[path = "it/redis.rs"]
mod redis_target;
#[path = "it/sqlite.rs"]
mod sqlite;
#[path = "it/stateful.rs"]
mod stateful;
