//! Headless Chromium driven through chromedriver's WebDriver HTTP API,
//! for the web UI test and benchmark.

use std::{
    os::unix::process::CommandExt,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use http_body_util::{BodyExt, Full};
use hyper::{body::Bytes, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::wait_until;

/// chromedriver and the Chromium it starts, in their own process group so
/// a failing test leaves no browser behind.
pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    runtime: tokio::runtime::Runtime,
    _profile: PathBuf,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.call(Method::DELETE, "", None);
        unsafe { libc::kill(-(self.driver.id() as i32), libc::SIGKILL) };
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self._profile);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Browser {
    pub fn start() -> Browser {
        for bin in ["chromium", "chromedriver"] {
            assert!(
                Command::new("sh")
                    .args(["-c", &format!("command -v {bin}")])
                    .output()
                    .unwrap()
                    .status
                    .success(),
                "{bin} is not installed: run scripts/setup.sh (Debian packages chromium, chromium-driver)"
            );
        }
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting chromedriver");
        let profile = std::env::temp_dir().join(format!("twill-ui-chromium-{}", std::process::id()));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let mut b = Browser { driver, port, session: String::new(), runtime, _profile: profile.clone() };
        assert!(
            wait_until(Duration::from_secs(10), || b.raw(Method::GET, "/status", None).is_ok()),
            "chromedriver did not start"
        );
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                     format!("--user-data-dir={}", profile.display())]
        }}}});
        let v = b.raw(Method::POST, "/session", Some(caps)).expect("creating a WebDriver session");
        b.session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn raw(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let port = self.port;
        self.runtime.block_on(async move {
            let stream =
                tokio::net::TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| e.to_string())?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = Request::builder()
                .method(method)
                .uri(path)
                .header("host", format!("127.0.0.1:{port}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.map(|b| b.to_string()).unwrap_or_default())))
                .unwrap();
            let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
            serde_json::from_slice(&bytes).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&bytes)))
        })
    }

    pub fn call(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let v = self.raw(method, &format!("/session/{}{path}", self.session), body).unwrap();
        if v["value"]["error"].is_string() {
            panic!("WebDriver {path}: {}", v["value"]["message"]);
        }
        v["value"].clone()
    }

    pub fn goto(&self, url: &str) {
        self.call(Method::POST, "/url", Some(serde_json::json!({"url": url})));
    }

    pub fn js(&self, script: &str) -> Value {
        self.call(Method::POST, "/execute/sync", Some(serde_json::json!({"script": script, "args": []})))
    }

    pub fn click(&self, css: &str) {
        let el = self.call(
            Method::POST,
            "/element",
            Some(serde_json::json!({"using": "css selector", "value": css})),
        );
        let id = el.as_object().and_then(|o| o.values().next()).and_then(|v| v.as_str()).unwrap().to_string();
        self.call(Method::POST, &format!("/element/{id}/click"), Some(serde_json::json!({})));
    }

    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.call(Method::GET, "/screenshot", None);
        base64::engine::general_purpose::STANDARD.decode(b64.as_str().unwrap()).unwrap()
    }

    /// Waits for `script` (returning a JSON value) to satisfy `ok`.
    pub fn wait_for(&self, what: &str, script: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.js(script);
            if ok(&v) {
                return v;
            }
            if Instant::now() > deadline {
                panic!("page never showed {what}; last: {v}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
