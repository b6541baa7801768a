//! Compiles the .proto files with protox (pure Rust), so no `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/raft.proto", "proto/control.proto", "proto/replicator.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure().compile_fds(protox::compile(&files[..2], ["proto"])?)?;
    // The replicator's services carry file bodies: as `Bytes` (chunks pass
    // from socket to disk without a copy per message), through a codec
    // whose decode buffer holds several chunks (see `codec`).
    tonic_prost_build::configure()
        .codec_path("crate::codec::BulkCodec")
        .bytes(".tandem.replicator.v1.PutChunk")
        .bytes(".tandem.replicator.v1.GetChunk")
        .bytes(".tandem.replicator.v1.ApplyChunk")
        .bytes(".tandem.replicator.v1.StageChunk")
        .compile_fds(protox::compile(&files[2..], ["proto"])?)?;
    Ok(())
}
