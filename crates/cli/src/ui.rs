//! `twill ui`: serves the web UI (twill-ui) for the Hubble server that
//! `twill observe` would read, found the same way.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{anyhow, Context as _};

use crate::observe::{self, TlsOptions, SERVER_ENV};

#[derive(clap::Args, Debug, Clone)]
pub struct UiArgs {
    /// Address of the Hubble-compatible API (agent or twill-relay):
    /// unix:///path, host:port, ... Default: the Hubble socket of the agent
    /// that --socket names.
    #[arg(long, env = SERVER_ENV)]
    pub server: Option<String>,
    /// Dialing timeout for the server (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = observe::parse_timeout)]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: TlsOptions,
    /// Where the UI listens; a loopback address unless --listen-any.
    #[arg(long, default_value = "127.0.0.1:12000")]
    pub listen: SocketAddr,
    /// Allow --listen on an address other hosts can reach.
    #[arg(long)]
    pub listen_any: bool,
}

pub fn run(args: UiArgs) -> anyhow::Result<()> {
    let server = args.server.clone().context("no --server given and no agent to ask for one")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async move {
        let (s, timeout, tls) = (server.clone(), args.timeout, args.tls.clone());
        let connect: twill_ui::follow::Connect = Arc::new(move || {
            let (s, tls) = (s.clone(), tls.clone());
            Box::pin(async move { observe::connect(&s, timeout, &tls).await.map_err(|e| format!("{e:#}")) })
        });
        let ui = twill_ui::serve(args.listen, args.listen_any, &server, connect).await?;
        println!("Twill UI for {server} at http://{}/", ui.local_addr());
        tokio::select! {
            _ = ui.run() => Ok(()),
            _ = tokio::signal::ctrl_c() => Ok(()),
        }
    })
}
