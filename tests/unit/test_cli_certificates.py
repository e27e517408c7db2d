"""Certificates on the command line: files read next to the manifest, keys never printed."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.tlscerts import Authority, key_pem, new_key
from tests.unit.test_cli import run, serve, server  # noqa: F401 (fixtures)

CA = Authority()
A = CA.issue("a.example.com", "www.a.example.com")
MANIFEST = """\
kind: certificate
name: a
cert_file: tls/a.crt
key_file: tls/a.key
---
name: site
port: 8443
tls: {certificates: [a], redirect_http: 8080, hsts: 600}
routes:
  "[127.0.0.1:8080]": {}
"""


def files(directory: Path, key: str = A.key_text) -> Path:
    (directory / "tls").mkdir()
    (directory / "tls" / "a.crt").write_text(A.cert)
    (directory / "tls" / "a.key").write_text(key)
    path = directory / "site.yaml"
    path.write_text(MANIFEST)
    return path


def test_validate_reads_files_next_to_the_manifest(tmp_path: Path) -> None:
    result = run("validate", "-f", files(tmp_path))
    assert (result.exit_code, result.stdout) == (0, "2 documents valid\n")


def test_validate_points_at_the_file_and_field(tmp_path: Path) -> None:
    path = files(tmp_path, key=key_pem(new_key()))
    result = run("validate", "-f", path)
    assert result.exit_code == 1
    assert result.stderr == (
        f"{path}:1: key: does not match the certificate (the first one in 'cert')\n"
    )
    (tmp_path / "tls" / "a.key").unlink()
    missing = run("validate", "-f", path)
    assert missing.stderr.startswith(f"{path}:4: key_file: cannot read {tmp_path}/tls/a.key")


def test_render_never_prints_the_private_key(tmp_path: Path) -> None:
    result = run("render", "-f", files(tmp_path))
    assert result.exit_code == 0, result.output
    assert "PRIVATE KEY" not in result.stdout
    assert "BEGIN CERTIFICATE" not in result.stdout
    assert "(certificate chain and private key, not shown)" in result.stdout
    assert "ssl crt-list /var/run/meshgate/certs/port_8443.crtlist" in result.stdout


def test_apply_and_get_certificates_without_keys(tmp_path: Path, server: str) -> None:  # noqa: F811
    applied = run("--server", server, "apply", "-f", files(tmp_path))
    assert applied.exit_code == 0, applied.output
    assert applied.stdout.splitlines() == [
        "certificate/default/a created",
        "gateway/default/site created",
    ]
    table = run("--server", server, "get", "certificates")
    header, row = table.stdout.splitlines()
    assert header.split() == [
        "NAME", "NAMESPACE", "NAMES", "NOT-AFTER", "DAYS-LEFT", "KEY", "VERSION", "APPLIED"
    ]  # fmt: skip
    cells = row.split()
    assert cells[:3] == ["a", "default", "a.example.com,www.a.example.com"]
    assert cells[4] in ("89", "90") and cells[5] == "yes"
    for output in ("yaml", "json"):
        shown = run("--server", server, "get", "certificate", "a", "-o", output)
        assert "PRIVATE KEY" not in shown.stdout
        document = yaml.safe_load(shown.stdout) if output == "yaml" else json.loads(shown.stdout)
        assert document["cert"] == A.cert and "key" not in document
        assert document["status"]["serial"] == A.serial
    deleted = run("--server", server, "delete", "certificate", "a")
    assert deleted.exit_code == 1
    assert "in use by gateway site" in deleted.stderr
