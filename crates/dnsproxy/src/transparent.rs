//! The socket side of a transparent DNS proxy (IPv4): a UDP socket that
//! receives queries the datapath steered to it (bpf_sk_assign or TPROXY)
//! while they are still addressed to the real server, learns that
//! original destination from IP_ORIGDSTADDR, and answers from that same
//! address, so the client's resolver accepts the reply.

use std::io;
use std::mem;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::engine::{Client, Engine};

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn set_int(fd: RawFd, level: libc::c_int, opt: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: a valid fd and a pointer to an int of the stated size.
    check(unsafe {
        libc::setsockopt(fd, level, opt, &v as *const _ as *const libc::c_void, mem::size_of_val(&v) as u32)
    })
    .map(|_| ())
}

fn sockaddr(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(*addr.ip()).to_be() },
        sin_zero: [0; 8],
    }
}

fn from_sockaddr(sa: &libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr)), u16::from_be(sa.sin_port))
}

/// A non-blocking IPv4 UDP socket with IP_TRANSPARENT, bound to `addr`
/// (which need not be local). Needs CAP_NET_ADMIN.
fn transparent_socket(addr: SocketAddrV4, recv_origdst: bool) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = check(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    set_int(raw, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    if recv_origdst {
        set_int(raw, libc::SOL_IP, libc::IP_RECVORIGDSTADDR, 1)?;
    }
    let sa = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    check(unsafe {
        libc::bind(raw, &sa as *const _ as *const libc::sockaddr, mem::size_of::<libc::sockaddr_in>() as u32)
    })?;
    Ok(fd)
}

/// A transparent TCP listener for DNS over TCP: an accepted connection's
/// local address is the server the client dialled.
pub fn bind_tcp(addr: SocketAddrV4) -> io::Result<tokio::net::TcpListener> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = check(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0)
    })?;
    // SAFETY: fd was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let raw = fd.as_raw_fd();
    set_int(raw, libc::SOL_IP, libc::IP_TRANSPARENT, 1)?;
    set_int(raw, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    let sa = sockaddr(addr);
    // SAFETY: sa is a valid sockaddr_in of the given length.
    check(unsafe {
        libc::bind(raw, &sa as *const _ as *const libc::sockaddr, mem::size_of::<libc::sockaddr_in>() as u32)
    })?;
    // SAFETY: a bound stream socket.
    check(unsafe { libc::listen(raw, 1024) })?;
    tokio::net::TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// Serves steered DNS-over-TCP connections: at most `max_connections` at
/// once (more are closed at accept), each idle at most `idle`.
pub async fn serve_tcp(
    engine: Arc<Engine>,
    listener: tokio::net::TcpListener,
    clients: Arc<dyn ClientLookup>,
    max_connections: usize,
    idle: std::time::Duration,
) -> io::Result<()> {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let (stream, peer) = listener.accept().await?;
        let (SocketAddr::V4(peer_v4), Ok(server)) = (peer, stream.local_addr()) else { continue };
        let Some((endpoint, identity)) = clients.client(peer_v4) else { continue };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(client = %peer, "too many DNS-over-TCP connections; closed");
            continue;
        };
        let engine = engine.clone();
        tokio::spawn(async move {
            engine.serve_tcp(Client { endpoint, identity, addr: peer }, server, stream, idle).await;
            drop(slot);
        });
    }
}

/// The listening side: where steered queries arrive.
pub struct TransparentUdp {
    socket: UdpSocket,
}

/// One received query: who sent it, and where it was going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub len: usize,
    pub client: SocketAddrV4,
    pub original_dst: SocketAddrV4,
}

impl TransparentUdp {
    /// Binds the proxy's listening socket (e.g. 0.0.0.0:PORT; the
    /// datapath steers queries to it). Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddrV4) -> io::Result<Self> {
        let fd = transparent_socket(addr, true)?;
        let std = std::net::UdpSocket::from(fd);
        Ok(TransparentUdp { socket: UdpSocket::from_std(std)? })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Answers a query that was addressed to this socket itself (its
    /// port), from the address it was sent to: the listener replies, with
    /// IP_PKTINFO choosing the source address.
    pub async fn reply_as(&self, from: Ipv4Addr, to: SocketAddrV4, data: &[u8]) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        self.socket.async_io(Interest::WRITABLE, || send_pktinfo(fd, from, to, data)).await
    }

    /// Receives one datagram with its original destination.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        self.socket.async_io(Interest::READABLE, || recv_with_origdst(self.socket.as_raw_fd(), buf)).await
    }
}

fn recv_with_origdst(fd: RawFd, buf: &mut [u8]) -> io::Result<Received> {
    // SAFETY (whole function): every pointer handed to recvmsg points into
    // a live local of the size given, and cmsgs are walked with the libc
    // macros within msg_controllen.
    unsafe {
        let mut from: libc::sockaddr_in = mem::zeroed();
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let mut control = [0u64; 16];
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = &mut from as *mut _ as *mut libc::c_void;
        msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = mem::size_of_val(&control);
        let n = libc::recvmsg(fd, &mut msg, 0);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_IP && (*cmsg).cmsg_type == libc::IP_ORIGDSTADDR {
                let dst = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::sockaddr_in);
                return Ok(Received {
                    len: n as usize,
                    client: from_sockaddr(&from),
                    original_dst: from_sockaddr(&dst),
                });
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "datagram without IP_ORIGDSTADDR"))
    }
}

fn send_pktinfo(fd: RawFd, from: Ipv4Addr, to: SocketAddrV4, data: &[u8]) -> io::Result<()> {
    // SAFETY: every pointer handed to sendmsg points into a live local of
    // the size given; the one cmsg is written with the libc macros inside
    // a buffer large enough for it.
    unsafe {
        let mut sa = sockaddr(to);
        let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
        let mut control = [0u64; 8];
        let mut msg: libc::msghdr = mem::zeroed();
        msg.msg_name = &mut sa as *mut _ as *mut libc::c_void;
        msg.msg_namelen = mem::size_of::<libc::sockaddr_in>() as u32;
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = libc::CMSG_SPACE(mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_IP;
        (*cmsg).cmsg_type = libc::IP_PKTINFO;
        (*cmsg).cmsg_len = libc::CMSG_LEN(mem::size_of::<libc::in_pktinfo>() as u32) as usize;
        let info = libc::in_pktinfo {
            ipi_ifindex: 0,
            ipi_spec_dst: libc::in_addr { s_addr: u32::from(from).to_be() },
            ipi_addr: libc::in_addr { s_addr: 0 },
        };
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut libc::in_pktinfo, info);
        if libc::sendmsg(fd, &msg, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Sends `data` to `to` from the address `from` (the server the client
/// asked), through a transparent socket made for this one reply, and
/// connected to the client: a socket bound to the server's address would
/// otherwise match other clients' queries in the kernel's socket lookup
/// and steal them from the listener. It is closed right after, so it can
/// take at most a query from this same client port in those microseconds
/// (and none where the datapath assigns queries to the listener with
/// bpf_sk_assign, which skips the lookup).
pub fn send_from(from: SocketAddrV4, to: SocketAddrV4, data: &[u8]) -> io::Result<()> {
    let fd = transparent_socket(from, false)?;
    let sa = sockaddr(to);
    // SAFETY: sa is a valid sockaddr_in of the given length; data is live
    // for the call with its length.
    let n = unsafe {
        check(libc::connect(
            fd.as_raw_fd(),
            &sa as *const _ as *const libc::sockaddr,
            mem::size_of::<libc::sockaddr_in>() as u32,
        ))?;
        libc::send(fd.as_raw_fd(), data.as_ptr() as *const libc::c_void, data.len(), 0)
    };
    check(n as libc::c_int).map(|_| ())
}

/// Maps a query's source address to the endpoint that sent it (the agent
/// knows endpoints by address). None: not an endpoint; the query is
/// dropped.
pub trait ClientLookup: Send + Sync + 'static {
    fn client(&self, addr: SocketAddrV4) -> Option<(u64, u32)>;
}

impl<F: Fn(SocketAddrV4) -> Option<(u64, u32)> + Send + Sync + 'static> ClientLookup for F {
    fn client(&self, addr: SocketAddrV4) -> Option<(u64, u32)> {
        self(addr)
    }
}

/// Serves steered queries until the socket fails: one receiving loop, one
/// task per query only while it waits for the server (bounded by the
/// engine's in-flight limit), the reply sent from the original address.
pub async fn serve(
    engine: Arc<Engine>,
    socket: TransparentUdp,
    clients: Arc<dyn ClientLookup>,
) -> io::Result<()> {
    serve_to(engine, socket, clients, None).await
}

/// [`serve`], forwarding to `upstream` instead of each query's original
/// destination when given: for tests and benchmarks that send to the
/// listener itself, with nothing steering queries to it. Replies still go
/// out from the original destination.
pub async fn serve_to(
    engine: Arc<Engine>,
    socket: TransparentUdp,
    clients: Arc<dyn ClientLookup>,
    upstream: Option<SocketAddr>,
) -> io::Result<()> {
    let own_port = socket.local_addr()?.port();
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 65535];
    loop {
        let r = socket.recv(&mut buf).await?;
        let Some((endpoint, identity)) = clients.client(r.client) else {
            tracing::debug!(client = %r.client, "DNS query from an address that is no endpoint; dropped");
            continue;
        };
        let client = Client { endpoint, identity, addr: SocketAddr::V4(r.client) };
        let query = buf[..r.len].to_vec();
        let (engine, socket) = (engine.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(reply) =
                engine.handle_udp(client, upstream.unwrap_or(SocketAddr::V4(r.original_dst)), &query).await
            {
                // Steered queries (to the server's port) are answered from a
                // transparent socket; one sent to the listener itself by it.
                let sent = if r.original_dst.port() == own_port {
                    socket.reply_as(*r.original_dst.ip(), r.client, &reply).await
                } else {
                    send_from(r.original_dst, r.client, &reply)
                };
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "DNS reply not sent");
                }
            }
        });
    }
}
