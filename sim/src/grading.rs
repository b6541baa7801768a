//! The disaster-recovery level that a drill's *measured* RTO and RPO reach,
//! on the six-level scale of China's national standard for the disaster
//! recovery of information systems.
//!
//! The table is the RTO / RPO columns of GB/T 20988-2007, Annex A. GB/T
//! 20988-2025 (in force since 2026-01-01) supersedes that edition; its
//! text was not available to this build, so the report names the edition
//! it grades against and says so. A level also requires backup regimes,
//! staff, plans and operations that no drill measures: the grade is what
//! the measured figures alone reach, never a certification.

use serde::Serialize;

/// The edition whose table [`LEVELS`] reproduces.
pub const EDITION: &str = "GB/T 20988-2007, Annex A (RTO and RPO columns); \
     the 2025 edition supersedes it from 2026-01-01 and its table was not available to this build";

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Level {
    pub level: u8,
    pub name: &'static str,
    /// The longest RTO the level allows (`None`: the table gives no bound).
    pub rto_max_s: Option<f64>,
    /// The longest RPO the level allows.
    pub rpo_max_s: Option<f64>,
    /// The table's wording.
    pub rto: &'static str,
    pub rpo: &'static str,
}

const MIN: f64 = 60.0;
const DAY: f64 = 86_400.0;

/// Highest level first. "Several minutes" is read as at most 10 minutes.
pub const LEVELS: [Level; 6] = [
    Level { level: 6, name: "zero data loss and remote cluster support", rto_max_s: Some(10.0 * MIN), rpo_max_s: Some(0.0), rto: "minutes", rpo: "0" },
    Level {
        level: 5,
        name: "real-time data transmission and complete equipment support",
        rto_max_s: Some(2.0 * DAY),
        rpo_max_s: Some(30.0 * MIN),
        rto: "minutes to 2 days",
        rpo: "0 to 30 minutes",
    },
    Level {
        level: 4,
        name: "electronic transmission and complete equipment support",
        rto_max_s: Some(2.0 * DAY),
        rpo_max_s: Some(DAY),
        rto: "hours to 2 days",
        rpo: "hours to 1 day",
    },
    Level {
        level: 3,
        name: "electronic transmission and partial equipment support",
        rto_max_s: None,
        rpo_max_s: Some(DAY),
        rto: "12 hours or more",
        rpo: "hours to 1 day",
    },
    Level { level: 2, name: "backup site support", rto_max_s: None, rpo_max_s: Some(7.0 * DAY), rto: "24 hours or more", rpo: "1 to 7 days" },
    Level { level: 1, name: "basic support", rto_max_s: None, rpo_max_s: None, rto: "2 days or more", rpo: "1 to 7 days" },
];

/// The highest level whose bounds the measured figures meet.
pub fn grade(rto_s: f64, rpo_s: f64) -> Level {
    let within = |v: f64, max: Option<f64>| max.is_none_or(|m| v <= m);
    *LEVELS.iter().find(|l| within(rto_s, l.rto_max_s) && within(rpo_s, l.rpo_max_s)).unwrap_or(&LEVELS[5])
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: f64 = 3_600.0;

    #[test]
    fn measured_figures_grade_to_the_highest_level_they_meet() {
        assert_eq!(grade(3.4, 0.0).level, 6, "an in-city failover without loss");
        assert_eq!(grade(14.8, 0.4).level, 5, "a DR activation losing the last 0.4 s");
        assert_eq!(grade(11.0 * MIN, 0.0).level, 5, "too slow for level 6");
        assert_eq!(grade(3.0 * HOUR, 2.0 * HOUR).level, 4);
        assert_eq!(grade(3.0 * DAY, 2.0 * HOUR).level, 3);
        assert_eq!(grade(3.0 * DAY, 3.0 * DAY).level, 2);
        assert_eq!(grade(9.0 * DAY, 9.0 * DAY).level, 1);
    }
}
