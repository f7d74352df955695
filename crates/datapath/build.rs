//! Compiles the eBPF programs in bpf/ with clang, once, at build time; the
//! objects are embedded in the binaries.
use std::{
    env, fs,
    path::{Path, PathBuf},
};

#[path = "build_support.rs"]
mod build_support;

/// Asks cargo to rebuild when any file under `dir` changes. The directory
/// itself is listed too, so adding a file (a new lib/ header) also
/// triggers a rebuild, and each file explicitly, so an edit is seen
/// whatever cargo's directory scanning does.
fn watch(dir: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())).path();
        if path.is_dir() {
            watch(&path);
        } else {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../../bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    watch(&root);
    println!("cargo:rerun-if-changed={}", manifest.join("build_support.rs").display());
    let flags = build_support::cflags(&root);

    // One object per attach point: endpoint devices, cgroup socket hooks,
    // the node's own devices, the tunnel device.
    for program in ["lxc", "sock", "netdev", "overlay"] {
        let source = format!("{program}.c");
        let object = out.join(format!("{program}.o"));
        build_support::compile(&root, &flags, Path::new(&source), &object);
    }
}
