//! Compiles the eBPF programs in bpf/ with clang, once, at build time; the
//! objects are embedded in the binaries.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../bpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".into());
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=CLANG");

    // One object per attach point; today every program lives in lxc.c.
    #[allow(clippy::single_element_loop)]
    for program in ["lxc"] {
        let source = root.join(format!("{program}.c"));
        let object = out.join(format!("{program}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I{}", root.join("include").display()))
            .arg("-I/usr/include/x86_64-linux-gnu")
            .arg("-c")
            .arg(&source)
            .arg("-o")
            .arg(&object)
            .status()
            .unwrap_or_else(|e| {
                panic!("cannot run {clang} to build the eBPF programs ({e}); install clang, llvm and libbpf-dev (the README's setup does)")
            });
        assert!(status.success(), "clang failed to compile {}", source.display());
    }
}
