"""A small HTTP backend for the demo and the tests, and the demo's manifests.

The backend answers every request with its name, so a client sees which instance served it.
`?status=NNN` and `?delay=MS` make it fail or be slow on demand; `--error-ratio` and
`--delay-ms` make every request fail at random or be slow (a bad version to roll back);
`/health` answers `ok`, or 503 while the file named by `--fail-health-file` exists (so a test
can fail its health check without stopping it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEMO_MANIFEST = """\
# The demo: two versions of a service and a 90/10 canary between them.
kind: service
name: sava:1.0
instances: ["127.0.0.1:8081"]
health_check: {type: http, path: /health, interval: 1s}
---
kind: service
name: sava:1.1
instances: ["127.0.0.1:8082"]
health_check: {type: http, path: /health, interval: 1s}
---
name: sava
port: 9070/http
routes:
  sava:1.0:
    weight: 90%
  sava:1.1:
    weight: 10%
    # Firefox users who carry the beta cookie always get the new version.
    condition: user-agent == Firefox and has cookie beta
"""


class _Handler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, ~40 ms on Linux: 22 requests a second per connection.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        return  # quiet: thousands of requests per test

    def _answer(self) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        delay_ms = int(query["delay"][0]) if "delay" in query else self.server.delay_ms
        if delay_ms and url.path != "/health":
            time.sleep(min(delay_ms, 30_000) / 1000)
        status = int(query.get("status", ["200"])[0])
        if url.path != "/health" and random.random() < self.server.error_ratio:
            status = 500
        failing = self.server.fail_health_file
        if url.path == "/health" and failing and os.path.exists(failing):
            status = 503
        body = ("ok\n" if url.path == "/health" else f"{self.server.name}\n").encode()
        if url.path == "/echo":
            echo = {"name": self.server.name, "path": self.path, "headers": dict(self.headers)}
            body = json.dumps(echo).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Served-By", self.server.name)
        self.send_header("X-Path", self.path)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        # Health checks and clients that hang up early are routine here, not errors to print.
        return

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        fail_health_file: str | None = None,
        *,
        error_ratio: float = 0.0,
        delay_ms: int = 0,
    ) -> None:
        self.name = name
        self.fail_health_file = fail_health_file
        self.error_ratio = error_ratio
        self.delay_ms = delay_ms
        super().__init__((host, port), _Handler)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="meshgate demo backend")
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--fail-health-file", default=None, help="/health fails while it exists")
    parser.add_argument("--error-ratio", type=float, default=0.0, help="share answered 500")
    parser.add_argument("--delay-ms", type=int, default=0, help="delay of every answer")
    args = parser.parse_args(argv)
    with DemoServer(
        args.name,
        args.host,
        args.port,
        args.fail_health_file,
        error_ratio=args.error_ratio,
        delay_ms=args.delay_ms,
    ) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()


def start_demo_backends(host: str = "127.0.0.1") -> list[DemoServer]:
    """The demo's two versions of sava, served from threads of the calling process."""
    import threading

    servers = [DemoServer("sava 1.0", host, 8081), DemoServer("sava 1.1", host, 8082)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    return servers
