//! The wall-clock seam. Wall time is read only where an operation is
//! proposed (to stamp the audit entry), never while applying the log. The
//! simulation supplies a clock driven by simulated time.

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    fn now_unix_ms(&self) -> u64;
}

/// The operating system's clock, for the daemons.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_unix_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
    }
}
