"""One health check per instance per node (compiler.checks): which servers track a checker,
how checkers and their servers are named and rendered, and what HAProxy makes of it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from meshgate.compiler import CONFIG_FILE, DesiredState, checks, compile_state, ir, render_files
from meshgate.compiler.naming import CHECKER_PREFIX
from meshgate.haproxy.commands import UnsafeRuntimeArgument, add_server
from meshgate.model import Gateway, Service, validate_resource
from tests.haproxy_check import check_files, complaints, haproxy_or_skip

SETTINGS = ir.Settings(run_dir="/run/mg")


def gateway(name: str, port: int, *routes: str, **fields: Any) -> Gateway:
    found = validate_resource(
        {"kind": "gateway", "name": name, "port": port, "routes": {r: {} for r in routes},
         **fields}
    )  # fmt: skip
    assert isinstance(found, Gateway)
    return found


def service(name: str, *instances: str, **fields: Any) -> Service:
    found = validate_resource(
        {"kind": "service", "name": name, "instances": list(instances), **fields}
    )
    assert isinstance(found, Service)
    return found


def dataplane(*resources: Gateway | Service) -> ir.DataPlane:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
    )
    return compile_state(state, SETTINGS).dataplane


def server_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.startswith("    server ")]


HTTP_CHECK = {"type": "http", "path": "/health", "interval": "1s"}


def test_gateways_routing_to_one_instance_share_one_checked_server() -> None:
    plane = dataplane(
        service("api", "127.0.0.1:9000", "127.0.0.1:9001", health_check=HTTP_CHECK),
        *(gateway(f"g{i}", 8000 + i, "api") for i in range(5)),
    )
    (checker,) = checks.checkers(plane.backends)
    assert checker.name.startswith(CHECKER_PREFIX)
    assert [e.port for _, e in checker.servers] == [9000, 9001]
    text = render_files(plane)[CONFIG_FILE]
    lines = server_lines(text)
    # Ten route servers track; two checker servers check, once each; two spares wait.
    assert sum(" track " in line for line in lines) == 10
    assert sum(" check inter " in line and "disabled" not in line for line in lines) == 2
    spares = [line for line in lines if line.startswith("server spare")]
    assert spares == [
        f"server {name} 0.0.0.0:0 check inter 1000 rise 2 fall 3 disabled"
        for name in checker.spares
    ]
    for backend in plane.backends:
        for server in backend.servers:
            ref = checks.tracked(backend, server)
            assert ref is not None and ref[0] == checker.name
            assert f"server {server.name} " in text and f"track {ref[0]}/{ref[1]}" in text
    # The check lines are in the checker's backend, and the route backends keep theirs (for a
    # server added at run time that checks itself).
    assert text.count("http-check send meth GET uri /health") == 6


def test_each_check_profile_has_its_own_checker() -> None:
    plane = dataplane(
        service("web", "127.0.0.1:9000", health_check=HTTP_CHECK),
        service("raw", "127.0.0.1:9000"),  # the same address, the default TCP check
        service("slow", "127.0.0.1:9000", health_check={**HTTP_CHECK, "interval": "5s"}),
        gateway("g", 8000, "web", "raw", "slow"),
    )
    found = checks.checkers(plane.backends)
    assert len(found) == 3
    assert len({c.name for c in found}) == 3
    # The same endpoint, the same server name in each checker: derived from the endpoint alone.
    assert len({c.servers[0][0] for c in found}) == 1


def test_a_checker_has_as_many_spares_as_servers_within_bounds() -> None:
    def spares(instances: int) -> int:
        endpoints = [f"10.0.0.{i}:80" for i in range(1, instances + 1)]
        plane = dataplane(service("a", *endpoints), gw())
        (checker,) = checks.checkers(plane.backends)
        assert len(set(checker.spares)) == len(checker.spares)
        assert not set(checker.spares) & {name for name, _ in checker.servers}
        return len(checker.spares)

    assert [spares(n) for n in (1, 2, 5, 20)] == [checks.MIN_SPARES, 2, 5, checks.MAX_SPARES]


def test_names_are_derived_and_stable_and_never_a_route_backends() -> None:
    first = dataplane(service("api", "10.0.0.1:80"), gateway("g", 8000, "api"))
    again = dataplane(service("api", "10.0.0.1:80"), gateway("other", 8001, "api"))
    assert checks.checkers(first.backends) == checks.checkers(again.backends)
    (checker,) = checks.checkers(first.backends)
    assert re.fullmatch(r"mg_checks\.[0-9a-f]{10}", checker.name)
    assert re.fullmatch(r"10\.0\.0\.1_80\.[0-9a-f]{8}", checker.servers[0][0])
    # A namespace has no '_': no route backend (`namespace.gateway.route.hash`) is named so.
    assert all(not b.name.startswith(CHECKER_PREFIX) for b in first.backends)


def test_a_network_namespace_is_part_of_the_endpoint_but_not_of_the_name_as_text() -> None:
    plain = checks.tracked(*only_server(dataplane(service("a", "10.0.0.1:80"), gw())))
    spaced = validate_resource(
        {"kind": "service", "name": "a",
         "instances": [{"address": "10.0.0.1", "port": 80, "netns": "blue-1"}]}
    )  # fmt: skip
    assert isinstance(spaced, Service)
    plane = dataplane(spaced, gw())
    in_netns = checks.tracked(*only_server(plane))
    assert plain is not None and in_netns is not None
    assert plain[1] != in_netns[1]
    assert "blue" not in in_netns[1]
    checked = [line for line in server_lines(render_files(plane)[CONFIG_FILE]) if " check " in line]
    # The endpoint's server; a spare has no namespace (one cannot be set at run time).
    assert checked[0].endswith(" namespace blue-1")
    assert all(line.endswith(" disabled") for line in checked[1:])


def gw() -> Gateway:
    return gateway("g", 8000, "a")


def only_server(plane: ir.DataPlane) -> tuple[ir.Backend, ir.Server]:
    (backend,) = plane.backends
    (server,) = backend.servers
    return backend, server


@pytest.mark.parametrize(
    "fields",
    [
        {"health_check": {"type": "agent", "port": 9999}},
        {"passive": {"error_limit": 3}},
    ],
    ids=["agent check", "passive check"],
)
def test_agent_and_passive_checks_stay_on_the_route_server(fields: dict[str, Any]) -> None:
    plane = dataplane(service("a", "10.0.0.1:80", **fields), gw())
    backend, server = only_server(plane)
    assert checks.keeps_own_check(backend, server)
    assert checks.tracked(backend, server) is None
    assert checks.checkers(plane.backends) == ()
    text = render_files(plane)[CONFIG_FILE]
    assert " track " not in text and "mg_checks" not in text


def test_a_tls_service_is_checked_over_tls_by_its_checker() -> None:
    plane = dataplane(
        service("a", "10.0.0.1:443", tls={"verify": "none"}, health_check=HTTP_CHECK), gw()
    )
    text = render_files(plane)[CONFIG_FILE]
    checked = [line for line in server_lines(text) if " check inter " in line]
    assert checked[0].endswith(" ssl verify none")
    assert all(line.endswith(" ssl verify none disabled") for line in checked[1:])


def test_the_rendered_configuration_passes_haproxy(tmp_path: Path) -> None:
    haproxy = haproxy_or_skip()
    state = DesiredState(
        gateways=[
            gateway("g", 8000, "api", "agented"),
            gateway("h", 8001, "api"),
            gateway("t", "8002/tcp", "db"),
        ],
        services=[
            service("api", "127.0.0.1:9000", "[::1]:9001", health_check=HTTP_CHECK),
            service("db", "127.0.0.1:9000", health_check={"type": "tcp", "port": 9100}),
            service("agented", "127.0.0.1:9002", health_check={"type": "agent", "port": 9999}),
        ],
    )
    plane = compile_state(state, ir.Settings(run_dir=str(tmp_path))).dataplane
    assert len(checks.checkers(plane.backends)) == 2
    accepted, output = check_files(haproxy, tmp_path, render_files(plane))
    assert accepted, output
    assert complaints(output) == []


def test_add_server_tracks_a_checker_server_instead_of_checking() -> None:
    line = add_server(
        "default.g.a.123456", "i1", "10.0.0.1", 80, server_weight=10,
        track=("mg_checks.0123456789", "10.0.0.1_80.abcdef12"),
    )  # fmt: skip
    assert line == (
        "add server default.g.a.123456/i1 10.0.0.1:80 weight 10"
        " track mg_checks.0123456789/10.0.0.1_80.abcdef12"
    )


@pytest.mark.parametrize(
    ("track", "check", "field"),
    [
        (("mg_checks.0123456789", "a b"), False, "server name"),
        (("mg checks", "x"), False, "backend name"),
        (("mg_checks.0123456789", "x"), True, "track"),
    ],
    ids=["server name with a space", "backend name with a space", "track and check"],
)
def test_add_server_rejects_a_bad_track(track: tuple[str, str], check: bool, field: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument) as raised:
        add_server("b", "s", "10.0.0.1", 80, check=check, track=track)
    assert field in str(raised.value)
