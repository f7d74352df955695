//! What every build script that compiles eBPF C shares (crates/datapath's
//! and bench's, which include this file): bpf/cflags and the clang call,
//! so every object in the project is built with the same flags.
use std::{fs, path::Path, process::Command};

/// The flags in bpf/cflags: one per line, `#` starts a comment line.
pub fn cflags(root: &Path) -> Vec<String> {
    let path = root.join("cflags");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

/// Compiles `source` into `object` with clang ($CLANG, else `clang`),
/// run in `root` (bpf/, which the flags' include paths are relative to).
pub fn compile(root: &Path, flags: &[String], source: &Path, object: &Path) {
    println!("cargo:rerun-if-env-changed=CLANG");
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .current_dir(root)
        .args(flags)
        .arg("-c")
        .arg(source)
        .arg("-o")
        .arg(object)
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {clang} to build the eBPF programs ({e}); install clang, llvm and libbpf-dev (the README's setup does)")
        });
    assert!(status.success(), "clang failed to compile {}", root.join(source).display());
}
