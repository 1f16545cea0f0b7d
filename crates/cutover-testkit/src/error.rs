//! The one error type of the harness.

/// Why the harness could not provide a server or run a statement.
///
/// Every message names what failed, the command involved (if any), the relevant
/// log tail (if any) and a suggested fix. The type is `Clone` because
/// [`Postgres::shared`](crate::Postgres::shared) and
/// [`MariaDb::shared`](crate::MariaDb::shared) remember a failed start and hand the
/// same error to every later caller instead of retrying a slow start in every test.
///
/// `Debug` prints the same multi-line text as `Display`, so that `.unwrap()` and
/// `.expect()` in tests show the log tail as readable lines.
#[derive(Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// A required program (server, setup tool or client) is not installed.
    #[error("{program} not found (looked in: {searched}); {fix}")]
    MissingProgram {
        /// What was looked for.
        program: String,
        /// Where it was looked for.
        searched: String,
        /// How to fix it.
        fix: String,
    },

    /// Running as root, but the unprivileged system user the server must run as is missing.
    #[error(
        "running as root, so {server} must run as the system user `{user}`, but that user does not exist; \
         fix: install the server package (it creates the user), e.g. {install}, or run the tests as a non-root user"
    )]
    MissingUser {
        /// "PostgreSQL" or "MariaDB".
        server: &'static str,
        /// The user that was looked up.
        user: String,
        /// The install command that creates it.
        install: String,
    },

    /// A file-system or process-spawning operation failed.
    #[error("{action} failed: {message}")]
    Io {
        /// What was being done, including the path or command.
        action: String,
        /// The operating-system error.
        message: String,
    },

    /// A one-off setup command (`initdb`, `mariadb-install-db`) failed.
    #[error("`{command}` failed ({status}):\n{output}\nfix: {fix}")]
    SetupFailed {
        /// The command line (and the user it ran as).
        command: String,
        /// Its exit status.
        status: String,
        /// Its combined stdout and stderr.
        output: String,
        /// How to fix it.
        fix: String,
    },

    /// The server was set up but did not come up (or answered wrongly) on its port.
    #[error(
        "{server} did not start on 127.0.0.1:{port}: {reason}\ncommand: {command}\n{log_tail}\nfix: {fix}"
    )]
    StartFailed {
        /// "PostgreSQL" or "MariaDB".
        server: &'static str,
        /// The port it was asked to listen on.
        port: u16,
        /// What went wrong.
        reason: String,
        /// The start command line.
        command: String,
        /// The last lines of the server log(s), each headed by the log's path.
        log_tail: String,
        /// How to fix it.
        fix: String,
    },

    /// A statement sent through `psql` / `mariadb` failed.
    #[error("SQL failed ({status}) via `{command}`:\n{stderr}\nSQL: {sql}")]
    Sql {
        /// The client command line.
        command: String,
        /// Its exit status.
        status: String,
        /// The SQL (shortened if long).
        sql: String,
        /// The client's stderr (the server's error message).
        stderr: String,
    },

    /// The caller passed an argument the harness refuses (e.g. a database name that
    /// the client would interpret as a connection string or an option).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl std::fmt::Debug for HarnessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl HarnessError {
    pub(crate) fn io(action: impl Into<String>, err: impl std::fmt::Display) -> Self {
        HarnessError::Io {
            action: action.into(),
            message: err.to_string(),
        }
    }
}
