//! A controller node's configuration: one TOML file per site.
//!
//! Parsing never guesses: unknown keys are refused, and every error names
//! the file, the line and the field, so a typo at 3 a.m. is found at once.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::state::{Policy, SiteRole};

pub const DEFAULT_SHARD_COUNT: u32 = 256;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The site this node runs for; must be one of `sites`.
    pub site: String,
    /// Where the node keeps its rocksdb store.
    pub data_dir: PathBuf,
    /// Address to bind for Raft peers and the control API. Defaults to
    /// this site's `addr`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where to serve Prometheus `/metrics` (plain HTTP, "host:port");
    /// none: not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    #[serde(default = "default_shard_count")]
    pub shard_count: u32,
    pub sites: Vec<SiteConfig>,
    #[serde(default)]
    pub raft: RaftTimings,
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Mutual TLS for Raft peers, replicators and the CLI: the CA, this
    /// site's certificate and its key. Without it the node speaks
    /// plaintext and cannot check roles (everything is allowed).
    #[serde(default)]
    pub tls: Option<tandem_net::TlsFiles>,
}

fn default_shard_count() -> u32 {
    DEFAULT_SHARD_COUNT
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteConfig {
    pub name: String,
    pub node_id: u64,
    pub city: String,
    /// `active` or `dr-standby`.
    pub role: ConfigRole,
    /// host:port where peers and the CLI reach this site's controller.
    pub addr: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ConfigRole {
    Active,
    DrStandby,
}

impl From<ConfigRole> for SiteRole {
    fn from(r: ConfigRole) -> Self {
        match r {
            ConfigRole::Active => SiteRole::Active,
            ConfigRole::DrStandby => SiteRole::DrStandby,
        }
    }
}

/// Raft timings. The defaults suit sites ~1 ms (in city) and ~30 ms (DR)
/// apart: heartbeats well under the election timeout, elections within
/// seconds.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// How long a state-changing command may wait for its Raft commit
    /// before the caller is told the outcome is unknown (no quorum?).
    pub commit_timeout_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self { heartbeat_ms: 150, election_timeout_min_ms: 750, election_timeout_max_ms: 1500, commit_timeout_ms: 5000 }
    }
}

impl RaftTimings {
    pub fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.commit_timeout_ms)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub auto_failover: bool,
    pub cooldown_s: u64,
    pub lag_entries_max: u64,
    pub lag_s_max: u64,
    pub down_after_ms: u64,
    /// Unset: on when the controller runs mutual TLS (identities are then
    /// certificates, so "a second admin" means something), off without.
    pub four_eyes: Option<bool>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let p = Policy::default();
        Self {
            auto_failover: p.auto_failover,
            cooldown_s: p.cooldown_s,
            lag_entries_max: p.lag_entries_max,
            lag_s_max: p.lag_s_max,
            down_after_ms: p.down_after_ms,
            four_eyes: None,
        }
    }
}

impl PolicyConfig {
    /// The policy this config seeds a new cluster with; `tls`: whether the
    /// controller runs mutual TLS (the default of `four_eyes`).
    pub fn to_policy(&self, tls: bool) -> Policy {
        Policy {
            auto_failover: self.auto_failover,
            paused: false,
            cooldown_s: self.cooldown_s,
            lag_entries_max: self.lag_entries_max,
            lag_s_max: self.lag_s_max,
            down_after_ms: self.down_after_ms,
            four_eyes: self.four_eyes.unwrap_or(tls),
        }
    }
}

/// A configuration error, already phrased for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{file}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub file: String,
    pub line: Option<usize>,
    /// Dotted path of the offending field, when known (`raft.heartbeat_ms`).
    pub field: Option<String>,
    pub message: String,
}

impl NodeConfig {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config(path)?, &path.display().to_string())
    }

    /// Parses and validates `text`; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        parse_validated(text, file, Self::validate)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        if self.sites.is_empty() {
            return err("sites", "at least one [[sites]] entry is required".into());
        }
        let mut names = BTreeSet::new();
        let mut ids = BTreeSet::new();
        for s in &self.sites {
            if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return err("sites.name", format!("site name {:?} must be letters, digits, '-' or '_'", s.name));
            }
            if !names.insert(s.name.as_str()) {
                return err("sites.name", format!("site {:?} is listed twice", s.name));
            }
            if s.node_id == 0 || !ids.insert(s.node_id) {
                return err("sites.node_id", format!("node_id {} of site {:?} must be unique and non-zero", s.node_id, s.name));
            }
            if s.addr.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok()).is_none() {
                return err("sites.addr", format!("address {:?} of site {:?} must be host:port", s.addr, s.name));
            }
        }
        if !names.contains(self.site.as_str()) {
            return err("site", format!("site {:?} is not one of the [[sites]] ({})", self.site, names.into_iter().collect::<Vec<_>>().join(", ")));
        }
        if !self.sites.iter().any(|s| s.role == ConfigRole::Active) {
            return err("sites.role", "at least one site must be `active`".into());
        }
        if !(1..=65536).contains(&self.shard_count) {
            return err("shard_count", format!("{} is outside 1..=65536", self.shard_count));
        }
        let t = &self.raft;
        if t.heartbeat_ms == 0 || t.heartbeat_ms * 3 > t.election_timeout_min_ms {
            return err(
                "raft.heartbeat_ms",
                format!("{} ms must be non-zero and at most a third of election_timeout_min_ms ({})", t.heartbeat_ms, t.election_timeout_min_ms),
            );
        }
        if t.election_timeout_min_ms >= t.election_timeout_max_ms {
            return err(
                "raft.election_timeout_max_ms",
                format!("{} ms must exceed election_timeout_min_ms ({})", t.election_timeout_max_ms, t.election_timeout_min_ms),
            );
        }
        if t.commit_timeout_ms == 0 {
            return err("raft.commit_timeout_ms", "must be non-zero".into());
        }
        if self.policy.four_eyes == Some(true) && self.tls.is_none() {
            return err("policy.four_eyes", FOUR_EYES_NEEDS_TLS.into());
        }
        Ok(())
    }

    pub fn this_site(&self) -> &SiteConfig {
        // validate() guarantees the site exists.
        self.sites.iter().find(|s| s.name == self.site).expect("validated: site is listed")
    }

    pub fn listen_addr(&self) -> String {
        self.listen.clone().unwrap_or_else(|| self.this_site().addr.clone())
    }
}

/// Why `four_eyes` cannot be on without TLS: who asked and who approved
/// are certificate names, and `dr activate` checks a second admin's signed
/// approval against the cluster's CA; without TLS nobody could ever
/// approve, and DR activation would be blocked.
pub const FOUR_EYES_NEEDS_TLS: &str =
    "four_eyes needs mutual TLS ([tls]): approvals are bound to certificate names, and without them nobody could approve (dr activate would be blocked)";

/// Reads a config file, naming it in the error.
pub fn read_config(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: None,
        field: None,
        message: format!("cannot read config: {e}"),
    })
}

/// Parses TOML into `T`, then runs `validate`, which names the offending
/// field; every error carries the file, the line and the field. Shared by
/// every daemon's config so all of them report errors the same way.
pub fn parse_validated<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
    validate: impl FnOnce(&T) -> Result<(), (String, String)>,
) -> Result<T, ConfigError> {
    let cfg: T = parse_toml(text, file)?;
    validate(&cfg).map_err(|(field, message)| ConfigError {
        file: file.to_string(),
        line: line_of_field(text, &field),
        message: format!("field `{field}`: {message}"),
        field: Some(field),
    })?;
    Ok(cfg)
}

fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<T, ConfigError> {
    let syntax = |e: toml::de::Error| ConfigError {
        file: file.to_string(),
        line: e.span().map(|s| line_at(text, s.start)),
        field: None,
        message: e.message().to_string(),
    };
    let de = toml::Deserializer::parse(text).map_err(syntax)?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // serde_path_to_error says "." for the root; an unknown or missing
        // key there is named in the message itself.
        let field = (path != ".").then_some(path);
        ConfigError {
            file: file.to_string(),
            line: inner.span().map(|s| line_at(text, s.start)).or_else(|| field.as_deref().and_then(|f| line_of_field(text, f))),
            message: match &field {
                Some(f) => format!("field `{f}`: {}", inner.message()),
                None => inner.message().to_string(),
            },
            field,
        }
    })
}

fn line_at(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Best-effort line of the key named by the last part of `field`.
fn line_of_field(text: &str, field: &str) -> Option<usize> {
    let key = field.rsplit('.').next()?;
    let key = key.split('[').next()?;
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "a"
data_dir = "/tmp/a"

[raft]
heartbeat_ms = 100

[[sites]]
name = "a"
node_id = 1
city = "city-1"
role = "active"
addr = "127.0.0.1:7101"

[[sites]]
name = "c"
node_id = 3
city = "city-2"
role = "dr-standby"
addr = "127.0.0.1:7103"
"#;

    #[test]
    fn parses_good_config_with_defaults() {
        let cfg = NodeConfig::parse(GOOD, "a.toml").unwrap();
        assert_eq!(cfg.shard_count, 256);
        assert_eq!(cfg.raft.heartbeat_ms, 100);
        assert_eq!(cfg.raft.election_timeout_min_ms, RaftTimings::default().election_timeout_min_ms);
        assert_eq!(cfg.listen_addr(), "127.0.0.1:7101");
        assert_eq!(cfg.this_site().node_id, 1);
    }

    // A wrong type must name file, line and field.
    #[test]
    fn type_error_names_file_line_and_field() {
        let text = GOOD.replace("heartbeat_ms = 100", "heartbeat_ms = \"fast\"");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("raft.heartbeat_ms"));
        assert_eq!(err.line, Some(6));
        let shown = err.to_string();
        assert!(shown.starts_with("a.toml:6: field `raft.heartbeat_ms`"), "{shown}");
    }

    #[test]
    fn unknown_key_is_refused_with_its_line() {
        let text = GOOD.replace("heartbeat_ms = 100", "heartbeat_msec = 100");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert_eq!(err.line, Some(6), "{err}");
        assert!(err.to_string().contains("heartbeat_msec"), "{err}");
    }

    #[test]
    fn syntax_error_names_its_line() {
        let text = GOOD.replace("node_id = 3", "node_id = ");
        let err = NodeConfig::parse(&text, "c.toml").unwrap_err();
        assert_eq!(err.line, Some(17), "{err}");
        assert!(err.to_string().starts_with("c.toml:17:"), "{err}");
    }

    #[test]
    fn semantic_error_names_field_and_line() {
        let text = GOOD.replace("site = \"a\"", "site = \"z\"");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("site"));
        assert_eq!(err.line, Some(2));
        assert!(err.to_string().contains("\"z\" is not one of"), "{err}");
    }

    #[test]
    fn bad_timings_are_refused() {
        let text = GOOD.replace("heartbeat_ms = 100", "heartbeat_ms = 100\nelection_timeout_min_ms = 200");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("raft.heartbeat_ms"));
    }

    #[test]
    fn tls_section_names_three_files() {
        assert!(NodeConfig::parse(GOOD, "a.toml").unwrap().tls.is_none(), "no [tls]: plaintext");
        let text = format!("{GOOD}\n[tls]\nca = \"/pki/ca.pem\"\ncert = \"/pki/a.pem\"\nkey = \"/pki/a.key\"\n");
        let tls = NodeConfig::parse(&text, "a.toml").unwrap().tls.unwrap();
        assert_eq!(tls.key, PathBuf::from("/pki/a.key"));
        let err = NodeConfig::parse(&text.replace("key = ", "private_key = "), "a.toml").unwrap_err();
        assert!(err.to_string().contains("private_key"), "{err}");
    }

    #[test]
    fn four_eyes_without_tls_is_refused() {
        let text = format!("{GOOD}\n[policy]\nfour_eyes = true\n");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert_eq!(err.field.as_deref(), Some("policy.four_eyes"), "{err}");
        assert!(err.to_string().contains("needs mutual TLS"), "{err}");
        let with_tls = format!("{text}\n[tls]\nca = \"/pki/ca.pem\"\ncert = \"/pki/a.pem\"\nkey = \"/pki/a.key\"\n");
        assert!(NodeConfig::parse(&with_tls, "a.toml").unwrap().policy.four_eyes == Some(true));
        assert!(NodeConfig::parse(&text.replace("true", "false"), "a.toml").is_ok(), "off without TLS is fine");
    }

    #[test]
    fn missing_required_key_is_named() {
        let text = GOOD.replace("data_dir = \"/tmp/a\"\n", "");
        let err = NodeConfig::parse(&text, "a.toml").unwrap_err();
        assert!(err.to_string().contains("data_dir"), "{err}");
    }
}
