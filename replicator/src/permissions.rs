//! Who may call which replicator RPC, checked before any handler runs.
//!
//! One table, by gRPC method path, so the data-path handlers stay free of
//! it. The platform's services and the CLI use Contracts; Replication is
//! between sites, except the read-only calls `tandem verify`, `failback`
//! and `switchover` make and the repair `verify --repair` asks for:
//!
//! | call                                            | needs          |
//! |-------------------------------------------------|----------------|
//! | Contracts Get (gRPC or bulk stream), Head, List | role viewer    |
//! | Contracts Put (gRPC or bulk stream)             | role operator  |
//! | Contracts Destroy (crypto-shredding)            | role admin     |
//! | Replication Digests, Inventory, Scrub, Divergent| role viewer    |
//! | Replication Repair                              | role operator  |
//! | every other call (Cursor, Apply, Stage, Fetch, ...; gRPC or bulk) | a site |
//!
//! Sites may call everything; over plaintext nothing is checked (see
//! `tandem_net::identity`). Refusals are logged and audited through
//! [`Refusals`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tandem_controller::service::refusals::Refusals;
use tandem_net::{Caller, Need, Role};
use tandem_proto::error_code;

/// What the call at `path` is, for messages, and what it needs.
pub fn need_of(path: &str) -> (&'static str, Need) {
    let method = path.rsplit('/').next().unwrap_or_default();
    let service = path.trim_start_matches('/').split('/').next().unwrap_or_default();
    // A bulk put or get (crate::bulk) carries what its gRPC namesake does.
    let contracts = service.ends_with(".Contracts") || (service.ends_with(".Bulk") && matches!(method, "Put" | "Get"));
    let replication = service.ends_with(".Replication");
    match method {
        "Get" | "Head" | "List" if contracts => ("contract get", Need::Role(Role::Viewer)),
        "Put" if contracts => ("contract put", Need::Role(Role::Operator)),
        "Destroy" if contracts => ("contract destroy", Need::Role(Role::Admin)),
        // A backup holds every wrapped key and all ciphertext.
        "Backup" if contracts => ("backup create", Need::Role(Role::Admin)),
        // Re-wrapping keys changes no data, but it is a key-management act.
        "Rotate" if contracts => ("keys rotate", Need::Role(Role::Admin)),
        "Digests" | "Inventory" | "Scrub" | "Divergent" if replication => ("verify", Need::Role(Role::Viewer)),
        "Repair" if replication => ("verify --repair", Need::Role(Role::Operator)),
        _ => ("replication between sites", Need::Site),
    }
}

/// A tower layer applying [`need_of`] to every request of the service it wraps.
#[derive(Clone)]
pub struct CheckRoles {
    refusals: Refusals,
}

impl CheckRoles {
    pub fn new(refusals: Refusals) -> Self {
        Self { refusals }
    }
}

impl<S> tower::Layer<S> for CheckRoles {
    type Service = Checked<S>;
    fn layer(&self, inner: S) -> Checked<S> {
        Checked { inner, refusals: self.refusals.clone() }
    }
}

#[derive(Clone)]
pub struct Checked<S> {
    inner: S,
    refusals: Refusals,
}

/// Served under the wrapped service's name.
impl<S: tonic::server::NamedService> tonic::server::NamedService for Checked<S> {
    const NAME: &'static str = S::NAME;
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for Checked<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let (what, need) = need_of(req.uri().path());
        let caller = Caller::from_extensions(req.extensions());
        match caller.check(what, need) {
            Ok(()) => Box::pin(self.inner.call(req)),
            Err(denied) => {
                self.refusals.record(&caller, what, &denied);
                let mut status = tonic::Status::permission_denied(denied.to_string());
                status.metadata_mut().insert(tandem_proto::ERROR_CODE_METADATA, tonic::metadata::MetadataValue::from_static(error_code::PERMISSION_DENIED));
                Box::pin(async move { Ok(status.into_http()) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_by_path() {
        assert_eq!(need_of("/tandem.replicator.v1.Contracts/Get").1, Need::Role(Role::Viewer));
        assert_eq!(need_of("/tandem.replicator.v1.Contracts/Put").1, Need::Role(Role::Operator));
        assert_eq!(need_of(crate::bulk::PUT).1, Need::Role(Role::Operator));
        assert_eq!(need_of(crate::bulk::STAGE).1, Need::Site);
        assert_eq!(need_of("/tandem.replicator.v1.Contracts/Destroy").1, Need::Role(Role::Admin));
        assert_eq!(need_of("/tandem.replicator.v1.Contracts/Backup").1, Need::Role(Role::Admin));
        assert_eq!(need_of("/tandem.replicator.v1.Replication/Scrub").1, Need::Role(Role::Viewer));
        assert_eq!(need_of("/tandem.replicator.v1.Replication/Repair").1, Need::Role(Role::Operator));
        assert_eq!(need_of(crate::bulk::APPLY).1, Need::Site);
        assert_eq!(need_of(crate::bulk::GET), ("contract get", Need::Role(Role::Viewer)));
        assert_eq!(need_of(crate::bulk::FETCH).1, Need::Site);
        // A "Get" of another service is not a contract read.
        assert_eq!(need_of("/tandem.replicator.v1.Replication/Get").1, Need::Site);
        assert_eq!(need_of("/nonsense").1, Need::Site);
    }
}
