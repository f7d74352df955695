//! `twill ui`: page load with a full table (4,095 flows), the RSS of the
//! `twill ui` process, and the live flow rate the page renders before it
//! samples. The flows come from Twill's own Observer server (the agent's
//! `ObserverService`) run in-process on a Unix socket and fed decoded
//! synthetic datapath events, so the rate is exact; the page runs in
//! headless Chromium.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use twill_e2e::{bin_dir, browser::Browser, Background};
use twill_observe::{decode, AgentEvents, Clock, FlowRing, ObserverService};
use twill_observe_proto::{observer::observer_server::ObserverServer, tonic::transport::Server};

use crate::{observer, Row};

const TABLE: usize = 4095;
const RATES: &[u32] = &[250, 500, 1000, 1500, 2000, 3000];
const RATE_SECS: u64 = 4;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

pub fn run(rows: &mut Vec<Row>) -> anyhow::Result<()> {
    let dir = tempdir();
    let socket = dir.join("hubble.sock");
    let ring = Arc::new(FlowRing::new(twill_observe::DEFAULT_CAPACITY));
    let directory = observer::directory(100);
    let clock = Clock::now();
    for i in 0..TABLE as u32 {
        ring.push(decode(&observer::event(i), &directory, &clock));
    }
    let service = ObserverService {
        ring: ring.clone(),
        directory: Arc::new(RwLock::new(observer::directory(100))),
        version: "bench".into(),
        started: Instant::now(),
        address: String::new(),
        agent_events: Arc::new(AgentEvents::new(16)),
        debug_events: Arc::new(twill_observe::DebugEvents::new(16)),
    };
    let listener = std::os::unix::net::UnixListener::bind(&socket).context("binding the observer socket")?;
    listener.set_nonblocking(true)?;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(
                tokio::net::UnixListener::from_std(listener).expect("tokio listener"),
            );
            let _ = Server::builder()
                .add_service(ObserverServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        })
    });

    let mut child = Command::new(bin_dir().join("twill"))
        .args(["ui", "--listen", "127.0.0.1:0", "--server"])
        .arg(format!("unix://{}", socket.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting twill ui")?;
    let pid = child.id();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let _ui = Background::from_child(child);
    let url = line.split_whitespace().last().unwrap_or_default().to_string();
    let browser = Browser::start();

    // Page load: navigation until the table holds all flows and the map is drawn.
    let mut loads = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        browser.goto(&url);
        browser.wait_for(
            "a full table",
            "return [document.querySelectorAll('#flow-rows tr').length, document.querySelectorAll('#map .node').length]",
            |v| v[0] == TABLE && v[1].as_u64().unwrap_or(0) > 0,
        );
        loads.push(start.elapsed());
    }
    loads.sort();
    let load = loads[1];
    let rss = rss_kib(pid);
    // Reference: the same flows read with the CLI, as a user without the UI would.
    let start = Instant::now();
    let out = Command::new(bin_dir().join("twill"))
        .args(["observe", "--last", &TABLE.to_string(), "-o", "json", "--server"])
        .arg(format!("unix://{}", socket.display()))
        .stdout(Stdio::piped())
        .output()
        .context("running twill observe")?;
    let cli = start.elapsed();
    anyhow::ensure!(
        out.stdout.iter().filter(|b| **b == b'\n').count() >= TABLE,
        "twill observe returned too few flows"
    );
    let render_full = browser.js("return window.twillUi.renderMs").as_f64().unwrap_or(0.0);

    // Live: push flows at each rate for RATE_SECS and see whether the page
    // had to sample (render only the newest of a poll).
    let mut best = 0;
    let mut seq = TABLE as u32;
    let mut worst_render = 0.0f64;
    for &rate in RATES {
        browser.js("window.twillUi.sampledPolls = 0; window.twillUi.renderMs = 0;");
        let start = Instant::now();
        let total = rate as u64 * RATE_SECS;
        let mut sent = 0u64;
        // Bounded by count and by time.
        while sent < total && start.elapsed() < Duration::from_secs(RATE_SECS + 2) {
            let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
            while sent < due.min(total) {
                ring.push(decode(&observer::event(seq), &directory, &clock));
                seq += 1;
                sent += 1;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(2500));
        let sampled = browser.js("return window.twillUi.sampledPolls").as_u64().unwrap_or(0);
        let render = browser.js("return window.twillUi.renderMs").as_f64().unwrap_or(0.0);
        worst_render = worst_render.max(render);
        eprintln!("twill-bench: ui live {rate} flows/s: {sampled} sampled polls, last render {render:.1} ms");
        if sampled == 0 {
            best = rate;
        } else {
            break;
        }
    }

    rows.push(Row::new(
        format!("ui page load, {TABLE} flows in the table (median of 3)"),
        format!("{} ms", load.as_millis()),
        format!("{} ms (twill observe --last {TABLE} -o json)", cli.as_millis()),
        format!("{:.1}x", load.as_secs_f64() / cli.as_secs_f64()),
    ));
    rows.push(Row::new(
        format!("ui first render of {TABLE} rows in Chromium"),
        format!("{render_full:.0} ms"),
        "",
        "",
    ));
    rows.push(Row::new(
        format!("twill ui RSS, {TABLE} flows stored"),
        format!("{:.1} MiB", rss as f64 / 1024.0),
        "",
        "",
    ));
    rows.push(Row::new(
        "ui live flows rendered without sampling (1 s polls)",
        format!("{best} flows/s"),
        "",
        "",
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

fn tempdir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("twill-bench-ui-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
