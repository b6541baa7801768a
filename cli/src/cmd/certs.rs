//! `tandem certs init --dir DIR`: a development PKI for mutual TLS.
//!
//! Writes a CA and, signed by it, one certificate per site and per
//! operator, each in its own directory with a copy of the CA certificate,
//! so one path configures a daemon (`[tls]`) or the CLI (`--tls-dir`):
//!
//! ```text
//! DIR/ca.pem, DIR/ca.key             the CA (keep ca.key offline)
//! DIR/site-a/{ca,cert,key}.pem       site a's daemons
//! DIR/operator-alice/{ca,cert,key}.pem
//! ```
//!
//! Identities are URI SANs (see `tandem_net::identity`): `tandem:site:a`;
//! `tandem:operator:alice` with `tandem:role:admin`. Site certificates
//! serve and dial (server and client auth) and name localhost, 127.0.0.1
//! to 127.0.0.9, ::1 and the site's name, plus any `--san`; operator
//! certificates only dial (client auth), so they cannot pose as a site.
//! Keys are written mode 0600 and never overwritten: an existing file stops
//! the command before anything is written.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tandem_net::identity::{OPERATOR_URI_PREFIX, ROLE_URI_PREFIX, SITE_URI_PREFIX};
use tandem_net::Role;

/// The CA's subject. Fixed, so that a tool holding ca.key can sign more
/// certificates under the same issuer name.
pub const CA_COMMON_NAME: &str = "tandem development CA";
/// How many loopback addresses a site certificate names (127.0.0.1..=N).
const LOOPBACK_ADDRS: u8 = 9;

#[derive(clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Create a development CA and certificates for the sites and operators.
    Init(InitArgs),
}

#[derive(clap::Args)]
pub struct InitArgs {
    /// Where to write (created if missing; existing files are never overwritten).
    #[arg(long)]
    pub dir: PathBuf,
    /// Site names (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c")]
    pub sites: Vec<String>,
    /// An operator as NAME:ROLE (viewer, operator or admin); repeatable.
    #[arg(long = "operator", value_parser = operator, default_values = ["admin:admin", "operator:operator", "viewer:viewer"])]
    pub operators: Vec<(String, Role)>,
    /// An extra host name or IP address for a site's certificate, as
    /// SITE=NAME (repeatable), e.g. a=ctrl-a.dc1.example.
    #[arg(long = "san", value_parser = site_san)]
    pub sans: Vec<(String, String)>,
    /// Validity of every certificate, in days.
    #[arg(long, default_value_t = 365)]
    pub days: u32,
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn operator(s: &str) -> Result<(String, Role), String> {
    let (name, role) = s.split_once(':').ok_or("expected NAME:ROLE, e.g. alice:operator")?;
    if !is_name(name) {
        return Err(format!("operator name {name:?} must be letters, digits, '-', '_' or '.'"));
    }
    let role = Role::parse(role).ok_or_else(|| format!("unknown role {role:?}: use viewer, operator or admin"))?;
    Ok((name.to_string(), role))
}

fn site_san(s: &str) -> Result<(String, String), String> {
    let (site, name) = s.split_once('=').ok_or("expected SITE=NAME, e.g. a=ctrl-a.dc1.example")?;
    Ok((site.to_string(), name.to_string()))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        Command::Init(args) => {
            let written = init(&args)?;
            println!("created a development CA and {} certificates in {}", written.len(), args.dir.display());
            for dir in written {
                println!("  {}", dir.display());
            }
            println!("daemons: [tls] ca/cert/key = <dir>/site-<site>/{{ca,cert,key}}.pem; CLI: --tls-dir <dir>/operator-<name>");
            Ok(())
        }
    }
}

/// One certificate to issue.
struct Leaf {
    dir_name: String,
    params: CertificateParams,
}

/// Creates the PKI; returns the identity directories written.
pub fn init(args: &InitArgs) -> anyhow::Result<Vec<PathBuf>> {
    if args.sites.is_empty() || args.sites.iter().any(|s| !is_name(s)) {
        bail!("--sites must list site names (letters, digits, '-', '_' or '.')");
    }
    if let Some((site, _)) = args.sans.iter().find(|(site, _)| !args.sites.contains(site)) {
        bail!("--san names site {site:?}, which is not one of --sites");
    }
    let now = time::OffsetDateTime::now_utc();
    let not_after = now + time::Duration::days(i64::from(args.days.max(1)));
    let mut leaves = Vec::new();
    for site in &args.sites {
        let extra = args.sans.iter().filter(|(s, _)| s == site).map(|(_, n)| n.clone());
        leaves.push(Leaf { dir_name: format!("site-{site}"), params: site_params(site, extra)? });
    }
    for (name, role) in &args.operators {
        leaves.push(Leaf { dir_name: format!("operator-{name}"), params: operator_params(name, *role)? });
    }

    // Refuse before writing anything, so a rerun cannot half-replace a PKI.
    let dir = &args.dir;
    let mut targets = vec![dir.join("ca.pem"), dir.join("ca.key")];
    for leaf in &leaves {
        for f in ["ca.pem", "cert.pem", "key.pem"] {
            targets.push(dir.join(&leaf.dir_name).join(f));
        }
    }
    if let Some(existing) = targets.iter().find(|p| p.exists()) {
        bail!("{} already exists: refusing to overwrite (remove the old PKI or pick another --dir)", existing.display());
    }

    let ca_key = KeyPair::generate().context("cannot generate the CA key")?;
    let mut ca_params = ca_params()?;
    ca_params.not_before = now;
    ca_params.not_after = not_after;
    let ca_cert = ca_params.self_signed(&ca_key).context("cannot sign the CA certificate")?;
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params, ca_key);
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write_new(&dir.join("ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
    write_new(&dir.join("ca.key"), ca_key_pem.as_bytes(), 0o600)?;

    let mut written = Vec::new();
    for mut leaf in leaves {
        leaf.params.not_before = now;
        leaf.params.not_after = not_after;
        let key = KeyPair::generate().context("cannot generate a key")?;
        let cert = leaf.params.signed_by(&key, &issuer).with_context(|| format!("cannot sign {}", leaf.dir_name))?;
        let out = dir.join(&leaf.dir_name);
        std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        write_new(&out.join("ca.pem"), ca_cert.pem().as_bytes(), 0o644)?;
        write_new(&out.join("cert.pem"), cert.pem().as_bytes(), 0o644)?;
        write_new(&out.join("key.pem"), key.serialize_pem().as_bytes(), 0o600)?;
        written.push(out);
    }
    Ok(written)
}

/// The CA's parameters (validity set by the caller).
pub fn ca_params() -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "tandem");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    Ok(p)
}

fn uri(s: String) -> anyhow::Result<SanType> {
    Ok(SanType::URI(s.as_str().try_into()?))
}

/// Host names and addresses: IP literals become IP SANs.
fn host(name: &str) -> anyhow::Result<SanType> {
    Ok(match name.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(name.try_into().with_context(|| format!("{name:?} is not a valid host name"))?),
    })
}

fn site_params(site: &str, extra: impl Iterator<Item = String>) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, format!("tandem site {site}"));
    p.subject_alt_names.push(uri(format!("{SITE_URI_PREFIX}{site}"))?);
    let mut hosts = vec!["localhost".to_string(), site.to_string(), "::1".to_string()];
    hosts.extend((1..=LOOPBACK_ADDRS).map(|i| format!("127.0.0.{i}")));
    hosts.extend(extra);
    for h in &hosts {
        p.subject_alt_names.push(host(h)?);
    }
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// An operator's certificate parameters (validity set by the caller).
pub fn operator_params(name: &str, role: Role) -> anyhow::Result<CertificateParams> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name.push(DnType::OrganizationalUnitName, role.as_str());
    p.subject_alt_names.push(uri(format!("{OPERATOR_URI_PREFIX}{name}"))?);
    p.subject_alt_names.push(uri(format!("{ROLE_URI_PREFIX}{role}"))?);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Writes a new file with `mode`; fails if it exists.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write {}", path.display()))
}
