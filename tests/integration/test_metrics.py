"""/metrics of a real node with traffic, checked by Prometheus's own linter (promtool)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.test_routing import FAST_CHECK, gateway, service, wait_until

pytestmark = pytest.mark.integration


def test_metrics_pass_promtool_and_name_the_node_and_haproxy(
    node: Node, backends: Backends
) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:  # pragma: no cover - scripts/setup.sh --test installs it
        pytest.skip("promtool is not installed (Debian package prometheus)")
    port = free_port()
    node.apply(
        service("metered", backends.start("m1"), health_check=FAST_CHECK),
        gateway("metered", port, {"metered": {}}),
    )
    url = f"http://127.0.0.1:{port}/"
    wait_until(lambda: count_served(url, 5) == {"m1": 5})
    wait_until(lambda: 'gateway="metered"' in node.api.get("/metrics").text)
    text = node.api.get("/metrics").text

    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout + checked.stderr == ""  # not even a lint warning

    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = [s for f in families.values() for s in f.samples]
    assert not [s.name for s in samples if s.name.endswith("_created")]
    assert not [s for s in samples if "instance" in s.labels]
    (build,) = families["meshgate_build_info"].samples
    assert build.labels["version"] and build.value == 1
    assert families["process_resident_memory_bytes"].samples[0].value > 0
    haproxy_rss = {
        s.labels["process"]: s.value
        for s in families["meshgate_haproxy_resident_memory_bytes"].samples
    }
    assert haproxy_rss["master"] > 0 and haproxy_rss["workers"] > 0
    cpu = {s.labels["process"]: s.value for s in families["meshgate_haproxy_cpu_seconds"].samples}
    assert set(cpu) == {"master", "workers"} and all(v >= 0 for v in cpu.values())
    master, workers = node.haproxy_pids()
    assert families["meshgate_haproxy_workers"].samples[0].value >= len(workers)
    assert os.path.exists(f"/proc/{master}")
