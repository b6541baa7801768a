//! Wall clock for simulated nodes: turmoil's epoch plus simulated time.

use tandem_controller::clock::Clock;

/// Simulated wall time. Outside a running simulation it reads 0, which
/// no real audit entry carries.
pub struct SimClock;

impl Clock for SimClock {
    fn now_unix_ms(&self) -> u64 {
        turmoil::since_epoch().map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}
