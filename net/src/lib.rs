//! The transport seam: how tonic reaches its peers and accepts connections.
//!
//! Production uses tokio sockets; the simulation (feature `turmoil`) uses
//! turmoil's simulated sockets, so the unchanged tonic services and clients
//! run inside the deterministic network. Nothing above this crate opens a
//! socket itself.
//!
//! Every accepted and connected production socket gets `TCP_NODELAY`: Raft
//! heartbeats and small control calls must not wait on Nagle's algorithm.

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

#[cfg(feature = "turmoil")]
mod sim;

/// Upper bound on establishing one TCP connection. A peer that does not
/// answer a SYN within this is treated as unreachable; callers retry later.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Which socket implementation tonic runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tokio,
    #[cfg(feature = "turmoil")]
    Turmoil,
}

/// A bound listening socket, ready to serve.
pub enum Listener {
    Tokio(tokio::net::TcpListener),
    #[cfg(feature = "turmoil")]
    Turmoil(turmoil::net::TcpListener),
}

impl Listener {
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match self {
            Listener::Tokio(l) => l.local_addr(),
            #[cfg(feature = "turmoil")]
            Listener::Turmoil(l) => l.local_addr(),
        }
    }
}

impl Transport {
    /// Binds `addr` ("host:port"). Binding is separate from serving so a
    /// daemon reports a taken port before it claims to be up.
    pub async fn bind(&self, addr: &str) -> std::io::Result<Listener> {
        match self {
            Transport::Tokio => Ok(Listener::Tokio(tokio::net::TcpListener::bind(addr).await?)),
            #[cfg(feature = "turmoil")]
            Transport::Turmoil => Ok(Listener::Turmoil(turmoil::net::TcpListener::bind(addr).await?)),
        }
    }

    /// Serves `router` on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        router: Router,
        listener: Listener,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> Result<(), tonic::transport::Error> {
        match listener {
            Listener::Tokio(l) => {
                let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            #[cfg(feature = "turmoil")]
            Listener::Turmoil(l) => router.serve_with_incoming_shutdown(sim::incoming(l), shutdown).await,
        }
    }

    /// A lazily connecting channel to `addr` ("host:port"). It connects on
    /// first use and reconnects after a broken connection; callers that see a
    /// timeout should drop it and ask for a new one, because a connection
    /// across a silent partition can hang without ever reporting an error.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .tcp_nodelay(true);
        match self {
            Transport::Tokio => Ok(endpoint.connect_lazy()),
            #[cfg(feature = "turmoil")]
            Transport::Turmoil => Ok(endpoint.connect_with_connector_lazy(sim::connector())),
        }
    }
}
