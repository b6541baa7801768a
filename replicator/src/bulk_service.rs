//! The `Bulk` service: the server side of the bulk streams
//! ([`crate::bulk`] frames them), routing [`PUT`], [`STAGE`], [`APPLY`],
//! [`GET`] and [`FETCH`] to their handlers in [`crate::service`].

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

use crate::bulk::{chunks, message, streamed, Chunk, APPLY, CONTENT_TYPE, FETCH, GET, PUT, SERVICE, STAGE};
use crate::service::BoxStream;
use crate::site::Site;

/// The server side: routes [`PUT`], [`GET`] and [`FETCH`] (to the same
/// handlers as their gRPC namesakes), [`STAGE`] and [`APPLY`] to their
/// handlers in [`crate::service`] (the wire format stays in
/// [`crate::bulk`], below both).
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

/// A download's response: a refusal before the first chunk in the
/// headers, else the chunks and the final status in trailers.
fn streamed_reply<M: Chunk>(result: Result<BoxStream<M>, Status>) -> http::Response<Body> {
    match result {
        Ok(chunks) => {
            let mut response = http::Response::new(streamed(chunks));
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
                GET => match message::<tandem_proto::replicator::GetRequest>(body, "get request").await {
                    Ok(r) => streamed_reply(crate::service::get_chunks(&site, r).await),
                    Err(status) => status.into_http(),
                },
                FETCH => match message::<tandem_proto::replicator::FetchRequest>(body, "fetch request").await {
                    Ok(r) => streamed_reply(crate::service::fetch_chunks(&site, r)),
                    Err(status) => status.into_http(),
                },
                _ => Status::unimplemented(format!("no bulk call {path:?}")).into_http(),
            })
        })
    }
}
