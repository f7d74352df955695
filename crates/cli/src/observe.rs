//! `twill observe`: a `hubble observe` work-alike for the agent's
//! Hubble-compatible gRPC API (`observer.Observer/GetFlows`).
//!
//! Same flags and meaning as `hubble observe`: selectors (`--last`,
//! `--first`, `--all`, `--follow`, `--since`, `--until`), filter flags that
//! become the request's whitelist/blacklist FlowFilters (filtering happens
//! on the server; nothing is filtered here), and the compact, dict, table
//! and JSON outputs. A small single-threaded tokio runtime runs only for
//! this command.

pub mod agent_events;
pub mod debug_events;
pub mod events;
mod filter;
mod json;
mod printer;
mod timefmt;

#[cfg(test)]
mod tests;

use std::{
    io::{self, BufWriter, Write},
    time::{Duration, SystemTime},
};

use anyhow::{anyhow, bail, Context as _};
use clap::{Arg, ArgAction, ArgMatches, Args, Command, FromArgMatches};
use twill_observe_proto::{
    observer::{observer_client::ObserverClient, GetFlowsRequest},
    tonic::{
        self,
        transport::{Channel, ClientTlsConfig, Endpoint},
    },
};

use self::{
    filter::{FilterBuilder, FILTER_FLAGS},
    printer::{Format, PrintOptions, Printer},
};

/// Where the agent serves the Hubble-compatible API unless told otherwise.
/// Environment variable naming the server when `--server` is not given.
pub const SERVER_ENV: &str = "TWILL_HUBBLE_SERVER";
/// Flows printed by a plain `twill observe` (Hubble's default).
const DEFAULT_FLOW_COUNT: u64 = 20;

/// The non-filter flags of `twill observe`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Address of the Hubble-compatible API: unix:///path, unix:/path,
    /// host:port or http://host:port. Default: the Hubble socket of the
    /// agent that --socket names.
    #[arg(long, env = SERVER_ENV, help_heading = "Server")]
    pub server: Option<String>,
    /// Dialing timeout for the server (Go duration, e.g. 5s).
    #[arg(long, default_value = "5s", value_parser = parse_timeout, help_heading = "Server")]
    pub timeout: Duration,
    #[command(flatten)]
    pub tls: TlsOptions,

    /// Get all flows stored in the server's buffer.
    #[arg(long, help_heading = "Selectors")]
    pub all: bool,
    /// Get last N flows stored in the server's buffer (default 20).
    #[arg(long, default_value_t = 0, hide_default_value = true, help_heading = "Selectors")]
    pub last: u64,
    /// Get first N flows stored in the server's buffer.
    #[arg(long, default_value_t = 0, hide_default_value = true, help_heading = "Selectors")]
    pub first: u64,
    /// Follow flows output.
    #[arg(short = 'f', long, help_heading = "Selectors")]
    pub follow: bool,
    /// Filter flows since a specific date: relative (e.g. 3s, 4m, 1h43m) or
    /// 2006-01-02, 2006-01-02T15-07:00, 2006-01-02T15:04-07:00, RFC 3339
    /// (2006-01-02T15:04:05.999999999-07:00) or RFC 1123 with numeric zone.
    #[arg(long, help_heading = "Selectors")]
    pub since: Option<String>,
    /// Filter flows until a specific date (same formats as --since).
    #[arg(long, help_heading = "Selectors")]
    pub until: Option<String>,

    /// Output format: compact, dict, json (alias jsonpb), table.
    #[arg(short = 'o', long, default_value = "compact", help_heading = "Formatting")]
    pub output: String,
    /// Print node name in output.
    #[arg(long, help_heading = "Formatting")]
    pub print_node_name: bool,
    /// Display all information in numeric form.
    #[arg(long, help_heading = "Formatting")]
    pub numeric: bool,
    /// Translate IP addresses to logical names such as pod name, FQDN, ...
    #[arg(
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        help_heading = "Formatting"
    )]
    pub ip_translation: bool,
    /// Also show informational node status events.
    #[arg(long, help_heading = "Formatting")]
    pub debug: bool,
}

/// TLS to a host:port server, with the hubble CLI's flag names.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsOptions {
    /// Speak TLS to the server (also implied by a tls:// server address).
    #[arg(long, help_heading = "Server")]
    pub tls: bool,
    /// PEM files of the CAs the server certificate must chain to,
    /// comma-separated.
    #[arg(long, value_delimiter = ',', help_heading = "Server")]
    pub tls_ca_cert_files: Vec<std::path::PathBuf>,
    /// PEM client certificate, for servers that require one (mutual TLS;
    /// implies --tls).
    #[arg(long, help_heading = "Server")]
    pub tls_client_cert_file: Option<std::path::PathBuf>,
    /// PEM private key of --tls-client-cert-file.
    #[arg(long, help_heading = "Server")]
    pub tls_client_key_file: Option<std::path::PathBuf>,
    /// The name the server certificate is checked against (default: the
    /// server's host).
    #[arg(long, help_heading = "Server")]
    pub tls_server_name: Option<String>,
}

impl TlsOptions {
    /// The client TLS configuration, its files read and checked.
    fn client_config(&self) -> anyhow::Result<ClientTlsConfig> {
        use twill_observe_proto::tls;
        if self.tls_ca_cert_files.is_empty() {
            // Twill's client carries no system root store: Hubble servers
            // use a private CA anyway.
            bail!("--tls needs --tls-ca-cert-files: the CA the server certificate is checked against");
        }
        let mut config = ClientTlsConfig::new();
        for file in &self.tls_ca_cert_files {
            config = config.ca_certificate(tls::certificates(file).context("--tls-ca-cert-files")?);
        }
        match (&self.tls_client_cert_file, &self.tls_client_key_file) {
            (Some(cert), Some(key)) => {
                config = config.identity(
                    tls::identity(cert, key).context("--tls-client-cert-file/--tls-client-key-file")?,
                )
            }
            (None, None) => {}
            _ => bail!("--tls-client-cert-file and --tls-client-key-file go together"),
        }
        if let Some(name) = &self.tls_server_name {
            config = config.domain_name(name.clone());
        }
        Ok(config)
    }
}

pub(crate) fn parse_timeout(s: &str) -> Result<Duration, String> {
    let nanos = timefmt::parse_go_duration(s)?;
    u64::try_from(nanos).map(Duration::from_nanos).map_err(|_| format!("invalid timeout {s:?}"))
}

/// All of `twill observe`'s arguments: [`Options`] plus the filter flags in
/// command-line order (order matters for `--not`).
#[derive(Debug, Clone)]
pub struct ObserveArgs {
    pub opts: Options,
    /// `(flag name, value)` for every filter flag occurrence, in order.
    pub filters: Vec<(&'static str, String)>,
}

impl Args for ObserveArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = Options::augment_args(cmd);
        for f in FILTER_FLAGS {
            let mut arg =
                Arg::new(f.name).long(f.name).help(f.help).help_heading("Filters").action(ArgAction::Append);
            if let Some(s) = f.short {
                arg = arg.short(s);
            }
            arg = if f.no_value {
                arg.num_args(0..=1).require_equals(true).default_missing_value("true")
            } else {
                arg.num_args(1).value_name("filter").allow_hyphen_values(true)
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for ObserveArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let opts = Options::from_arg_matches(m)?;
        let mut occurrences = Vec::new();
        for f in FILTER_FLAGS {
            if let (Some(values), Some(indices)) = (m.get_many::<String>(f.name), m.indices_of(f.name)) {
                for (value, index) in values.zip(indices) {
                    occurrences.push((index, f.name, value.clone()));
                }
            }
        }
        occurrences.sort_by_key(|(index, _, _)| *index);
        let filters = occurrences.into_iter().map(|(_, name, value)| (name, value)).collect();
        Ok(ObserveArgs { opts, filters })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

/// `--flag` or `-s, --flag`, as pflag names a flag in its errors.
fn flag_display(name: &str) -> String {
    match FILTER_FLAGS.iter().find(|f| f.name == name).and_then(|f| f.short) {
        Some(s) => format!("-{s}, --{name}"),
        None => format!("--{name}"),
    }
}

/// What to ask the server for and how to print it.
#[derive(Debug)]
pub struct Plan {
    pub request: GetFlowsRequest,
    pub print: PrintOptions,
}

impl Plan {
    /// Validates the flags and builds the request, as `hubble observe`
    /// does before it connects.
    pub fn new(args: &ObserveArgs, now: SystemTime) -> anyhow::Result<Plan> {
        let o = &args.opts;
        let mut filters = FilterBuilder::default();
        for (name, value) in &args.filters {
            filters.set(name, value).map_err(|e| {
                if *name == "not" {
                    anyhow!("{e}")
                } else {
                    anyhow!("invalid argument {value:?} for \"{}\" flag: {e}", flag_display(name))
                }
            })?;
        }
        let (whitelist, blacklist) = filters.finish().map_err(|e| anyhow!("{e}"))?;

        let format = match o.output.as_str() {
            "compact" => Format::Compact,
            "dict" => Format::Dict,
            "json" | "JSON" | "jsonpb" => Format::Json,
            "tab" | "table" => {
                if o.follow {
                    bail!("table output format is not compatible with follow mode");
                }
                Format::Table
            }
            other => bail!("invalid output format: {other}"),
        };
        let print = PrintOptions {
            format,
            node_name: o.print_node_name,
            ip_translation: o.ip_translation && !o.numeric,
            debug: o.debug,
        };

        let first = o.first > 0;
        let last = o.last > 0;
        if first && last {
            bail!("cannot set both --first and --last");
        }
        if first && o.all {
            bail!("cannot set both --first and --all");
        }
        if first && o.follow {
            bail!("cannot set both --first and --follow");
        }
        if last && o.all {
            bail!("cannot set both --last and --all");
        }
        let since = match o.since.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => Some(
                timefmt::parse_time(s, now).map_err(|e| anyhow!("failed to parse the since time: {e}"))?,
            ),
            None => None,
        };
        // As Hubble: --until is ignored when following.
        let until = match o.until.as_deref().filter(|s| !s.is_empty() && !o.follow) {
            Some(s) => Some(
                timefmt::parse_time(s, now).map_err(|e| anyhow!("failed to parse the until time: {e}"))?,
            ),
            None => None,
        };
        let mut number = o.last;
        if since.is_none() && until.is_none() && !first {
            if o.all {
                number = u64::MAX;
            } else if number == 0 && !o.follow {
                number = DEFAULT_FLOW_COUNT;
            }
        }
        if first {
            number = o.first;
        }
        let request = GetFlowsRequest {
            number,
            first,
            follow: o.follow,
            whitelist,
            blacklist,
            since,
            until,
            ..Default::default()
        };
        Ok(Plan { request, print })
    }
}

/// The tonic endpoint for a `--server` value.
fn endpoint(server: &str, timeout: Duration, tls: &TlsOptions) -> anyhow::Result<Endpoint> {
    let bare = server.strip_prefix("tls://").or_else(|| server.strip_prefix("https://"));
    // A client certificate implies TLS, as in the hubble CLI.
    let use_tls = tls.tls || bare.is_some() || tls.tls_client_cert_file.is_some();
    let uri = if server.starts_with("unix:") {
        if use_tls {
            bail!("{server}: TLS is for host:port servers; a Unix socket is plaintext");
        }
        server.to_string()
    } else if use_tls {
        format!("https://{}", bare.unwrap_or(server))
    } else if server.starts_with("http://") {
        server.to_string()
    } else {
        format!("http://{server}")
    };
    let mut endpoint =
        Endpoint::from_shared(uri).map_err(|e| anyhow!("invalid --server address {server:?}: {e}"))?;
    if use_tls {
        endpoint = endpoint.tls_config(tls.client_config()?)?;
    }
    Ok(endpoint.connect_timeout(timeout))
}

/// The innermost cause of an error, which is the informative part of a
/// tonic transport error ("No such file or directory (os error 2)").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

pub async fn connect(
    server: &str,
    timeout: Duration,
    tls: &TlsOptions,
) -> anyhow::Result<ObserverClient<Channel>> {
    let channel = endpoint(server, timeout, tls)?.connect().await.map_err(|e| {
        anyhow!(
            "cannot reach the Hubble API at {server}: {}; is the agent running? Point --server (or {SERVER_ENV}) at its Hubble address",
            root_cause(&e)
        )
    })?;
    Ok(ObserverClient::new(channel))
}

/// An RPC error as `hubble observe` reports it.
fn rpc_error(s: tonic::Status) -> anyhow::Error {
    if s.code() == tonic::Code::Unknown {
        anyhow!("{}", s.message())
    } else {
        anyhow!("rpc error: code = {:?} desc = {}", s.code(), s.message())
    }
}

/// Stops quietly on a closed stdout (`twill observe | head`).
fn write_result(r: io::Result<()>) -> anyhow::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(anyhow!("writing output: {e}")),
    }
}

/// Sends the request and prints every item of the stream until it ends,
/// the server cancels it or the output is closed.
pub async fn stream_flows<W: Write, E: Write>(
    client: &mut ObserverClient<Channel>,
    request: GetFlowsRequest,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let follow = request.follow;
    let mut stream = client.get_flows(request).await.map_err(rpc_error)?.into_inner();
    loop {
        match stream.message().await {
            Ok(Some(item)) => {
                if !write_result(printer.write(&item))? {
                    return Ok(());
                }
                if follow && !write_result(printer.flush())? {
                    return Ok(());
                }
            }
            Ok(None) => break,
            Err(s) if s.code() == tonic::Code::Cancelled => break,
            Err(s) => {
                // Show what came before the error.
                let _ = printer.finish();
                return Err(rpc_error(s));
            }
        }
    }
    write_result(printer.finish()).map(|_| ())
}

/// Connects and streams into `printer`, stopping early on Ctrl-C.
pub async fn observe<W: Write, E: Write>(
    opts: &Options,
    request: GetFlowsRequest,
    printer: &mut Printer<W, E>,
) -> anyhow::Result<()> {
    let server = opts.server.as_deref().context("no --server given and no agent to ask for one")?;
    let mut client = connect(server, opts.timeout, &opts.tls).await?;
    tokio::select! {
        r = stream_flows(&mut client, request, printer) => r,
        _ = tokio::signal::ctrl_c() => write_result(printer.finish()).map(|_| ()),
    }
}

/// `twill observe`.
pub fn run(args: ObserveArgs) -> anyhow::Result<()> {
    let plan = Plan::new(&args, SystemTime::now())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| anyhow!("starting the async runtime: {e}"))?;
    let stdout = io::stdout();
    let mut printer = Printer::new(plan.print, BufWriter::new(stdout.lock()), io::stderr());
    runtime.block_on(observe(&args.opts, plan.request, &mut printer))
}
