"""Sampling of the request log inside HAProxy (`--log-budget`), against real HAProxy.

Traffic above the budget lowers the share of requests HAProxy logs (a process variable the node
sets at run time); the request counts stay exact, the stats say how many requests the
percentiles come from, an access log still gets every request, and a new worker after a reload
is given the value again.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from meshgate.haproxy import transport
from tests.integration.conftest import Backends, Background, Node, free_port
from tests.integration.test_routing import gateway, settle, wait_until
from tests.integration.test_stats import baseline, service, stats, wait_for

pytestmark = pytest.mark.integration
BUDGET = 50  # lines per second: far under what one client sends


def metric(node: Node, name: str, **labels: str) -> float:
    families = text_string_to_metric_families(node.api.get("/metrics").text)
    return sum(
        sample.value
        for family in families
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def lines(node: Node) -> float:
    """Request lines of known routes that reached the node (recorded or thinned out there)."""
    return metric(node, "meshgate_access_log_lines_total", outcome="recorded") + metric(
        node, "meshgate_access_log_lines_total", outcome="sampled_out"
    )


def worker_keep(node: Node) -> int:
    """The keep value the current HAProxy worker has, read through the master."""
    socket = str(node.data_dir.resolve() / "run" / "master.sock")
    reply = asyncio.run(transport.send(socket, "@1 get var proc.mg_log_keep"))
    found = re.search(r"value=<(-?\d+)>", reply)
    assert found, reply
    return int(found.group(1))


def send(url: str, requests: int) -> dict[str, int]:
    """`requests` GETs on one keep-alive connection, as fast as this client goes; answers
    counted by backend name."""
    counts: dict[str, int] = {}
    with httpx.Client(timeout=5) as client:
        for _ in range(requests):
            response = client.get(url)
            ok = response.status_code == 200
            key = response.text.strip() if ok else str(response.status_code)
            counts[key] = counts.get(key, 0) + 1
    return counts


class Load(Background):
    """Requests in a background thread until stopped: keeps the rate above the budget."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self.sent = 0

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            while self.running():
                try:
                    client.get(self.url)
                    self.sent += 1
                except httpx.HTTPError:
                    time.sleep(0.01)


@pytest.fixture(scope="module")
def sampled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Node, str]]:
    """A node with a small budget, and a 50/50 gateway over two backends, settled."""
    node = Node(tmp_path_factory.mktemp("sampled"), "--log-budget", str(BUDGET))
    pool = Backends()
    try:
        node.start()
        one, two = pool.start("one"), pool.start("two")
        port = free_port()
        node.apply(
            service("sampled:one", one),
            service("sampled:two", two),
            gateway("sampled", port, {"sampled:one": {"weight": 50}, "sampled:two": {}}),
        )
        url = f"http://127.0.0.1:{port}/"
        settle(url, {"one", "two"})
        yield node, url
    finally:
        pool.stop_all()
        node.close()


def lowered(node: Node) -> bool:
    return metric(node, "meshgate_access_log_keep_ratio") < 0.5


def test_over_the_budget_haproxy_logs_a_sample_and_counts_stay_exact(
    sampled: tuple[Node, str],
) -> None:
    node, url = sampled
    with Load(url):
        wait_until(lambda: lowered(node), 15)
    before, lines_before = baseline(node, "sampled"), lines(node)
    sampled_out_before = metric(node, "meshgate_access_log_lines_total", outcome="sampled_out")
    keep = metric(node, "meshgate_access_log_keep_ratio")
    served = send(url, 2_000)
    assert set(served) == {"one", "two"}, served
    wait_for(
        node,
        "sampled",
        {
            "sampled:one": before["sampled:one"] + served["one"],
            "sampled:two": before["sampled:two"] + served["two"],
        },
    )
    time.sleep(0.5)  # the last lines on their way through the ring
    logged = lines(node) - lines_before
    # A random sample: about keep x 2,000 lines, far fewer than requests. (The keep value may
    # move a little while the client's rate does; the bounds leave room for that.)
    assert 0 < logged < 2_000 / 4, (logged, keep)
    assert logged < 3 * keep * 2_000 + 30, (logged, keep)
    # HAProxy did the thinning, not the node.
    sampled_out = metric(node, "meshgate_access_log_lines_total", outcome="sampled_out")
    assert sampled_out == sampled_out_before
    route = stats(node, "sampled")["routes"]["sampled:one"]
    sampling = route["sampling"]
    assert sampling["samples"] < sampling["requests"]
    assert sampling["ratio"] == pytest.approx(sampling["samples"] / sampling["requests"], abs=1e-3)
    assert sampling["ratio"] < 0.75
    assert route["latency_ms"]["p50"] is not None  # percentiles from the sample
    # The stats give the share logged now: the metric's value, read while it holds still (the
    # node raises it each poll now that the client has stopped).
    wait_until(lambda: logged_share_agrees(node), 10)


def logged_share_agrees(node: Node) -> bool:
    before = metric(node, "meshgate_access_log_keep_ratio")
    logged = stats(node, "sampled")["routes"]["sampled:one"]["sampling"]["logged"]
    after = metric(node, "meshgate_access_log_keep_ratio")
    if before != after:
        return False
    assert logged == pytest.approx(before, abs=1e-4)
    return True


def test_after_a_reload_the_new_worker_is_given_the_value_again(
    sampled: tuple[Node, str],
) -> None:
    node, url = sampled
    with Load(url):
        wait_until(lambda: lowered(node), 15)
        _, workers = node.haproxy_pids()
        # A new port needs a new listener, which only a reload brings.
        node.apply(gateway("sampled-reload", free_port(), {"[127.0.0.1:1]": {}}))
        wait_until(lambda: node.haproxy_pids()[1] != workers, 10)
        # The new worker starts from the configuration's 1024, then the node sets it.
        wait_until(lambda: worker_keep(node) < 1024, 10)
        # And it follows the node's value (read twice apart, so allow for a poll between).
        wait_until(lambda: worker_follows_node(node), 10)


def worker_follows_node(node: Node) -> bool:
    wanted = round(metric(node, "meshgate_access_log_keep_ratio") * 1024)
    return abs(worker_keep(node) - wanted) <= wanted // 4 + 1


def test_with_an_access_log_every_request_is_logged(
    make_node: Callable[..., Node], backends: Backends, tmp_path: Path
) -> None:
    log = tmp_path / "access.jsonl"
    node = make_node("--access-log", str(log), "--log-budget", str(BUDGET))
    port = free_port()
    node.apply(service("everything", backends.start("e")), gateway("all", port, {"everything": {}}))
    url = f"http://127.0.0.1:{port}/"
    settle(url, {"e"})

    def logged() -> int:
        text = log.read_text() if log.exists() else ""
        return sum(1 for line in text.splitlines() if json.loads(line)["gateway"] == "all")

    before = baseline(node, "all")["everything"]
    time.sleep(0.5)  # settle's last lines on their way through the ring
    lines_before = logged()
    served = send(url, 1_500)
    assert served == {"e": 1_500}
    wait_for(node, "all", {"everything": before + 1_500})
    # Every request has its line: nothing was sampled away, at 1,000 or more a second.
    wait_until(lambda: logged() >= lines_before + 1_500, 10)
    time.sleep(0.5)
    assert logged() == lines_before + 1_500
    assert metric(node, "meshgate_access_log_keep_ratio") == 1.0
    assert worker_keep(node) == 1024
    route: dict[str, Any] = stats(node, "all")["routes"]["everything"]
    assert route["sampling"]["logged"] == 1.0
