"""Instance status for services: sources, the route backends that check them, aggregation."""

from __future__ import annotations

from meshgate.agent.health import InstanceHealth, aggregate, members_of, service_backends
from meshgate.compiler import DesiredState, compile_state, ir
from meshgate.model import Gateway, Service, validate_resource
from meshgate.model.service import Instance

KEY = ("default", "web")


def web() -> Service:
    resource = validate_resource(
        {"kind": "service", "name": "web", "instances": ["127.0.0.1:8081"]}
    )
    assert isinstance(resource, Service)
    return resource


def gateway(name: str, port: int, *routes: str, namespace: str = "default") -> Gateway:
    resource = validate_resource(
        {"name": name, "namespace": namespace, "port": port, "routes": {r: {} for r in routes}}
    )
    assert isinstance(resource, Gateway)
    return resource


def test_aggregate_prefers_any_up_then_all_maint() -> None:
    assert aggregate([]) == "UNKNOWN"
    assert aggregate(["", ""]) == "UNKNOWN"
    assert aggregate(["DOWN", "UP"]) == "UP"
    assert aggregate(["MAINT", "MAINT", ""]) == "MAINT"
    assert aggregate(["MAINT", "DOWN"]) == "DOWN"


def test_members_come_in_compiler_order_with_sources() -> None:
    registered = [
        Instance(address="127.0.0.1", port=8081),  # same id as the manifest's: served once
        Instance(address="127.0.0.2", port=80, id="api-1"),
        Instance(address="127.0.0.3", port=80),
    ]
    sources = {"api-1": "api", "127.0.0.3:80": "dns"}
    found = [(m.id, m.source) for m in members_of(web(), registered, sources)]
    assert found == [("127.0.0.1:8081", "manifest"), ("api-1", "api"), ("127.0.0.3:80", "dns")]


def test_status_follows_haproxy_across_every_route_backend() -> None:
    state = DesiredState(
        gateways=[gateway("a", 9001, "web"), gateway("b", 9002, "web")],
        services=[web()],
        registered={KEY: [Instance(address="127.0.0.2", port=80, id="api-1")]},
    )
    compiled = compile_state(state, ir.Settings(run_dir="/run"))
    backends = service_backends(compiled)[KEY]
    assert len(backends) == 2
    health = InstanceHealth()
    health.update(state.services, state.registered, {KEY: {"api-1": "api"}}, compiled)
    assert [i["status"] for i in health.status(KEY)["instances"]] == ["UNKNOWN", "UNKNOWN"]

    first, second = backends
    seen = {(first, "127.0.0.1:8081"): "DOWN", (second, "127.0.0.1:8081"): "UP"}
    seen |= {(first, "api-1"): "MAINT", (second, "api-1"): "MAINT"}
    assert health.observe(seen) is True
    assert health.status(KEY)["instances"] == [
        {"id": "127.0.0.1:8081", "address": "127.0.0.1", "port": 8081, "status": "UP",
         "source": "manifest"},
        {"id": "api-1", "address": "127.0.0.2", "port": 80, "status": "MAINT", "source": "api"},
    ]  # fmt: skip
    assert health.observe(seen) is False  # nothing new: nothing to publish
    seen[(second, "127.0.0.1:8081")] = "DOWN"
    assert health.observe(seen) is True
    assert health.status(KEY)["instances"][0]["status"] == "DOWN"


def test_same_names_in_two_namespaces_never_share_status() -> None:
    other = validate_resource(
        {"kind": "service", "name": "web", "namespace": "team-b", "instances": ["127.0.0.1:9"]}
    )
    assert isinstance(other, Service)
    state = DesiredState(
        gateways=[gateway("g", 9001, "web"), gateway("g", 9002, "web", namespace="team-b")],
        services=[web(), other],
    )
    compiled = compile_state(state, ir.Settings(run_dir="/run"))
    backends = service_backends(compiled)
    assert backends[KEY] != backends[("team-b", "web")]
    health = InstanceHealth(dns_errors=lambda: {("team-b", "web"): "timeout"})
    health.update(state.services, {}, {}, compiled)
    health.observe({(backends[KEY][0], "127.0.0.1:8081"): "UP"})
    assert health.status(KEY)["instances"][0]["status"] == "UP"
    assert health.status(("team-b", "web"))["instances"][0]["status"] == "UNKNOWN"
    assert health.status(("team-b", "web"))["dns_error"] == "timeout"
    assert "dns_error" not in health.status(KEY)


def test_an_update_of_the_changed_gateways_only_follows_their_routes() -> None:
    services = [web()]
    both = DesiredState(
        gateways=[gateway("a", 9001, "web"), gateway("b", 9002, "web")], services=services
    )
    health = InstanceHealth()
    health.update(services, {}, {}, compile_state(both, ir.Settings(run_dir="/run")))
    a, b = service_backends(compile_state(both, ir.Settings(run_dir="/run")))[KEY]
    only_a = DesiredState(gateways=[gateway("a", 9001, "web")], services=services)
    compiled = compile_state(only_a, ir.Settings(run_dir="/run"))
    # Told that nothing changed, it still counts b's backend; told b changed, it lets it go.
    health.update(services, {}, {}, compiled, changed=())
    assert health.observe({(b, "127.0.0.1:8081"): "UP"}) is True
    assert health.status(KEY)["instances"][0]["status"] == "UP"
    health.update(services, {}, {}, compiled, changed=[("default", "b")])
    health.observe({(b, "127.0.0.1:8081"): "UP", (a, "127.0.0.1:8081"): "DOWN"})
    assert health.status(KEY)["instances"][0]["status"] == "DOWN"
    assert health._backends == service_backends(compiled)
