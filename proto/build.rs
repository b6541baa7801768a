//! Compiles the .proto files with protox (pure Rust), so no `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/raft.proto", "proto/control.proto", "proto/replicator.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    // File bodies as `Bytes`: chunks pass from disk to socket and back
    // without a copy per message.
    tonic_prost_build::configure()
        .bytes(".tandem.replicator.v1.PutChunk")
        .bytes(".tandem.replicator.v1.GetChunk")
        .bytes(".tandem.replicator.v1.ApplyChunk")
        .bytes(".tandem.replicator.v1.StageChunk")
        .compile_fds(fds)?;
    Ok(())
}
