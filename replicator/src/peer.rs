//! Calls to another site's `Replication` API that the daemon makes outside
//! the shipper's stream (cursor, backlog, retract, skip): the client with
//! the replicator's message limits, and the bound on small calls. Below the
//! operations that use it; it knows nothing of [`crate::site`].

use std::time::Duration;

use tandem_net::Transport;
use tandem_proto::replicator as pb;
use tandem_proto::replicator::replication_client::ReplicationClient;
use tonic::transport::Channel;

use crate::MAX_MESSAGE;

/// Bound on small replication calls (cursor, backlog).
pub const RPC_TIMEOUT: Duration = Duration::from_secs(3);

pub fn client(channel: Channel) -> ReplicationClient<Channel> {
    ReplicationClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE)
}

/// The outgoing backlog of the peer at `addr` towards site `me`, in
/// entries; `None` when the peer does not answer (down or cut off).
pub async fn backlog(transport: &Transport, addr: &str, me: &str) -> Option<u64> {
    let mut client = client(transport.channel(addr).ok()?);
    let req = pb::BacklogRequest { to: me.to_string() };
    match tokio::time::timeout(RPC_TIMEOUT, client.backlog(req)).await {
        Ok(Ok(r)) => Some(r.into_inner().entries),
        _ => None,
    }
}
