//! Each daemon's plain-HTTP listener (config `metrics_listen`): Prometheus
//! scrapes `GET /metrics`, load balancers, container healthchecks and
//! `tandem probe` ask `GET /health` (the process is alive and answers) and
//! `GET /ready` (it serves: 200, or 503 with why not). Both answer JSON.
//!
//! Plain HTTP on its own port, as Prometheus scrapes by default: the pages
//! carry operational figures only (no contract data, no PII, no keys).
//!
//! [`notify_systemd_when_ready`] tells systemd (`Type=notify`) the same
//! readiness `/ready` reports, so a unit is "started" exactly when it serves.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use http::{header, Request, Response, StatusCode};
use serde::Serialize;

use crate::metrics::Render;

/// Whether a daemon serves, and what it says about it (`/ready`'s body).
#[derive(Clone, Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not ready ("" when ready).
    pub reason: String,
    /// What the daemon knows that explains it (leader, view age, ...).
    pub detail: serde_json::Value,
}

pub type Ready = Arc<dyn Fn() -> Readiness + Send + Sync>;

/// What one daemon's listener answers.
#[derive(Clone)]
pub struct Pages {
    /// "controller" or "replicator".
    pub daemon: &'static str,
    pub site: String,
    pub metrics: Render,
    pub ready: Ready,
}

/// Binds `addr` now, so a taken port is a start-up error rather than a
/// silent gap in the dashboards.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves [`Pages`] on `listener` until this future is dropped, and with it
/// every connection it accepted (so nothing the pages hold - a daemon's
/// stores - outlives the daemon's shutdown).
pub async fn serve(listener: tokio::net::TcpListener, pages: Pages) {
    let pages = Arc::new(pages);
    let started = std::time::Instant::now();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http: cannot accept a connection");
                continue;
            }
        };
        let pages = pages.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let pages = pages.clone();
                async move { Ok::<_, Infallible>(answer(&req, &pages, started.elapsed())) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!(error = %e, "http: connection ended");
            }
        });
    }
}

/// `/health`'s body: alive, and which build.
fn health(pages: &Pages, uptime: Duration) -> serde_json::Value {
    let b = crate::version::current();
    serde_json::json!({
        "status": "alive",
        "daemon": pages.daemon,
        "site": pages.site,
        "version": b.version,
        "commit": b.commit,
        "built": b.built,
        "uptime_s": uptime.as_secs(),
    })
}

fn answer(req: &Request<hyper::body::Incoming>, pages: &Pages, uptime: Duration) -> Response<http_body_util::Full<bytes::Bytes>> {
    const JSON: &str = "application/json";
    let (status, content_type, body) = if req.method() != http::Method::GET {
        (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_string())
    } else {
        match req.uri().path() {
            "/metrics" => (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", (pages.metrics)()),
            "/health" => (StatusCode::OK, JSON, health(pages, uptime).to_string() + "\n"),
            "/ready" => {
                let r = (pages.ready)();
                let status = if r.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
                let mut body = serde_json::to_value(&r).unwrap_or_default();
                body["daemon"] = pages.daemon.into();
                body["site"] = pages.site.clone().into();
                (status, JSON, body.to_string() + "\n")
            }
            _ => (StatusCode::NOT_FOUND, "text/plain", "served here: /metrics, /health, /ready\n".to_string()),
        }
    };
    let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

/// How often readiness is re-checked until it is first reached.
const READY_POLL: Duration = Duration::from_millis(200);

/// Sends systemd `READY=1` (and a STATUS line) once `ready` first says so;
/// until then, the reason as STATUS, so `systemctl status` shows what the
/// daemon waits for. Does nothing outside systemd (no NOTIFY_SOCKET).
/// Runs until ready, then returns.
pub async fn notify_systemd_when_ready(ready: Ready) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let mut last_reason = String::new();
    loop {
        let r = ready();
        if r.ready {
            if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Ready, sd_notify::NotifyState::Status("serving")]) {
                tracing::warn!(error = %e, "cannot tell systemd the daemon is ready");
            }
            return;
        }
        if r.reason != last_reason {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&format!("not ready: {}", r.reason))]);
            last_reason = r.reason;
        }
        tokio::time::sleep(READY_POLL).await;
    }
}
