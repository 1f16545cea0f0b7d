//! Parquet files as a cutover target (`parquet:///path/to/lake`): the copy as Parquet files per
//! table, then the changes as append-only change files with a manifest per table that readers
//! follow ([`writer`]); the type map is in [`arrow`].
//!
//! A directory of files is not transactional, so the migration's state lives in the store
//! `--state` names, joined by [`cutover_connector::StatefulSink`]: rows are held until a file
//! rolls (by size or age), and only then is their checkpoint stored.

pub mod arrow;
pub mod endpoint;
pub mod writer;

use std::any::Any;

use cutover_connector::{
    AttachedState, ConnectorError, Engine, ErrorKind, OpenOptions, Sink, TableReader, TargetFactory,
};

pub use endpoint::ParquetEndpoint;
pub use writer::ParquetWriter;

/// The engine's registration: a target only.
pub fn engine() -> Engine {
    Engine {
        name: "Parquet",
        schemes: &["parquet", "parquet+file"],
        plain_paths: false,
        claims: None,
        example: "parquet:///data/lake",
        source: None,
        target: Some(open_target),
        verify: None,
    }
}

fn open_target(url: &str, opts: &OpenOptions) -> Result<Box<dyn TargetFactory>, ConnectorError> {
    let endpoint = ParquetEndpoint::parse(url)?;
    let name = opts.name.clone().or_else(|| {
        endpoint
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
    });
    Ok(Box::new(ParquetTarget {
        endpoint,
        name: name.unwrap_or_else(|| "cutover".to_owned()),
        state: AttachedState::default(),
    }))
}

/// A lake directory and the state store it was given.
#[derive(Clone)]
pub struct ParquetTarget {
    pub endpoint: ParquetEndpoint,
    /// The migration's name (by default the directory's).
    pub name: String,
    state: AttachedState,
}

impl TargetFactory for ParquetTarget {
    fn sink(&self) -> Result<Box<dyn Sink + Send>, ConnectorError> {
        self.state.sink("a Parquet target", || {
            Ok(ParquetWriter::new(&self.endpoint))
        })
    }

    fn reader(&self) -> Result<Box<dyn TableReader + Send>, ConnectorError> {
        Err(ConnectorError::new(
            ErrorKind::InvalidInput,
            "cutover cannot read a Parquet lake back as rows yet: read it with a Parquet reader \
             (pyarrow, DuckDB, Spark) following each table's _manifest.json",
        ))
    }

    fn describe(&self) -> String {
        format!("Parquet files in {}", self.endpoint.dir.display())
    }

    fn migration_name(&self) -> Option<String> {
        Some(self.name.clone())
    }

    fn state(&self) -> Result<Option<Box<dyn cutover_connector::StateStore>>, ConnectorError> {
        self.state.state("a Parquet target")
    }

    fn needs_state(&self) -> bool {
        true
    }

    fn attach_state(&mut self, state: Box<dyn TargetFactory>) -> Result<(), ConnectorError> {
        self.state.attach(state);
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
