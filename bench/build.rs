//! Compiles the bench's own eBPF program (bpf/floor.c, the datapath
//! section's floor) the way the datapath's programs are built (the same
//! bpf/cflags and clang call), so the floor and Twill's programs differ
//! only in what they do.
use std::{env, path::PathBuf};

#[path = "../crates/datapath/build_support.rs"]
mod build_support;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.join("../bpf");
    let source = manifest.join("bpf/floor.c");
    let object = PathBuf::from(env::var("OUT_DIR").unwrap()).join("floor.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", root.join("cflags").display());
    println!("cargo:rerun-if-changed={}", manifest.join("../crates/datapath/build_support.rs").display());
    build_support::compile(&root, &build_support::cflags(&root), &source, &object);
}
