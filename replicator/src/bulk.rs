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
//! Downloads ([`GET`], [`FETCH`]) go the other way: the request body is
//! the protobuf request as it is, and a successful response's body is
//! frames as above, ended by HTTP/2 trailers holding the final gRPC
//! status (again as gRPC does). A failure part-way (a blob that fails its
//! integrity check after some of it was sent) is that status; a body that
//! ends without it (a cut connection, a crashed server) is an error too,
//! never a short file taken for a whole one.
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
/// A contract read: `GetRequest` in, `GetChunk`s out (as `Contracts.Get`).
pub const GET: &str = "/tandem.replicator.v1.Bulk/Get";
/// One contract's state for a repair, from another site: `FetchRequest`
/// in, `ApplyChunk`s out (as `Replication.Fetch`).
pub const FETCH: &str = "/tandem.replicator.v1.Bulk/Fetch";

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
chunk_with_data!(pb::GetChunk, pb::get_chunk::Part);

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

/// A download's response body: the frames of `chunks`, then trailers with
/// the final status: OK after the last chunk, or the first error (which
/// ends the stream).
pub fn streamed<M: Chunk>(chunks: impl Stream<Item = Result<M, Status>> + Send + 'static) -> Body {
    let items = chunks.map(Some).chain(futures::stream::iter([None]));
    let frames = items
        .scan(false, |ended, item| {
            if *ended {
                return futures::future::ready(None);
            }
            let out: Vec<Frame<Bytes>> = match item {
                Some(Ok(chunk)) => frames(chunk).into_iter().map(Frame::data).collect(),
                Some(Err(status)) => {
                    *ended = true;
                    vec![Frame::trailers(status_headers(&status))]
                }
                None => {
                    *ended = true;
                    vec![Frame::trailers(status_headers(&Status::ok("")))]
                }
            };
            futures::future::ready(Some(futures::stream::iter(out)))
        })
        .flatten()
        .map(Ok::<_, Status>);
    Body::new(StreamBody::new(frames))
}

fn status_headers(status: &Status) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    if status.add_header(&mut headers).is_err() {
        // Only a metadata value that is no header value gets here.
        headers.clear();
        let _ = Status::internal("the server's final status could not be sent").add_header(&mut headers);
    }
    headers
}

/// The gRPC status in `headers`, if any. tonic panics on details that are
/// not base64; tandem sends none, so a peer's are dropped, never trusted.
fn status_of(headers: &http::HeaderMap) -> Option<Status> {
    let mut headers = headers.clone();
    headers.remove("grpc-status-details-bin");
    Status::from_header_map(&headers)
}

/// Reads frames from a body, keeping the pieces hyper hands over.
struct Reader {
    body: Body,
    pieces: VecDeque<Bytes>,
    buffered: usize,
    ended: bool,
    /// Bytes of the current [`DATA`] frame still to come.
    data_left: usize,
    /// A download's body ends with its final status in trailers; a
    /// request body has none.
    ends_with_status: bool,
    trailers: Option<http::HeaderMap>,
}

impl Reader {
    fn new(body: Body, ends_with_status: bool) -> Self {
        Self { body, pieces: VecDeque::new(), buffered: 0, ended: false, data_left: 0, ends_with_status, trailers: None }
    }

    /// The error of a body that ended early: the sender's own failure when
    /// its trailers say why, else `truncated`.
    fn ended_early(&self, truncated: Status) -> Status {
        match self.trailers.as_ref().and_then(status_of) {
            Some(s) if s.code() != tonic::Code::Ok => s,
            _ => truncated,
        }
    }

    /// At a clean end between frames: a download's trailers decide.
    fn clean_end(&self) -> Result<(), Status> {
        if !self.ends_with_status {
            return Ok(());
        }
        match self.trailers.as_ref().and_then(status_of) {
            Some(s) if s.code() == tonic::Code::Ok => Ok(()),
            Some(s) => Err(s),
            None => Err(Status::unavailable("bulk stream ended without its final status (connection cut or server stopped); what came is incomplete")),
        }
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
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if !data.is_empty() => {
                        self.buffered += data.len();
                        self.pieces.push_back(data);
                    }
                    Ok(_) => {}
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            self.trailers = Some(trailers);
                        }
                    }
                },
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
                    0 => self.clean_end().map(|()| None),
                    n => Err(self.ended_early(Status::invalid_argument(format!("bulk stream ended inside a frame header ({n} of {HEADER_LEN} bytes)")))),
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
                        return Err(self.ended_early(Status::invalid_argument(format!("bulk stream ended inside a frame ({} of {len} bytes)", self.buffered))));
                    }
                    return M::decode(self.take(len)).map(Some).map_err(|e| Status::invalid_argument(format!("malformed message in bulk stream: {e}")));
                }
                _ => return Err(Status::invalid_argument(format!("bulk stream has a frame of unknown kind {kind}"))),
            }
        }
        if !self.fill(1).await? {
            return Err(self.ended_early(Status::invalid_argument(format!("bulk stream ended inside a frame ({} bytes missing)", self.data_left))));
        }
        let data = self.take_some(self.data_left);
        self.data_left -= data.len();
        Ok(Some(M::from_data(data)))
    }
}

/// The chunks of a request body; the stream ends after its first error.
pub fn chunks<M: Chunk>(body: Body) -> impl Stream<Item = Result<M, Status>> + Send + Unpin {
    read_chunks(Reader::new(body, false))
}

/// The chunks of a download's response body, whose end must carry an OK
/// status (see the module's comment).
fn downloaded<M: Chunk>(body: Body) -> impl Stream<Item = Result<M, Status>> + Send + Unpin {
    read_chunks(Reader::new(body, true))
}

fn read_chunks<M: Chunk>(reader: Reader) -> impl Stream<Item = Result<M, Status>> + Send + Unpin {
    let reader = Some(reader);
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
pub async fn send<R: Message + Default>(channel: Channel, path: &str, body: Body) -> Result<R, Status> {
    let response = request(channel, path, body).await?;
    // A reply too long or malformed is the server's fault, not the caller's.
    message(response.into_body(), &format!("reply of {path}")).await.map_err(|e| match e.code() {
        tonic::Code::InvalidArgument => Status::internal(e.message().to_string()),
        _ => e,
    })
}

/// Calls the download `path` on `channel` with `req`; the chunks the
/// server streams back. A refusal is the call's error; a failure part-way
/// is the stream's last item, and so is a body cut short.
pub async fn download<Q: Message, M: Chunk>(
    channel: Channel,
    path: &str,
    req: &Q,
) -> Result<impl Stream<Item = Result<M, Status>> + Send + Unpin + use<Q, M>, Status> {
    let body = Body::new(http_body_util::Full::new(Bytes::from(req.encode_to_vec())));
    let response = request(channel, path, body).await?;
    Ok(downloaded(response.into_body()))
}

/// The chunks of a download, type-erased so a caller can take them from
/// either transport.
pub type Downloaded<M> = std::pin::Pin<Box<dyn Stream<Item = Result<M, Status>> + Send>>;

/// [`download`], or, from a replicator that serves no bulk calls (one
/// built before 2026-12-08, during a rolling upgrade), the same chunks
/// from its gRPC namesake, which `grpc` calls.
pub async fn download_or_grpc<Q, M, S, F>(channel: Channel, path: &str, req: Q, grpc: impl FnOnce(Channel, Q) -> F) -> Result<Downloaded<M>, Status>
where
    Q: Message + 'static,
    M: Chunk,
    S: Stream<Item = Result<M, Status>> + Send + 'static,
    F: std::future::Future<Output = Result<tonic::Response<S>, Status>>,
{
    match download::<Q, M>(channel.clone(), path, &req).await {
        Ok(chunks) => Ok(Box::pin(chunks)),
        Err(s) if s.code() == tonic::Code::Unimplemented => Ok(Box::pin(grpc(channel, req).await?.into_inner())),
        Err(s) => Err(s),
    }
}

/// Sends one bulk request; the response once its headers say it is a
/// bulk answer, or the server's refusal.
async fn request(mut channel: Channel, path: &str, body: Body) -> Result<http::Response<Body>, Status> {
    use tower::{Service, ServiceExt};
    let request = http::Request::post(path)
        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(http::header::TE, "trailers")
        .body(body)
        .map_err(|e| Status::internal(format!("cannot build a bulk request: {e}")))?;
    let transport = |e: tonic::transport::Error| Status::from_error(Box::new(e));
    let response = channel.ready().await.map_err(transport)?.call(request).await.map_err(transport)?;
    if let Some(status) = status_of(response.headers()) {
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
    Ok(response)
}

/// One protobuf message making up a whole body (a reply, or a download's
/// request), of at most [`MAX_MESSAGE`] bytes.
pub async fn message<R: Message + Default>(mut body: Body, what: &str) -> Result<R, Status> {
    let mut bytes = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            if bytes.len() + data.len() > MAX_MESSAGE {
                return Err(Status::invalid_argument(format!("bulk {what} exceeds {MAX_MESSAGE} bytes")));
            }
            bytes.put(data);
        }
    }
    R::decode(bytes.freeze()).map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
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

    fn get_start() -> pb::GetChunk {
        pb::GetChunk { part: Some(pb::get_chunk::Part::File(pb::FileStart { name: "deed.pdf".into(), ..Default::default() })) }
    }

    #[tokio::test]
    async fn a_download_round_trips_and_ends_with_its_status() {
        let data = Bytes::from((0..(MAX_MESSAGE + 3000) as u32).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
        let sent = vec![get_start(), pb::GetChunk::from_data(data.clone()), pb::GetChunk::from_data(Bytes::new())];
        let got: Vec<pb::GetChunk> = downloaded(streamed(futures::stream::iter(sent.clone()).map(Ok))).map(|r| r.unwrap()).collect().await;
        assert_eq!(got[0], sent[0]);
        let bytes: Vec<u8> = got[1..]
            .iter()
            .flat_map(|c| match &c.part {
                Some(pb::get_chunk::Part::Data(d)) => d.to_vec(),
                other => panic!("expected data, got {other:?}"),
            })
            .collect();
        assert_eq!(bytes, data.to_vec());
    }

    #[tokio::test]
    async fn a_failure_part_way_is_the_last_item_with_its_code_and_metadata() {
        let mut failure = Status::data_loss("integrity check failed in segment 2");
        failure.metadata_mut().insert(tandem_proto::ERROR_CODE_METADATA, tonic::metadata::MetadataValue::from_static("CORRUPT"));
        let sent = vec![Ok(get_start()), Ok(pb::GetChunk::from_data(Bytes::from(vec![1u8; 100]))), Err(failure), Ok(get_start())];
        let got: Vec<Result<pb::GetChunk, Status>> = downloaded(streamed(futures::stream::iter(sent))).collect().await;
        assert_eq!(got.len(), 3, "nothing after the failure: {got:?}");
        assert!(got[0].is_ok() && got[1].is_ok());
        let e = got[2].as_ref().unwrap_err();
        assert_eq!(e.code(), tonic::Code::DataLoss);
        assert_eq!(e.message(), "integrity check failed in segment 2");
        assert_eq!(e.metadata().get(tandem_proto::ERROR_CODE_METADATA).unwrap(), "CORRUPT");
    }

    #[tokio::test]
    async fn a_download_without_its_final_status_is_an_error_not_an_end() {
        // Whole frames but no trailers: a server that stopped between frames.
        let wire = encoded(vec![start(), pb::StageChunk::from_data(Bytes::from(vec![1u8; 100]))]).await;
        let got: Vec<Result<pb::StageChunk, Status>> = downloaded(body_in_pieces(&wire, 9)).collect().await;
        let e = got.last().unwrap().as_ref().unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unavailable);
        assert!(e.message().contains("without its final status"), "{}", e.message());
        // Cut inside a frame: still an error (a request body's rule).
        let got: Vec<Result<pb::StageChunk, Status>> = downloaded(body_in_pieces(&wire[..wire.len() - 1], 9)).collect().await;
        assert!(got.last().unwrap().as_ref().unwrap_err().message().contains("ended inside a frame"));
    }

    #[tokio::test]
    async fn a_peers_malformed_status_details_are_dropped_not_a_panic() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("13"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("broken"));
        trailers.insert("grpc-status-details-bin", http::HeaderValue::from_static("!!not base64!!"));
        let frames = vec![Ok::<_, Status>(Frame::trailers(trailers))];
        let got: Vec<Result<pb::GetChunk, Status>> = downloaded(Body::new(StreamBody::new(futures::stream::iter(frames)))).collect().await;
        let e = got[0].as_ref().unwrap_err();
        assert_eq!((e.code(), e.message()), (tonic::Code::Internal, "broken"));
    }

    #[tokio::test]
    async fn a_download_request_is_one_bounded_message() {
        let req = pb::GetRequest { tenant: "t".into(), contract_id: "c".into(), version: 2 };
        let body = Body::new(http_body_util::Full::new(Bytes::from(req.encode_to_vec())));
        assert_eq!(message::<pb::GetRequest>(body, "get request").await.unwrap(), req);
        let e = message::<pb::GetRequest>(body_in_pieces(&vec![0u8; MAX_MESSAGE + 1], 65_536), "get request").await.unwrap_err();
        assert!(e.message().contains("exceeds"), "{}", e.message());
        let e = message::<pb::GetRequest>(body_in_pieces(&[0xff, 0xff], 1), "get request").await.unwrap_err();
        assert!(e.message().contains("malformed get request"), "{}", e.message());
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
