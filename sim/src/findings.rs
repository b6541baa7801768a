//! What a drill found, each with a severity and the corrective action it
//! calls for: the part of the after-action report that an auditor follows
//! up in the next campaign. A finding's `key` is stable across runs and
//! builds (scenario name and what failed), so a campaign can say
//! whether last year's findings came back.

use serde::{Deserialize, Serialize};

use crate::drill::Outcome;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Data lost or corrupted, or two writers: the worst the product can do.
    Critical,
    /// A recovery objective missed: writes stopped too long, or too much lost.
    High,
    /// Something the drill could not check, or a gap in what it covers.
    Medium,
    /// Worth knowing; within the objectives.
    Low,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable across runs: "scenario: what".
    pub key: String,
    pub severity: Severity,
    pub what: String,
    pub corrective_action: String,
}

/// The findings of one run, most severe first.
pub fn of(o: &Outcome) -> Vec<Finding> {
    let scenario_key = o.scenario.name.as_str();
    let mut out = Vec::new();
    let mut add = |what_key: &str, severity, what: String, action: &str| {
        out.push(Finding { key: format!("{scenario_key}: {what_key}"), severity, what, corrective_action: action.to_string() });
    };
    for i in &o.checks.invariants {
        let first = i.details.first().cloned().unwrap_or_default();
        if !i.checked {
            add(
                &i.name,
                Severity::Medium,
                format!("not checked: {} ({first})", i.name),
                "extend the scenario so the check has data (a second running site, a rejoin) or record why it cannot apply",
            );
            continue;
        }
        if i.passed {
            continue;
        }
        let (severity, action) = if i.name.contains("RTO") || i.name.contains("failover objective") {
            (Severity::High, "profile the slowest step in the timeline (detection, fence, move, first write) and fix it, or raise the product target with its owner's approval")
        } else if i.name.contains("RPO") {
            (Severity::High, "find why the acknowledged writes were lost (sync mode, lag bound) and fix it before the next drill")
        } else if i.name.contains("refused") {
            (Severity::High, "a rule an SRE relies on did not hold: fix the operation's check and add a test for it")
        } else {
            (Severity::Critical, "stop: reproduce with the command above, fix the defect, add the seed to the regression drills")
        };
        add(&i.name, severity, format!("{} failed: {first}", i.name), action);
    }
    if !o.checks.missing_within_rpo.is_empty() {
        add(
            "replicas missing writes within the RPO",
            Severity::Low,
            format!("{} reads found a replica without a write the RPO lost (expected after a DR activation)", o.checks.missing_within_rpo.len()),
            "none required; reconcile quarantined writes with the business owner",
        );
    }
    if !o.checks.quarantined.is_empty() {
        add(
            "divergent writes quarantined",
            Severity::Low,
            format!("{} divergent writes were kept aside for reconciliation", o.checks.quarantined.len()),
            "the business owner reviews each quarantined contract (tandem verify lists them)",
        );
    }
    out.sort_by_key(|f| f.severity);
    out
}
