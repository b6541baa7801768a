//! Drill scenarios: TOML files (see `sim/README.md`) describing the links,
//! the workload, the objectives and a timeline of faults and SRE commands
//! at simulated times. Errors name the file, line and field.

use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tandem_controller::config::{parse_validated, read_config, ConfigError};

/// The sites of every drill: a and b in one city, c the DR site.
pub const SITES: [&str; 3] = ["a", "b", "c"];

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Simulated seconds the workload and the timeline run.
    pub duration_s: u64,
    /// Simulated seconds after the run, with every link healed, before the
    /// convergence checks.
    #[serde(default = "default_settle_s")]
    pub settle_s: u64,
    #[serde(default)]
    pub links: Links,
    #[serde(default)]
    pub workload: Workload,
    pub objectives: Objectives,
    /// Who takes part and in what role (the report's participants; a
    /// drill without any names the automated roles).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participants: Vec<Participant>,
    #[serde(default)]
    pub timeline: Vec<Step>,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Participant {
    pub name: String,
    pub role: String,
}

fn default_settle_s() -> u64 {
    60
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Links {
    /// One-way latency between a and b (and from the client to them).
    pub in_city_ms: u64,
    /// One-way latency between the city and c.
    pub dr_ms: u64,
}

impl Default for Links {
    fn default() -> Self {
        Links { in_city_ms: 1, dr_ms: 30 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Workload {
    /// Pause between two requests of the client.
    pub interval_ms: u64,
    /// Tenants written to (spread over the shards, so over a's and b's).
    pub tenants: u32,
    /// File sizes, chosen in turn.
    pub sizes: Vec<usize>,
    /// Every n-th request destroys an earlier acknowledged contract (0: never).
    pub destroy_every: u32,
    /// Concurrent client loops, each pausing `interval_ms` between requests.
    pub clients: u32,
    /// How long a client waits for one site before trying the next.
    pub request_timeout_ms: u64,
    /// Clients send to the site that last acknowledged a tenant's write and
    /// try a site that did not answer last (the platform's client
    /// library). `false`: they always try a, b, c in that order (a client
    /// that remembers nothing, so a cut-off owner keeps getting writes).
    pub sticky: bool,
}

impl Default for Workload {
    fn default() -> Self {
        Workload {
            interval_ms: 200,
            tenants: 6,
            sizes: vec![2 * 1024, 64 * 1024, 300 * 1024],
            destroy_every: 0,
            clients: 1,
            request_timeout_ms: 6000,
            sticky: true,
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// The product target the run is held to (`crate::targets`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Where a figure comes from when it is looser than the target, or
    /// set without one: printed in the report next to the figure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// From each fault (or command) to the first acknowledged write of
    /// every shard it stopped (see `recovery`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_s: Option<u64>,
    /// Acknowledged writes that may be lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_entries: Option<u64>,
    /// How far back before the fault that lost them lost writes may reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_s: Option<f64>,
    /// After each site crash: from the crash to the first acknowledged
    /// write of each of the crashed site's shards at another site (see
    /// `recovery`). Unset: not an objective of this scenario.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_ms: Option<u64>,
}

/// One objective's figure and where it comes from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Figure<T> {
    pub value: T,
    pub source: String,
}

/// The objectives a run is checked against, each with its source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Goals {
    pub target: Option<crate::targets::Target>,
    pub rto_s: Figure<u64>,
    pub rpo_entries: Figure<u64>,
    pub rpo_s: Figure<f64>,
    pub failover_ms: Option<Figure<u64>>,
}

impl Objectives {
    /// The figures, each from the target unless the scenario sets it;
    /// `Err((field, why))` for a figure looser than the target (or with no
    /// target) that does not say where it comes from.
    pub fn goals(&self) -> Result<Goals, (String, String)> {
        let target = match &self.target {
            Some(id) => Some(
                *crate::targets::find(id)
                    .ok_or_else(|| ("objectives.target".to_string(), format!("{id:?} is not a product target (targets: {})", crate::targets::ids())))?,
            ),
            None => None,
        };
        let from_target = |t: &crate::targets::Target| format!("product target {}: {}", t.id, t.source);
        let scenario = self.source.as_ref().map(|s| format!("scenario: {s}"));
        fn pick<T: PartialOrd + Copy + std::fmt::Display>(
            field: &str,
            set: Option<T>,
            target: Option<(T, String)>,
            scenario: &Option<String>,
        ) -> Result<Figure<T>, (String, String)> {
            match (set, target) {
                (None, Some((v, source))) => Ok(Figure { value: v, source }),
                (Some(v), Some((t, source))) if v <= t => Ok(Figure { value: v, source: format!("stricter than the {source}") }),
                (Some(v), target) => match scenario {
                    Some(s) => Ok(Figure { value: v, source: s.clone() }),
                    None => Err((
                        format!("objectives.{field}"),
                        match target {
                            Some((t, _)) => format!("{v} is looser than the product target ({t}): say where it comes from in objectives.source"),
                            None => {
                                format!("{v} is set without a product target: name one in objectives.target or say where it comes from in objectives.source")
                            }
                        },
                    )),
                },
                (None, None) => Err((format!("objectives.{field}"), "no figure: name a product target in objectives.target or set it".into())),
            }
        }
        let t = target.as_ref();
        Ok(Goals {
            target,
            rto_s: pick("rto_s", self.rto_s, t.map(|t| (t.rto_s, from_target(t))), &scenario)?,
            rpo_entries: pick("rpo_entries", self.rpo_entries, t.map(|t| (t.rpo_entries, from_target(t))), &scenario)?,
            rpo_s: pick("rpo_s", self.rpo_s, t.map(|t| (t.rpo_s, from_target(t))), &scenario)?,
            failover_ms: match self.failover_ms {
                None => None,
                Some(v) => Some(match (t, &scenario) {
                    (Some(t), _) if v <= t.rto_s * 1000 => Figure { value: v, source: format!("stricter than the {}", from_target(t)) },
                    (_, Some(s)) => Figure { value: v, source: s.clone() },
                    _ => return Err(("objectives.failover_ms".into(), format!("{v} ms: say where it comes from in objectives.source"))),
                }),
            },
        })
    }
}

/// One event of the timeline: a fault or an SRE command. (serde cannot
/// refuse unknown fields through `flatten`; the event's own fields are
/// checked.)
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Step {
    pub at_s: f64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Event {
    /// Cut the link between two sites, both ways.
    Partition {
        a: String,
        b: String,
    },
    /// Drop what `from` sends to `to` (the other direction still works).
    PartitionOneway {
        from: String,
        to: String,
    },
    /// Restore a link (both ways).
    Heal {
        a: String,
        b: String,
    },
    /// Power loss of a site: every process stops, unsynced writes are lost.
    Crash {
        site: String,
    },
    /// Power back: the site restarts from what its disks kept.
    Restart {
        site: String,
    },
    /// Lose messages on a link at this rate (0 ends it).
    Loss {
        a: String,
        b: String,
        rate: f64,
    },
    /// Set a link's one-way latency.
    Delay {
        a: String,
        b: String,
        ms: u64,
    },
    /// Messages on a link take anything from its latency up to `ms`, so
    /// messages of different connections arrive out of order (a
    /// connection's own stay in order, as TCP keeps them); `delay` ends it.
    Reorder {
        a: String,
        b: String,
        ms: u64,
    },
    /// Flip one byte of one stored file at a site (a contract's newest).
    Corrupt {
        site: String,
    },
    /// The site's key provider fails every call until `keys_up`.
    KeysDown {
        site: String,
    },
    KeysUp {
        site: String,
    },
    /// Crash whichever site leads the controllers.
    CrashLeader,
    /// Stop only the site's controller process (its replicator keeps
    /// running and serving), until `start_controller`.
    StopController {
        site: String,
    },
    StartController {
        site: String,
    },
    /// Stop only the site's replicator (`kill -9` of that one process; its
    /// controller keeps running), until `start_replicator`.
    StopReplicator {
        site: String,
    },
    StartReplicator {
        site: String,
    },
    /// Every process of the site paused (SIGSTOP, a VM frozen, a long GC):
    /// what it sends and receives is held until `resume_site`, then
    /// delivered at once; its timers keep running, as a real monotonic
    /// clock does.
    PauseSite {
        site: String,
    },
    ResumeSite {
        site: String,
    },
    /// From now on the site's clock runs `ppm` parts per million off real
    /// time (negative: slow); its write lease is measured at that rate.
    /// The lease argument covers 100,000 either way (10 %).
    ClockDrift {
        site: String,
        ppm: i64,
    },
    /// The site's wall clock jumps by `ms` (negative: back).
    ClockStep {
        site: String,
        ms: i64,
    },
    /// A power cut that tears the write-ahead logs: each store of the
    /// site keeps a prefix (drawn from the seed) of its unsynced writes.
    PowerCut {
        site: String,
    },
    /// A disk of the site goes wrong (or, with `fault = "none"`, right).
    DiskFault {
        site: String,
        store: Store,
        fault: DiskFaultKind,
    },
    /// A slow disk: every call to the site's blob store, or every synced
    /// write of one of its key-value stores (`store`, default the blobs),
    /// takes `ms` longer (0: normal again).
    SlowDisk {
        site: String,
        #[serde(default = "blobs")]
        store: Store,
        ms: u64,
    },
    /// With probability `rate`, the client sends each acknowledged put
    /// again, as a client that lost the reply retries (0: stops).
    DuplicateRequests {
        rate: f64,
    },
    /// Every call to the site's key provider (wrap, unwrap) takes `ms`
    /// (0: normal again; `keys_up` ends it too): an HSM under load or
    /// behind a slow network.
    SlowKeys {
        site: String,
        ms: u64,
    },
    /// `tandem switchover --from --to` (all of from's shards).
    Switchover {
        from: String,
        to: String,
        /// The scenario expects the switchover to be refused, for a reason
        /// containing this text (an invariant checks it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_refused: Option<String>,
    },
    /// `tandem failover --from --to` (with `--accept-data-loss` if set).
    Failover {
        from: String,
        to: String,
        #[serde(default)]
        accept_data_loss: bool,
    },
    /// `tandem pause` / `tandem resume` of automatic actions.
    Pause,
    Resume,
    /// `tandem dr activate --city-fenced` at `site` (its controller
    /// stopped and started again by the drill, as the runbook does).
    DrActivate {
        site: String,
        /// The operator's statement of how the other sites were fenced;
        /// without it the activation is refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        city_fenced: Option<String>,
        /// The scenario expects the activation to be refused, for a reason
        /// containing this text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expect_refused: Option<String>,
    },
    /// `tandem dr rejoin` for a returning old site (the drill stops it,
    /// prepares its controller store, and starts it again).
    DrRejoin {
        site: String,
    },
    /// `tandem failback --site`.
    Failback {
        site: String,
    },
    /// `tandem verify --repair`.
    VerifyRepair,
}

fn blobs() -> Store {
    Store::Blobs
}

/// Which of a site's disks a `disk_fault` hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Store {
    /// The controller's key-value store (Raft log and state).
    Controller,
    /// The replicator's key-value store (metadata, change log).
    Replicator,
    /// The replicator's blob store (ciphertext).
    Blobs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFaultKind {
    None,
    /// Syncs fail (EIO); what they were to make durable is lost at the next crash.
    FsyncError,
    /// No space left: every write fails.
    Full,
    /// Reads fail their checksum (key-value) or return a flipped byte (blobs).
    CorruptRead,
}

impl Event {
    /// One line for the trace and the report.
    pub fn describe(&self) -> String {
        match self {
            Event::Partition { a, b } => format!("fault: partition {a} <-> {b}"),
            Event::PartitionOneway { from, to } => format!("fault: partition {from} -> {to} (one way)"),
            Event::Heal { a, b } => format!("heal: {a} <-> {b}"),
            Event::Crash { site } => format!("fault: crash of site {site}"),
            Event::Restart { site } => format!("restart of site {site}"),
            Event::Loss { a, b, rate } => format!("fault: message loss {rate} on {a} <-> {b}"),
            Event::Delay { a, b, ms } => format!("fault: latency {ms} ms on {a} <-> {b}"),
            Event::Reorder { a, b, ms } => format!("fault: messages reordered on {a} <-> {b} (latency up to {ms} ms)"),
            Event::Corrupt { site } => format!("fault: corrupt a stored file at {site}"),
            Event::KeysDown { site } => format!("fault: key provider down at {site}"),
            Event::KeysUp { site } => format!("heal: key provider up at {site}"),
            Event::CrashLeader => "fault: crash of the controller leader's site".into(),
            Event::StopController { site } => format!("fault: controller of {site} stopped"),
            Event::StartController { site } => format!("heal: controller of {site} started"),
            Event::StopReplicator { site } => format!("fault: replicator of {site} stopped"),
            Event::StartReplicator { site } => format!("heal: replicator of {site} started"),
            Event::PauseSite { site } => format!("fault: processes of {site} paused"),
            Event::ResumeSite { site } => format!("heal: processes of {site} resumed"),
            Event::ClockDrift { site, ppm } => format!("fault: clock of {site} runs {ppm:+} ppm off real time"),
            Event::ClockStep { site, ms } => format!("fault: clock of {site} steps {ms:+} ms"),
            Event::PowerCut { site } => format!("fault: power cut at {site} (torn write-ahead logs)"),
            Event::DiskFault { site, store, fault: DiskFaultKind::None } => format!("heal: {store:?} disk of {site} healthy again"),
            Event::DiskFault { site, store, fault } => format!("fault: {store:?} disk of {site}: {fault:?}"),
            Event::SlowDisk { site, store: Store::Blobs, ms: 0 } => format!("heal: blob store of {site} at normal speed"),
            Event::SlowDisk { site, store, ms: 0 } => format!("heal: {store:?} disk of {site} at normal speed"),
            Event::SlowDisk { site, store: Store::Blobs, ms } => format!("fault: blob store of {site} slow ({ms} ms a call)"),
            Event::SlowDisk { site, store, ms } => format!("fault: {store:?} disk of {site} slow ({ms} ms more a synced write)"),
            Event::DuplicateRequests { rate } if *rate <= 0.0 => "heal: client requests delivered once".into(),
            Event::DuplicateRequests { rate } => format!("fault: client requests delivered twice (rate {rate})"),
            Event::SlowKeys { site, ms: 0 } => format!("heal: key provider of {site} at normal speed"),
            Event::SlowKeys { site, ms } => format!("fault: key provider of {site} slow ({ms} ms a call)"),
            Event::Switchover { from, to, .. } => format!("sre: switchover {from} -> {to}"),
            Event::Failover { from, to, accept_data_loss } => {
                format!("sre: failover {from} -> {to}{}", if *accept_data_loss { " --accept-data-loss" } else { "" })
            }
            Event::Pause => "sre: pause".into(),
            Event::Resume => "sre: resume".into(),
            Event::DrActivate { site, .. } => format!("sre: dr activate at {site}"),
            Event::DrRejoin { site } => format!("sre: dr rejoin of {site}"),
            Event::Failback { site } => format!("sre: failback of {site}"),
            Event::VerifyRepair => "sre: verify --repair".into(),
        }
    }

    /// Sites this event names.
    fn sites(&self) -> Vec<&str> {
        match self {
            Event::Partition { a, b } | Event::Heal { a, b } | Event::Loss { a, b, .. } | Event::Delay { a, b, .. } | Event::Reorder { a, b, .. } => {
                vec![a, b]
            }
            Event::PartitionOneway { from, to } | Event::Switchover { from, to, .. } | Event::Failover { from, to, .. } => vec![from, to],
            Event::Crash { site }
            | Event::Restart { site }
            | Event::Corrupt { site }
            | Event::KeysDown { site }
            | Event::KeysUp { site }
            | Event::StopController { site }
            | Event::StartController { site }
            | Event::StopReplicator { site }
            | Event::StartReplicator { site }
            | Event::PauseSite { site }
            | Event::ResumeSite { site }
            | Event::PowerCut { site }
            | Event::DiskFault { site, .. }
            | Event::SlowDisk { site, .. }
            | Event::SlowKeys { site, .. }
            | Event::ClockDrift { site, .. }
            | Event::ClockStep { site, .. }
            | Event::DrActivate { site, .. }
            | Event::DrRejoin { site }
            | Event::Failback { site } => vec![site],
            Event::CrashLeader | Event::Pause | Event::Resume | Event::VerifyRepair | Event::DuplicateRequests { .. } => vec![],
        }
    }

    /// A fault (something going wrong), as opposed to a heal or a command.
    pub fn is_fault(&self) -> bool {
        self.describe().starts_with("fault:")
    }

    /// A fault, or a command that moves shards: an event the RTO is
    /// measured from.
    pub fn stops_writes(&self) -> bool {
        self.is_fault()
            || matches!(self, Event::Switchover { .. } | Event::Failover { .. } | Event::DrActivate { .. } | Event::DrRejoin { .. } | Event::Failback { .. })
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config(path)?, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        parse_validated(text, file, Self::validate)
    }

    /// The objectives with their sources (validated when the file was
    /// read; a scenario built in code that does not resolve gets none).
    pub fn goals(&self) -> Goals {
        self.objectives.goals().unwrap_or_else(|(field, why)| {
            let none = |v| Figure { value: v, source: format!("invalid: {field}: {why}") };
            Goals { target: None, rto_s: none(0), rpo_entries: none(0), rpo_s: Figure { value: 0.0, source: why.clone() }, failover_ms: None }
        })
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        self.objectives.goals()?;
        if self.duration_s == 0 || self.duration_s > 3600 {
            return err("duration_s", format!("{} is outside 1..=3600", self.duration_s));
        }
        if self.workload.tenants == 0 || self.workload.sizes.is_empty() || self.workload.interval_ms == 0 {
            return err("workload", "needs at least one tenant, one size and an interval above 0".into());
        }
        if let Some(big) = self.workload.sizes.iter().find(|s| **s > 64 * 1024 * 1024) {
            return err("workload.sizes", format!("{big} bytes: sizes are limited to 64 MiB in a drill"));
        }
        for step in &self.timeline {
            if !(0.0..=self.duration_s as f64).contains(&step.at_s) {
                return err("timeline.at_s", format!("{} is outside the run (0..={} s)", step.at_s, self.duration_s));
            }
            if let Some(bad) = step.event.sites().into_iter().find(|s| !SITES.contains(s)) {
                return err("timeline", format!("unknown site {bad:?} (sites are a, b, c)"));
            }
            if let Event::ClockDrift { ppm, .. } = step.event {
                if !(-900_000..=1_000_000).contains(&ppm) {
                    return err("timeline.ppm", format!("{ppm} is outside -900000..=1000000 (a clock at least a tenth as fast as real time, at most twice)"));
                }
            }
            if let Event::Loss { rate, .. } | Event::DuplicateRequests { rate } = step.event {
                if !(0.0..=1.0).contains(&rate) {
                    return err("timeline.rate", format!("{rate} is not a rate between 0 and 1"));
                }
            }
        }
        Ok(())
    }

    /// Hex SHA-256 of the scenario as parsed (whitespace and comments of
    /// the file do not change it).
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("scenarios serialise");
        hex(&Sha256::digest(json))
    }

    /// The timeline in time order (stable for equal times).
    pub fn ordered_timeline(&self) -> Vec<Step> {
        let mut steps = self.timeline.clone();
        steps.sort_by(|x, y| x.at_s.total_cmp(&y.at_s));
        steps
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "site a power loss"
duration_s = 60

[objectives]
target = "in-city-site-loss"
rto_s = 20
source = "a test"

[[timeline]]
at_s = 10
do = "crash"
site = "a"

[[timeline]]
at_s = 5
do = "partition"
a = "a"
b = "c"
"#;

    #[test]
    fn parses_with_defaults_and_orders_the_timeline() {
        let s = Scenario::parse(GOOD, "s.toml").unwrap();
        assert_eq!(s.settle_s, 60);
        assert_eq!(s.links.dr_ms, 30);
        let t = s.ordered_timeline();
        assert_eq!(t[0].event, Event::Partition { a: "a".into(), b: "c".into() });
        assert_eq!(t[1].event, Event::Crash { site: "a".into() });
        assert!(t[1].event.is_fault());
    }

    #[test]
    fn errors_name_line_and_field() {
        let e = Scenario::parse(&GOOD.replace("site = \"a\"", "site = \"z\""), "s.toml").unwrap_err();
        assert!(e.to_string().contains("unknown site \"z\""), "{e}");
        let e = Scenario::parse(&GOOD.replace("do = \"crash\"", "do = \"explode\""), "s.toml").unwrap_err();
        assert!(e.to_string().starts_with("s.toml:"), "{e}");
        let e = Scenario::parse(&GOOD.replace("at_s = 10", "at_s = 99"), "s.toml").unwrap_err();
        assert!(e.to_string().contains("outside the run"), "{e}");
    }

    #[test]
    fn objectives_come_from_a_target_or_say_where_they_come_from() {
        let s = Scenario::parse(&GOOD.replace("rto_s = 20\n", ""), "s.toml").unwrap();
        let g = s.goals();
        assert_eq!(g.rto_s.value, 10, "the target's figure");
        assert!(g.rto_s.source.starts_with("product target in-city-site-loss"), "{}", g.rto_s.source);
        let s = Scenario::parse(&GOOD.replace("rto_s = 20", "rto_s = 5"), "s.toml").unwrap();
        assert!(s.goals().rto_s.source.starts_with("stricter than"), "{:?}", s.goals().rto_s);
        let looser = GOOD.replace("source = \"a test\"\n", "");
        let e = Scenario::parse(&looser, "s.toml").unwrap_err();
        assert!(e.to_string().contains("looser than the product target"), "{e}");
        let e = Scenario::parse(&GOOD.replace("in-city-site-loss", "in-city"), "s.toml").unwrap_err();
        assert!(e.to_string().contains("is not a product target"), "{e}");
    }

    #[test]
    fn digest_ignores_formatting_but_not_content() {
        let a = Scenario::parse(GOOD, "s.toml").unwrap();
        let b = Scenario::parse(&format!("# comment\n{GOOD}"), "s.toml").unwrap();
        let c = Scenario::parse(&GOOD.replace("rto_s = 20", "rto_s = 21"), "s.toml").unwrap();
        assert_eq!(a.goals().rto_s.value, 20);
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }
}
