"""Run-time registration, TTLs, DNS discovery and the watched manifest directory, against real
HAProxy, real backends and a real DNS server (dnsmasq) on loopback."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from meshgate.cli import main
from tests.integration.conftest import Backends, Node, count_served, free_port
from tests.integration.discovery_helpers import (
    Demos,
    Dnsmasq,
    free_udp_port,
    instance_status,
    instances_url,
    register,
    reloads,
)
from tests.integration.test_routing import FAST_CHECK, gateway, service, wait_until

pytestmark = pytest.mark.integration


def test_registered_instances_join_and_leave_without_a_reload(
    node: Node, backends: Backends
) -> None:
    one, two = backends.start("one"), backends.start("two")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    node.apply(service("reg", health_check=FAST_CHECK), gateway("reg", port, {"reg": {}}))
    assert count_served(url, 3) == {"503": 3}
    pids, reloaded = node.haproxy_pids(), reloads(node)

    registered = register(node, "reg", address="127.0.0.1", port=one)
    assert registered["id"] == f"127.0.0.1:{one}"
    wait_until(lambda: count_served(url, 5) == {"one": 5})
    runner = CliRunner()
    added = runner.invoke(
        main, ["--server", node.url, "instances", "add", "reg", f"127.0.0.1:{two}", "--id", "b"]
    )
    assert added.exit_code == 0, added.output
    wait_until(lambda: set(count_served(url, 20)) == {"one", "two"})
    wait_until(lambda: instance_status(node, "reg") == {f"127.0.0.1:{one}": "UP", "b": "UP"})

    table = runner.invoke(main, ["--server", node.url, "get", "services", "reg"])
    assert "b " in table.output and "UP" in table.output and "api" in table.output

    removed = runner.invoke(main, ["--server", node.url, "instances", "remove", "reg", "b"])
    assert removed.exit_code == 0, removed.output
    wait_until(lambda: count_served(url, 10) == {"one": 10})
    listed = node.api.get(instances_url("reg")).json()["items"]
    assert [(i["id"], i["source"]) for i in listed] == [(f"127.0.0.1:{one}", "api")]

    assert node.haproxy_pids() == pids, "registration and removal must not reload HAProxy"
    assert reloads(node) == reloaded


def test_a_lapsed_ttl_removes_an_instance_and_a_heartbeat_keeps_one(
    node: Node, backends: Backends
) -> None:
    kept, lapsing = backends.start("kept"), backends.start("lapsing")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    node.apply(service("ttl", health_check=FAST_CHECK), gateway("ttl", port, {"ttl": {}}))
    register(node, "ttl", address="127.0.0.1", port=kept, id="kept", ttl=1)
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.3):
            node.api.put(f"{instances_url('ttl')}/kept")

    beating = threading.Thread(target=heartbeat)
    beating.start()
    try:
        registered = time.monotonic()
        register(node, "ttl", address="127.0.0.1", port=lapsing, id="lapsing", ttl="2s")
        wait_until(lambda: set(count_served(url, 20)) == {"kept", "lapsing"})
        pids = node.haproxy_pids()
        wait_until(lambda: count_served(url, 10) == {"kept": 10}, timeout=8)
        lapsed_after = time.monotonic() - registered
        time.sleep(1.5)  # well past the TTLs: the heartbeat alone keeps "kept" there
        assert count_served(url, 10) == {"kept": 10}
    finally:
        stop.set()
        beating.join()
    # Not before the TTL; after it, the expiry sweep, a pass and this test's probing (slower on
    # a busy machine) take a moment more.
    assert 2 <= lapsed_after < 6, f"a 2 s TTL took {lapsed_after:.1f} s to lapse"
    gone = node.api.put(f"{instances_url('ttl')}/lapsing")
    assert gone.status_code == 404
    assert node.haproxy_pids() == pids


def test_registrations_and_their_leases_survive_a_restart(
    make_node: Callable[..., Node], backends: Backends, tmp_path: Path
) -> None:
    first = make_node(data_dir=tmp_path / "restart")
    backend = backends.start("durable")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    first.apply(service("dur", health_check=FAST_CHECK), gateway("dur", port, {"dur": {}}))
    register(first, "dur", address="127.0.0.1", port=backend, id="d", ttl=60)
    wait_until(lambda: count_served(url, 3) == {"durable": 3})
    first.stop()

    first.start()
    wait_until(lambda: count_served(url, 3) == {"durable": 3})
    assert first.api.put(f"{instances_url('dur')}/d").status_code == 200


def test_dns_a_and_srv_answers_are_followed(
    make_node: Callable[..., Node], demos: Demos, tmp_path: Path
) -> None:
    if shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists():
        pytest.skip("dnsmasq is not installed (scripts/setup.sh --test installs it)")
    dns = Dnsmasq(tmp_path)
    shared = free_port()
    demos.start("a2", shared, host="127.0.0.2")
    demos.start("a3", shared, host="127.0.0.3")
    s1, _ = demos.start("s1")
    s2, _ = demos.start("s2")
    dns.hosts.write_text("127.0.0.2 web.mesh.test\n127.0.0.1 target.mesh.test\n")
    srv = "_http._tcp.mesh.test,target.mesh.test"
    dns.start([f"{srv},{s1},0,10", f"{srv},{s2},0,10"])
    try:
        node = make_node("--dns-server", f"127.0.0.1:{dns.port}")
        a_port, srv_port = free_port(), free_port()
        check = {**FAST_CHECK, "interval": "300ms"}
        node.apply(
            service("web", health_check=check, instances=[],
                    dns={"name": "web.mesh.test", "port": shared, "interval": "1s"}),
            service("srv", health_check=check, instances=[],
                    dns={"name": "_http._tcp.mesh.test", "type": "SRV", "interval": "1s"}),
            gateway("web", a_port, {"web": {}}),
            gateway("srv", srv_port, {"srv": {}}),
        )  # fmt: skip
        a_url, srv_url = f"http://127.0.0.1:{a_port}/", f"http://127.0.0.1:{srv_port}/"
        wait_until(lambda: count_served(a_url, 5) == {"a2": 5})
        wait_until(lambda: set(count_served(srv_url, 20)) == {"s1", "s2"})
        pids = node.haproxy_pids()

        dns.set_hosts(
            [("127.0.0.2", "web.mesh.test"), ("127.0.0.3", "web.mesh.test"),
             ("127.0.0.1", "target.mesh.test")]
        )  # fmt: skip
        wait_until(lambda: set(count_served(a_url, 20)) == {"a2", "a3"})
        dns.set_hosts([("127.0.0.3", "web.mesh.test"), ("127.0.0.1", "target.mesh.test")])
        wait_until(lambda: count_served(a_url, 10) == {"a3": 10})
        status = instance_status(node, "web")
        assert set(status) == {f"127.0.0.3:{shared}"}
        sources = {i["source"] for i in node.get("services", "web")["status"]["instances"]}
        assert sources == {"dns"}

        dns.restart([f"{srv},{s2},0,10"])
        wait_until(lambda: count_served(srv_url, 10) == {"s2": 10})
        # A name that no longer exists (NXDOMAIN) empties the service.
        dns.set_hosts([("127.0.0.1", "target.mesh.test")])
        wait_until(lambda: count_served(a_url, 3) == {"503": 3})
        assert node.haproxy_pids() == pids, "DNS changes are runtime changes, not reloads"
        # A resolver that stops answering keeps the last answer, and the status says why.
        dns.stop()
        wait_until(lambda: "dns_error" in node.get("services", "srv")["status"])
        assert count_served(srv_url, 5) == {"s2": 5}
    finally:
        dns.stop()


def test_a_failed_aaaa_lookup_of_an_srv_target_keeps_the_answers_that_arrived(
    make_node: Callable[..., Node], demos: Demos, tmp_path: Path
) -> None:
    if shutil.which("dnsmasq") is None and not Path("/usr/sbin/dnsmasq").exists():
        pytest.skip("dnsmasq is not installed (scripts/setup.sh --test installs it)")
    dns = Dnsmasq(tmp_path)
    backend, _ = demos.start("v4")
    # The target's A record is local; its AAAA query goes to a resolver that never answers.
    dns.hosts.write_text("127.0.0.1 target.fail.test\n")
    dead = free_udp_port()
    srv = f"_http._tcp.mesh.test,target.fail.test,{backend},0,10"
    dns.start([srv], [f"--server=/fail.test/127.0.0.1#{dead}"])
    try:
        node = make_node("--dns-server", f"127.0.0.1:{dns.port}")
        port = free_port()
        node.apply(
            service("partial", health_check=FAST_CHECK, instances=[],
                    dns={"name": "_http._tcp.mesh.test", "type": "SRV", "interval": "1s"}),
            gateway("partial", port, {"partial": {}}),
        )  # fmt: skip
        wait_until(lambda: count_served(f"http://127.0.0.1:{port}/", 5) == {"v4": 5}, 15)
        status = node.get("services", "partial")["status"]
        assert "target.fail.test AAAA" in status["dns_error"]
        assert [i["source"] for i in status["instances"]] == ["dns"]
    finally:
        dns.stop()


def app_service(port: int) -> str:
    return f"kind: service\nname: app\ninstances: ['127.0.0.1:{port}']\n"


def test_a_watched_directory_is_applied_as_its_files_change(
    make_node: Callable[..., Node], backends: Backends, tmp_path: Path
) -> None:
    watched = tmp_path / "manifests"
    watched.mkdir()
    one, two = backends.start("one"), backends.start("two")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    first = watched / "app.yaml"
    first.write_text(
        f"kind: service\nname: app\ninstances: ['127.0.0.1:{one}']\n---\n"
        f"name: app\nport: {port}/http\nroutes:\n  app: {{}}\n"
    )
    node = make_node("--watch", str(watched))
    wait_until(lambda: count_served(url, 3) == {"one": 3})

    first.write_text(first.read_text().replace(f"'127.0.0.1:{one}'", f"'127.0.0.1:{two}'"))
    wait_until(lambda: count_served(url, 5) == {"two": 5})

    # Invalid files change nothing: a bad weight, and a second definition of the service.
    (watched / "broken.yaml").write_text("name: broken\nport: 1/http\nroutes: {a: {weight: x}}\n")
    (watched / "twice.yaml").write_text(app_service(one))
    wait_until(lambda: "twice.yaml" in node.log() and "broken.yaml" in node.log())
    assert count_served(url, 5) == {"two": 5}
    assert node.api.get("/api/v1/gateways/broken").status_code == 404

    first.unlink()
    wait_until(lambda: node.api.get("/api/v1/services/app").status_code == 404)
    assert node.api.get("/api/v1/gateways/app").status_code == 404
    # The second definition is the only one now; fixed, it is applied.
    (watched / "twice.yaml").write_text(app_service(two))
    wait_until(lambda: node.api.get("/api/v1/services/app").status_code == 200)


def test_bad_input_names_the_field_and_changes_nothing(node: Node, backends: Backends) -> None:
    backend = backends.start("unchanged")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    node.apply(service("bad", backend), gateway("bad", port, {"bad": {}}))
    wait_until(lambda: count_served(url, 3) == {"unchanged": 3})
    before = node.definitions()

    cases = [
        ({"address": "999.1.1.1", "port": 80}, "address"),
        ({"address": "127.0.0.1", "port": 65536}, "port"),
        ({"address": "127.0.0.1", "port": 80, "ttl": "-5s"}, "ttl"),
        ({"address": "127.0.0.1", "port": 80, "weight": -1}, "weight"),
    ]
    for body, field in cases:
        response = node.api.post(instances_url("bad"), json=body)
        assert response.status_code == 422, response.text
        assert [e["path"] for e in response.json()["errors"]] == [field]
    unknown = node.api.post(instances_url("missing"), json={"address": "127.0.0.1", "port": 80})
    assert unknown.status_code == 404
    assert "service default/missing not found" in unknown.json()["errors"][0]["message"]
    checks = [
        ({"type": "http", "rise": 0}, "health_check.rise"),
        ({"type": "http", "expect_status": "600"}, "health_check.expect_status"),
        ({"type": "smtp"}, "health_check.type"),
        ({"type": "tcp", "interval": "soon"}, "health_check.interval"),
        ({"type": "http", "path": "no-slash"}, "health_check.path"),
    ]
    for check, field in checks:
        document = service("bad", backend, health_check=check)
        response = node.api.post("/api/v1/apply", json=[document])
        assert response.status_code == 422, response.text
        assert [e["path"] for e in response.json()["errors"]] == [f"documents.0.{field}"]
    bad_dns = service("bad", dns={"name": "web.mesh.test"})
    response = node.api.post("/api/v1/apply", json=[bad_dns])
    assert [e["path"] for e in response.json()["errors"]] == ["documents.0.dns.port"]

    assert node.definitions() == before
    assert count_served(url, 3) == {"unchanged": 3}
