use anyhow::Context as _;
use clap::Parser as _;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().with_writer(std::io::stderr).init();
    let config = twill_relay::Config::from_args(twill_relay::Args::parse())?;
    // Fan-out work is small per flow: two workers keep one busy node from
    // stalling the rest without taking a core per CPU.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(twill_relay::run(config))?;
    Ok(())
}
