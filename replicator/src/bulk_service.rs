//! The `Bulk` service: the server side of the bulk streams
//! ([`crate::bulk`] frames them), routing [`PUT`], [`STAGE`] and [`APPLY`]
//! to their handlers in [`crate::service`].

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use crate::bulk::{chunks, APPLY, CONTENT_TYPE, PUT, SERVICE, STAGE};
use crate::site::Site;

/// The server side: routes [`PUT`] (to the same handler as the gRPC
/// `Contracts.Put`), [`STAGE`] and [`APPLY`] to their handlers in
/// [`crate::service`] (the wire format stays in [`crate::bulk`], below both).
#[derive(Clone)]
pub struct BulkServer {
    site: Arc<Site>,
}

impl BulkServer {
    pub fn new(site: Arc<Site>) -> Self {
        Self { site }
    }
}

impl tonic::server::NamedService for BulkServer {
    const NAME: &'static str = SERVICE;
}

fn reply(result: Result<impl Message, Status>) -> http::Response<Body> {
    match result {
        Ok(m) => {
            let mut response = http::Response::new(Body::new(Full::new(Bytes::from(m.encode_to_vec()))));
            response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(status) => status.into_http(),
    }
}

impl tower::Service<http::Request<Body>> for BulkServer {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let site = self.site.clone();
        let path = req.uri().path().to_string();
        let body = req.into_body();
        Box::pin(async move {
            Ok(match path.as_str() {
                PUT => reply(crate::service::put_counted(&site, chunks(body)).await),
                STAGE => reply(crate::service::stage_logged(&site, chunks(body)).await),
                APPLY => reply(crate::service::apply_logged(&site, chunks(body)).await),
                _ => Status::unimplemented(format!("no bulk call {path:?}")).into_http(),
            })
        })
    }
}
