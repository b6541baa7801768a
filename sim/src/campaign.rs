//! The yearly drill campaign: a plan (scenarios x seeds, the year's
//! objectives, the participants) run as one, summarised in one report an
//! auditor files: each drill's verdict, RTO and RPO, trace hash and the
//! command that reproduces it; the year's objectives against the worst
//! measured figures; findings across drills; and whether the previous
//! campaign's corrective actions were closed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_controller::config::{parse_validated, read_config, ConfigError};

use crate::drill::RunDigest;
use crate::findings::{Finding, Severity};
use crate::scenario::{hex, Participant, Scenario};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    /// The period the campaign covers ("2026").
    pub period: String,
    #[serde(default)]
    pub description: String,
    /// The previous campaign's `summary.json` (relative to the plan), for
    /// the status of its corrective actions.
    #[serde(default)]
    pub previous: Option<PathBuf>,
    #[serde(default)]
    pub participants: Vec<Participant>,
    /// The year's objectives, per product target.
    #[serde(default)]
    pub objectives: Vec<YearObjective>,
    #[serde(rename = "drill")]
    pub drills: Vec<PlannedDrill>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct YearObjective {
    /// A product target (`crate::targets`): the drills held to it count.
    pub target: String,
    pub rto_s: f64,
    pub rpo_s: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedDrill {
    /// A scenario file, relative to the plan.
    pub scenario: PathBuf,
    pub seeds: Vec<u64>,
}

impl Plan {
    pub fn load(path: &Path) -> Result<(Plan, Vec<(PathBuf, Scenario)>), ConfigError> {
        let file = path.display().to_string();
        let plan: Plan = parse_validated(&read_config(path)?, &file, Plan::validate)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut scenarios = Vec::new();
        for d in &plan.drills {
            let p = base.join(&d.scenario);
            scenarios.push((p.clone(), Scenario::load(&p)?));
        }
        Ok((plan, scenarios))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        if self.drills.is_empty() {
            return Err(("drill".into(), "a campaign needs at least one [[drill]]".into()));
        }
        if let Some(d) = self.drills.iter().find(|d| d.seeds.is_empty()) {
            return Err(("drill.seeds".into(), format!("{}: give at least one seed", d.scenario.display())));
        }
        if let Some(o) = self.objectives.iter().find(|o| crate::targets::find(&o.target).is_none()) {
            return Err(("objectives.target".into(), format!("{:?} is not a product target (targets: {})", o.target, crate::targets::ids())));
        }
        Ok(())
    }

    /// The previous campaign's summary, when the plan names one.
    pub fn previous_summary(&self, plan_path: &Path) -> Result<Option<Summary>, String> {
        let Some(p) = &self.previous else { return Ok(None) };
        let p = plan_path.parent().unwrap_or(Path::new(".")).join(p);
        let text = std::fs::read_to_string(&p).map_err(|e| format!("previous = {}: {e}", p.display()))?;
        serde_json::from_str(&text).map(Some).map_err(|e| format!("previous = {}: not a campaign summary: {e}", p.display()))
    }
}

/// One drill of the campaign.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DrillResult {
    pub scenario: String,
    pub name: String,
    pub seed: u64,
    pub verdict: String,
    pub target: Option<String>,
    pub rto_s: f64,
    pub rpo_entries: usize,
    pub rpo_s: f64,
    pub level: u8,
    pub scenario_digest: String,
    pub trace_hash: String,
    pub reproduce: String,
    /// Its own report directory, relative to the summary.
    pub report: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectiveResult {
    pub target: String,
    pub rto_s: f64,
    pub rpo_s: f64,
    /// The worst figures among the drills held to that target.
    pub worst_rto_s: Option<f64>,
    pub worst_rpo_s: Option<f64>,
    pub drills: usize,
    pub met: bool,
}

/// A finding, with every drill that raised it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CampaignFinding {
    #[serde(flatten)]
    pub finding: Finding,
    pub raised_by: Vec<String>,
}

/// A corrective action of the previous campaign, and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ActionStatus {
    pub key: String,
    pub corrective_action: String,
    /// "closed: not raised again" or "OPEN: raised again by ...".
    pub status: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub campaign: String,
    pub period: String,
    pub description: String,
    pub plan_digest: String,
    pub commit: String,
    pub participants: Vec<Participant>,
    pub verdict: String,
    /// The lowest GB/T 20988 level any drill's measured figures reached.
    pub level: u8,
    pub grading_edition: String,
    pub drills: Vec<DrillResult>,
    pub objectives: Vec<ObjectiveResult>,
    pub findings: Vec<CampaignFinding>,
    pub previous_actions: Vec<ActionStatus>,
}

/// The report directory name of one drill.
pub fn report_dir(scenario_path: &Path, seed: u64) -> String {
    let stem = scenario_path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "drill".into());
    format!("{stem}-seed-{seed}")
}

/// Builds the summary from the drills' results (in plan order).
pub fn summarise(plan: &Plan, plan_text_digest: &str, commit: &str, runs: &[(PathBuf, RunDigest)], previous: Option<&Summary>) -> Summary {
    let mut drills = Vec::new();
    let mut findings: BTreeMap<String, CampaignFinding> = BTreeMap::new();
    for (path, d) in runs {
        let (rto_s, rpo_s) = (d.rto_ms as f64 / 1000.0, d.rpo_ms as f64 / 1000.0);
        let run = format!("{} seed {}", d.scenario, d.seed);
        drills.push(DrillResult {
            scenario: path.display().to_string(),
            name: d.scenario.clone(),
            seed: d.seed,
            verdict: if d.passed { "PASS".into() } else { "FAIL".into() },
            target: d.target.clone(),
            rto_s,
            rpo_entries: d.lost,
            rpo_s,
            level: crate::grading::grade(rto_s, rpo_s).level,
            scenario_digest: d.scenario_digest.clone(),
            trace_hash: d.trace_hash.clone(),
            reproduce: format!("tandem drill run {} --seed {}", path.display(), d.seed),
            report: report_dir(path, d.seed),
        });
        for f in &d.findings {
            findings.entry(f.key.clone()).or_insert_with(|| CampaignFinding { finding: f.clone(), raised_by: Vec::new() }).raised_by.push(run.clone());
        }
    }
    let objectives = plan
        .objectives
        .iter()
        .map(|y| {
            let held: Vec<&DrillResult> = drills.iter().filter(|d| d.target.as_deref() == Some(y.target.as_str())).collect();
            let worst = |f: fn(&DrillResult) -> f64| held.iter().map(|d| f(d)).fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
            let (worst_rto_s, worst_rpo_s) = (worst(|d| d.rto_s), worst(|d| d.rpo_s));
            ObjectiveResult {
                target: y.target.clone(),
                rto_s: y.rto_s,
                rpo_s: y.rpo_s,
                worst_rto_s,
                worst_rpo_s,
                drills: held.len(),
                met: !held.is_empty() && worst_rto_s.is_some_and(|v| v <= y.rto_s) && worst_rpo_s.is_some_and(|v| v <= y.rpo_s),
            }
        })
        .collect::<Vec<_>>();
    // A year objective missed is a finding of the campaign itself.
    for o in objectives.iter().filter(|o| !o.met) {
        let worst = |v: Option<f64>| v.map_or("no drill".to_string(), |v| format!("{v:.3} s"));
        let by: Vec<String> = drills
            .iter()
            .filter(|d| d.target.as_deref() == Some(o.target.as_str()) && (d.rto_s > o.rto_s || d.rpo_s > o.rpo_s))
            .map(|d| format!("{} seed {}", d.name, d.seed))
            .collect();
        let key = format!("campaign: year objective {}", o.target);
        findings.insert(
            key.clone(),
            CampaignFinding {
                finding: Finding {
                    key,
                    severity: Severity::High,
                    what: format!(
                        "the year's objective for {} (RTO {} s, RPO {} s) was missed: worst RTO {}, worst RPO {}",
                        o.target,
                        o.rto_s,
                        o.rpo_s,
                        worst(o.worst_rto_s),
                        worst(o.worst_rpo_s)
                    ),
                    corrective_action:
                        "fix what the drills that missed it found, or agree a different objective with the business owner before the next campaign".into(),
                },
                raised_by: if by.is_empty() { vec!["no drill held to this target".into()] } else { by },
            },
        );
    }
    let mut findings: Vec<CampaignFinding> = findings.into_values().collect();
    findings.sort_by(|a, b| a.finding.severity.cmp(&b.finding.severity).then(a.finding.key.cmp(&b.finding.key)));
    let previous_actions = previous.map(|p| action_status(p, &findings)).unwrap_or_default();
    let passed = drills.iter().all(|d| d.verdict == "PASS") && objectives.iter().all(|o| o.met);
    Summary {
        campaign: plan.name.clone(),
        period: plan.period.clone(),
        description: plan.description.clone(),
        plan_digest: plan_text_digest.to_string(),
        commit: commit.to_string(),
        participants: plan.participants.clone(),
        verdict: if passed { "PASS".into() } else { "FAIL".into() },
        level: drills.iter().map(|d| d.level).min().unwrap_or(0),
        grading_edition: crate::grading::EDITION.into(),
        drills,
        objectives,
        findings,
        previous_actions,
    }
}

/// Where each corrective action of the previous campaign (findings of
/// medium severity or worse) stands, given this campaign's findings.
pub fn action_status(previous: &Summary, now: &[CampaignFinding]) -> Vec<ActionStatus> {
    previous
        .findings
        .iter()
        .filter(|f| f.finding.severity <= Severity::Medium)
        .map(|f| ActionStatus {
            key: f.finding.key.clone(),
            corrective_action: f.finding.corrective_action.clone(),
            status: match now.iter().find(|n| n.finding.key == f.finding.key) {
                Some(again) => format!("OPEN: raised again by {}", again.raised_by.join(", ")),
                None => "closed: not raised again by this campaign".into(),
            },
        })
        .collect()
}

/// SHA-256 (hex) of the summary as written to `summary.json`: what the
/// archive records in the audit log.
pub fn digest(json: &str) -> String {
    hex(&Sha256::digest(json.as_bytes()))
}

pub fn json(s: &Summary) -> String {
    serde_json::to_string_pretty(s).expect("summaries serialise") + "\n"
}

pub fn markdown(s: &Summary, digest: &str) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Drill campaign: {} ({})\n", s.campaign, s.period);
    let _ = writeln!(m, "**Verdict: {}** ({} drills, {} passed)\n", s.verdict, s.drills.len(), s.drills.iter().filter(|d| d.verdict == "PASS").count());
    if !s.description.is_empty() {
        let _ = writeln!(m, "{}\n", s.description);
    }
    let _ = writeln!(m, "| | |\n|---|---|");
    let _ = writeln!(m, "| Commit | {} |", s.commit);
    let _ = writeln!(m, "| Plan digest | `{}` |", s.plan_digest);
    let _ = writeln!(m, "| summary.json SHA-256 | `{digest}` (what `--archive` records in the audit log) |");
    let _ = writeln!(m, "| Lowest DR level reached | {} ({}) |\n", s.level, s.grading_edition);
    let _ = writeln!(m, "## Participants\n\n| Participant | Role |\n|---|---|");
    for p in &s.participants {
        let _ = writeln!(m, "| {} | {} |", p.name, p.role);
    }
    let _ = writeln!(m, "\n## The year's objectives\n\n| Product target | RTO | RPO | Drills | Worst RTO | Worst RPO | |\n|---|---|---|---|---|---|---|");
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3} s"));
    for o in &s.objectives {
        let _ = writeln!(
            m,
            "| {} | {} s | {} s | {} | {} | {} | {} |",
            o.target,
            o.rto_s,
            o.rpo_s,
            o.drills,
            show(o.worst_rto_s),
            show(o.worst_rpo_s),
            if o.met { "met" } else { "MISSED" }
        );
    }
    let _ = writeln!(m, "\n## Drills\n\n| Scenario | Seed | Verdict | RTO | RPO | Level | Trace hash | Reproduce |\n|---|---|---|---|---|---|---|---|");
    for d in &s.drills {
        let _ = writeln!(
            m,
            "| [{}]({}/report.md) | {} | {} | {:.3} s | {} entries, {:.3} s | {} | `{}` | `{}` |",
            d.name,
            d.report,
            d.seed,
            d.verdict,
            d.rto_s,
            d.rpo_entries,
            d.rpo_s,
            d.level,
            &d.trace_hash[..16.min(d.trace_hash.len())],
            d.reproduce
        );
    }
    let _ = writeln!(m, "\n## Findings across the drills\n");
    if s.findings.is_empty() {
        let _ = writeln!(m, "None.");
    } else {
        let _ = writeln!(m, "| Severity | Finding | Raised by | Corrective action |\n|---|---|---|---|");
        for f in &s.findings {
            let _ = writeln!(
                m,
                "| {} | {} | {} | {} |",
                f.finding.severity.as_str(),
                f.finding.what.replace('|', "/"),
                f.raised_by.join("; "),
                f.finding.corrective_action
            );
        }
    }
    let _ = writeln!(m, "\n## The previous campaign's corrective actions\n");
    if s.previous_actions.is_empty() {
        let _ = writeln!(m, "None carried over (no previous summary given, or it had no finding of medium or higher severity).");
    } else {
        let _ = writeln!(m, "| Finding | Corrective action | Status |\n|---|---|---|");
        for a in &s.previous_actions {
            let _ = writeln!(m, "| {} | {} | {} |", a.key, a.corrective_action, a.status);
        }
    }
    m
}

/// The audit entry `--archive` records.
pub fn archive_event(s: &Summary, digest: &str) -> (String, String) {
    (
        format!("drill campaign {} ({}): summary.json sha256 {digest}", s.campaign, s.period),
        format!("{}: {}/{} drills passed, DR level {}", s.verdict, s.drills.iter().filter(|d| d.verdict == "PASS").count(), s.drills.len(), s.level),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAN: &str = r#"
name = "yearly drill"
period = "2026"
[[participants]]
name = "Li"
role = "drill lead"
[[objectives]]
target = "in-city-site-loss"
rto_s = 10
rpo_s = 0
[[drill]]
scenario = "scenarios/site-a-power-loss.toml"
seeds = [1]
"#;

    #[test]
    fn plans_are_validated_with_the_field_named() {
        let plan: Plan = parse_validated(PLAN, "p.toml", Plan::validate).unwrap();
        assert_eq!(plan.drills[0].seeds, vec![1]);
        let e = parse_validated(&PLAN.replace("seeds = [1]", "seeds = []"), "p.toml", Plan::validate).unwrap_err();
        assert!(e.to_string().contains("at least one seed"), "{e}");
        let e = parse_validated(&PLAN.replace("target = \"in-city-site-loss\"", "target = \"city\""), "p.toml", Plan::validate).unwrap_err();
        assert!(e.to_string().contains("not a product target"), "{e}");
        let e = parse_validated(&PLAN.replace("period", "perod"), "p.toml", Plan::validate).unwrap_err();
        assert!(e.to_string().contains("perod"), "{e}");
    }

    #[test]
    fn the_previous_campaign_s_actions_are_closed_or_open() {
        let f = |key: &str, severity| CampaignFinding {
            finding: Finding { key: key.into(), severity, what: "w".into(), corrective_action: "fix".into() },
            raised_by: vec!["x seed 1".into()],
        };
        let plan: Plan = parse_validated(PLAN, "p.toml", Plan::validate).unwrap();
        let mut previous = summarise(&plan, "d", "c", &[], None);
        previous.findings = vec![f("s: slow", Severity::High), f("s: gone", Severity::Critical), f("s: minor", Severity::Low)];
        let now = summarise(&plan, "d", "c", &[], Some(&previous));
        assert_eq!(now.previous_actions.len(), 2, "low findings carry no action: {:?}", now.previous_actions);
        assert!(now.previous_actions.iter().all(|a| a.status.starts_with("closed")), "{:?}", now.previous_actions);
        let again = action_status(&previous, &[f("s: gone", Severity::Critical)]);
        assert!(again.iter().any(|a| a.key == "s: gone" && a.status.starts_with("OPEN: raised again by x seed 1")), "{again:?}");
        assert!(again.iter().any(|a| a.key == "s: slow" && a.status.starts_with("closed")), "{again:?}");
        // A year objective with no drill held to it is not met, and says so.
        assert!(!now.objectives[0].met);
        assert_eq!(now.verdict, "FAIL");
        assert!(now.findings.iter().any(|f| f.finding.key == "campaign: year objective in-city-site-loss"), "{:?}", now.findings);
    }
}
