//! What `twill observe agent-events` and `twill observe debug-events`
//! share, as `hubble observe agent-events|debug-events` share it: the
//! flags, how they become the request's window, and the loop that prints
//! a stream of events one line each until it ends or Ctrl-C.

use std::{
    future::Future,
    io::{self, Write},
};

use anyhow::{anyhow, Context};
use twill_observe_proto::{
    observer::observer_client::ObserverClient,
    prost_types::Timestamp,
    tonic::{self, transport::Channel},
};

use super::{connect, parse_timeout, rpc_error, write_result, TlsOptions, SERVER_ENV};

#[derive(clap::Args, Debug, Clone)]
pub struct EventsArgs {
    /// Address of the Hubble-compatible API (as for `observe`).
    #[arg(long, env = SERVER_ENV)]
    pub server: Option<String>,
    /// Dialing timeout (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_timeout)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Get the last N events (default 20, or all with --all).
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub last: u64,
    /// Get the first N events.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub first: u64,
    /// Get every event stored.
    #[arg(long)]
    pub all: bool,
    /// Follow events as they happen.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Events since a time: relative (3s, 4m, 1h43m) or a date, as for
    /// `observe --since`.
    #[arg(long)]
    pub since: Option<String>,
    /// Events until a time (same formats; ignored when following).
    #[arg(long)]
    pub until: Option<String>,
    /// Print the node name in compact output, after the time.
    #[arg(long)]
    pub print_node_name: bool,
    /// Output format: compact or json (alias jsonpb).
    #[arg(short = 'o', long, default_value = "compact", value_parser = ["compact", "json", "jsonpb"])]
    pub output: String,
}

/// The request fields the flags decide, as hubble sets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub number: u64,
    pub first: bool,
    pub follow: bool,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

fn time(flag: &str, value: Option<&str>) -> anyhow::Result<Option<Timestamp>> {
    match value.filter(|s| !s.is_empty()) {
        Some(s) => super::timefmt::parse_time(s, std::time::SystemTime::now())
            .map(Some)
            .map_err(|e| anyhow!("failed to parse the {flag} time: {e}")),
        None => Ok(None),
    }
}

impl EventsArgs {
    pub fn window(&self) -> anyhow::Result<Window> {
        if self.first > 0 && self.follow {
            anyhow::bail!("--first cannot be combined with --follow");
        }
        let since = time("since", self.since.as_deref())?;
        let until = if self.follow { None } else { time("until", self.until.as_deref())? };
        let bounded = since.is_some() || until.is_some();
        let number = match (self.first, self.last, self.all || self.follow || bounded) {
            (n, _, _) if n > 0 => n,
            (_, n, _) if n > 0 => n,
            (_, _, true) => 0,
            _ => 20,
        };
        Ok(Window { number, first: self.first > 0, follow: self.follow, since, until })
    }

    pub fn json(&self) -> bool {
        self.output != "compact"
    }
}

/// The start of a compact line: the time and, with --print-node-name,
/// ` [node]`, as hubble writes both.
pub fn line_head(time: Option<&twill_observe_proto::prost_types::Timestamp>, node: Option<&str>) -> String {
    let time = super::timefmt::stamp_milli(time);
    match node {
        Some(node) => format!("{time} [{node}]"),
        None => time,
    }
}

/// Opens the stream with `call` and prints each item as `line` renders
/// it. A closed pipe (`| head`) or Ctrl-C ends it quietly.
pub fn run<T, F, Fut>(args: &EventsArgs, call: F, line: impl Fn(&T) -> String) -> anyhow::Result<()>
where
    F: FnOnce(ObserverClient<Channel>) -> Fut,
    Fut: Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    let server = args.server.clone().context("no --server given and no agent to ask for one")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async move {
        let client = connect(&server, args.timeout, &args.tls).await?;
        let mut stream = call(client).await.map_err(rpc_error)?.into_inner();
        let stdout = io::stdout();
        let mut out = stdout.lock();
        loop {
            let item = tokio::select! {
                item = stream.message() => item,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match item {
                Ok(Some(item)) => {
                    if !write_result(writeln!(out, "{}", line(&item)).and_then(|()| out.flush()))? {
                        return Ok(());
                    }
                }
                Ok(None) => return Ok(()),
                Err(s) if s.code() == tonic::Code::Cancelled => return Ok(()),
                Err(s) => return Err(rpc_error(s)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EventsArgs,
    }

    fn window(argv: &[&str]) -> anyhow::Result<Window> {
        let mut all = vec!["t"];
        all.extend_from_slice(argv);
        Cli::parse_from(all).args.window()
    }

    fn w(number: u64, first: bool, follow: bool) -> Window {
        Window { number, first, follow, since: None, until: None }
    }

    #[test]
    fn the_window_is_hubble_s() {
        assert_eq!(window(&[]).unwrap(), w(20, false, false));
        assert_eq!(window(&["--last", "3"]).unwrap(), w(3, false, false));
        assert_eq!(window(&["--first", "2"]).unwrap(), w(2, true, false));
        assert_eq!(window(&["--all"]).unwrap(), w(0, false, false));
        assert_eq!(window(&["-f"]).unwrap(), w(0, false, true));
        assert_eq!(window(&["-f", "--last", "5"]).unwrap(), w(5, false, true));
        assert!(window(&["-f", "--first", "1"]).is_err());
    }

    #[test]
    fn since_and_until_bound_the_window() {
        let since = window(&["--since", "2026-01-02T03:04:05Z"]).unwrap();
        assert_eq!(since.since.map(|t| t.seconds), Some(1_767_323_045));
        assert_eq!(since.number, 0, "everything in range unless --last says otherwise");
        assert_eq!(window(&["--since", "5m", "--last", "4"]).unwrap().number, 4);
        assert_eq!(window(&["-f", "--until", "5m"]).unwrap().until, None, "until is ignored when following");
        let e = window(&["--since", "yesterday"]).unwrap_err().to_string();
        assert!(e.contains("since"), "{e}");
    }
}
