//! A blocking rtnetlink client over one socket: requests that want an
//! acknowledgement, and dumps.
//!
//! Blocking on purpose: every caller is either a plain thread or a short
//! operation the agent already runs off its async workers, and a socket
//! stays in the network namespace it was opened in, which is how
//! namespace work is handed from a short-lived thread back to the caller.

use std::io;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// Large enough for one datagram of any dump: the kernel fills at most
/// 32 KiB per message batch for sockets with room for it.
const RECV_BUFFER: usize = 64 * 1024;
/// A dump the kernel marks as interrupted (the table changed while it was
/// being read) is asked for again, this many times at most.
const DUMP_ATTEMPTS: usize = 5;

pub(crate) struct Rtnl {
    socket: Socket,
    sequence: u32,
    buffer: Vec<u8>,
}

impl Rtnl {
    /// Opens a socket in the calling thread's network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self { socket, sequence: 0, buffer: vec![0; RECV_BUFFER] })
    }

    /// Sends one request and waits for the kernel's acknowledgement.
    pub(crate) fn execute(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        let sequence = self.send(message, NLM_F_REQUEST | NLM_F_ACK | flags)?;
        let mut result = None;
        self.receive(sequence, |payload| match payload {
            NetlinkPayload::Error(e) => {
                result = Some(match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                });
                true
            }
            _ => false,
        })?;
        result.unwrap_or(Ok(()))
    }

    /// Sends a request for one object and returns the kernel's answer
    /// (`None` if it sent none).
    pub(crate) fn get(&mut self, request: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        let sequence = self.send(request, NLM_F_REQUEST)?;
        let mut answer = Ok(None);
        self.receive(sequence, |payload| match payload {
            NetlinkPayload::InnerMessage(m) => {
                answer = Ok(Some(m));
                true
            }
            NetlinkPayload::Error(e) => {
                if e.code.is_some() {
                    answer = Err(e.to_io());
                }
                true
            }
            NetlinkPayload::Done(_) => true,
            _ => false,
        })?;
        answer
    }

    /// Sends a dump request and returns every message of the answer.
    pub(crate) fn dump(&mut self, request: RouteNetlinkMessage) -> io::Result<Vec<RouteNetlinkMessage>> {
        for _ in 0..DUMP_ATTEMPTS {
            let sequence = self.send(request.clone(), NLM_F_REQUEST | NLM_F_DUMP)?;
            let mut messages = Vec::new();
            let mut error = None;
            let interrupted = self.receive(sequence, |payload| match payload {
                NetlinkPayload::InnerMessage(m) => {
                    messages.push(m);
                    false
                }
                NetlinkPayload::Error(e) if e.code.is_some() => {
                    error = Some(e.to_io());
                    true
                }
                NetlinkPayload::Done(_) | NetlinkPayload::Error(_) => true,
                _ => false,
            })?;
            if let Some(e) = error {
                return Err(e);
            }
            if !interrupted {
                return Ok(messages);
            }
        }
        Err(io::Error::new(io::ErrorKind::Interrupted, "netlink dump kept changing while being read"))
    }

    fn send(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<u32> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(message));
        packet.header.flags = flags;
        packet.header.sequence_number = self.sequence;
        packet.finalize();
        let mut bytes = vec![0; packet.buffer_len()];
        packet.serialize(&mut bytes);
        self.socket.send(&bytes, 0)?;
        Ok(self.sequence)
    }

    /// Feeds the payloads answering `sequence` to `done` until it returns
    /// true. Returns whether the kernel flagged any part as interrupted.
    fn receive(
        &mut self,
        sequence: u32,
        mut done: impl FnMut(NetlinkPayload<RouteNetlinkMessage>) -> bool,
    ) -> io::Result<bool> {
        let mut interrupted = false;
        loop {
            let size = match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => other?,
            };
            let mut offset = 0;
            while offset < size {
                let packet = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..size])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                let length = packet.header.length as usize;
                if length == 0 {
                    break;
                }
                // Messages start on 4-byte boundaries.
                offset += (length + 3) & !3;
                // Answers to an earlier request that gave up half way are
                // not ours to read.
                if packet.header.sequence_number != sequence {
                    continue;
                }
                interrupted |= packet.header.flags & NLM_F_DUMP_INTR != 0;
                if done(packet.payload) {
                    return Ok(interrupted);
                }
            }
        }
    }
}

/// A socket on the rtnetlink TC group: qdisc and filter changes on any
/// device of the namespace it was opened in, as the kernel announces them.
pub(crate) struct TcEvents {
    socket: Socket,
    buffer: Vec<u8>,
}

impl TcEvents {
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(libc::RTNLGRP_TC)?;
        Ok(Self { socket, buffer: vec![0; RECV_BUFFER] })
    }

    /// Blocks for the next datagram and returns the ifindex of every
    /// device whose qdiscs it says changed. An overrun (ENOBUFS: events
    /// were lost) is reported as `None`: the caller must look at all
    /// devices again.
    pub(crate) fn next(&mut self) -> io::Result<Option<Vec<u32>>> {
        let size = loop {
            match self.socket.recv(&mut &mut self.buffer[..], 0) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(None),
                other => break other?,
            }
        };
        let mut devices = Vec::new();
        let mut offset = 0;
        while offset < size {
            let Ok(packet) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buffer[offset..size])
            else {
                // Not a message this crate knows (a filter's options, say):
                // skip the datagram rather than stop watching.
                break;
            };
            let length = packet.header.length as usize;
            if length == 0 {
                break;
            }
            offset += (length + 3) & !3;
            if let NetlinkPayload::InnerMessage(
                RouteNetlinkMessage::NewQueueDiscipline(m) | RouteNetlinkMessage::DelQueueDiscipline(m),
            ) = packet.payload
            {
                devices.push(m.header.index as u32);
            }
        }
        Ok(Some(devices))
    }
}
