//! HTTP/1 on hyper: the page and its assets (embedded in the binary, so
//! the UI works offline) and a small JSON API the page polls.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use http_body_util::Full;
use hyper::{
    body::Bytes, header, server::conn::http1, service::service_fn, Method, Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use serde_json::json;
use thiserror::Error;
use tokio::{net::TcpListener, sync::Mutex};

use crate::{
    filter::Filter,
    follow::{self, Connect},
    store::{Store, CAPACITY},
};

#[derive(Debug, Error)]
pub enum Error {
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("{addr} is not a loopback address; pass --listen-any to serve the UI beyond this host")]
    NotLoopback { addr: SocketAddr },
}

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("/", "text/html; charset=utf-8", include_bytes!("../assets/index.html")),
    ("/app.js", "text/javascript; charset=utf-8", include_bytes!("../assets/app.js")),
    ("/app.css", "text/css; charset=utf-8", include_bytes!("../assets/app.css")),
    (
        "/vendor/dagre.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/vendor/dagre/dagre.min.js"),
    ),
    ("/vendor/dagre.LICENSE", "text/plain; charset=utf-8", include_bytes!("../assets/vendor/dagre/LICENSE")),
];

fn respond(status: StatusCode, ctype: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, ctype)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("static headers are valid")
}

fn json_response(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    respond(status, "application/json", v.to_string())
}

/// Whether a request's `Host` names this machine's loopback. Listening on
/// loopback alone does not keep other sites out: a page whose DNS name is
/// rebound to 127.0.0.1 reaches the port from the user's browser, but it
/// still sends its own name as the Host, which is refused here.
fn loopback_host(host: Option<&str>) -> bool {
    let Some(host) = host else { return false };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':')
            .map_or(host, |(name, port)| if port.parse::<u16>().is_ok() { name } else { host })
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    store: Arc<Mutex<Store>>,
    any_host: bool,
) -> Response<Full<Bytes>> {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok());
    if !any_host && !loopback_host(host) {
        return json_response(
            StatusCode::FORBIDDEN,
            json!({"error": format!("Host {:?} is not this machine's loopback; open the UI at 127.0.0.1 or localhost (or start it with --listen-any)", host.unwrap_or(""))}),
        );
    }
    if req.method() != Method::GET {
        return json_response(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "only GET"}));
    }
    let path = req.uri().path();
    let query = req.uri().query().unwrap_or("");
    if let Some((_, ctype, body)) = ASSETS.iter().find(|(p, _, _)| *p == path) {
        return respond(StatusCode::OK, ctype, Bytes::from_static(body));
    }
    match path {
        "/api/status" => json_response(StatusCode::OK, json!(store.lock().await.status())),
        "/api/flows" => match Filter::parse(query, CAPACITY) {
            Ok(f) => {
                let (rows, last_seq, matched) = store.lock().await.rows(&f);
                json_response(StatusCode::OK, json!({"rows": rows, "last_seq": last_seq, "matched": matched}))
            }
            Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        "/api/map" => match Filter::parse(query, CAPACITY) {
            Ok(f) => json_response(StatusCode::OK, json!(store.lock().await.map(f.namespace.as_deref()))),
            Err(e) => json_response(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
        },
        _ => json_response(StatusCode::NOT_FOUND, json!({"error": format!("no such page: {path}")})),
    }
}

/// A bound UI server; [`Ui::run`] serves until the process ends.
pub struct Ui {
    listener: TcpListener,
    store: Arc<Mutex<Store>>,
    connect: Connect,
    /// Serving beyond loopback (--listen-any): any Host is accepted.
    any_host: bool,
}

impl Ui {
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    pub async fn run(self) {
        tokio::spawn(follow::run(self.connect, self.store.clone()));
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(_) => {
                    // Out of descriptors and the like: retrying at once
                    // would spin on the same error.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let store = self.store.clone();
            let any_host = self.any_host;
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let store = store.clone();
                    async move { Ok::<_, Infallible>(handle(req, store, any_host).await) }
                });
                // A browser closing a keep-alive connection is not news.
                let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    }
}

/// Binds `listen` (loopback only unless `any`) for the Hubble server
/// `server` (its name is shown in the page), reached through `connect`.
pub async fn serve(listen: SocketAddr, any: bool, server: &str, connect: Connect) -> Result<Ui, Error> {
    if !any && !listen.ip().is_loopback() {
        return Err(Error::NotLoopback { addr: listen });
    }
    let listener =
        TcpListener::bind(listen).await.map_err(|source| Error::Listen { addr: listen, source })?;
    Ok(Ui { listener, store: Arc::new(Mutex::new(Store::new(server))), connect, any_host: any })
}

#[cfg(test)]
mod tests {
    use super::loopback_host;

    #[test]
    fn only_loopback_hosts_are_served() {
        for ok in
            ["127.0.0.1:12000", "127.0.0.1", "localhost:12000", "LOCALHOST", "[::1]:12000", "127.1.2.3:80"]
        {
            assert!(loopback_host(Some(ok)), "{ok}");
        }
        for bad in
            ["evil.example:12000", "evil.example", "10.0.0.1:12000", "localhost.evil.example", "[::2]:1", ""]
        {
            assert!(!loopback_host(Some(bad)), "{bad}");
        }
        assert!(!loopback_host(None), "no Host header");
    }
}
