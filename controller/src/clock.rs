//! The wall-clock seam. Wall time is read only where an operation is
//! proposed (to stamp the audit entry), never while applying the log. The
//! simulation supplies a clock driven by simulated time.

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now_unix_ms(&self) -> u64;

    /// How fast this host's monotonic clock runs against real time, in
    /// parts per million (1,000,000: exactly). A real host's is taken as
    /// exact; the lease argument (`lease.rs`) tolerates 10 % either way,
    /// and the drill skews a site's clock to show it does.
    fn rate_ppm(&self) -> u64 {
        1_000_000
    }
}

/// `real` of real time as a clock running at `rate_ppm` measures it.
pub fn as_measured(real: std::time::Duration, rate_ppm: u64) -> std::time::Duration {
    if rate_ppm == 1_000_000 {
        return real;
    }
    std::time::Duration::from_nanos((real.as_nanos() * rate_ppm as u128 / 1_000_000) as u64)
}

/// The operating system's clock, for the daemons.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}
