//! Mutual TLS over tokio sockets (rustls with the ring provider).
//!
//! Both ends present a certificate signed by the cluster's CA; the server
//! refuses a client without one. The handshake is done here rather than by
//! tonic so that (1) each accepted socket keeps `TCP_NODELAY`, (2) a
//! refused handshake is logged on the server with its reason instead of
//! being dropped silently, (3) a client learns why it was refused, as
//! "TLS handshake with <addr> failed: <reason>". tonic still hands every
//! request the peer's certificates, for role checks ([`crate::identity`]).
//!
//! Key material is read from files and handed to rustls; it never appears
//! in an error, a log line or a `Debug` output.

use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, RootCertStore};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::identity::Peer;

/// Bound on one server-side handshake: a client that stalls mid-handshake
/// must not hold a slot for long.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Handshakes in progress at once per listener. Past this, new sockets are
/// closed at once: a flood of half-open connections cannot exhaust memory.
const HANDSHAKES_MAX: usize = 256;
/// Handshaken connections waiting for tonic to pick them up.
const ACCEPTED_QUEUE: usize = 64;
/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);
/// ALPN for gRPC.
const ALPN_H2: &[u8] = b"h2";

/// Where a process's CA, certificate and key are (PEM files).
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The cluster CA's certificate: peers must be signed by it.
    pub ca: PathBuf,
    /// This process's certificate (a site's, or an operator's for the CLI).
    pub cert: PathBuf,
    /// Its private key. Keep it mode 0600.
    pub key: PathBuf,
}

impl TlsFiles {
    /// The files `tandem certs init` writes into one identity's directory.
    pub fn in_dir(dir: &Path) -> TlsFiles {
        TlsFiles { ca: dir.join("ca.pem"), cert: dir.join("cert.pem"), key: dir.join("key.pem") }
    }
}

/// A TLS file that cannot be used; names the file, never its content.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct TlsError {
    pub file: String,
    pub problem: String,
}

pub(crate) fn file_error(path: &Path, problem: impl Into<String>) -> TlsError {
    TlsError { file: path.display().to_string(), problem: problem.into() }
}

/// The loaded TLS settings of one process.
pub struct Tls {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// Who this process is, from its own certificate.
    pub me: Peer,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tls({})", self.me)
    }
}

/// ring, chosen explicitly: the build also contains aws-lc-rs (through
/// object_store), and with two providers rustls cannot pick a default.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| file_error(path, format!("cannot read: {e}")))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem).collect::<Result<_, _>>().map_err(|_| file_error(path, "not a valid PEM certificate file"))?;
    if certs.is_empty() {
        return Err(file_error(path, "contains no PEM certificate"));
    }
    Ok(certs)
}

pub(crate) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    // The parser's error is not shown: it could quote the file.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| file_error(path, "contains no PEM private key (PKCS#8, PKCS#1 or SEC1)"))
}

fn roots(path: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(roots))
}

impl Tls {
    /// Loads and checks the three files; every error names the file.
    pub fn load(files: &TlsFiles) -> Result<Tls, TlsError> {
        let roots = roots(&files.ca)?;
        let chain = certs(&files.cert)?;
        let key = private_key(&files.key)?;
        let me = Peer::from_der(&chain[0]);

        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| file_error(&files.ca, format!("cannot verify clients with it: {e}")))?;
        let mismatch = |e: rustls::Error| file_error(&files.key, format!("does not fit the certificate {} ({e})", files.cert.display()));
        let mut server = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error(&files.cert, e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(mismatch)?;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];

        let mut client = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| file_error(&files.cert, e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(mismatch)?;
        client.alpn_protocols = vec![ALPN_H2.to_vec()];

        Ok(Tls { server: Arc::new(server), client: Arc::new(client), me })
    }
}

/// Checks, without a connection, that the certificate at `cert` is signed
/// by the CA at `ca`, valid now and meant for a client, and returns whose
/// it is. For commands that act on local files only (`tandem dr activate`),
/// where no server can check the caller.
pub fn verify_client_cert(ca: &Path, cert: &Path) -> Result<Peer, TlsError> {
    verify_client_chain(ca, &certs(cert)?, cert, "")
}

/// [`verify_client_cert`] of a chain (leaf first) read from `source`
/// (named in errors, after `subject`: "" or "its certificate is ").
pub(crate) fn verify_client_chain(ca: &Path, chain: &[CertificateDer<'static>], source: &Path, subject: &str) -> Result<Peer, TlsError> {
    let Some(leaf) = chain.first() else { return Err(file_error(source, "carries no certificate")) };
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider())
        .build()
        .map_err(|e| file_error(ca, format!("cannot verify clients with it: {e}")))?;
    verifier
        .verify_client_cert(leaf, &chain[1..], UnixTime::now())
        .map_err(|e| file_error(source, format!("{subject}refused by the CA {}: {}", ca.display(), describe(&e))))?;
    Ok(Peer::from_der(leaf))
}

/// The plain-words reason of a TLS failure, for both ends.
pub fn describe(e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    let cert = |c: &CertificateError| match c {
        CertificateError::UnknownIssuer | CertificateError::BadSignature => "certificate not trusted (not signed by this cluster's CA)".to_string(),
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "certificate expired".to_string(),
        CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => "certificate not valid yet".to_string(),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => "certificate not valid for this address".to_string(),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            "certificate not meant for this use (an operator's certificate cannot serve)".to_string()
        }
        other => format!("certificate refused ({other:?})"),
    };
    match e {
        rustls::Error::NoCertificatesPresented => "no certificate presented".into(),
        rustls::Error::InvalidCertificate(c) => cert(c),
        rustls::Error::AlertReceived(A::CertificateRequired) => "no certificate presented; the peer requires one".into(),
        // DecryptError: signed by a CA of the same name but another key.
        rustls::Error::AlertReceived(A::UnknownCA | A::DecryptError) => "certificate not trusted by the peer (not signed by its CA)".into(),
        rustls::Error::AlertReceived(A::CertificateExpired) => "certificate expired or not valid yet (the peer refused it)".into(),
        rustls::Error::AlertReceived(A::UnsupportedCertificate) => "certificate not meant for this use (the peer refused it)".into(),
        rustls::Error::AlertReceived(A::BadCertificate | A::CertificateUnknown) => "certificate refused by the peer".into(),
        other => other.to_string(),
    }
}

/// The reason inside an I/O error from tokio-rustls.
fn describe_io(e: &io::Error) -> String {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(tls) => describe(tls),
        None => e.to_string(),
    }
}

/// The handshaken connections of `listener`, as tonic wants them. Accepting
/// and handshaking run in a task that ends when tonic drops the stream.
/// Each is a `TlsStream`, whose connection info (the peer's certificates,
/// for [`crate::identity::Caller::of`]) tonic puts in every request.
pub fn incoming(listener: TcpListener, tls: Arc<Tls>) -> impl Stream<Item = io::Result<ServerStream>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    tokio::spawn(accept_loop(listener, tls, tx));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An accepted, handshaken connection.
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

async fn accept_loop(listener: TcpListener, tls: Arc<Tls>, tx: tokio::sync::mpsc::Sender<io::Result<ServerStream>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
    let slots = Arc::new(tokio::sync::Semaphore::new(HANDSHAKES_MAX));
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = tx.closed() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "cannot accept a connection");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(peer = %remote, "too many TLS handshakes in progress; connection closed");
            continue;
        };
        // Raft heartbeats and small control calls must not wait on Nagle.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(peer = %remote, error = %e, "cannot set TCP_NODELAY");
        }
        let (acceptor, tx) = (acceptor.clone(), tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(e)) => tracing::warn!(peer = %remote, reason = %describe_io(&e), "TLS handshake refused"),
                Err(_) => tracing::warn!(peer = %remote, "TLS handshake not finished within {HANDSHAKE_TIMEOUT:?}; connection closed"),
            }
        });
    }
}

/// A client stream that first replays the bytes read to confirm the
/// server accepted us (see [`connect`]).
pub struct Confirmed {
    head: Vec<u8>,
    pos: usize,
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

impl AsyncRead for Confirmed {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.pos < self.head.len() {
            let n = (self.head.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.head[start..start + n]);
            self.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Confirmed {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

fn refused(addr: &str, reason: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, format!("TLS handshake with {addr} failed: {reason}"))
}

/// Dials `addr` ("host:port"), handshakes, and waits for the server's first
/// bytes. In TLS 1.3 the server checks the client's certificate only after
/// the client considers the handshake done, so a refusal would otherwise
/// surface later as an anonymous broken HTTP/2 connection. Our servers
/// speak first (the HTTP/2 SETTINGS frame), so waiting costs one round trip
/// per connection and turns a refusal into a clear connect error.
pub async fn connect(tls: Arc<Tls>, addr: String) -> io::Result<TokioIo<Confirmed>> {
    let tcp = TcpStream::connect(&addr).await?;
    tcp.set_nodelay(true)?;
    let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(host.to_string())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("{host:?} is not a host name or IP address")))?;
    let connector = tokio_rustls::TlsConnector::from(tls.client.clone());
    let mut stream = connector.connect(name, tcp).await.map_err(|e| refused(&addr, describe_io(&e)))?;
    let mut head = vec![0u8; 16 * 1024];
    let n = stream.read(&mut head).await.map_err(|e| refused(&addr, describe_io(&e)))?;
    if n == 0 {
        return Err(refused(&addr, "the server closed the connection (does it trust this certificate?)".into()));
    }
    head.truncate(n);
    Ok(TokioIo::new(Confirmed { head, pos: 0, stream }))
}
