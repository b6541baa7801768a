//! Bulk streams: file bytes over HTTP/2 without gRPC's copies.
//!
//! tonic copies every message twice per hop, into its encode buffer when
//! sending and into its decode buffer when receiving; on a large put
//! (client to owner, owner to its in-city peer) those copies were about
//! 15 % of the CPU (`perf`, README "Performance"). A bulk stream carries
//! the same protobuf messages as the gRPC call it replaces, but each
//! message's file bytes travel as their own HTTP/2 data, handed to hyper
//! and taken from it as they are (`Bytes`, no copy).
//!
//! Request body: frames of `kind: u8, len: u32 big-endian, payload` (the
//! layout of gRPC's length prefix, whose first byte is a flag instead):
//! - [`MESSAGE`]: a protobuf message of the stream's chunk type;
//! - [`DATA`]: file bytes, the chunk type's data part.
//!
//! The sender splits file bytes longer than [`MAX_MESSAGE`] into several
//! frames; the receiver hands a data frame on in the pieces hyper delivers
//! it in (the handlers take data of any length). A frame longer than
//! [`MAX_MESSAGE`], an unknown kind, a message that does not decode or a
//! body that ends inside a frame is an error of the stream, which the
//! handler reports as a broken stream (nothing kept).
//!
//! Response: a refusal is a gRPC status in the headers (as gRPC's
//! trailers-only responses, with the same metadata: error code, owner),
//! so callers handle it exactly like a gRPC refusal; success is HTTP 200
//! with the protobuf reply as the body.
//!
//! Bulk calls go through the same server (service [`SERVICE`]), the same
//! channels (TLS, the simulation's sockets) and the same role checks
//! ([`crate::permissions`]) as gRPC.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use prost::Message;
use tandem_proto::replicator as pb;
use tonic::body::Body;
use tonic::transport::Channel;
use tonic::Status;

use crate::MAX_MESSAGE;

/// The service name bulk calls are routed under.
pub const SERVICE: &str = "tandem.replicator.v1.Bulk";
/// A contract put: `PutChunk`s in, `PutReply` out (as `Contracts.Put`).
pub const PUT: &str = "/tandem.replicator.v1.Bulk/Put";
/// A staged copy, owner to in-city peer: `StageChunk`s in, `StageReply` out.
pub const STAGE: &str = "/tandem.replicator.v1.Bulk/Stage";
/// One change-log entry, shipper to peer: `ApplyChunk`s in, `ApplyReply` out.
pub const APPLY: &str = "/tandem.replicator.v1.Bulk/Apply";

pub(crate) const CONTENT_TYPE: &str = "application/x-tandem-bulk";
/// Frame kinds.
const MESSAGE: u8 = 0;
const DATA: u8 = 1;
const HEADER_LEN: usize = 5;

/// A chunk type whose data part travels as a [`DATA`] frame.
pub trait Chunk: Message + Default + Send + 'static {
    /// Takes out the data part, if this chunk is one.
    fn take_data(&mut self) -> Option<Bytes>;
    fn from_data(data: Bytes) -> Self;
}

/// `Chunk` for a generated chunk type whose `part` oneof has a `Data(Bytes)` variant.
macro_rules! chunk_with_data {
    ($chunk:ty, $part:path) => {
        impl Chunk for $chunk {
            fn take_data(&mut self) -> Option<Bytes> {
                use $part as Part;
                match self.part.take() {
                    Some(Part::Data(d)) => Some(d),
                    other => {
                        self.part = other;
                        None
                    }
                }
            }

            fn from_data(data: Bytes) -> Self {
                use $part as Part;
                Self { part: Some(Part::Data(data)) }
            }
        }
    };
}

chunk_with_data!(pb::PutChunk, pb::put_chunk::Part);
chunk_with_data!(pb::StageChunk, pb::stage_chunk::Part);
chunk_with_data!(pb::ApplyChunk, pb::apply_chunk::Part);

fn header(kind: u8, len: usize) -> [u8; HEADER_LEN] {
    let mut h = [kind, 0, 0, 0, 0];
    h[1..].copy_from_slice(&(len as u32).to_be_bytes());
    h
}

/// The body frames of one chunk: a data chunk's bytes go as they are, in
/// frames of at most [`MAX_MESSAGE`] bytes (the receiver's limit).
fn frames<M: Chunk>(mut chunk: M) -> Vec<Bytes> {
    match chunk.take_data() {
        Some(data) if data.is_empty() => vec![Bytes::copy_from_slice(&header(DATA, 0))],
        Some(data) => (0..data.len())
            .step_by(MAX_MESSAGE)
            .flat_map(|at| {
                let part = data.slice(at..data.len().min(at + MAX_MESSAGE));
                [Bytes::copy_from_slice(&header(DATA, part.len())), part]
            })
            .collect(),
        None => {
            let len = chunk.encoded_len();
            let mut buf = BytesMut::with_capacity(HEADER_LEN + len);
            buf.put_slice(&header(MESSAGE, len));
            chunk.encode_raw(&mut buf);
            vec![buf.freeze()]
        }
    }
}

/// A request body carrying `chunks`.
pub fn body<M: Chunk>(chunks: impl Stream<Item = M> + Send + 'static) -> Body {
    let frames = chunks.flat_map(|c| futures::stream::iter(frames(c))).map(|b| Ok::<_, Status>(Frame::data(b)));
    Body::new(StreamBody::new(frames))
}

/// Reads frames from a body, keeping the pieces hyper hands over.
struct Reader {
    body: Body,
    pieces: VecDeque<Bytes>,
    buffered: usize,
    ended: bool,
    /// Bytes of the current [`DATA`] frame still to come.
    data_left: usize,
}

impl Reader {
    fn new(body: Body) -> Self {
        Self { body, pieces: VecDeque::new(), buffered: 0, ended: false, data_left: 0 }
    }

    /// Waits until `n` bytes are buffered; false if the body ended first.
    async fn fill(&mut self, n: usize) -> Result<bool, Status> {
        while self.buffered < n {
            if self.ended {
                return Ok(false);
            }
            match self.body.frame().await {
                None => self.ended = true,
                Some(Err(s)) => return Err(s),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            self.buffered += data.len();
                            self.pieces.push_back(data);
                        }
                    }
                }
            }
        }
        Ok(true)
    }

    /// Takes up to `n` buffered bytes from the first piece (no copy);
    /// nothing if nothing is buffered.
    fn take_some(&mut self, n: usize) -> Bytes {
        let Some(first) = self.pieces.front_mut() else { return Bytes::new() };
        let out = first.split_to(n.min(first.len()));
        if first.is_empty() {
            self.pieces.pop_front();
        }
        self.buffered -= out.len();
        out
    }

    /// Takes exactly `n` buffered bytes, copying only if they span pieces
    /// (frame headers and protobuf messages: small).
    fn take(&mut self, n: usize) -> Bytes {
        let first = self.take_some(n);
        if first.len() == n {
            return first;
        }
        let mut out = BytesMut::with_capacity(n);
        out.put(first);
        // `fill(n)` made n bytes available, so this ends.
        while out.len() < n {
            let piece = self.take_some(n - out.len());
            out.put(piece);
        }
        out.freeze()
    }

    /// The next chunk; `None` at a clean end of the body. A [`DATA`]
    /// frame's bytes come as one data chunk per piece hyper handed over,
    /// as they arrive: the chunk types' users take data of any length.
    async fn next<M: Chunk>(&mut self) -> Result<Option<M>, Status> {
        if self.data_left == 0 {
            if !self.fill(HEADER_LEN).await? {
                return match self.buffered {
                    0 => Ok(None),
                    n => Err(Status::invalid_argument(format!("bulk stream ended inside a frame header ({n} of {HEADER_LEN} bytes)"))),
                };
            }
            let head = self.take(HEADER_LEN);
            let (kind, len) = (head[0], u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize);
            if len > MAX_MESSAGE {
                return Err(Status::invalid_argument(format!("bulk frame of {len} bytes exceeds the limit of {MAX_MESSAGE}")));
            }
            match kind {
                DATA if len == 0 => return Ok(Some(M::from_data(Bytes::new()))),
                DATA => self.data_left = len,
                MESSAGE => {
                    if !self.fill(len).await? {
                        return Err(Status::invalid_argument(format!("bulk stream ended inside a frame ({} of {len} bytes)", self.buffered)));
                    }
                    return M::decode(self.take(len)).map(Some).map_err(|e| Status::invalid_argument(format!("malformed message in bulk stream: {e}")));
                }
                _ => return Err(Status::invalid_argument(format!("bulk stream has a frame of unknown kind {kind}"))),
            }
        }
        if !self.fill(1).await? {
            return Err(Status::invalid_argument(format!("bulk stream ended inside a frame ({} bytes missing)", self.data_left)));
        }
        let data = self.take_some(self.data_left);
        self.data_left -= data.len();
        Ok(Some(M::from_data(data)))
    }
}

/// The chunks of a request body; the stream ends after its first error.
pub fn chunks<M: Chunk>(body: Body) -> impl Stream<Item = Result<M, Status>> + Send + Unpin {
    let reader = Some(Reader::new(body));
    Box::pin(futures::stream::unfold(reader, |reader| async move {
        let mut reader = reader?;
        match reader.next::<M>().await {
            Ok(Some(m)) => Some((Ok(m), Some(reader))),
            Ok(None) => None,
            Err(s) => Some((Err(s), None)),
        }
    }))
}

/// Calls `path` on `channel` with `chunks` as the request; the reply, or
/// the server's refusal (or a transport failure) as a status.
pub async fn call<M: Chunk, R: Message + Default>(channel: Channel, path: &str, chunks: impl Stream<Item = M> + Send + 'static) -> Result<R, Status> {
    send(channel, path, body(chunks)).await
}

/// Like [`call`], with the request body as it is: for tests, which send
/// malformed ones.
pub async fn send<R: Message + Default>(mut channel: Channel, path: &str, body: Body) -> Result<R, Status> {
    use tower::{Service, ServiceExt};
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(http::header::TE, "trailers")
        .body(body)
        .map_err(|e| Status::internal(format!("cannot build a bulk request: {e}")))?;
    let transport = |e: tonic::transport::Error| Status::from_error(Box::new(e));
    let response = channel.ready().await.map_err(transport)?.call(request).await.map_err(transport)?;
    if let Some(status) = Status::from_header_map(response.headers()) {
        match status.code() {
            tonic::Code::Ok => {}
            // Say what an SRE needs: sites of two tandem versions.
            tonic::Code::Unimplemented => return Err(Status::unimplemented(format!("{path} is not served there (a replicator of an older tandem version?)"))),
            _ => return Err(status),
        }
    }
    let bulk = response.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v == CONTENT_TYPE);
    if response.status() != http::StatusCode::OK || !bulk {
        return Err(Status::unknown(format!("bulk call {path} answered HTTP {} without a bulk reply", response.status())));
    }
    let mut body = response.into_body();
    let mut reply = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if reply.len() + data.len() > MAX_MESSAGE {
                return Err(Status::internal(format!("bulk reply of {path} exceeds {MAX_MESSAGE} bytes")));
            }
            reply.put(data);
        }
    }
    R::decode(reply.freeze()).map_err(|e| Status::internal(format!("malformed reply to {path}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::stage_chunk::Part;

    fn start() -> pb::StageChunk {
        pb::StageChunk { part: Some(Part::Start(pb::StageStart { origin: "a".into(), shard: 3, epoch: 7, blob: "x/y".into() })) }
    }

    /// A body made of `bytes` handed over in pieces of `piece` bytes.
    fn body_in_pieces(bytes: &[u8], piece: usize) -> Body {
        let pieces: Vec<Result<Frame<Bytes>, Status>> = bytes.chunks(piece.max(1)).map(|c| Ok(Frame::data(Bytes::copy_from_slice(c)))).collect();
        Body::new(StreamBody::new(futures::stream::iter(pieces)))
    }

    async fn encoded(chunks: Vec<pb::StageChunk>) -> Vec<u8> {
        body(futures::stream::iter(chunks)).collect().await.unwrap().to_bytes().to_vec()
    }

    async fn decoded(bytes: &[u8], piece: usize) -> Vec<Result<pb::StageChunk, Status>> {
        chunks::<pb::StageChunk>(body_in_pieces(bytes, piece)).collect().await
    }

    /// Adjacent data chunks joined (a data frame may arrive as several).
    fn joined(chunks: Vec<pb::StageChunk>) -> Vec<pb::StageChunk> {
        let mut out: Vec<pb::StageChunk> = Vec::new();
        for c in chunks {
            match (out.last_mut().and_then(|l| l.part.as_mut()), c.part) {
                (Some(Part::Data(prev)), Some(Part::Data(d))) => *prev = [prev.as_ref(), d.as_ref()].concat().into(),
                (_, part) => out.push(pb::StageChunk { part }),
            }
        }
        out
    }

    #[tokio::test]
    async fn chunks_round_trip_however_the_body_is_split() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let sent = vec![
            start(),
            pb::StageChunk::from_data(Bytes::from(data.clone())),
            pb::StageChunk::from_data(Bytes::new()),
            pb::StageChunk { part: Some(Part::End(pb::StageEnd { len: 70_000, blake3: "h".into() })) },
        ];
        let wire = encoded(sent.clone()).await;
        for piece in [1, 3, 5, 6, 4096, 65_536, wire.len()] {
            let got: Vec<pb::StageChunk> = decoded(&wire, piece).await.into_iter().map(|r| r.unwrap()).collect();
            assert_eq!(joined(got), joined(sent.clone()), "split into pieces of {piece} bytes");
        }
    }

    #[tokio::test]
    async fn data_is_never_copied_even_across_pieces() {
        let data = Bytes::from(vec![7u8; 4096]);
        let mut wire = header(DATA, data.len()).to_vec();
        wire.extend_from_slice(&data);
        // The frame header and the first 1000 bytes in one piece, the rest in another.
        let (one, two) = (Bytes::from(wire[..HEADER_LEN + 1000].to_vec()), Bytes::from(wire[HEADER_LEN + 1000..].to_vec()));
        let frames = vec![Ok::<_, Status>(Frame::data(one.clone())), Ok(Frame::data(two.clone()))];
        let got: Vec<pb::StageChunk> = chunks(Body::new(StreamBody::new(futures::stream::iter(frames)))).map(|r| r.unwrap()).collect().await;
        let parts: Vec<&Bytes> = got
            .iter()
            .map(|c| match &c.part {
                Some(Part::Data(d)) => d,
                other => panic!("expected data, got {other:?}"),
            })
            .collect();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].as_ptr(), one[HEADER_LEN..].as_ptr(), "a slice of what hyper handed over");
        assert_eq!(parts[1].as_ptr(), two.as_ptr());
        assert_eq!(parts[0].len() + parts[1].len(), 4096);
    }

    #[tokio::test]
    async fn a_truncated_stream_is_an_error_not_an_end() {
        let wire = encoded(vec![start(), pb::StageChunk::from_data(Bytes::from(vec![1u8; 100]))]).await;
        // Cut inside the data frame's payload, then inside its header.
        for cut in [wire.len() - 1, wire.len() - 100 - 2] {
            let got = decoded(&wire[..cut], 7).await;
            assert_eq!(got[0].as_ref().unwrap(), &start());
            let e = got.last().unwrap().as_ref().unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().contains("ended inside a frame"), "{}", e.message());
            assert!(got[1..got.len() - 1].iter().all(|c| c.is_ok()), "one error, at the end");
        }
        // Cut exactly between frames: a clean end (the handler then finds
        // the end marker missing).
        let first = encoded(vec![start()]).await;
        assert_eq!(decoded(&wire[..first.len()], 2).await.len(), 1);
    }

    #[tokio::test]
    async fn malformed_frames_are_refused_clearly() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![9, 0, 0, 0, 1, 0], "unknown kind 9"),
            (header(DATA, MAX_MESSAGE + 1).to_vec(), "exceeds the limit"),
            ([header(MESSAGE, 3).to_vec(), vec![0xff, 0xff, 0xff]].concat(), "malformed message"),
        ];
        for (wire, expect) in cases {
            let got = decoded(&wire, 2).await;
            assert_eq!(got.len(), 1);
            let e = got[0].as_ref().unwrap_err();
            assert!(e.message().contains(expect), "{expect}: {}", e.message());
        }
    }

    #[tokio::test]
    async fn an_empty_message_frame_is_an_empty_chunk() {
        // Ending exactly where the body ends (or a piece of it) once made
        // the reader take 0 bytes from no piece at all.
        for piece in [1, 5] {
            let got = decoded(&header(MESSAGE, 0), piece).await;
            assert_eq!(got.len(), 1);
            assert_eq!(got[0].as_ref().unwrap(), &pb::StageChunk { part: None }, "the handler refuses it as an empty chunk");
        }
    }

    #[test]
    fn file_bytes_beyond_the_frame_limit_go_in_several_frames() {
        let data = Bytes::from(vec![3u8; 2 * MAX_MESSAGE + 10]);
        let frames = frames(pb::StageChunk::from_data(data.clone()));
        let lens: Vec<usize> = frames.iter().skip(1).step_by(2).map(|f| f.len()).collect();
        assert_eq!(lens, vec![MAX_MESSAGE, MAX_MESSAGE, 10]);
        assert_eq!(frames[0].as_ref(), &header(DATA, MAX_MESSAGE));
        assert_eq!(frames[1].as_ptr(), data.as_ptr(), "not copied");
    }
}
