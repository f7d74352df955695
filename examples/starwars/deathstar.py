#!/usr/bin/env python3
"""The deathstar of the Star Wars demo: a small HTTP/1.1 API.

    POST /v1/request-landing  -> 200 "Ship landed"
    PUT  /v1/exhaust-port     -> 503 and the station blowing up
    anything else             -> 404

Usage: deathstar.py NAME [PORT]. NAME comes back in the X-Deathstar
header of every answer, so a client of the service can tell which backend
served it.
"""
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

NAME = sys.argv[1] if len(sys.argv) > 1 else "deathstar"
PORT = int(sys.argv[2]) if len(sys.argv) > 2 else 80

ROUTES = {
    ("POST", "/v1/request-landing"): (200, "Ship landed\n"),
    ("PUT", "/v1/exhaust-port"): (
        503,
        "Panic: a proton torpedo went down the thermal exhaust port\n"
        "The reactor core is collapsing; the deathstar has exploded\n",
    ),
}


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as curl and wrk expect from a real server.
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def answer(self):
        # Drain the body: leaving it unread would corrupt the next request
        # on a keep-alive connection.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = self.path.split("?", 1)[0]
        code, text = ROUTES.get((self.command, path), (404, "Not found\n"))
        body = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Deathstar", NAME)
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = answer


if __name__ == "__main__":
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
