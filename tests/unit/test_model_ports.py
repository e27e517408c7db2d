"""The port index: the same answers as comparing every pair, at a cost linear in the number
of gateways (a test of work done, not of time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from click.testing import CliRunner

from meshgate.cli import main
from meshgate.model import Gateway, validate_resource
from meshgate.model.ports import PortIndex, port_conflicts


def gateway(name: str, **fields: Any) -> Gateway:
    found = validate_resource({"name": name, "routes": {"[127.0.0.1:1]": {}}, **fields})
    assert isinstance(found, Gateway)
    return found


def vhost_gateways(count: int) -> list[Gateway]:
    return [gateway(f"g{i}", port=9070, virtual_hosts=[f"h{i}.example.com"]) for i in range(count)]


def comparisons_to_admit(gateways: list[Gateway]) -> int:
    index: PortIndex[int] = PortIndex()
    for position, each in enumerate(gateways):
        assert index.clashes(each) == []
        index.add(each, position)
    return index.comparisons


def test_admission_work_grows_linearly_not_with_pairs() -> None:
    small, large = (
        comparisons_to_admit(vhost_gateways(1000)),
        comparisons_to_admit(vhost_gateways(4000)),
    )
    # Four times the gateways: about four times the work (all pairs would be sixteen times).
    assert 3.5 <= large / small <= 4.5, (small, large)
    assert large < 4000 * 5


def test_the_index_finds_what_pairs_found() -> None:
    a = gateway("a", port=80, virtual_hosts=["a.example.com", "b.example.com"])
    b = gateway("b", port=80, virtual_hosts=["B.example.com", "c.example.com"])
    c = gateway("c", port=80, virtual_hosts=["b.example.com"], bind="127.0.0.1")
    d = gateway("d", port="80/tcp")
    problems = {p.path: p.message for p in port_conflicts(b, [a])}
    assert problems == {
        "virtual_hosts": "b.example.com on port 80 is already served by gateway default/a"
    }
    assert [p.path for p in port_conflicts(c, [a])] == ["bind"]
    assert [p.path for p in port_conflicts(d, [a])] == ["port"]
    assert port_conflicts(a, [a]) == []  # its own stored version
    assert port_conflicts(gateway("e", port=80, virtual_hosts="e.example.com"), [a, b]) == []


def test_a_host_claimed_twice_in_a_large_file_names_both_lines(tmp_path: Path) -> None:
    lines = []
    for i in range(10_000):
        host = "dup.example.com" if i in (1234, 8765) else f"h{i}.example.com"
        lines += [
            "---",
            f"name: g{i}",
            "port: 9070/http",
            f"virtual_hosts: [{host}]",
            "routes: {'[127.0.0.1:8081]': {weight: 100%}}",
        ]
    manifest = tmp_path / "many.yaml"
    manifest.write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(main, ["validate", "-f", str(manifest)])
    assert result.exit_code == 1
    # Each document is five lines; its virtual_hosts is the fourth.
    assert result.output.splitlines() == [
        f"{manifest}:{1234 * 5 + 4}: virtual_hosts: dup.example.com on port 9070 is also "
        "claimed by document 8765 (gateway default/g8765)",
        f"{manifest}:{8765 * 5 + 4}: virtual_hosts: dup.example.com on port 9070 is already "
        "served by gateway default/g1234",
    ]
