"""Golden files: each tests/golden/NAME.yaml renders byte for byte to tests/golden/NAME.cfg.

The .cfg file is the rendered haproxy.cfg followed by every map file, each map line written as a
comment under a `# --- maps/NAME` header, so one file shows everything the agent would write.
After an intended change, regenerate with `MESHGATE_UPDATE_GOLDEN=1 pytest tests/unit` and
review the diff.

The integration tests also give each input's configuration to the real `haproxy -c`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshgate.compiler import CONFIG_FILE, DesiredState, compile_state, ir, render_files
from meshgate.model import Certificate, Gateway, Resource, Service, load_documents, parse_text
from tests.haproxy_check import check_files, complaints, haproxy_or_skip

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "golden"
INPUTS = sorted(GOLDEN_DIR.glob("*.yaml"))
RUN_DIR = "/var/run/meshgate"
UPDATE = os.environ.get("MESHGATE_UPDATE_GOLDEN") == "1"


def load(path: Path) -> list[Resource]:
    return load_documents(parse_text(path.read_text(encoding="utf-8"), path.name))


def render(resources: list[Resource], run_dir: str) -> dict[str, str]:
    state = DesiredState(
        gateways=[r for r in resources if isinstance(r, Gateway)],
        services=[r for r in resources if isinstance(r, Service)],
        certificates=[r for r in resources if isinstance(r, Certificate)],
    )
    # With the access log on, as `meshgate up` runs by default.
    settings = ir.Settings(run_dir=run_dir, log_socket=f"{run_dir}/log.sock")
    result = compile_state(state, settings)
    problems = {key: r.errors for key, r in result.gateways.items() if not r.ok}
    assert not problems, problems
    return render_files(result.dataplane)


def golden_text(files: dict[str, str]) -> str:
    parts = [files[CONFIG_FILE]]
    for name, content in files.items():
        if name == CONFIG_FILE:
            continue
        parts.append(f"\n# --- {name}\n")
        parts.extend(f"# {line}\n" for line in content.splitlines())
    return "".join(parts)


def test_there_are_golden_inputs_and_outputs_for_each() -> None:
    if UPDATE:
        pytest.skip("the outputs are being written")
    assert 6 <= len(INPUTS) <= 12
    outputs = {p.stem for p in GOLDEN_DIR.glob("*.cfg")}
    assert outputs == {p.stem for p in INPUTS}


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_golden(source: Path) -> None:
    actual = golden_text(render(load(source), RUN_DIR))
    expected_path = source.with_suffix(".cfg")
    if UPDATE:
        expected_path.write_text(actual, encoding="utf-8")
    assert expected_path.exists(), f"run with MESHGATE_UPDATE_GOLDEN=1 to create {expected_path}"
    assert actual == expected_path.read_text(encoding="utf-8")


@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_golden_rendering_is_repeatable(source: Path) -> None:
    assert render(load(source), RUN_DIR) == render(load(source), RUN_DIR)


@pytest.mark.integration
@pytest.mark.parametrize("source", INPUTS, ids=lambda p: p.stem)
def test_haproxy_accepts_the_golden_configuration(source: Path, tmp_path: Path) -> None:
    haproxy = haproxy_or_skip()
    ok, output = check_files(haproxy, tmp_path, render(load(source), str(tmp_path)))
    assert ok, output
    assert complaints(output) == [], output
