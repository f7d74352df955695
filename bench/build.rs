//! Compiles the bench's own eBPF program (bpf/floor.c, the datapath
//! section's floor) with the flags the datapath's programs are built with
//! (../bpf/cflags), so the floor and Twill's programs differ only in what
//! they do.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let datapath = manifest.join("../bpf");
    let source = manifest.join("bpf/floor.c");
    let object = PathBuf::from(env::var("OUT_DIR").unwrap()).join("floor.o");
    println!("cargo:rerun-if-changed={}", source.display());
    println!("cargo:rerun-if-changed={}", datapath.join("cflags").display());
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let flags: Vec<String> = fs::read_to_string(datapath.join("cflags"))
        .expect("reading bpf/cflags")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let status = Command::new(&clang)
        .current_dir(&datapath)
        .args(&flags)
        .arg("-c")
        .arg(&source)
        .arg("-o")
        .arg(&object)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {clang} ({e}); scripts/setup.sh installs clang"));
    assert!(status.success(), "clang failed to compile {}", source.display());
}
