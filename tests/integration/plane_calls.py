"""Service A of the service-plane test: run inside a host (`ip netns exec`), it calls its
dependency at localhost:PORT, each call on a fresh connection, and prints one JSON line:
the answers by body and the failures.

    python -m tests.integration.plane_calls URL COUNT [--header NAME:VALUE] [--keep-cookies]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import httpx


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("count", type=int)
    parser.add_argument("--header", action="append", default=[])
    parser.add_argument("--keep-cookies", action="store_true")
    parser.add_argument("--pause-ms", type=float, default=0.0)
    args = parser.parse_args()
    headers = dict(h.split(":", 1) for h in args.header)
    answers: dict[str, int] = {}
    failures: list[str] = []
    # No keep-alive: every call is a new connection, as the sharpest test of each choice.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(timeout=5, limits=limits, headers=headers) as client:
        for _ in range(args.count):
            if not args.keep_cookies:
                client.cookies.clear()
            try:
                response = client.get(args.url)
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
                continue
            if response.status_code != 200:
                failures.append(f"HTTP {response.status_code}: {response.text.strip()[:80]}")
                continue
            body = response.text.strip()
            if not answers:
                # For a test that must act while calls are under way.
                print("answered", file=sys.stderr, flush=True)
            answers[body] = answers.get(body, 0) + 1
            if args.pause_ms:
                time.sleep(args.pause_ms / 1000)
    print(json.dumps({"answers": answers, "failures": failures}))


if __name__ == "__main__":
    main()
