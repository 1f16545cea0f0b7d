use std::fmt;

/// What went wrong, portably: each engine maps its native errors (SQLSTATE, errno, SQLite result
/// codes) to one of these, and callers decide on retries and exit codes from the kind alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The database could not be reached or the connection broke.
    Connect,
    Auth,
    Permission,
    /// A lock or busy wait ran out; trying again may succeed.
    Busy,
    Timeout,
    /// A table, column or file that should exist does not.
    NotFound,
    /// The input is not what it claims (not a database, malformed URL, bad option).
    InvalidInput,
    /// Source and target schemas disagree, or the source schema changed under capture.
    SchemaMismatch,
    UnsupportedType,
    /// The target cannot hold a value exactly.
    LossyConversion,
    /// Change history needed to continue is gone (slot dropped, change table pruned).
    HistoryLost,
    /// The target holds data that conflicts with what cutover would write.
    Conflict,
    /// The target ran out of space.
    DiskFull,
    /// The database rejected or failed the operation for another reason.
    Database,
}

impl ErrorKind {
    /// Whether the same operation may succeed if simply tried again.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::Connect | ErrorKind::Busy | ErrorKind::Timeout
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// An error from an engine, with a kind callers can act on and a message that names cutover's
/// context (table, key range, position) and the fix. Never row values or passwords.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ConnectorError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl ConnectorError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> ConnectorError {
        ConnectorError {
            kind,
            message: message.into(),
            source: None,
        }
    }

    pub fn with_source(
        mut self,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> ConnectorError {
        self.source = Some(Box::new(source));
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Prefixes the message with more context: `"copying students chunk 3: " + message`.
    pub fn context(mut self, context: impl fmt::Display) -> ConnectorError {
        self.message = format!("{context}: {}", self.message);
        self
    }
}
