//! The transport seam: how tonic reaches its peers and accepts connections.
//!
//! Production uses tokio sockets; the simulation (feature `turmoil`) uses
//! turmoil's simulated sockets, so the unchanged tonic services and clients
//! run inside the deterministic network. Nothing above this crate opens a
//! socket itself.
//!
//! Every accepted and connected production socket gets `TCP_NODELAY`: Raft
//! heartbeats and small control calls must not wait on Nagle's algorithm.
//!
//! Production runs mutual TLS ([`Transport::Tls`], see [`tls`]) or, for
//! tests and single-host experiments, plaintext ([`Transport::Tokio`]),
//! where callers cannot be identified and role checks allow everything
//! ([`identity`]). The simulation stays plaintext: it must stay
//! deterministic, and its hosts trust each other by construction.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

pub mod endpoints;
pub mod identity;
pub mod metrics;
mod process;
pub mod signed;
#[cfg(feature = "turmoil")]
mod sim;
pub mod tls;
pub mod version;

pub use identity::{Caller, Denied, Need, Peer, Role};
#[cfg(feature = "turmoil")]
pub use sim::{reset_tcp_loss, set_tcp_loss};
pub use tls::{Tls, TlsError, TlsFiles};

/// Upper bound on establishing one TCP connection. A peer that does not
/// answer a SYN within this is treated as unreachable; callers retry later.
/// The sites are ~1 ms apart in the city and ~30 ms from the DR site, so
/// this is many round trips; a longer wait only delays the move to the
/// next site when one is dead (a failover's first writes, a lease renewal).
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// HTTP/2 flow-control windows. tonic's defaults (64 KiB streams) stall a
/// bulk stream every few packets and halve throughput on a fast link; these
/// let a replication stream keep ~1 ms worth of a 10 Gbit/s link in flight.
pub const STREAM_WINDOW: u32 = 8 * 1024 * 1024;
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Largest HTTP/2 frame we send: fewer frames per megabyte of ciphertext.
pub const MAX_FRAME: u32 = 1024 * 1024;
/// HTTP/2 pings on every connection: a peer behind a silent partition (no
/// RST, no FIN) is detected within interval + timeout, and every call on
/// the connection fails instead of hanging, streams of any length included.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// A tonic server builder with the windows above. Every daemon serves
/// through this, so tuning lives in one place.
pub fn server() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(CONNECTION_WINDOW))
        .max_frame_size(Some(MAX_FRAME))
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Which socket implementation tonic runs over.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Plaintext tokio sockets: nobody is authenticated (see [`identity`]).
    Tokio,
    /// Tokio sockets with mutual TLS: every peer shows a certificate of
    /// the cluster's CA.
    Tls(Arc<Tls>),
    #[cfg(feature = "turmoil")]
    Turmoil,
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Transport::Tokio, Transport::Tokio) => true,
            (Transport::Tls(a), Transport::Tls(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "turmoil")]
            (Transport::Turmoil, Transport::Turmoil) => true,
            _ => false,
        }
    }
}

impl Eq for Transport {}

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
    /// Tokio sockets: mutual TLS with `files` when given, plaintext otherwise.
    pub fn over_tokio(files: Option<&TlsFiles>) -> Result<Transport, TlsError> {
        match files {
            Some(files) => Ok(Transport::Tls(Arc::new(Tls::load(files)?))),
            None => Ok(Transport::Tokio),
        }
    }

    /// Binds `addr` ("host:port"). Binding is separate from serving so a
    /// daemon reports a taken port before it claims to be up.
    pub async fn bind(&self, addr: &str) -> std::io::Result<Listener> {
        match self {
            Transport::Tokio | Transport::Tls(_) => Ok(Listener::Tokio(tokio::net::TcpListener::bind(addr).await?)),
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
        match (listener, self) {
            (Listener::Tokio(l), Transport::Tls(tls)) => router.serve_with_incoming_shutdown(tls::incoming(l, tls.clone()), shutdown).await,
            (Listener::Tokio(l), _) => {
                let incoming = tonic::transport::server::TcpIncoming::from(l).with_nodelay(Some(true));
                router.serve_with_incoming_shutdown(incoming, shutdown).await
            }
            #[cfg(feature = "turmoil")]
            (Listener::Turmoil(l), _) => router.serve_with_incoming_shutdown(sim::incoming(l), shutdown).await,
        }
    }

    /// Serves `router` on `listener` in a background task until the
    /// returned handle is stopped. `what` names the daemon in the error log.
    pub fn spawn(self, router: Router, listener: Listener, what: &'static str) -> Serving {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stop_rx.await;
            };
            if let Err(e) = self.serve(router, listener, shutdown).await {
                tracing::error!(error = %e, server = what, "server stopped");
            }
        });
        Serving { stop: Some(stop_tx), task }
    }

    /// A lazily connecting channel to `addr` ("host:port"). It connects on
    /// first use and reconnects after a broken connection; callers that see a
    /// timeout should drop it and ask for a new one, because a connection
    /// across a silent partition can hang without ever reporting an error.
    pub fn channel(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(CONNECT_TIMEOUT)
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(CONNECTION_WINDOW))
            // What the server may send us in one frame (streamed reads).
            .max_frame_size(Some(MAX_FRAME))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true);
        match self {
            Transport::Tokio => Ok(endpoint.connect_lazy()),
            Transport::Tls(tls) => {
                let tls = tls.clone();
                let target = addr.to_string();
                // The URI stays http://: TLS is done by the connector.
                Ok(endpoint.connect_with_connector_lazy(tower::service_fn(move |_: http::Uri| tls::connect(tls.clone(), target.clone()))))
            }
            #[cfg(feature = "turmoil")]
            Transport::Turmoil => Ok(endpoint.connect_with_connector_lazy(sim::connector())),
        }
    }
}

/// A server running in the background (see [`Transport::spawn`]).
pub struct Serving {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Stops accepting, lets in-flight calls finish, and waits for the end.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}
