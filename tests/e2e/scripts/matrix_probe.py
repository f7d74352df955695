#!/usr/bin/env python3
"""One source's row of the policy matrix: tries every target in parallel
and prints a JSON object {"IP:PROTO:PORT": "ok" | "timeout" | "refused" | ...}.

usage: matrix_probe.py TIMEOUT SPORT_BASE IP:PROTO:PORT...
       matrix_probe.py --serve
         reads one request a line, {"timeout": T, "base": N, "targets": [...]},
         and answers each with one line of results (no start-up cost per round)

Target i is probed from source port SPORT_BASE + i, so that no probe
reuses the 5-tuple (and a conntrack entry) of an earlier one. A probe is
"ok" only when the server's "ok" answer came back: for TCP the handshake
and the data, for UDP a reply datagram (the request is sent up to three
times within TIMEOUT).
"""

import json
import socket
import sys
import threading
import time


def probe_tcp(ip, port, sport, timeout):
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport))
        s.settimeout(timeout)
        s.connect((ip, port))
        data = b""
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout-after-connect"
            s.settimeout(left)
            chunk = s.recv(64)
            if not chunk:
                break
            data += chunk
        return "ok" if data.startswith(b"ok") else "bad-answer"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "error: %s" % e
    finally:
        s.close()


def probe_udp(ip, port, sport, timeout):
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", sport))
        s.connect((ip, port))
        step = timeout / 3.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            s.send(b"hi\n")
            s.settimeout(max(0.01, min(step, deadline - now)))
            try:
                data = s.recv(64)
                return "ok" if data.startswith(b"ok") else "bad-answer"
            except socket.timeout:
                continue
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return "error: %s" % e
    finally:
        s.close()


def probe_all(timeout, base, targets):
    results = {}

    def run(i, target):
        ip, proto, port = target.split(":")
        fn = probe_tcp if proto == "tcp" else probe_udp
        results[target] = fn(ip, int(port), base + i, timeout)

    threads = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    if sys.argv[1:] == ["--serve"]:
        for line in sys.stdin:
            if not line.strip():
                continue
            req = json.loads(line)
            res = probe_all(float(req["timeout"]), int(req["base"]), req["targets"])
            sys.stdout.write(json.dumps(res) + "\n")
            sys.stdout.flush()
        return
    res = probe_all(float(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
    sys.stdout.write(json.dumps(res) + "\n")


if __name__ == "__main__":
    main()
