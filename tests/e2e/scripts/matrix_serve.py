#!/usr/bin/env python3
"""Tiny servers for the policy matrix test: answer "ok" on each
PROTO:PORT given (tcp:80 udp:80 ...), on every address, until killed.

TCP: accept, send "ok\n", close. UDP: answer every datagram with "ok\n".
"""

import socket
import struct
import sys
import threading


def tcp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(128)
    while True:
        conn, _ = s.accept()
        try:
            conn.sendall(b"ok\n")
        except OSError:
            pass
        finally:
            conn.close()


# Linux <netinet/in.h>; the socket module of older Pythons lacks it.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)


def udp(port):
    # Answers from the address the request was sent to (IP_PKTINFO), so
    # that a multi-homed machine (the node) does not answer a request to
    # one of its addresses from another.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    s.bind(("0.0.0.0", port))
    while True:
        _, anc, _, peer = s.recvmsg(2048, socket.CMSG_SPACE(12))
        info = []
        for level, kind, data in anc:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= 12:
                _, _, dst = struct.unpack("I4s4s", data[:12])
                info = [(socket.IPPROTO_IP, IP_PKTINFO, struct.pack("I4s4s", 0, dst, bytes(4)))]
        try:
            s.sendmsg([b"ok\n"], info, 0, peer)
        except OSError:
            pass


def main():
    threads = []
    for spec in sys.argv[1:]:
        proto, port = spec.split(":")
        fn = {"tcp": tcp, "udp": udp}[proto]
        t = threading.Thread(target=fn, args=(int(port),), daemon=True)
        t.start()
        threads.append(t)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
