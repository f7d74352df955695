//! Generates the containerd client twill-cni needs from proto/containers.proto
//! (needs `protoc`: Debian's protobuf-compiler).

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("proto");
    let file = root.join("containers.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    println!("cargo:rerun-if-env-changed=PROTOC");
    let result = tonic_prost_build::configure()
        .build_server(false)
        .build_client(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .compile_protos(&[file], &[root]);
    if let Err(err) = result {
        panic!("compiling proto/containers.proto failed: {err}\nhint: apt-get install protobuf-compiler");
    }
}
