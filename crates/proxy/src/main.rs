//! `twill-proxy`: Twill's L7 proxy as its own process, started by the
//! agent and surviving it. Thin: the work is in the library.

use std::{path::PathBuf, sync::Arc};

const USAGE: &str = "usage: twill-proxy --socket PATH [--threads N] (the agent starts it)";

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let mut socket = None;
    // One thread by default: on a small node the proxy shares the cores
    // with the client, the server and the agent, and a second worker
    // only adds cross-thread wakeups (measured: fewer requests per second
    // with two workers on two cores).
    let mut threads = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next()) {
            ("--socket", Some(path)) => socket = Some(PathBuf::from(path)),
            ("--threads", Some(n)) => match n.parse() {
                Ok(n) if n >= 1 => threads = n,
                _ => {
                    eprintln!(
                        "twill-proxy: --threads: {n:?} is not a number of threads (1 or more)\n{USAGE}"
                    );
                    return std::process::ExitCode::from(2);
                }
            },
            _ => {
                eprintln!("{USAGE}");
                return std::process::ExitCode::from(2);
            }
        }
    }
    let Some(socket) = socket else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let runtime = if threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()
    };
    let runtime = match runtime {
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
