//! Raft peer service: the server side of [`super::network`].
//!
//! Decodes openraft's request, hands it to the local Raft, and returns
//! openraft's `Result` as JSON so the caller sees remote Raft errors as
//! such. A payload that does not decode is refused with INVALID_ARGUMENT and
//! never reaches Raft. With TLS, only a site's certificate may call.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tandem_net::{Caller, Need};
use tandem_proto::raft::raft_server;
use tandem_proto::raft::RaftPayload;
use tonic::{Request, Response, Status};

use super::Raft;

pub struct PeerService {
    raft: Raft,
    /// Requests from a generation older than this are refused (set by DR
    /// activation; 0 otherwise).
    generation_floor: u64,
}

impl PeerService {
    pub fn new(raft: Raft, generation_floor: u64) -> Self {
        Self { raft, generation_floor }
    }

    fn decode<T: DeserializeOwned>(&self, req: Request<RaftPayload>) -> Result<T, Status> {
        // Only the sites' controllers take part in Raft.
        let caller = Caller::of(&req);
        if let Err(denied) = caller.check("a Raft message", Need::Site) {
            tracing::warn!(caller = %caller.who(), "{denied}");
            return Err(Status::permission_denied(denied.to_string()));
        }
        let payload = req.into_inner();
        if payload.generation < self.generation_floor {
            return Err(Status::permission_denied(format!(
                "this cluster was reset to generation {} by DR activation; a node of generation {} may not take part",
                self.generation_floor, payload.generation
            )));
        }
        serde_json::from_slice(&payload.json).map_err(|e| Status::invalid_argument(format!("malformed raft payload: {e}")))
    }
}

fn encode<T: Serialize>(v: &T) -> Result<Response<RaftPayload>, Status> {
    let json = serde_json::to_vec(v).map_err(|e| Status::internal(format!("cannot encode raft reply: {e}")))?;
    Ok(Response::new(RaftPayload { json, generation: 0 }))
}

#[tonic::async_trait]
impl raft_server::Raft for PeerService {
    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.vote(self.decode(req)?).await;
        encode(&r)
    }

    async fn append_entries(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.append_entries(self.decode(req)?).await;
        encode(&r)
    }

    async fn install_snapshot(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let r = self.raft.install_snapshot(self.decode(req)?).await;
        encode(&r)
    }
}
