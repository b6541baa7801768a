//! The one reader of chunk streams (put, stage, apply, whether they came
//! as gRPC or as bulk frames): each chunk must carry a part, and a stream
//! that breaks is the sender's or the link's failure, refused as invalid
//! input with nothing kept. It is never reported as corruption: that word
//! is for stored data that fails its checks.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tandem_proto::replicator as pb;
use tonic::Status;

use crate::error::ReplicaError;

/// A chunk type with a `part` oneof.
pub trait Parts {
    type Part;
    fn into_part(self) -> Option<Self::Part>;
}

macro_rules! parts {
    ($chunk:ty, $part:ty) => {
        impl Parts for $chunk {
            type Part = $part;
            fn into_part(self) -> Option<$part> {
                self.part
            }
        }
    };
}

parts!(pb::PutChunk, pb::put_chunk::Part);
parts!(pb::StageChunk, pb::stage_chunk::Part);
parts!(pb::ApplyChunk, pb::apply_chunk::Part);

/// Reads the parts of one stream; `what` names the stream in errors.
pub struct PartReader<S> {
    stream: Pin<Box<S>>,
    what: &'static str,
}

impl<S, C> PartReader<S>
where
    S: Stream<Item = Result<C, Status>>,
    C: Parts,
{
    pub fn new(stream: S, what: &'static str) -> Self {
        PartReader { stream: Box::pin(stream), what }
    }

    /// The first part, for a stream whose first part names what it is: a
    /// stream that ends or opens with an empty chunk has none (`None`), for
    /// the caller to refuse as not starting the way it must.
    pub async fn first(&mut self) -> Result<Option<C::Part>, ReplicaError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(c)) => Ok(c.into_part()),
            Some(Err(s)) => Err(self.broken(s)),
        }
    }

    fn broken(&self, s: Status) -> ReplicaError {
        ReplicaError::Invalid(format!("{} stream broken: {}; nothing of it was kept", self.what, s.message()))
    }

    /// The next part; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<C::Part>, ReplicaError> {
        match self.stream.next().await {
            None => Ok(None),
            Some(Ok(c)) => c.into_part().map(Some).ok_or_else(|| ReplicaError::Invalid("empty chunk".into())),
            Some(Err(s)) => Err(self.broken(s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_come_in_order_and_a_broken_stream_is_invalid_not_corrupt() {
        let chunks = vec![Ok(pb::ApplyChunk { part: Some(pb::apply_chunk::Part::Data(vec![1u8].into())) }), Err(Status::unavailable("connection reset"))];
        let mut r = PartReader::new(futures::stream::iter(chunks), "replication");
        assert!(matches!(r.next().await, Ok(Some(pb::apply_chunk::Part::Data(_)))));
        let err = r.next().await.unwrap_err();
        assert!(matches!(err, ReplicaError::Invalid(ref m) if m.contains("replication stream broken: connection reset")), "{err:?}");
    }

    #[tokio::test]
    async fn a_chunk_without_a_part_is_refused_and_the_end_is_none() {
        let mut r = PartReader::new(futures::stream::iter(vec![Ok(pb::StageChunk { part: None })]), "stage");
        assert!(matches!(r.next().await, Err(ReplicaError::Invalid(m)) if m == "empty chunk"));
        assert!(matches!(r.next().await, Ok(None)));
    }
}
