//! A replicator's configuration: one TOML file per site. Errors name the
//! file, the line and the field, like the controller's.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tandem_controller::config::{parse_validated, read_config, ConfigError};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicatorConfig {
    /// The site this replicator serves; must be one of `sites`.
    pub site: String,
    /// Metadata (rocksdb) goes to `data_dir/meta`; ciphertext to
    /// `data_dir/blobs` unless `blob_url` says otherwise.
    pub data_dir: PathBuf,
    /// The key-encryption key file (the path, never the key): the current
    /// KEK, which wraps every new data key. For development; production
    /// uses `[hsm]` instead. Exactly one of the two is required.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Key files of retired KEKs, kept only to unwrap keys not yet
    /// re-wrapped by `tandem keys rotate`; remove them once it has run.
    /// Allowed with `[hsm]` too (rotation from a key file to an HSM).
    #[serde(default)]
    pub retired_key_files: Vec<PathBuf>,
    /// The current KEK (and retired ones) in an HSM, over PKCS#11.
    #[serde(default)]
    pub hsm: Option<HsmConfig>,
    /// Controller addresses (host:port), tried in order.
    pub controllers: Vec<String>,
    /// Address to bind; defaults to this site's `addr`.
    #[serde(default)]
    pub listen: Option<String>,
    /// Where to serve Prometheus `/metrics` (plain HTTP, "host:port");
    /// none: not served.
    #[serde(default)]
    pub metrics_listen: Option<String>,
    /// How long a sync write waits for the in-city peer before the pair is
    /// recorded async.
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
    /// object_store URL for ciphertext (`s3://bucket/prefix`, `gs://...`,
    /// `az://...`, `file:///path`). Default: local filesystem.
    #[serde(default)]
    pub blob_url: Option<String>,
    /// Backend options for `blob_url` (region, endpoint, ...).
    #[serde(default)]
    pub blob_options: BTreeMap<String, String>,
    /// How long ciphertext another site staged here (streamed ahead of its
    /// log entry) is kept waiting for that entry before it is deleted.
    #[serde(default = "default_staged_ttl_ms")]
    pub staged_ttl_ms: u64,
    pub sites: Vec<ReplicaSiteConfig>,
    /// Mutual TLS towards the other replicators, the controllers and the
    /// CLI: the CA, this site's certificate and its key. Without it the
    /// replicator speaks plaintext and cannot check roles.
    #[serde(default)]
    pub tls: Option<tandem_net::TlsFiles>,
}

/// `[hsm]`: key-encryption keys held in an HSM token, used over PKCS#11.
/// The KEK id of an HSM key is its label. No secret is written here: the
/// PIN is read from `pin_file`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    /// The vendor's PKCS#11 module, e.g. /usr/lib/softhsm/libsofthsm2.so.
    pub module: PathBuf,
    /// Label of the token (slot) holding the keys.
    pub token_label: String,
    /// File holding the token's user PIN (one line, mode 0600).
    pub pin_file: PathBuf,
    /// Label of the current KEK (`tandem keys hsm-create` makes it).
    pub key_label: String,
    /// Labels of retired KEKs in the same token, kept only to unwrap keys
    /// not yet re-wrapped by `tandem keys rotate`.
    #[serde(default)]
    pub retired_key_labels: Vec<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaSiteConfig {
    pub name: String,
    /// host:port of that site's replicator.
    pub addr: String,
    /// Cap on what *this* site sends to that site, in MiB/s; 0: none.
    #[serde(default)]
    pub send_limit_mib_s: u64,
}

/// A peer that neither confirms nor receives any byte of a write for this
/// long is given up on (this site's direction goes async): over a ~1 ms
/// in-city link that is hundreds of round trips, and writes are
/// acknowledged again within a second of the peer dying.
fn default_sync_timeout_ms() -> u64 {
    700
}

fn default_staged_ttl_ms() -> u64 {
    10 * 60 * 1000
}

impl ReplicatorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(&read_config(path)?, &path.display().to_string())
    }

    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        parse_validated(text, file, Self::validate)
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_string(), m));
        let mut names = BTreeSet::new();
        for s in &self.sites {
            if s.name.is_empty() || !s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return err("sites.name", format!("site name {:?} must be letters, digits, '-' or '_'", s.name));
            }
            if !names.insert(s.name.as_str()) {
                return err("sites.name", format!("site {:?} is listed twice", s.name));
            }
            if !is_host_port(&s.addr) {
                return err("sites.addr", format!("address {:?} of site {:?} must be host:port", s.addr, s.name));
            }
        }
        if !names.contains(self.site.as_str()) {
            return err("site", format!("site {:?} is not one of the [[sites]]", self.site));
        }
        if self.controllers.is_empty() {
            return err("controllers", "at least one controller address is required".into());
        }
        if let Some(bad) = self.controllers.iter().find(|a| !is_host_port(a)) {
            return err("controllers", format!("address {bad:?} must be host:port"));
        }
        if !(100..=60_000).contains(&self.sync_timeout_ms) {
            return err("sync_timeout_ms", format!("{} is outside 100..=60000", self.sync_timeout_ms));
        }
        match (&self.key_file, &self.hsm) {
            (Some(_), Some(_)) => return err("key_file", "give either key_file (development) or an [hsm] section, not both".into()),
            (None, None) => return err("key_file", "a key-encryption key is required: key_file (development) or an [hsm] section".into()),
            (_, Some(hsm)) => hsm.validate()?,
            (Some(_), None) => {}
        }
        Ok(())
    }

    pub fn listen_addr(&self) -> String {
        self.listen.clone().unwrap_or_else(|| self.addr_of(&self.site).unwrap_or_default())
    }

    pub fn addr_of(&self, site: &str) -> Option<String> {
        self.sites.iter().find(|s| s.name == site).map(|s| s.addr.clone())
    }

    pub fn sync_timeout(&self) -> Duration {
        Duration::from_millis(self.sync_timeout_ms)
    }

    pub fn staged_ttl(&self) -> Duration {
        Duration::from_millis(self.staged_ttl_ms)
    }
}

impl HsmConfig {
    fn validate(&self) -> Result<(), (String, String)> {
        let labels = std::iter::once(("hsm.key_label", &self.key_label)).chain(self.retired_key_labels.iter().map(|l| ("hsm.retired_key_labels", l)));
        let mut seen = BTreeSet::new();
        for (field, label) in labels {
            if let Some(problem) = tandem_crypto::kek_id_problem(label) {
                return Err((field.into(), format!("key label {label:?}: {problem}")));
            }
            if !seen.insert(label) {
                return Err((field.into(), format!("key label {label:?} is configured twice")));
            }
        }
        if self.token_label.is_empty() {
            return Err(("hsm.token_label".into(), "must not be empty".into()));
        }
        Ok(())
    }
}

fn is_host_port(addr: &str) -> bool {
    addr.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
site = "a"
data_dir = "/tmp/a"
key_file = "/tmp/kek"
controllers = ["127.0.0.1:7101"]

[[sites]]
name = "a"
addr = "127.0.0.1:7111"

[[sites]]
name = "c"
addr = "127.0.0.1:7113"
send_limit_mib_s = 50
"#;

    #[test]
    fn parses_with_defaults() {
        let c = ReplicatorConfig::parse(GOOD, "r.toml").unwrap();
        assert_eq!(c.sync_timeout_ms, 700);
        assert_eq!(c.listen_addr(), "127.0.0.1:7111");
        assert_eq!(c.sites[1].send_limit_mib_s, 50);
    }

    #[test]
    fn bad_value_names_file_line_and_field() {
        let text = GOOD.replace("send_limit_mib_s = 50", "send_limit_mib_s = \"fast\"");
        let e = ReplicatorConfig::parse(&text, "r.toml").unwrap_err();
        assert!(e.to_string().starts_with("r.toml:14:") && e.to_string().contains("send_limit_mib_s"), "{e}");
        assert_eq!(e.line, Some(14));
    }

    const HSM: &str = r#"
[hsm]
module = "/usr/lib/softhsm/libsofthsm2.so"
token_label = "tandem"
pin_file = "/etc/tandem/hsm.pin"
key_label = "kek-2026-1"
retired_key_labels = ["kek-2025-1"]
"#;

    /// GOOD with `[hsm]` instead of `key_file` (a table goes before the
    /// `[[sites]]` array).
    fn with_hsm(hsm: &str) -> String {
        GOOD.replace("key_file = \"/tmp/kek\"\n", "").replacen("\n[[sites]]", &format!("{hsm}\n[[sites]]"), 1)
    }

    #[test]
    fn hsm_section_replaces_the_key_file() {
        let c = ReplicatorConfig::parse(&with_hsm(HSM), "r.toml").unwrap();
        assert!(c.key_file.is_none());
        let hsm = c.hsm.unwrap();
        assert_eq!((hsm.token_label.as_str(), hsm.key_label.as_str()), ("tandem", "kek-2026-1"));
        assert_eq!(hsm.retired_key_labels, ["kek-2025-1"]);
        assert_eq!(hsm.pin_file, PathBuf::from("/etc/tandem/hsm.pin"));
    }

    #[test]
    fn exactly_one_of_key_file_and_hsm_is_required() {
        let both = GOOD.replacen("\n[[sites]]", &format!("{HSM}\n[[sites]]"), 1);
        let e = ReplicatorConfig::parse(&both, "r.toml").unwrap_err();
        assert_eq!((e.field.as_deref(), e.line), (Some("key_file"), Some(4)), "{e}");
        assert!(e.to_string().starts_with("r.toml:4:") && e.to_string().contains("not both"), "{e}");

        let neither = GOOD.replace("key_file = \"/tmp/kek\"\n", "");
        let e = ReplicatorConfig::parse(&neither, "r.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("key_file"));
        assert!(e.to_string().contains("[hsm]"), "{e}");
    }

    #[test]
    fn bad_hsm_fields_name_file_line_and_field() {
        let e = ReplicatorConfig::parse(&with_hsm(&HSM.replace("\"kek-2026-1\"", "\"kek 2026\"")), "r.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("hsm.key_label"));
        assert!(e.to_string().contains("r.toml:") && e.to_string().contains("spaces"), "{e}");

        let e = ReplicatorConfig::parse(&with_hsm(&HSM.replace("kek-2025-1", "kek-2026-1")), "r.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("hsm.retired_key_labels"));

        let e = ReplicatorConfig::parse(&with_hsm(&HSM.replace("pin_file", "pin")), "r.toml").unwrap_err();
        assert!(e.to_string().starts_with("r.toml:") && e.to_string().contains("pin"), "{e}");
    }

    #[test]
    fn unknown_site_is_refused() {
        let e = ReplicatorConfig::parse(&GOOD.replace("site = \"a\"", "site = \"z\""), "r.toml").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("site"));
        assert_eq!(e.line, Some(2));
    }
}
