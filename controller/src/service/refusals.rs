//! The audit trail of refused calls.
//!
//! A call refused for lack of a role is recorded in the audit log as an
//! event (`refused: <what>`, with the caller and the reason), proposed
//! through the leader like any change. Recording is best effort and never
//! holds up the refusal itself: it runs in the background, at most
//! [`RECORDING_MAX`] at a time, each bounded by the client's call timeout;
//! past that, a refusal is only logged, so a flood of refused calls cannot
//! flood Raft or pile up tasks.

use std::sync::Arc;

use tandem_net::{Caller, Denied};

use crate::client::ControlClient;

/// Refusals being recorded at once.
pub const RECORDING_MAX: usize = 8;

#[derive(Clone)]
pub struct Refusals {
    /// Reaches the leader with this site's own certificate.
    client: Arc<ControlClient>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Refusals {
    pub fn new(client: ControlClient) -> Self {
        Self { client: Arc::new(client), slots: Arc::new(tokio::sync::Semaphore::new(RECORDING_MAX)) }
    }

    /// Logs the refusal and, if a slot is free, records it in the audit log.
    pub fn record(&self, caller: &Caller, what: &str, denied: &Denied) {
        tracing::warn!(caller = %caller.who(), call = what, "{denied}");
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!("too many refusals being recorded; this one is only logged");
            return;
        };
        let client = self.client.clone();
        let (what, result, who) = (format!("refused: {what}"), denied.to_string(), caller.who());
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = client.record_event(&what, &result, &who, "role check on the caller's certificate").await {
                tracing::warn!(error = %e, "a refusal could not be recorded in the audit log");
            }
        });
    }
}
