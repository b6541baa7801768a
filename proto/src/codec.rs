//! The codec of the replicator's services: prost, with a decode buffer
//! sized for file chunks.
//!
//! tonic copies each HTTP/2 frame into its decode buffer and, when a
//! message does not fit in what is left of it, moves the message's first
//! part into a new buffer: with the default 8 KiB buffer that second copy
//! happens for almost every 1 MiB chunk. A buffer that holds several chunks
//! makes it rare. Messages are decoded as `Bytes` that share the buffer, so
//! its memory is held until the chunks decoded from it are dropped.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Decode buffer per stream: four 1 MiB chunks and their framing.
const DECODE_BUFFER: usize = 4 * 1024 * 1024 + 64 * 1024;
/// tonic's default: encoded messages are handed to HTTP/2 once this many
/// bytes are buffered.
const YIELD_THRESHOLD: usize = 32 * 1024;

#[derive(Debug, Clone, Default)]
pub struct BulkCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Codec for BulkCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(BufferSettings::new(DECODE_BUFFER, YIELD_THRESHOLD))
    }
}
