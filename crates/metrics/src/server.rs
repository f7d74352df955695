//! A minimal HTTP/1.1 server for `GET /metrics`, on one thread.
//!
//! Each connection serves one request and is closed. Requests are read with
//! an overall deadline and a size bound, so a slow or hostile client can hold
//! the thread for at most [`READ_TIMEOUT`].

use std::{
    io::{self, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    panic::{self, AssertUnwindSafe},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use crate::registry::Registry;

/// Longest time spent reading one request.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest time spent writing one response.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest accepted request head (request line plus headers).
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// Content type of the Prometheus text exposition format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A running metrics endpoint. Dropping it (or calling
/// [`shutdown`](Self::shutdown)) stops the server thread.
#[must_use = "the metrics server stops when this value is dropped"]
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `GET /metrics` from a new thread. Before each
    /// render, `refresh` is called with the registry so it can update gauges
    /// that are sampled rather than counted (map sizes, endpoint counts...).
    /// Bind errors (address in use, permission) are returned here.
    pub fn start<F>(addr: SocketAddr, registry: Arc<Registry>, refresh: F) -> io::Result<Self>
    where
        F: Fn(&Registry) + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new().name("metrics-http".into()).spawn({
            let stop = stop.clone();
            move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    match conn {
                        // Errors here mean the client went away; nothing to do.
                        Ok(stream) => drop(handle(stream, &registry, &refresh)),
                        // E.g. out of file descriptors: back off instead of spinning.
                        Err(_) => thread::sleep(Duration::from_millis(50)),
                    }
                }
            }
        })?;
        Ok(Self { addr, stop, thread: Some(thread) })
    }

    /// The bound address (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting connections and waits for the server thread.
    pub fn shutdown(mut self) {
        self.stop_thread();
    }

    fn stop_thread(&mut self) {
        let Some(thread) = self.thread.take() else { return };
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(match wake {
                SocketAddr::V4(_) => [127, 0, 0, 1].into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
            let _ = thread.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn handle<F: Fn(&Registry)>(mut stream: TcpStream, registry: &Registry, refresh: &F) -> io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    let (status, body) = match read_request_head(&mut stream) {
        Ok(head) => route(&head, registry, refresh),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            ("431 Request Header Fields Too Large", "request too large\n".into())
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
            ("408 Request Timeout", "request timeout\n".into())
        }
        Err(e) => return Err(e),
    };
    let content_type = if status.starts_with("200") { CONTENT_TYPE } else { "text/plain; charset=utf-8" };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()?;
    // Close our side, then briefly drain what the client still sends so the
    // kernel does not answer with a reset that could discard the response.
    stream.shutdown(Shutdown::Write)?;
    stream.set_read_timeout(Some(Duration::from_millis(100)))?;
    let _ = io::copy(&mut (&stream).take(64 * 1024), &mut io::sink());
    Ok(())
}

/// Picks the response for a request head: `(status line, body)`.
fn route<F: Fn(&Registry)>(head: &str, registry: &Registry, refresh: &F) -> (&'static str, String) {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return ("400 Bad Request", "bad request\n".into());
    };
    if !version.starts_with("HTTP/1.") {
        return ("400 Bad Request", "bad request\n".into());
    }
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" || path != "/metrics" {
        return ("404 Not Found", "not found\n".into());
    }
    // A panicking refresher must not take the metrics endpoint down.
    match panic::catch_unwind(AssertUnwindSafe(|| refresh(registry))) {
        Ok(()) => ("200 OK", registry.render()),
        Err(_) => ("500 Internal Server Error", "metrics refresh failed\n".into()),
    }
}

/// Reads up to the blank line ending the request head. Errors: `InvalidData`
/// when the head exceeds [`MAX_REQUEST_BYTES`], `TimedOut`/`WouldBlock` when
/// [`READ_TIMEOUT`] passes, `UnexpectedEof` when the client closes early.
fn read_request_head(stream: &mut TcpStream) -> io::Result<String> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = head_end(&buf) {
            buf.truncate(end);
            return Ok(String::from_utf8_lossy(&buf).into_owned());
        }
        if buf.len() > MAX_REQUEST_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        match stream.read(&mut chunk)? {
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Index where the head ends (`\r\n\r\n`, or a bare `\n\n` from lax clients).
fn head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    crlf.into_iter().chain(lf).min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        response
    }

    fn split(response: &str) -> (&str, &str) {
        response.split_once("\r\n\r\n").expect("response has a head and a body")
    }

    #[test]
    fn serves_metrics_and_404s() {
        let registry = Arc::new(Registry::new());
        let requests = registry.counter("test_requests_total", "Requests", &["path"]);
        requests.inc(&["/metrics"]);
        let scrapes = registry.gauge("test_scrapes", "Refresher calls", &[]);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), registry.clone(), move |_| {
            scrapes.inc(&[]);
        })
        .unwrap();
        let addr = server.local_addr();
        assert_ne!(addr.port(), 0);

        let response = fetch(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
        let (head, body) = split(&response);
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"), "{head}");
        assert!(head.contains(&format!("\r\nContent-Length: {}", body.len())), "{head}");
        assert_eq!(
            body,
            "# HELP test_requests_total Requests\n\
             # TYPE test_requests_total counter\n\
             test_requests_total{path=\"/metrics\"} 1\n\
             # HELP test_scrapes Refresher calls\n\
             # TYPE test_scrapes gauge\n\
             test_scrapes 1\n"
        );

        // The refresher runs before every render; query strings are ignored.
        let response = fetch(addr, b"GET /metrics?x=1 HTTP/1.0\r\n\r\n");
        assert!(split(&response).1.ends_with("test_scrapes 2\n"), "{response}");

        for request in [
            &b"GET / HTTP/1.1\r\n\r\n"[..],
            b"GET /metricsx HTTP/1.1\r\n\r\n",
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ] {
            let response = fetch(addr, request);
            assert!(response.starts_with("HTTP/1.1 404 Not Found\r\n"), "{response}");
        }
        let response = fetch(addr, b"nonsense\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{response}");

        let mut huge = b"GET /metrics HTTP/1.1\r\n".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_REQUEST_BYTES + 10));
        let response = fetch(addr, &huge);
        assert!(response.starts_with("HTTP/1.1 431 "), "{response}");

        server.shutdown();
        assert!(TcpStream::connect(addr).is_err(), "listener closed after shutdown");
    }

    #[test]
    fn panicking_refresher_gives_500_and_server_survives() {
        let registry = Arc::new(Registry::new());
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), registry, move |_| {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("refresher failed (expected in this test)");
            }
        })
        .unwrap();
        let first = fetch(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(first.starts_with("HTTP/1.1 500 "), "{first}");
        let second = fetch(server.local_addr(), b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(second.starts_with("HTTP/1.1 200 OK\r\n"), "{second}");
    }

    #[test]
    fn head_end_accepts_crlf_and_lf() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nbody"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\n"), Some(14));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n"), None);
    }
}
