//! Who is calling, and what they may do.
//!
//! With mutual TLS every connection carries a certificate signed by the
//! cluster's CA. Its URI subject alternative names say who it belongs to:
//!
//! - `tandem:site:<name>`: a site's daemons (controller and replicator).
//!   Daemon-to-daemon calls (Raft, replication, heartbeats) need one.
//! - `tandem:operator:<name>` with `tandem:role:<viewer|operator|admin>`:
//!   a person using the CLI, with the role that bounds what they may do.
//!
//! URI SANs are covered by the CA's signature like the rest of the
//! certificate, survive re-encoding of the subject, and are easy to read
//! with `openssl x509 -ext subjectAltName`. A certificate with neither (or
//! with both) is signed but means nobody: it is allowed nothing.
//!
//! Without TLS (plaintext transport) nobody is identified, so nothing can
//! be checked: [`Caller::Plaintext`] is allowed everything, which is the
//! behaviour from before TLS existed. Never run plaintext across sites.

use std::fmt;

use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

/// What tonic records about a connection accepted by [`crate::tls::incoming`].
pub type TlsInfo = TlsConnectInfo<TcpConnectInfo>;

/// URI SAN prefixes of the encoding above.
pub const SITE_URI_PREFIX: &str = "tandem:site:";
pub const OPERATOR_URI_PREFIX: &str = "tandem:operator:";
pub const ROLE_URI_PREFIX: &str = "tandem:role:";

/// An operator's role; each includes everything the ones before it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read-only: status, audit, verify, contract get/list.
    Viewer,
    /// + switchover, failover, pause/resume, contract put, verify --repair.
    Operator,
    /// + DR activation, DR rejoin, failback, contract destroy.
    Admin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity a verified certificate carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    Site(String),
    Operator {
        name: String,
        role: Role,
    },
    /// Signed by the CA, but no (or a contradictory) tandem identity.
    Nobody,
}

impl Peer {
    /// Reads the identity from a certificate's URI SANs.
    pub fn from_uris<'a>(uris: impl IntoIterator<Item = &'a str>) -> Peer {
        let (mut sites, mut operators, mut roles) = (Vec::new(), Vec::new(), Vec::new());
        for uri in uris {
            if let Some(name) = uri.strip_prefix(SITE_URI_PREFIX) {
                sites.push(name);
            } else if let Some(name) = uri.strip_prefix(OPERATOR_URI_PREFIX) {
                operators.push(name);
            } else if let Some(role) = uri.strip_prefix(ROLE_URI_PREFIX) {
                roles.push(role);
            }
        }
        match (sites.as_slice(), operators.as_slice(), roles.as_slice()) {
            ([site], [], []) if !site.is_empty() => Peer::Site(site.to_string()),
            ([], [name], [role]) if !name.is_empty() => match Role::parse(role) {
                Some(role) => Peer::Operator { name: name.to_string(), role },
                None => Peer::Nobody,
            },
            _ => Peer::Nobody,
        }
    }

    /// Reads the identity from a DER certificate (already verified).
    pub fn from_der(der: &[u8]) -> Peer {
        let der = rustls::pki_types::CertificateDer::from(der);
        match webpki::EndEntityCert::try_from(&der) {
            Ok(cert) => Peer::from_uris(cert.valid_uri_names()),
            Err(_) => Peer::Nobody,
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Site(name) => write!(f, "site {name}"),
            Peer::Operator { name, role } => write!(f, "{name} ({role})"),
            Peer::Nobody => f.write_str("a certificate without a tandem identity"),
        }
    }
}

/// The caller of one request, as its connection proved it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// No TLS on this listener: nothing can be checked, everything is allowed.
    Plaintext,
    Tls(Peer),
}

/// What a call needs from its caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// An operator with at least this role (sites may too).
    Role(Role),
    /// A site's own daemon (daemon-to-daemon calls).
    Site,
}

/// A refused call, phrased for the operator who made it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("permission denied: {what} needs {needs}, {has}")]
pub struct Denied {
    pub what: String,
    pub needs: String,
    pub has: String,
}

impl Caller {
    /// The caller of `req`: the identity in its TLS client certificate, or
    /// [`Caller::Plaintext`] when it came over a plaintext listener (only
    /// TLS connections carry a [`TlsInfo`]).
    pub fn of<T>(req: &tonic::Request<T>) -> Caller {
        Self::from_info(req.extensions().get::<TlsInfo>())
    }

    /// The same, for an HTTP request (in a tower layer, before tonic decodes it).
    pub fn from_extensions(ext: &http::Extensions) -> Caller {
        Self::from_info(ext.get::<TlsInfo>())
    }

    fn from_info(info: Option<&TlsInfo>) -> Caller {
        match info {
            // The server's verifier requires a certificate, so there is one.
            Some(info) => Caller::Tls(info.peer_certs().and_then(|c| c.first().map(|c| Peer::from_der(c))).unwrap_or(Peer::Nobody)),
            None => Caller::Plaintext,
        }
    }

    /// Whether the caller may do `what` (named in the refusal), which needs `need`.
    /// Sites may do everything: they are the cluster's own daemons, which
    /// hold its keys anyway.
    pub fn check(&self, what: &str, need: Need) -> Result<(), Denied> {
        let denied = |needs: String, has: String| Err(Denied { what: what.to_string(), needs, has });
        match (self, need) {
            (Caller::Plaintext, _) | (Caller::Tls(Peer::Site(_)), _) => Ok(()),
            (Caller::Tls(Peer::Operator { role, .. }), Need::Role(needed)) if *role >= needed => Ok(()),
            (Caller::Tls(Peer::Operator { name, role }), Need::Role(needed)) => denied(format!("role {needed}"), format!("certificate {name} has {role}")),
            (Caller::Tls(Peer::Operator { name, role }), Need::Site) => {
                denied("a site certificate".into(), format!("certificate {name} is an operator's ({role})"))
            }
            (Caller::Tls(Peer::Nobody), Need::Role(needed)) => denied(format!("role {needed}"), "the certificate carries no tandem identity".into()),
            (Caller::Tls(Peer::Nobody), Need::Site) => denied("a site certificate".into(), "the certificate carries no tandem identity".into()),
        }
    }

    /// Who to name in the audit log for a refusal.
    pub fn who(&self) -> String {
        match self {
            Caller::Plaintext => "unknown (plaintext)".into(),
            Caller::Tls(Peer::Site(name)) => format!("site {name}"),
            Caller::Tls(Peer::Operator { name, .. }) => name.clone(),
            Caller::Tls(Peer::Nobody) => "unknown certificate".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str, role: Role) -> Caller {
        Caller::Tls(Peer::Operator { name: name.into(), role })
    }

    #[test]
    fn uris_name_sites_and_operators() {
        assert_eq!(Peer::from_uris(["tandem:site:a"]), Peer::Site("a".into()));
        assert_eq!(Peer::from_uris(["tandem:operator:alice", "tandem:role:admin"]), Peer::Operator { name: "alice".into(), role: Role::Admin });
        // Both kinds, two roles, an unknown role, or nothing: nobody.
        assert_eq!(Peer::from_uris(["tandem:site:a", "tandem:operator:x", "tandem:role:admin"]), Peer::Nobody);
        assert_eq!(Peer::from_uris(["tandem:operator:x", "tandem:role:admin", "tandem:role:viewer"]), Peer::Nobody);
        assert_eq!(Peer::from_uris(["tandem:operator:x", "tandem:role:root"]), Peer::Nobody);
        assert_eq!(Peer::from_uris(["tandem:operator:x"]), Peer::Nobody);
        assert_eq!(Peer::from_uris([]), Peer::Nobody);
    }

    #[test]
    fn roles_include_the_lower_ones() {
        assert!(op("v", Role::Viewer).check("status", Need::Role(Role::Viewer)).is_ok());
        assert!(op("o", Role::Operator).check("status", Need::Role(Role::Viewer)).is_ok());
        assert!(op("a", Role::Admin).check("failover", Need::Role(Role::Operator)).is_ok());
        let e = op("alice", Role::Viewer).check("failover", Need::Role(Role::Operator)).unwrap_err();
        assert_eq!(e.to_string(), "permission denied: failover needs role operator, certificate alice has viewer");
        assert!(op("o", Role::Operator).check("DR activation", Need::Role(Role::Admin)).is_err());
    }

    #[test]
    fn daemon_calls_need_a_site() {
        assert!(Caller::Tls(Peer::Site("a".into())).check("raft", Need::Site).is_ok());
        assert!(op("root", Role::Admin).check("raft", Need::Site).is_err());
        assert!(Caller::Tls(Peer::Nobody).check("status", Need::Role(Role::Viewer)).is_err());
        // Plaintext cannot check anything and allows everything.
        assert!(Caller::Plaintext.check("raft", Need::Site).is_ok());
    }
}
