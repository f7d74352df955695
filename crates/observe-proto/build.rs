//! Generates Rust types and the tonic server/client for the observer API
//! from the .proto files under `proto/`.
//!
//! Needs `protoc` (Debian: `protobuf-compiler`) and the well-known type
//! definitions such as `google/protobuf/timestamp.proto` (Debian:
//! `libprotobuf-dev`). Set `PROTOC` to use a protoc that is not on `PATH`.

use std::path::PathBuf;

const PROTOS: [&str; 4] =
    ["flow/flow.proto", "relay/relay.proto", "observer/observer.proto", "peer/peer.proto"];

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let files: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    println!("cargo:rerun-if-env-changed=PROTOC");

    let result = tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .build_transport(true)
        // The .proto files name their own cargo:rerun-if-changed lines above.
        .emit_rerun_if_changed(false)
        .compile_protos(&files, std::slice::from_ref(&root));
    if let Err(err) = result {
        panic!(
            "compiling the observer .proto files failed: {err}\n\
             hint: this needs `protoc` and the google/protobuf/*.proto files \
             (Debian/Ubuntu: apt-get install protobuf-compiler libprotobuf-dev), \
             or PROTOC=/path/to/protoc"
        );
    }
}
