"""The operator's commands against a real API server on loopback: apply --dry-run and --wait,
diff, describe, events, delete -f and --force, set weight, `get -o yaml | apply -f -`,
--version and shell completion."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from meshgate import __version__
from tests.unit.test_cli import SAVA, SERVICE, run, serve, server, write

__all__ = ["serve", "server"]  # fixtures, used by name
CANARY_SERVICE = SERVICE.replace("sava:1.0", "sava:1.1")


def test_version_option() -> None:
    result = run("--version")
    assert (result.exit_code, result.stdout) == (0, f"meshgate {__version__}\n")


def test_apply_warns_of_a_route_to_nothing(tmp_path: Path, server: str) -> None:
    result = run(
        "--server", server, "apply", "-f", write(tmp_path, "a.yaml", SAVA + "---\n" + SERVICE)
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "gateway/default/sava created",
        "service/default/sava:1.0/sava/port created",
    ]
    assert result.stderr.startswith(
        "warning: gateway/default/sava: routes.sava:1.1/sava/port: target 'sava:1.1/sava/port'"
        " does not exist"
    )


def test_dry_run_and_diff_write_nothing(tmp_path: Path, server: str) -> None:
    path = write(tmp_path, "sava.yaml", SAVA)
    dry = run("--server", server, "apply", "--dry-run", "-f", path)
    assert (dry.exit_code, dry.stdout) == (0, "gateway/default/sava created (dry run)\n")
    assert run("--server", server, "get", "gateway", "sava").exit_code == 1

    created = run("--server", server, "diff", "-f", path)
    assert created.exit_code == 0
    assert created.stdout.startswith("--- /dev/null\n+++ gateway/default/sava (from the manifests)")
    run("--server", server, "apply", "-f", path)
    assert run("--server", server, "diff", "-f", path).stderr == "no changes\n"

    changed = run(
        "--server",
        server,
        "diff",
        "-f",
        write(tmp_path, "new.yaml", SAVA.replace("90%", "80%").replace("10%", "20%")),
    )
    assert changed.exit_code == 0
    lines = changed.stdout.splitlines()
    assert "-    weight: 90" in lines and "+    weight: 80" in lines
    assert (
        run("--server", server, "get", "gateway", "sava", "-o", "json").stdout.count('"weight": 90')
        == 1
    )

    invalid = run(
        "--server", server, "diff", "-f", write(tmp_path, "bad.yaml", SAVA.replace("9070", "99999"))
    )
    assert invalid.exit_code == 1 and "bad.yaml:2: port" in invalid.stderr


def test_apply_wait_without_an_agent_exits_1_naming_what_is_not_live(
    tmp_path: Path, server: str
) -> None:
    result = run(
        "--server", server, "apply", "-f", write(tmp_path, "s.yaml", SERVICE), "--timeout", "300ms"
    )
    assert result.exit_code == 1
    assert "not live after 0.3s:" in result.stderr
    assert (
        "service/default/sava:1.0/sava/port: the agent has not reported on it yet" in result.stderr
    )
    bad = run("--server", server, "apply", "-f", tmp_path / "s.yaml", "--timeout", "soon")
    assert bad.exit_code == 2 and "--timeout" in bad.stderr
    both = run("--server", server, "apply", "-f", tmp_path / "s.yaml", "--wait", "--dry-run")
    assert both.exit_code == 2


def test_get_yaml_applies_again_and_a_stale_version_is_refused(tmp_path: Path, server: str) -> None:
    run("--server", server, "apply", "-f", write(tmp_path, "sava.yaml", SAVA))
    exported = run("--server", server, "get", "gateways", "sava", "-o", "yaml").stdout
    path = write(tmp_path, "exported.yaml", exported)
    again = run("--server", server, "apply", "-f", path)
    assert (again.exit_code, again.stdout) == (0, "gateway/default/sava unchanged\n")
    via_stdin = subprocess.run(
        [sys.executable, "-m", "meshgate", "--server", server, "apply", "-f", "-"],
        input=exported, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert via_stdin.returncode == 0, via_stdin.stderr

    assert (
        run(
            "--server",
            server,
            "set",
            "weight",
            "sava",
            "sava:1.0/sava/port=50%",
            "sava:1.1/sava/port=50",
        ).exit_code
        == 0
    )
    stale = run(
        "--server",
        server,
        "apply",
        "-f",
        write(tmp_path, "stale.yaml", exported.replace("9070/http", "9071/http")),
    )
    assert stale.exit_code == 1
    version = yaml.safe_load(exported)["version"]
    assert (
        f"stale.yaml:{exported.splitlines().index(f'version: {version}') + 1}: version:"
        in stale.stderr
    )
    assert f"not {version}: it changed since" in stale.stderr


def test_set_weight(tmp_path: Path, server: str) -> None:
    run("--server", server, "apply", "-f", write(tmp_path, "sava.yaml", SAVA))
    result = run(
        "--server",
        server,
        "set",
        "weight",
        "sava",
        "sava:1.0/sava/port=70%",
        "sava:1.1/sava/port=30",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(
        "gateway/default/sava weights set: sava:1.0/sava/port=70%, sava:1.1/sava/port=30%"
    )
    shown = yaml.safe_load(run("--server", server, "get", "gw", "sava", "-o", "yaml").stdout)
    assert {r: v["weight"] for r, v in shown["routes"].items()} == {
        "sava:1.0/sava/port": 70,
        "sava:1.1/sava/port": 30,
    }

    unknown = run("--server", server, "set", "weight", "sava", "nope=100%")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith(
        "routes.nope: gateway default/sava has no such route; its routes:"
    )
    not_total = run("--server", server, "set", "weight", "sava", "sava:1.0/sava/port=90%")
    assert not_total.exit_code == 1 and "routes" in not_total.stderr
    malformed = run("--server", server, "set", "weight", "sava", "sava:1.0/sava/port")
    assert malformed.exit_code == 2 and "ROUTE=N%" in malformed.stderr
    out_of_range = run("--server", server, "set", "weight", "sava", "sava:1.0/sava/port=120%")
    assert out_of_range.exit_code == 2


def test_delete_in_use_needs_force_and_delete_by_file(tmp_path: Path, server: str) -> None:
    # The services come first: deleting them waits for the gateway that routes to them.
    both = write(tmp_path, "all.yaml", SERVICE + "---\n" + CANARY_SERVICE + "---\n" + SAVA)
    run("--server", server, "apply", "-f", both)
    refused = run("--server", server, "delete", "service", "sava:1.0/sava/port")
    assert refused.exit_code == 1
    assert "is in use by gateway sava (route sava:1.0/sava/port)" in refused.stderr
    forced = run("--server", server, "delete", "svc", "sava:1.0/sava/port", "--force")
    assert (forced.exit_code, forced.stdout) == (0, "service/default/sava:1.0/sava/port deleted\n")

    by_file = run("--server", server, "delete", "-f", both)
    assert by_file.exit_code == 0, by_file.output
    assert by_file.stdout.splitlines() == [
        "gateway/default/sava deleted",
        "service/default/sava:1.1/sava/port deleted",
    ]
    assert by_file.stderr == "service/default/sava:1.0/sava/port not found\n"
    # Used by a gateway the files do not delete: refused, with who uses it.
    run("--server", server, "apply", "-f", both)
    only_service = write(tmp_path, "service.yaml", SERVICE)
    kept = run("--server", server, "delete", "-f", only_service)
    assert kept.exit_code == 1 and "is in use by gateway sava" in kept.stderr
    assert run("--server", server, "delete", "gateway", "x", "-f", both).exit_code == 2
    assert run("--server", server, "delete").exit_code == 2


def test_describe_and_events(tmp_path: Path, server: str) -> None:
    run("--server", server, "apply", "-f", write(tmp_path, "all.yaml", SAVA + "---\n" + SERVICE))
    described = run("--server", server, "describe", "gateway", "sava")
    assert described.exit_code == 0, described.output
    lines = described.stdout.splitlines()
    assert lines[:3] == ["Kind:       gateway", "Name:       sava", "Namespace:  default"]
    assert "State:      pending" in lines and "Events:" in lines and "  (none recorded)" in lines
    service = run("--server", server, "describe", "services", "sava:1.0/sava/port")
    assert "Instances:" in service.stdout
    missing = run("--server", server, "describe", "gateway", "nope")
    assert missing.exit_code == 1 and "not found" in missing.stderr

    none = run("--server", server, "events", "--kind", "gateway")
    assert (none.exit_code, none.stderr) == (0, "no events\n")
    assert run("--server", server, "events", "-o", "json").stdout.strip() == "[]"
    bad = run("--server", server, "events", "--since", "soon")
    assert bad.exit_code == 1 and bad.stderr.startswith("since: ")


def test_completion_script_is_generated() -> None:
    env = {**os.environ, "_MESHGATE_COMPLETE": "bash_source"}
    script = subprocess.run(
        [sys.executable, "-c", "from meshgate.cli import main; main(prog_name='meshgate')"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "_meshgate_completion" in script.stdout
    words = subprocess.run(
        [sys.executable, "-c", "from meshgate.cli import main; main(prog_name='meshgate')"],
        env={**os.environ, "_MESHGATE_COMPLETE": "bash_complete", "COMP_WORDS": "meshgate desc",
             "COMP_CWORD": "1"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "plain,describe" in words.stdout
