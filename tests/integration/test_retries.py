"""Retries against real HAProxy: an instance that takes requests and hangs up without answering.

By default only a refused connection is retried; a service's `retry_on` adds failures after the
request was sent, for GET, HEAD and OPTIONS only (a POST may have had its effect already)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.integration.conftest import LineServer, Node, free_port
from tests.integration.discovery_helpers import Demos
from tests.integration.test_routing import gateway, service, wait_until

pytestmark = pytest.mark.integration

TCP_CHECK = {"type": "tcp", "interval": "500ms"}  # the hang-up instance passes a connect check


@pytest.fixture
def hang_up() -> Iterator[LineServer]:
    """A server that reads each request and closes without a byte of answer, counting the
    requests it swallowed in `received`."""
    with LineServer(lambda _: b"") as server:
        yield server


def statuses(method: str, url: str, count: int) -> list[int]:
    """Status of `count` requests, each on a new connection so each is balanced anew."""
    with httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        return [client.request(method, url).status_code for _ in range(count)]


def beside_hang_up(node: Node, demos: Demos, hang_up: LineServer, name: str, **fields: Any) -> str:
    """A gateway whose service has the hang-up and a demo backend as instances; its URL."""
    well, _ = demos.start("well")
    port = free_port()
    node.apply(
        service(name, hang_up.port, well, health_check=TCP_CHECK, **fields),
        gateway(name, port, {name: {}}),
    )
    return f"http://127.0.0.1:{port}/"


def test_retry_on_empty_response_saves_safe_requests_and_never_resends_a_post(
    node: Node, demos: Demos, hang_up: LineServer
) -> None:
    retry_on = ["empty-response", "junk-response"]
    url = beside_hang_up(node, demos, hang_up, "flaky", retries=2, retry_on=retry_on)
    wait_until(lambda: statuses("GET", url, 1) == [200])

    swallowed_before = hang_up.received
    assert statuses("GET", url, 20) == [200] * 20
    assert hang_up.received > swallowed_before, "round robin sent no GET to the hang-up"

    posts = statuses("POST", url, 20)
    assert set(posts) == {200, 502}, posts  # the POSTs the hang-up took are not resent


def test_without_retry_on_a_request_the_instance_swallowed_fails(
    node: Node, demos: Demos, hang_up: LineServer
) -> None:
    url = beside_hang_up(node, demos, hang_up, "plain")
    wait_until(lambda: 200 in statuses("GET", url, 2))
    assert set(statuses("GET", url, 20)) == {200, 502}
