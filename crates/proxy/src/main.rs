//! `twill-proxy`: Twill's L7 proxy as its own process, started by the
//! agent and surviving it. Thin: the work is in the library.

use std::{path::PathBuf, sync::Arc};

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut args = std::env::args().skip(1);
    let socket = match (args.next().as_deref(), args.next()) {
        (Some("--socket"), Some(path)) => PathBuf::from(path),
        _ => {
            eprintln!("usage: twill-proxy --socket PATH (the agent starts it)");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("twill-proxy: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let sink = Arc::new(twill_proxy::control::AgentSink::default());
    let proxy = Arc::new(twill_proxy::Proxy::new(runtime.handle().clone(), sink.clone()));
    match runtime.block_on(twill_proxy::control::serve(socket.clone(), proxy, sink)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("twill-proxy: control socket {}: {e}", socket.display());
            std::process::ExitCode::FAILURE
        }
    }
}
