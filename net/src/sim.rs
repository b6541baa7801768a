//! tonic over turmoil sockets.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A turmoil stream that tonic's server accepts.
pub struct SimStream(turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = ();
    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// The accepted connections of `listener`, as tonic wants them.
pub fn incoming(listener: turmoil::net::TcpListener) -> impl Stream<Item = std::io::Result<SimStream>> {
    futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(s, _)| SimStream(s));
        Some((next, listener))
    })
}

type ConnectFuture = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<turmoil::net::TcpStream>>> + Send>>;

/// A tonic connector that dials through turmoil.
pub fn connector() -> impl tower::Service<http::Uri, Response = TokioIo<turmoil::net::TcpStream>, Error = std::io::Error, Future = ConnectFuture> + Clone {
    tower::service_fn(|uri: http::Uri| {
        Box::pin(async move {
            let authority = uri.authority().ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "address has no host:port"))?.to_string();
            let stream = turmoil::net::TcpStream::connect(authority).await?;
            Ok(TokioIo::new(stream))
        }) as ConnectFuture
    })
}
