//! Generates the tonic client and server for `proto/raft.proto`.
//!
//! Uses the system `protoc` (found through `PROTOC` or `PATH`); the project's install script
//! provides it.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/raft.proto");
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/raft.proto"], &["proto"])?;
    Ok(())
}
