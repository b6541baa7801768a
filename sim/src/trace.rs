//! The event trace of one simulation run: what happened, stamped with
//! simulated time. Two runs with one seed must produce the same trace; its
//! SHA-256 is the short proof printed in reports.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Simulated time since the simulation started (inside a host or client;
/// `turmoil::elapsed` would count from that host's own start).
pub fn now() -> Duration {
    turmoil::sim_elapsed().unwrap_or_default()
}

#[derive(Clone, Default)]
pub struct Trace {
    lines: Arc<Mutex<Vec<String>>>,
}

impl Trace {
    /// Records `event` at simulated time `at`.
    pub fn record(&self, at: Duration, event: impl AsRef<str>) {
        let line = format!("{:>10.3}s {}", at.as_secs_f64(), event.as_ref());
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Hex SHA-256 over the lines, newline-terminated.
    pub fn hash(&self) -> String {
        let mut h = Sha256::new();
        for line in self.lines() {
            h.update(line.as_bytes());
            h.update(b"\n");
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_depends_on_content_and_time() {
        let a = Trace::default();
        a.record(Duration::from_millis(5), "x leader");
        let b = Trace::default();
        b.record(Duration::from_millis(5), "x leader");
        let c = Trace::default();
        c.record(Duration::from_millis(6), "x leader");
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}
