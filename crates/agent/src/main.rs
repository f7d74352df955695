//! twill-agent: the per-host daemon. Everything is in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = twill_agent::Args::parse();
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(args.log_level)
        .init();
    let result = twill_agent::Config::from_args(args).map_err(anyhow::Error::from).and_then(twill_agent::run);
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("twill-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
