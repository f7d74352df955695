//! HTTP/1.1 through the proxy: one redirected connection from a client,
//! served by hyper (keep-alive, pipelining: requests are answered in
//! order), each request decided by the redirect's rules; allowed ones go
//! to the original destination on one upstream connection per client
//! connection, bodies streamed both ways; denied ones get Envoy's
//! `403 Access denied` and the connection stays usable.

pub mod rules;

use std::{
    net::{SocketAddr, SocketAddrV4},
    sync::{atomic::Ordering, Arc},
    time::{Instant, SystemTime},
};

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::{
    body::Incoming,
    client::conn::http1::SendRequest,
    header::{HeaderName, HeaderValue, HOST},
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, sync::Mutex};
use tracing::debug;
use twill_policy::l7::{HeaderEdit, HttpDecision, HttpRequestView};

use crate::{
    record::{HttpInfo, L7Record, RecordKind, RecordVerdict},
    socket, Shared,
};

type Body = BoxBody<Bytes, hyper::Error>;

/// Envoy's answer to a request the rules deny, which Cilium users know.
pub const DENIED_BODY: &str = "Access denied\r\n";

fn full(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r =
        Response::new(Full::new(Bytes::from_static(text.as_bytes())).map_err(|never| match never {}).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// Who a connection is between, fixed when it is accepted.
#[derive(Clone, Copy)]
struct Ends {
    proxy_port: u16,
    client: SocketAddrV4,
    server: SocketAddrV4,
}

fn v4(a: SocketAddr) -> Option<SocketAddrV4> {
    match a {
        SocketAddr::V4(a) => Some(a),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped().map(|ip| SocketAddrV4::new(ip, a.port())),
    }
}

/// Serves one redirected connection until either side closes it.
pub async fn serve(stream: TcpStream, proxy_port: u16, shared: Arc<Shared>) {
    let (Ok(client), Ok(server)) = (stream.peer_addr(), stream.local_addr()) else { return };
    let (Some(client), Some(server)) = (v4(client), v4(server)) else { return };
    // A connection to the listener itself was not redirected (someone on
    // the node dialled 127.0.0.1:port): its "original destination" is the
    // proxy, and forwarding it would connect the proxy to itself forever.
    if server.ip().is_loopback() && server.port() == proxy_port {
        debug!(%client, "closing a connection made to the proxy listener directly");
        return;
    }
    shared.stats.connections.fetch_add(1, Ordering::Relaxed);
    let ends = Ends { proxy_port, client, server };
    let upstream: Arc<Mutex<Option<SendRequest<Incoming>>>> = Arc::default();
    let service = {
        let shared = shared.clone();
        service_fn(move |req| handle(req, ends, shared.clone(), upstream.clone()))
    };
    // hyper shuts down a connection whose request it cannot parse without
    // a word; Envoy answers 400, and clients and users expect that. A
    // second handle on the socket, and an IO that leaves shutdown to it,
    // let the proxy say it after hyper is done; closing the last handle
    // ends the connection as hyper's shutdown would have.
    let spare = std::os::fd::AsFd::as_fd(&stream).try_clone_to_owned().ok();
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        .pipeline_flush(true)
        .serve_connection(KeepOpen(TokioIo::new(stream)), service);
    if let Err(e) = conn.await {
        debug!(%client, %server, error = %e, "proxied connection ended with an error");
        if e.is_parse() || e.is_parse_status() {
            let (code, answer) = if e.is_parse_too_large() {
                (431, &b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..])
            } else {
                (400, &b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"[..])
            };
            if let Some(fd) = spare {
                use std::io::Write;
                // Non-blocking, as tokio left it: a few bytes into an idle
                // socket's send buffer go at once, or not at all.
                let mut socket = std::net::TcpStream::from(fd);
                let _ = socket.write_all(answer);
                let _ = socket.shutdown(std::net::Shutdown::Write);
            }
            // The flow says why the client saw it.
            let (ingress, endpoint_id, client_identity, server_identity) = identities(&shared, &ends);
            shared.sink.record(L7Record {
                time: SystemTime::now(),
                kind: RecordKind::Request,
                verdict: RecordVerdict::Error,
                endpoint_id,
                ingress,
                client,
                server,
                client_identity,
                server_identity,
                http: HttpInfo { code, protocol: "HTTP/1.1".into(), ..Default::default() },
                latency_ns: 0,
            });
        }
    }
}

/// The client's socket as hyper sees it, except that hyper's shutdown is
/// left to [`serve`], which may still have a 400 to send.
struct KeepOpen<T>(T);

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for KeepOpen<T> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for KeepOpen<T> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// (ingress, endpoint, client identity, server identity) of a connection
/// under the current configuration.
fn identities(shared: &Shared, ends: &Ends) -> (bool, u16, u32, u32) {
    let state = shared.state.read().expect("proxy state lock");
    match state.redirects.get(&ends.proxy_port) {
        Some(r) => {
            let r = &r.redirect;
            if r.ingress {
                (true, r.endpoint_id, state.identity_of(*ends.client.ip()), r.endpoint_identity)
            } else {
                (false, r.endpoint_id, r.endpoint_identity, state.identity_of(*ends.server.ip()))
            }
        }
        None => (true, 0, state.identity_of(*ends.client.ip()), state.identity_of(*ends.server.ip())),
    }
}

fn version_text(v: hyper::Version) -> &'static str {
    match v {
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2",
        _ => "HTTP/1.1",
    }
}

async fn handle(
    mut req: Request<Incoming>,
    ends: Ends,
    shared: Arc<Shared>,
    upstream: Arc<Mutex<Option<SendRequest<Incoming>>>>,
) -> Result<Response<Body>, hyper::Error> {
    let started = Instant::now();
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_else(|| ends.server.to_string());
    // Rules match the host without a port, as Cilium's do.
    let host_name =
        host.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()).map_or(host.as_str(), |(h, _)| h);
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let (ingress, endpoint_id, client_identity, server_identity, decision) = {
        let state = shared.state.read().expect("proxy state lock");
        let view = HttpRequestView {
            method: req.method().as_str(),
            path: req.uri().path(),
            host: host_name,
            headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect(),
        };
        match state.redirects.get(&ends.proxy_port) {
            // The L7 rules were removed while this connection was open: it
            // carries on as any established connection does after a policy
            // change (conntrack keeps it), now without L7 rules.
            None => (
                true,
                0,
                state.identity_of(*ends.client.ip()),
                state.identity_of(*ends.server.ip()),
                HttpDecision::Allow { edits: vec![], logged: vec![] },
            ),
            Some(r) => {
                let rd = &r.redirect;
                let (client_id, server_id) = if rd.ingress {
                    (state.identity_of(*ends.client.ip()), rd.endpoint_identity)
                } else {
                    (rd.endpoint_identity, state.identity_of(*ends.server.ip()))
                };
                let peer = if rd.ingress { client_id } else { server_id };
                let mut decision = r.decide(peer, &view);
                // A local receiver's own ingress L7 rules apply too: the
                // proxy's upstream connection is not redirected again.
                if !rd.ingress && decision.allowed() {
                    if let Some(theirs) = state.ingress_redirect(*ends.server.ip(), ends.server.port()) {
                        if !theirs.decide(client_id, &view).allowed() {
                            decision = HttpDecision::Deny;
                        }
                    }
                }
                (rd.ingress, rd.endpoint_id, client_id, server_id, decision)
            }
        }
    };
    // Built after the decision so the headers move into it, not copied.
    let path_and_query = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let info = HttpInfo {
        code: 0,
        method: req.method().as_str().to_string(),
        url: format!("http://{host}{path_and_query}"),
        protocol: version_text(req.version()).into(),
        headers,
    };
    let record = |kind, verdict, http: HttpInfo, latency_ns| L7Record {
        time: SystemTime::now(),
        kind,
        verdict,
        endpoint_id,
        ingress,
        client: ends.client,
        server: ends.server,
        client_identity,
        server_identity,
        http,
        latency_ns,
    };
    let edits = match decision {
        HttpDecision::Deny => {
            shared.stats.denied.fetch_add(1, Ordering::Relaxed);
            shared.sink.record(record(RecordKind::Request, RecordVerdict::Denied, info, 0));
            return Ok(full(StatusCode::FORBIDDEN, DENIED_BODY));
        }
        HttpDecision::Allow { edits, .. } => edits,
    };
    shared.sink.record(record(RecordKind::Request, RecordVerdict::Forwarded, info.clone(), 0));
    for edit in edits {
        match edit {
            HeaderEdit::Set { name, value } => {
                if let (Ok(n), Ok(v)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
                    req.headers_mut().insert(n, v);
                }
            }
            HeaderEdit::Remove { name } => {
                req.headers_mut().remove(name.as_str());
            }
        }
    }
    let mut guard = upstream.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        match connect(ends.server, client_identity).await {
            Ok(sender) => *guard = Some(sender),
            Err(e) => {
                debug!(server = %ends.server, error = %e, "upstream connect failed");
                shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
                let http = HttpInfo { code: 503, ..info };
                shared.sink.record(record(
                    RecordKind::Response,
                    RecordVerdict::Error,
                    http,
                    started.elapsed().as_nanos() as u64,
                ));
                return Ok(full(StatusCode::SERVICE_UNAVAILABLE, "upstream connect error\r\n"));
            }
        }
    }
    let sender = guard.as_mut().expect("connected above");
    let sent = sender.send_request(req).await;
    drop(guard);
    match sent {
        Ok(resp) => {
            let http = HttpInfo {
                code: resp.status().as_u16() as u32,
                protocol: version_text(resp.version()).into(),
                ..info
            };
            shared.sink.record(record(
                RecordKind::Response,
                RecordVerdict::Forwarded,
                http,
                started.elapsed().as_nanos() as u64,
            ));
            Ok(resp.map(|b| b.boxed()))
        }
        Err(e) => {
            shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            debug!(server = %ends.server, error = %e, "upstream request failed");
            let http = HttpInfo { code: 503, ..info };
            shared.sink.record(record(
                RecordKind::Response,
                RecordVerdict::Error,
                http,
                started.elapsed().as_nanos() as u64,
            ));
            Ok(full(StatusCode::SERVICE_UNAVAILABLE, "upstream reset\r\n"))
        }
    }
}

/// An HTTP/1.1 client connection to the original destination, from the
/// node, marked with the identity the proxy acts for.
async fn connect(server: SocketAddrV4, identity: u32) -> std::io::Result<SendRequest<Incoming>> {
    let stream = socket::connect_marked(server, twill_abi::proxy_identity_mark(identity)).await?;
    let (sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}
