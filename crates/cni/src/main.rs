//! twill-cni: the CNI plugin binary. A runtime runs it with CNI_*
//! variables and the network config on stdin; it answers on stdout.

use std::io::{Read, Write};

fn main() {
    let mut stdin = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
        let error = twill_cni::CniError::new(twill_cni::error::code::IO, format!("reading stdin: {e}"));
        println!("{}", error.to_json(None));
        std::process::exit(1);
    }
    let out = twill_cni::run(|k| std::env::var(k).ok(), &stdin);
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(out.stdout.as_bytes());
    let _ = stdout.flush();
    std::process::exit(out.exit_code);
}
