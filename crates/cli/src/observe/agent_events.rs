//! `twill observe agent-events`: the agent's own events (started,
//! endpoints created, deleted and regenerated, policy changes, addresses
//! learned), printed as `hubble observe agent-events` prints them.

use std::io::{self, Write};

use anyhow::{anyhow, Context};
use twill_observe_proto::{
    flow::{agent_event::Notification, AgentEvent, AgentEventType},
    observer::{GetAgentEventsRequest, GetAgentEventsResponse},
    tonic,
};

use super::{connect, parse_timeout, rpc_error, timefmt, write_result, TlsOptions, SERVER_ENV};

#[derive(clap::Args, Debug, Clone)]
pub struct AgentEventsArgs {
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
    /// Output format: compact or json (alias jsonpb).
    #[arg(short = 'o', long, default_value = "compact", value_parser = ["compact", "json", "jsonpb"])]
    pub output: String,
}

impl AgentEventsArgs {
    fn request(&self) -> anyhow::Result<GetAgentEventsRequest> {
        if self.first > 0 && self.follow {
            anyhow::bail!("--first cannot be combined with --follow");
        }
        let number = match (self.first, self.last, self.all, self.follow) {
            (n, _, _, _) if n > 0 => n,
            (_, n, _, _) if n > 0 => n,
            (_, _, true, _) | (_, _, _, true) => 0,
            _ => 20,
        };
        Ok(GetAgentEventsRequest { number, first: self.first > 0, follow: self.follow, ..Default::default() })
    }
}

pub fn run(args: AgentEventsArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let server = args.server.clone().context("no --server given and no agent to ask for one")?;
    let json = args.output != "compact";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the async runtime: {e}"))?;
    runtime.block_on(async move {
        let mut client = connect(&server, args.timeout, &args.tls).await?;
        let mut stream = client.get_agent_events(request).await.map_err(rpc_error)?.into_inner();
        let stdout = io::stdout();
        let mut out = stdout.lock();
        loop {
            let item = tokio::select! {
                item = stream.message() => item,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            match item {
                Ok(Some(item)) => {
                    let line =
                        if json { super::json::get_agent_events_response(&item) } else { compact(&item) };
                    if !write_result(writeln!(out, "{line}").and_then(|()| out.flush()))? {
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

fn kind(event: &AgentEvent) -> String {
    AgentEventType::try_from(event.r#type)
        .map(|t| t.as_str_name().to_string())
        .unwrap_or_else(|_| event.r#type.to_string())
}

fn labels(list: &[String]) -> String {
    format!("[{}]", list.join(","))
}

/// One line: `TIME: TYPE (details)`.
pub fn compact(item: &GetAgentEventsResponse) -> String {
    let time = timefmt::stamp_milli(item.time.as_ref());
    let Some(event) = &item.agent_event else { return format!("{time}: (empty)") };
    let details = match &event.notification {
        Some(Notification::AgentStart(t)) => format!("start time: {}", timefmt::stamp_milli(t.time.as_ref())),
        Some(Notification::EndpointUpdate(e)) => {
            let mut d = format!("id: {}, namespace: {}, pod name: {}", e.id, e.namespace, e.pod_name);
            if !e.error.is_empty() {
                d.push_str(&format!(", error: {}", e.error));
            }
            d
        }
        Some(Notification::EndpointRegenerate(e)) => {
            let mut d = format!("id: {}, labels: {}", e.id, labels(&e.labels));
            if !e.error.is_empty() {
                d.push_str(&format!(", error: {}", e.error));
            }
            d
        }
        Some(Notification::PolicyUpdate(p)) => {
            format!("labels: {}, revision: {}, count: {}", labels(&p.labels), p.revision, p.rule_count)
        }
        Some(Notification::IpcacheUpdate(i)) => {
            let mut d = format!("cidr: {}, identity: {}", i.cidr, i.identity);
            if let Some(old) = i.old_identity {
                d.push_str(&format!(", old identity: {old}"));
            }
            if !i.host_ip.is_empty() {
                d.push_str(&format!(", host ip: {}", i.host_ip));
            }
            if !i.namespace.is_empty() {
                d.push_str(&format!(", namespace: {}, pod name: {}", i.namespace, i.pod_name));
            }
            d
        }
        Some(Notification::Unknown(u)) => format!("type: {}, notification: {}", u.r#type, u.notification),
        _ => String::new(),
    };
    format!("{time}: {} ({details})", kind(event))
}
