//! tonic over turmoil sockets, with message loss that behaves like TCP's.
//!
//! turmoil's own `fail_rate` drops a segment and never sends it again, so
//! one lost segment stalls a connection for good (its receiver waits for the
//! gap) until keepalive kills it: that is a dead link, not a lossy one. Real
//! TCP retransmits: the application sees the stream pause for a
//! retransmission timeout and then go on. [`set_tcp_loss`] models that: on a
//! lossy link every segment a write would send is lost with the link's
//! rate, and each lost one holds the stream for one retransmission timeout
//! (doubling while the retransmission is lost too) before the bytes go. A
//! connection attempt whose SYN is lost waits for the SYN retransmission.
//! Per connection that gives about MSS / (rate x RTO) of throughput, the
//! same order as real TCP at that loss (Mathis et al.).
//!
//! The model's state is per thread (turmoil runs every host on the thread
//! that steps the simulation) and its random draws come from the seed given
//! to [`reset_tcp_loss`], in the order the simulation writes: the same seed
//! gives the same losses.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// Linux's minimum retransmission timeout.
pub const RTO_MIN: Duration = Duration::from_millis(200);
/// Linux's initial SYN retransmission timeout.
pub const SYN_RTO: Duration = Duration::from_secs(1);
/// Longest single hold: TCP's backoff is capped as well.
const RTO_MAX: Duration = Duration::from_secs(6);
/// Payload bytes per segment (Ethernet MTU less IP and TCP headers).
const MSS: usize = 1448;

struct Losses {
    /// Loss rate per link, keyed by the two addresses in order.
    links: BTreeMap<(IpAddr, IpAddr), f64>,
    /// SplitMix64 state.
    rng: u64,
}

impl Losses {
    fn next_unit(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn rate(&self, a: IpAddr, b: IpAddr) -> f64 {
        self.links.get(&key(a, b)).copied().unwrap_or(0.0)
    }

    /// How long sending `bytes` from `a` to `b` is held by retransmissions.
    fn hold(&mut self, a: IpAddr, b: IpAddr, bytes: usize) -> Duration {
        let rate = self.rate(a, b);
        if rate <= 0.0 {
            return Duration::ZERO;
        }
        let mut hold = Duration::ZERO;
        for _ in 0..bytes.div_ceil(MSS).max(1) {
            if self.next_unit() < rate {
                hold += self.backoff(rate, RTO_MIN);
            }
        }
        hold
    }

    /// One retransmission timeout, doubled for each retransmission lost too.
    fn backoff(&mut self, rate: f64, first: Duration) -> Duration {
        let mut rto = first;
        while rto < RTO_MAX && self.next_unit() < rate {
            rto *= 2;
        }
        rto.min(RTO_MAX)
    }
}

fn key(a: IpAddr, b: IpAddr) -> (IpAddr, IpAddr) {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

thread_local! {
    static LOSSES: RefCell<Losses> = const { RefCell::new(Losses { links: BTreeMap::new(), rng: 0 }) };
}

/// Clears every link's loss and seeds the draws: call once per simulation.
pub fn reset_tcp_loss(seed: u64) {
    LOSSES.with(|l| {
        let mut l = l.borrow_mut();
        l.links.clear();
        l.rng = seed;
    });
}

/// Sets the loss rate (0.0 to 1.0) of the link between `a` and `b`, both
/// ways; 0.0 makes it lossless again.
pub fn set_tcp_loss(a: IpAddr, b: IpAddr, rate: f64) {
    LOSSES.with(|l| {
        let mut l = l.borrow_mut();
        if rate > 0.0 {
            l.links.insert(key(a, b), rate.min(1.0));
        } else {
            l.links.remove(&key(a, b));
        }
    });
}

fn hold_for(a: IpAddr, b: IpAddr, bytes: usize) -> Duration {
    LOSSES.with(|l| l.borrow_mut().hold(a, b, bytes))
}

fn syn_hold(a: IpAddr, b: IpAddr) -> Duration {
    LOSSES.with(|l| {
        let mut l = l.borrow_mut();
        let rate = l.rate(a, b);
        if rate > 0.0 && l.next_unit() < rate {
            l.backoff(rate, SYN_RTO)
        } else {
            Duration::ZERO
        }
    })
}

/// A turmoil stream whose writes pay for the link's losses (see the module).
pub struct SimStream {
    inner: turmoil::net::TcpStream,
    ends: Option<(IpAddr, IpAddr)>,
    /// A write held by a retransmission: its bytes go when this fires.
    held: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl SimStream {
    fn new(inner: turmoil::net::TcpStream) -> SimStream {
        let ends = match (inner.local_addr(), inner.peer_addr()) {
            (Ok(l), Ok(p)) => Some((l.ip(), p.ip())),
            _ => None,
        };
        SimStream { inner, ends, held: None }
    }
}

impl Connected for SimStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        if self.held.is_none() {
            if let Some((local, peer)) = self.ends {
                let hold = hold_for(local, peer, buf.len());
                if !hold.is_zero() {
                    self.held = Some(Box::pin(tokio::time::sleep(hold)));
                }
            }
        }
        if let Some(held) = self.held.as_mut() {
            ready!(held.as_mut().poll(cx));
            self.held = None;
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The accepted connections of `listener`, as tonic wants them.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = std::io::Result<SimStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(s, _)| SimStream::new(s));
        Some((next, listener))
    })
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<SimStream>>> + Send>>;

/// A tonic connector that dials through turmoil.
pub fn connector() -> impl tower::Service<http::Uri, Response = TokioIo<SimStream>, Error = std::io::Error, Future = ConnectFuture> + Clone {
    tower::service_fn(|uri: http::Uri| {
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "address has no host:port"))?;
            let stream = turmoil::net::TcpStream::connect(authority.to_string()).await?;
            // A lost SYN: the handshake completes one SYN timeout later.
            if let (Ok(local), Ok(peer)) = (stream.local_addr(), stream.peer_addr()) {
                let syn = syn_hold(local.ip(), peer.ip());
                if !syn.is_zero() {
                    tokio::time::sleep(syn).await;
                }
            }
            Ok(TokioIo::new(SimStream::new(stream)))
        }) as ConnectFuture
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 0, last])
    }

    #[test]
    fn a_lossless_link_holds_nothing_and_a_lossy_one_holds_by_its_rate() {
        reset_tcp_loss(7);
        assert_eq!(hold_for(ip(1), ip(2), 1 << 20), Duration::ZERO);
        set_tcp_loss(ip(2), ip(1), 0.05);
        // Both directions of the link, whichever end names it.
        let total: Duration = (0..200).map(|_| hold_for(ip(1), ip(2), 64 * 1024)).sum();
        // 200 x 46 segments at 5%: ~460 lost, each at least RTO_MIN.
        assert!(total >= RTO_MIN * 300 && total <= RTO_MIN * 1200, "{total:?}");
        assert_eq!(hold_for(ip(1), ip(3), 1 << 20), Duration::ZERO);
        set_tcp_loss(ip(1), ip(2), 0.0);
        assert_eq!(hold_for(ip(2), ip(1), 1 << 20), Duration::ZERO);
    }

    #[test]
    fn the_same_seed_draws_the_same_losses() {
        let draws = |seed| {
            reset_tcp_loss(seed);
            set_tcp_loss(ip(1), ip(2), 0.2);
            (0..50).map(|_| hold_for(ip(1), ip(2), 4000)).collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
    }
}
