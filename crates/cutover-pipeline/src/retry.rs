//! Retries of the applier and its readers: the connector's [`RetryPolicy`] with the sync's
//! budget, stopped at once by [`crate::Control::stop`] (its cancellation token).
//!
//! Connectors replace a broken connection at the start of their next call, so each retry is a
//! fresh attempt; the operations retried here are reads, and sink writes whose replay is
//! harmless (the `Sink` contract).

use cutover_connector::{CancellationToken, ConnectorError, RetryPolicy, Side};

#[derive(Clone, Copy)]
pub(crate) struct Retry<'a> {
    pub(crate) policy: RetryPolicy,
    pub(crate) stop: &'a CancellationToken,
}

impl Retry<'_> {
    /// Runs `op`, which talks to the source, under the policy.
    pub(crate) fn source<T>(
        &self,
        what: &str,
        op: impl FnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        self.policy.run(Side::Source, what, Some(self.stop), op)
    }

    /// Runs `op`, which talks to the target, under the policy.
    pub(crate) fn target<T>(
        &self,
        what: &str,
        op: impl FnMut() -> Result<T, ConnectorError>,
    ) -> Result<T, ConnectorError> {
        self.policy.run(Side::Target, what, Some(self.stop), op)
    }
}
