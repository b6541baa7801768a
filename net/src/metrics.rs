//! Prometheus text exposition: a small builder for the text format and an
//! HTTP server answering `GET /metrics`. Each daemon renders its own
//! figures on every scrape (no background collection), so what Prometheus
//! sees is what the daemon knows at that moment.
//!
//! Plain HTTP on its own port, as Prometheus scrapes by default: the page
//! carries operational figures only (no contract data, no PII, no keys).

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use http::{header, Request, Response, StatusCode};

/// What a scrape returns, rendered on demand.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The text format, one metric family at a time.
#[derive(Default)]
pub struct Text {
    out: String,
}

/// Kind of a metric family.
#[derive(Clone, Copy)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Text {
    pub fn new() -> Self {
        Self::default()
    }

    /// A family with one sample per (labels, value). A family with no
    /// samples still gets its HELP and TYPE lines, so dashboards can tell
    /// "none" from "not exported".
    pub fn family(&mut self, name: &str, kind: Kind, help: &str, samples: &[(Vec<(&str, String)>, f64)]) -> &mut Self {
        let kind = match kind {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, value) in samples {
            self.out.push_str(name);
            if !labels.is_empty() {
                let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
                let _ = write!(self.out, "{{{}}}", labels.join(","));
            }
            let _ = writeln!(self.out, " {value}");
        }
        self
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) -> &mut Self {
        self.family(name, kind, help, &[(Vec::new(), value)])
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Binds `addr` for `/metrics` now, so a taken port is a start-up error
/// rather than a silent gap in the dashboards.
pub async fn bind(addr: &str) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves `GET /metrics` on `listener` until this future is dropped, and
/// with it every connection it accepted (so nothing `render` holds - a
/// daemon's stores - outlives the daemon's shutdown).
pub async fn serve(listener: tokio::net::TcpListener, render: Render) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot accept a connection");
                continue;
            }
        };
        let render = render.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(answer(&req, &render)) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                tracing::debug!(error = %e, "metrics: connection ended");
            }
        });
    }
}

fn answer(req: &Request<hyper::body::Incoming>, render: &Render) -> Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) = if req.uri().path() != "/metrics" {
        (StatusCode::NOT_FOUND, "text/plain", "only /metrics is served here\n".to_string())
    } else if req.method() != http::Method::GET {
        (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "use GET\n".to_string())
    } else {
        (StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", render())
    };
    let mut resp = Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_render_in_the_text_format() {
        let mut t = Text::new();
        t.family("tandem_lag_entries", Kind::Gauge, "Entries behind.", &[(vec![("peer", "b".into())], 3.0), (vec![("peer", "c\"x".into())], 0.0)]);
        t.single("tandem_up", Kind::Gauge, "Up.", 1.0);
        assert_eq!(
            t.finish(),
            "# HELP tandem_lag_entries Entries behind.\n# TYPE tandem_lag_entries gauge\n\
             tandem_lag_entries{peer=\"b\"} 3\ntandem_lag_entries{peer=\"c\\\"x\"} 0\n\
             # HELP tandem_up Up.\n# TYPE tandem_up gauge\ntandem_up 1\n"
        );
    }
}
