//! The two kinds of socket the proxy needs beyond plain ones.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// A listener on 127.0.0.1:`port` with IP_TRANSPARENT: connections the
/// datapath assigns to it keep their original destination, which is the
/// accepted socket's local address (and the address its replies come
/// from). Needs CAP_NET_ADMIN.
pub fn transparent_listener(port: u16) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_ip_transparent_v4(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)).into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}

/// A connection to `server` whose packets carry `mark` (SO_MARK), so the
/// datapath knows them for the proxy's and whom they are for.
pub async fn connect_marked(server: SocketAddrV4, mark: u32) -> std::io::Result<TcpStream> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_mark(mark)?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    let s = TcpSocket::from_std_stream(s.into());
    s.connect(SocketAddr::V4(server)).await
}
