//! The product's recovery targets: what tandem promises the platform, per
//! kind of event, independent of what any build happens to achieve. A
//! scenario names the target it is held to (`[objectives] target = ...`);
//! it may be stricter, and it may be looser only by saying where the
//! looser figure comes from (`objectives.source`), which the report prints.

use serde::Serialize;

/// One promise: how long writes may stop and how much acknowledged data
/// may be lost when this kind of event happens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Target {
    pub id: &'static str,
    pub applies_to: &'static str,
    /// From the event to the first acknowledged write of every shard it
    /// stopped.
    pub rto_s: u64,
    /// Acknowledged writes that may be lost.
    pub rpo_entries: u64,
    /// How far back before the event the lost writes may reach.
    pub rpo_s: f64,
    /// Where the figure comes from.
    pub source: &'static str,
}

/// Every target, for the scenario files and the report.
pub const TARGETS: [Target; 4] = [
    Target {
        id: "in-city-site-loss",
        applies_to: "a site of the active city lost (power, process, partition): automatic failover to its in-city peer",
        rto_s: 10,
        rpo_entries: 0,
        rpo_s: 0.0,
        source: "product requirement: in-city failover in seconds, no acknowledged contract lost (sync replication in the city; README, Automatic failover)",
    },
    Target {
        id: "planned",
        applies_to: "a planned switchover or failback: drain, zero lag, move",
        rto_s: 5,
        rpo_entries: 0,
        rpo_s: 0.0,
        source: "product requirement: a planned move pauses each shard's writes for seconds and loses nothing (DESIGN.md section 2, switchover RPO 0)",
    },
    Target {
        id: "degraded",
        applies_to: "a degraded link, a slow or failing dependency, a corrupted file: no site lost",
        rto_s: 10,
        rpo_entries: 0,
        rpo_s: 0.0,
        source: "product requirement: no failure short of a site loss stops a tenant's writes for longer than an in-city failover would, or loses data",
    },
    Target {
        id: "dr-activation",
        applies_to: "the active city lost: the SRE activates the DR site",
        rto_s: 300,
        rpo_entries: 1_000,
        rpo_s: 30.0,
        source: "product requirement: the DR site serves within 5 minutes of the disaster (the SRE's decision included) and loses at most the last 30 s of acknowledged writes (the async DR link's lag bound, README, Replication lag)",
    },
];

pub fn find(id: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.id == id)
}

pub fn ids() -> String {
    TARGETS.iter().map(|t| t.id).collect::<Vec<_>>().join(", ")
}
