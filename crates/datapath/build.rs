//! Compiles the eBPF programs in bpf/ with clang, once, at build time; the
//! objects are embedded in the binaries.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

/// The flags in bpf/cflags: one per line, `#` starts a comment line.
fn cflags(root: &Path) -> Vec<String> {
    let path = root.join("cflags");
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect()
}

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
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    watch(&root);
    println!("cargo:rerun-if-env-changed=CLANG");
    let flags = cflags(&root);

    // One object per attach point: endpoint devices, cgroup socket hooks,
    // the node's own devices, the tunnel device.
    for program in ["lxc", "sock", "netdev", "overlay"] {
        let source = format!("{program}.c");
        let object = out.join(format!("{program}.o"));
        let status = Command::new(&clang)
            .current_dir(&root)
            .args(&flags)
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} to build the eBPF programs ({e}); install clang, llvm and libbpf-dev (the README's setup does)")
            });
        assert!(status.success(), "clang failed to compile {}", root.join(source).display());
    }
}
