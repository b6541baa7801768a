//! Each site's clock: turmoil's epoch plus simulated time, which the drill
//! can skew per site: a rate (drift, in parts per million off real time,
//! which the site's write lease is measured at too) and steps of its wall
//! time (an NTP correction, an operator's `date -s`).
//!
//! The clock remembers its history as segments, so the checker can map a
//! site's wall-clock stamp back to simulated time ([`SimClock::to_real_ms`])
//! and order writes by when they really happened.

use std::sync::{Arc, Mutex};

use tandem_controller::clock::Clock;

use crate::cluster::SIM_EPOCH_UNIX_S;

/// From `real_ms` of simulated time on, the clock reads
/// `local_ms + (real - real_ms) * rate_ppm / 1e6` (ms since the epoch).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Segment {
    real_ms: u64,
    local_ms: i64,
    rate_ppm: u64,
}

#[derive(Clone)]
pub struct SimClock {
    segments: Arc<Mutex<Vec<Segment>>>,
}

impl Default for SimClock {
    fn default() -> Self {
        SimClock { segments: Arc::new(Mutex::new(vec![Segment { real_ms: 0, local_ms: 0, rate_ppm: 1_000_000 }])) }
    }
}

fn real_now_ms() -> u64 {
    turmoil::sim_elapsed().map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl SimClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Segment>> {
        self.segments.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn local_at(seg: &Segment, real_ms: u64) -> i64 {
        seg.local_ms + ((real_ms.saturating_sub(seg.real_ms)) as i128 * seg.rate_ppm as i128 / 1_000_000) as i64
    }

    /// When segment `i` read `local` (ms since the epoch), if it ever did
    /// before the next segment began.
    fn reading_in(segs: &[Segment], i: usize, local: i64) -> Option<u64> {
        let seg = segs[i];
        if local < seg.local_ms || seg.rate_ppm == 0 {
            return None;
        }
        let real = seg.real_ms + ((local - seg.local_ms) as i128 * 1_000_000 / seg.rate_ppm as i128) as u64;
        segs.get(i + 1).is_none_or(|n| real <= n.real_ms).then_some(real)
    }

    /// From `real_ms` on, the clock runs at `rate_ppm` (1,000,000: exact).
    pub fn set_rate(&self, real_ms: u64, rate_ppm: u64) {
        let mut segs = self.lock();
        let last = *segs.last().expect("a clock has a segment");
        segs.push(Segment { real_ms, local_ms: Self::local_at(&last, real_ms), rate_ppm });
    }

    /// At `real_ms`, the wall clock jumps by `step_ms` (negative: back).
    pub fn step(&self, real_ms: u64, step_ms: i64) {
        let mut segs = self.lock();
        let last = *segs.last().expect("a clock has a segment");
        segs.push(Segment { real_ms, local_ms: Self::local_at(&last, real_ms) + step_ms, rate_ppm: last.rate_ppm });
    }

    /// Simulated ms at which this clock read `unix_ms`: the latest moment
    /// it did (after a step back, a reading can occur twice).
    pub fn to_real_ms(&self, unix_ms: u64) -> u64 {
        let local = unix_ms as i64 - (SIM_EPOCH_UNIX_S * 1000) as i64;
        let segs = self.lock();
        (0..segs.len()).rev().find_map(|i| Self::reading_in(&segs, i, local)).unwrap_or(local.max(0) as u64)
    }

    /// Maps stamps this clock gave in real-time order (a site's log, in
    /// sequence order) back to simulated ms: each is placed in the first
    /// segment, not before the previous stamp's, whose readings include it
    /// at a real time not before the previous stamp's, which resolves the
    /// readings a step back repeats. (A stamp after a step back can also be
    /// read in the stepped-forward segment, at a real time before the
    /// previous entry: found by fuzz seed 86, whose check then saw a write
    /// under a new epoch before the move that granted it.)
    pub fn to_real_in_order(&self, stamps: &[u64]) -> Vec<u64> {
        let segs = self.lock();
        let (mut at, mut last_real) = (0, 0);
        stamps
            .iter()
            .map(|unix| {
                let local = *unix as i64 - (SIM_EPOCH_UNIX_S * 1000) as i64;
                let readings = || (at..segs.len()).filter_map(|i| Self::reading_in(&segs, i, local).map(|real| (i, real)));
                let in_order = readings().find(|(_, real)| *real >= last_real).or_else(|| readings().next());
                match in_order {
                    Some((i, real)) => {
                        (at, last_real) = (i, real);
                        real
                    }
                    None => local.max(0) as u64,
                }
            })
            .collect()
    }

    /// The rate at `real_ms` of simulated time.
    pub fn rate_ppm_now(&self, real_ms: u64) -> u64 {
        self.lock().iter().rev().find(|s| s.real_ms <= real_ms).map_or(1_000_000, |s| s.rate_ppm)
    }

    /// Whether the drill ever skewed this clock.
    pub fn skewed(&self) -> bool {
        self.lock().len() > 1
    }
}

impl Clock for SimClock {
    fn now_unix_ms(&self) -> u64 {
        let real = real_now_ms();
        let segs = self.lock();
        let seg = segs.iter().rev().find(|s| s.real_ms <= real).copied().unwrap_or(segs[0]);
        // Local time may be before the simulation's epoch after a step back.
        ((SIM_EPOCH_UNIX_S * 1000) as i64 + Self::local_at(&seg, real)).max(0) as u64
    }

    fn rate_ppm(&self) -> u64 {
        self.rate_ppm_now(real_now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_map_back_to_when_they_were_taken() {
        let epoch = (SIM_EPOCH_UNIX_S * 1000) as i64;
        let c = SimClock::default();
        let unix = |local: i64| (epoch + local) as u64;
        assert_eq!(c.to_real_ms(unix(5_000)), 5_000);
        c.set_rate(10_000, 500_000); // half speed from 10 s
        assert_eq!(c.to_real_ms(unix(11_000)), 12_000);
        c.step(20_000, 60_000); // at 20 s (local 15 s) a minute forward
        assert_eq!(c.to_real_ms(unix(75_000)), 20_000);
        assert_eq!(c.to_real_ms(unix(76_000)), 22_000);
        c.step(30_000, -10_000); // at 30 s (local 80 s) back 10 s
        assert_eq!(c.to_real_ms(unix(71_000)), 32_000, "the later reading of a repeated time");
        assert!(c.skewed());
        // In log order, a reading the step back repeats is placed before
        // the step when the log says it came first.
        assert_eq!(c.to_real_ms(unix(79_000)), 48_000, "alone: the later reading");
        assert_eq!(c.to_real_in_order(&[unix(5_000), unix(76_000), unix(79_000), unix(71_000)]), vec![5_000, 22_000, 28_000, 32_000]);
        // A step forward undone later: after the step back, a reading the
        // forward segment also holds, but only before the entry logged
        // ahead of it, is the later one (fuzz seed 86).
        let c = SimClock::default();
        c.step(10_000, 9_000); // at 10 s forward 9 s: local 19 s
        c.step(20_000, -9_000); // at 20 s (local 29 s) back to real time
        assert_eq!(c.to_real_in_order(&[unix(28_000), unix(22_000)]), vec![19_000, 22_000]);
        assert!(!SimClock::default().skewed());
    }
}
