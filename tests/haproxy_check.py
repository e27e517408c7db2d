"""`haproxy -c` on rendered files, as the agent checks a candidate configuration."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from meshgate.compiler import CONFIG_FILE


def haproxy_or_skip() -> str:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed")
    return haproxy


def check_files(haproxy: str, directory: Path, files: Mapping[str, str]) -> tuple[bool, str]:
    """Write `files` under `directory`, with the empty server-state file a run directory has,
    and run `haproxy -c` on the configuration: (accepted, HAProxy's output)."""
    for name, content in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_text(content, encoding="utf-8")
    (directory / "server-state").write_text("", encoding="utf-8")
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(directory / CONFIG_FILE)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return checked.returncode == 0, checked.stdout + checked.stderr


def complaints(output: str) -> list[str]:
    """HAProxy's warnings and alerts, but the one about an empty server-state file."""
    return [
        line
        for line in output.splitlines()
        if ("[WARNING]" in line or "[ALERT]" in line) and "server state file" not in line
    ]
