"""Screenshots of the dashboard for the README: a `meshgate up` on loopback with the demo's two
backends, a canary rollout, a little traffic, and Chromium (Debian's) taking pictures of each
view at desktop and phone width into docs/images/.

    .venv/bin/python scripts/screenshots.py            # needs chromium and playwright
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "images"
API = "127.0.0.1:17790"
GATEWAY_PORT = 19790
URL = f"http://127.0.0.1:{GATEWAY_PORT}/"
MANIFEST = f"""\
kind: service
name: sava:1.0
instances: ["127.0.0.1:18791"]
health_check: {{type: http, path: /health, interval: 1s}}
---
kind: service
name: sava:1.1
instances: ["127.0.0.1:18792"]
health_check: {{type: http, path: /health, interval: 1s}}
---
name: sava
port: {GATEWAY_PORT}/http
bind: 127.0.0.1
routes:
  sava:1.0: {{weight: 90%}}
  sava:1.1:
    weight: 10%
    condition: user-agent == Firefox and has cookie beta
---
kind: rollout
name: sava
gateway: sava
canary: sava:1.1
steps: [10%, 25%, 50%, 100%]
interval: 60s
analysis: {{min_requests: 50, success_rate: 95%, max_p99: 200ms}}
"""
VIEWS = {"overview": "", "gateway": "gateways/default/sava", "rollouts": "rollouts"}


def traffic(stop: threading.Event) -> None:
    """About 100 requests a second to the gateway, with 3 % asking for a 500, until stopped."""
    sent = 0
    with httpx.Client(timeout=5) as client:
        while not stop.is_set() and sent < 20_000:
            failing = sent % 100 < 3
            with contextlib.suppress(httpx.HTTPError):
                client.get(URL, params={"status": "500"} if failing else None)
            sent += 1
            time.sleep(0.01)


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="meshgate-shots-"))
    python = sys.executable
    backends = [
        subprocess.Popen([python, "-m", "meshgate.demo", "--name", name, "--port", port])
        for name, port in (("sava 1.0", "18791"), ("sava 1.1", "18792"))
    ]
    (workdir / "demo.yaml").write_text(MANIFEST)
    node = subprocess.Popen(
        [python, "-m", "meshgate", "up", "--data-dir", str(workdir / "data"), "--api", API,
         "--anomaly-window", "2s", "-f", str(workdir / "demo.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://{API}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        loader = threading.Thread(target=traffic, args=(stop,), daemon=True)
        loader.start()
        time.sleep(25)  # a few analytics windows of history for the charts
        OUT.mkdir(parents=True, exist_ok=True)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            for size, (width, height) in {"desktop": (1280, 800), "phone": (390, 844)}.items():
                page = browser.new_page(viewport={"width": width, "height": height})
                for name, path in VIEWS.items():
                    page.goto(f"http://{API}/ui/#/{path}")
                    page.wait_for_timeout(2500)
                    target = OUT / f"dashboard-{name}-{size}.png"
                    page.screenshot(path=str(target), full_page=size == "desktop")
                    print(target.relative_to(ROOT))
                page.close()
            browser.close()
        return 0
    finally:
        stop.set()
        node.terminate()
        node.wait(20)
        for backend in backends:
            backend.kill()
            backend.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
