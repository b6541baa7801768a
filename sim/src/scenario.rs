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
    #[serde(default)]
    pub timeline: Vec<Step>,
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Objectives {
    /// Longest a tenant may go without an acknowledged write.
    pub rto_s: u64,
    /// Acknowledged writes that may be lost (0 for every in-city event).
    #[serde(default)]
    pub rpo_entries: u64,
    /// After each site crash: from the crash to the first acknowledged
    /// write of each of the crashed site's shards at another site (see
    /// `recovery`). Unset: not an objective of this scenario.
    #[serde(default)]
    pub failover_ms: Option<u64>,
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
            Event::Corrupt { site } => format!("fault: corrupt a stored file at {site}"),
            Event::KeysDown { site } => format!("fault: key provider down at {site}"),
            Event::KeysUp { site } => format!("heal: key provider up at {site}"),
            Event::CrashLeader => "fault: crash of the controller leader's site".into(),
            Event::StopController { site } => format!("fault: controller of {site} stopped"),
            Event::StartController { site } => format!("heal: controller of {site} started"),
            Event::StopReplicator { site } => format!("fault: replicator of {site} stopped"),
            Event::StartReplicator { site } => format!("heal: replicator of {site} started"),
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
            Event::Partition { a, b } | Event::Heal { a, b } | Event::Loss { a, b, .. } | Event::Delay { a, b, .. } => vec![a, b],
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
            | Event::DrActivate { site, .. }
            | Event::DrRejoin { site }
            | Event::Failback { site } => vec![site],
            Event::CrashLeader | Event::Pause | Event::Resume | Event::VerifyRepair => vec![],
        }
    }

    /// A fault (something going wrong), as opposed to a heal or a command.
    pub fn is_fault(&self) -> bool {
        self.describe().starts_with("fault:")
    }
}

impl Scenario {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config(path)?, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        parse_validated(text, file, Self::validate)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
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
            if let Event::Loss { rate, .. } = step.event {
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
rto_s = 20

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
    fn digest_ignores_formatting_but_not_content() {
        let a = Scenario::parse(GOOD, "s.toml").unwrap();
        let b = Scenario::parse(&format!("# comment\n{GOOD}"), "s.toml").unwrap();
        let c = Scenario::parse(&GOOD.replace("rto_s = 20", "rto_s = 21"), "s.toml").unwrap();
        assert_eq!(a.digest(), b.digest());
        assert_ne!(a.digest(), c.digest());
    }
}
