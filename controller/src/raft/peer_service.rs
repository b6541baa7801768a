//! Raft peer service: the server side of [`super::network`].
//!
//! Decodes openraft's request, hands it to the local Raft, and returns
//! openraft's `Result` as JSON so the caller sees remote Raft errors as
//! such. A payload that does not decode is refused with INVALID_ARGUMENT and
//! never reaches Raft.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_proto::raft::raft_server;
use tandem_proto::raft::RaftPayload;
use tonic::{Request, Response, Status};

use super::Raft;

pub struct PeerService {
    raft: Raft,
}

impl PeerService {
    pub fn new(raft: Raft) -> Self {
        Self { raft }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().json)
        .map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let json = serde_json::to_vec(v).map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { json }))
}

#[tonic::async_trait]
impl raft_server::Raft for PeerService {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.vote(decode(req)?).await;
        encode(&r)
    }

    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.append_entries(decode(req)?).await;
        encode(&r)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.install_snapshot(decode(req)?).await;
        encode(&r)
    }
}
