"""TLS against real HAProxy and real clients: certificates chosen by SNI, HTTPS routed by Host,
HTTP/2 through ALPN, rotation and additions without a reload, redirects and HSTS, TLS to
instances verified against a CA, and bad input refused with nothing applied."""

from __future__ import annotations

import re
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import Backends, Node, free_port, wait_for_port
from tests.integration.test_routing import gateway, service, wait_until
from tests.tlscerts import Authority, key_pem, new_key

pytestmark = pytest.mark.integration

CA = Authority("meshgate integration CA")
A = CA.issue("a.example.com")
B = CA.issue("b.example.com")
WILD = CA.issue("*.wild.example.com")


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(CA.cert)
    return path


def served_certificate(port: int, servername: str | None, *extra: str) -> str:
    """`openssl s_client`'s view of the certificate HAProxy presents: subject and serial."""
    sni = ["-servername", servername] if servername else ["-noservername"]
    handshake = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *sni, *extra],
        input=b"",
        capture_output=True,
        timeout=10,
        check=False,
    )
    if handshake.returncode != 0:
        return "handshake failed"
    described = subprocess.run(
        ["openssl", "x509", "-noout", "-subject", "-serial"],
        input=handshake.stdout,
        capture_output=True,
        timeout=10,
        check=True,
    )
    return described.stdout.decode()


def subject_of(port: int, servername: str | None, *extra: str) -> str:
    found = re.search(r"subject=\s*CN\s*=\s*(\S+)", served_certificate(port, servername, *extra))
    return found.group(1) if found else "none"


def serial_of(port: int, servername: str) -> str:
    found = re.search(r"serial=(\S+)", served_certificate(port, servername))
    # openssl prints whole bytes (a leading 0 for an odd number of digits); the API does not.
    return found.group(1).lstrip("0") if found else "none"


def curl(url: str, host: str, port: int, ca: Path, *extra: str) -> tuple[str, str]:
    """(status line, body) of an HTTPS request made by curl, resolving `host` to loopback."""
    done = subprocess.run(
        ["curl", "-sS", "-i", "--max-time", "5", "--cacert", str(ca),
         "--resolve", f"{host}:{port}:127.0.0.1", *extra, url],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    head, _, body = done.stdout.replace("\r\n", "\n").partition("\n\n")
    return (head.splitlines() or [done.stderr.strip()])[0].strip(), body.strip()


def https(host: str, port: int, ca: Path, path: str = "/") -> httpx.Response:
    # Connects to loopback and sends `host` as SNI and Host header; verified against the test CA.
    transport = httpx.HTTPTransport(verify=ssl.create_default_context(cafile=str(ca)))
    with httpx.Client(transport=transport, timeout=5) as client:
        return client.get(f"https://127.0.0.1:{port}{path}", headers={"Host": host},
                          extensions={"sni_hostname": host})  # fmt: skip


def tls_gateway(
    name: str, port: int, routes: dict[str, Any], certs: list[str], **extra: Any
) -> dict[str, Any]:
    tls = {"certificates": certs, **extra.pop("tls", {})}
    return gateway(name, port, routes, tls=tls, **extra)


@pytest.fixture(scope="module")
def shared_port(node: Node) -> Iterator[tuple[int, Backends]]:
    """Three gateways on one TLS port: a.example.com, b.example.com and the default one."""
    pool = Backends()
    port = free_port()
    node.apply(
        A.document("a"), B.document("b"), WILD.document("wild"),
        service("tls-a", pool.start("A")), service("tls-b", pool.start("B")),
        service("tls-w", pool.start("W")),
        tls_gateway("site-a", port, {"tls-a": {}}, ["a"], virtual_hosts=["a.example.com"]),
        tls_gateway("site-b", port, {"tls-b": {}}, ["b"], virtual_hosts=["b.example.com"]),
        tls_gateway("site-default", port, {"tls-w": {}}, ["wild"]),
    )  # fmt: skip
    try:
        yield port, pool
    finally:
        pool.stop_all()


def test_sni_picks_each_gateways_certificate(shared_port: tuple[int, Backends]) -> None:
    port, _ = shared_port
    wait_for_port(port)
    assert subject_of(port, "a.example.com") == "a.example.com"
    assert subject_of(port, "b.example.com") == "b.example.com"
    assert subject_of(port, "x.wild.example.com") == "*.wild.example.com"
    # No SNI, or a name no certificate has: the default gateway's first certificate.
    assert subject_of(port, None) == "*.wild.example.com"
    assert subject_of(port, "unknown.example.org") == "*.wild.example.com"


def test_https_requests_route_by_sni_and_host(
    shared_port: tuple[int, Backends], ca_file: Path
) -> None:
    port, _ = shared_port
    answers = {"a.example.com": "A", "b.example.com": "B", "x.wild.example.com": "W"}
    wait_until(lambda: https("a.example.com", port, ca_file).text.strip() == "A")
    for host, expected in answers.items():
        response = https(host, port, ca_file)
        assert (response.status_code, response.text.strip()) == (200, expected), host
        status, body = curl(f"https://{host}:{port}/", host, port, ca_file)
        assert (status, body) == ("HTTP/2 200", expected), host


def test_http2_is_negotiated_through_alpn(shared_port: tuple[int, Backends], ca_file: Path) -> None:
    port, _ = shared_port
    status, body = curl(f"https://a.example.com:{port}/", "a.example.com", port, ca_file, "--http2")
    assert (status, body) == ("HTTP/2 200", "A")
    status, _ = curl(f"https://a.example.com:{port}/", "a.example.com", port, ca_file, "--http1.1")
    assert status == "HTTP/1.1 200 OK"


def test_rotation_changes_the_certificate_without_a_reload(
    node: Node, shared_port: tuple[int, Backends], ca_file: Path
) -> None:
    port, _ = shared_port
    assert serial_of(port, "a.example.com") == A.serial
    pids = node.haproxy_pids()
    renewed = CA.issue("a.example.com")
    node.apply(renewed.document("a"))
    wait_until(lambda: serial_of(port, "a.example.com") == renewed.serial)
    assert node.haproxy_pids() == pids
    assert https("a.example.com", port, ca_file).text.strip() == "A"
    # The file was rewritten too: a restart or reload serves the new certificate.
    pem = next((node.data_dir / "run" / "certs").glob("default.a.*.pem")).read_text()
    assert pem.startswith(renewed.cert)


def test_a_certificate_added_to_a_port_needs_no_reload(
    node: Node, shared_port: tuple[int, Backends], ca_file: Path
) -> None:
    port, _ = shared_port
    pids = node.haproxy_pids()
    c = CA.issue("c.example.com")
    site_a = node.get("gateways", "site-a")
    node.apply(
        c.document("c"),
        tls_gateway(
            "site-a", port, site_a["routes"], ["a", "c"],
            virtual_hosts=["a.example.com", "c.example.com"],
        ),
    )  # fmt: skip
    wait_until(lambda: subject_of(port, "c.example.com") == "c.example.com")
    assert https("c.example.com", port, ca_file).text.strip() == "A"
    assert node.haproxy_pids() == pids


def test_redirect_to_https_and_hsts(node: Node, backends: Backends, ca_file: Path) -> None:
    port, plain = free_port(), free_port()
    node.apply(
        service("tls-r", backends.start("R")),
        tls_gateway("redirected", port, {"tls-r": {}}, ["a"],
                    tls={"redirect_http": plain, "hsts": 3600}),
    )  # fmt: skip
    wait_for_port(plain)
    moved = httpx.get(f"http://127.0.0.1:{plain}/x?y=1", headers={"Host": f"a.example.com:{plain}"})
    assert moved.status_code == 308
    assert moved.headers["location"] == f"https://a.example.com:{port}/x?y=1"
    wait_until(lambda: https("a.example.com", port, ca_file).status_code == 200)
    response = https("a.example.com", port, ca_file)
    assert response.headers["strict-transport-security"] == "max-age=3600"


def test_minimum_tls_version(node: Node, backends: Backends) -> None:
    port = free_port()
    node.apply(
        service("tls-v", backends.start("V")),
        tls_gateway("modern", port, {"tls-v": {}}, ["b"], tls={"min_version": "1.3"}),
    )
    wait_for_port(port)
    assert subject_of(port, "b.example.com", "-tls1_3") == "b.example.com"
    assert subject_of(port, "b.example.com", "-tls1_2") == "none"


@pytest.fixture
def tls_backend(tmp_path: Path) -> Iterator[int]:
    issued = CA.issue("backend.internal")
    (tmp_path / "chain.pem").write_text(issued.cert)
    (tmp_path / "key.pem").write_text(issued.key_text)
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.tls_backend", "--name", "secure",
         "--port", str(port), "--cert", str(tmp_path / "chain.pem"),
         "--key", str(tmp_path / "key.pem")],
    )  # fmt: skip
    try:
        wait_for_port(port)
        yield port
    finally:
        process.kill()
        process.wait()


def test_reencryption_verifies_the_instance_against_the_ca(node: Node, tls_backend: int) -> None:
    other = Authority("some other CA")
    port = free_port()
    check = {"type": "http", "path": "/", "interval": "200ms", "rise": 1, "fall": 1}
    node.apply(
        {"kind": "certificate", "name": "internal-ca", "cert": CA.cert},
        {"kind": "certificate", "name": "other-ca", "cert": other.cert},
        {"kind": "service", "name": "secure", "instances": [f"127.0.0.1:{tls_backend}"],
         "health_check": check, "tls": {"ca": "internal-ca", "sni": "backend.internal"}},
        {"kind": "service", "name": "wrong-ca", "instances": [f"127.0.0.1:{tls_backend}"],
         "health_check": check, "tls": {"ca": "other-ca", "sni": "backend.internal"}},
        {"kind": "service", "name": "wrong-name", "instances": [f"127.0.0.1:{tls_backend}"],
         "health_check": check, "tls": {"ca": "internal-ca", "sni": "elsewhere.internal"}},
        {"kind": "service", "name": "unverified", "instances": [f"127.0.0.1:{tls_backend}"],
         "health_check": check, "tls": {"verify": "none"}},
        gateway("reencrypt", port, {"secure": {}}, virtual_hosts=["secure.test"]),
        gateway("wrong-ca", port, {"wrong-ca": {}}, virtual_hosts=["wrong-ca.test"]),
        gateway("wrong-name", port, {"wrong-name": {}}, virtual_hosts=["wrong-name.test"]),
        gateway("unverified", port, {"unverified": {}}, virtual_hosts=["unverified.test"]),
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def answer(host: str) -> tuple[int, str]:
        response = httpx.get(url, headers={"Host": host}, timeout=5)
        return response.status_code, response.text.strip()

    wait_until(lambda: answer("secure.test") == (200, "secure"))
    assert answer("unverified.test") == (200, "secure")
    # A certificate that does not chain to the CA, or is for another name: never used.
    assert answer("wrong-ca.test")[0] == 503
    assert answer("wrong-name.test")[0] == 503


def test_bad_input_is_refused_with_its_field_and_nothing_applied(node: Node) -> None:
    before = node.definitions()
    cases: list[tuple[dict[str, Any], str, str]] = [
        (A.document("bad", key=key_pem(new_key())), "documents.0.key", "does not match"),
        ({"kind": "certificate", "name": "bad", "cert": "garbage", "key": A.key_text},
         "documents.0.cert", "not a PEM certificate"),
        (CA.issue("old.example.com", expired=True).document("bad"), "documents.0.cert", "expired"),
        (tls_gateway("bad", free_port(), {}, ["missing"]), "documents.0.tls.certificates.0",
         "does not exist"),
    ]  # fmt: skip
    for document, path, words in cases:
        response = node.api.post("/api/v1/apply", json=[document])
        assert response.status_code == 422, response.text
        ((error),) = response.json()["errors"]
        assert error["path"] == path and words in error["message"], error
    assert node.definitions() == before


def test_keys_stay_private_and_expiry_is_a_metric(
    node: Node, shared_port: tuple[int, Backends]
) -> None:
    listed = node.api.get("/api/v1/certificates")
    assert "PRIVATE KEY" not in listed.text
    statuses = {c["name"]: c["status"] for c in listed.json()["items"]}
    assert "gateway site-b" in statuses["b"]["used_by"]
    assert 88 <= statuses["b"]["days_left"] <= 90
    certs = node.data_dir / "run" / "certs"
    pems = [p for p in certs.iterdir() if p.name.endswith(".pem")]
    assert pems and all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in pems)
    assert stat.S_IMODE((node.data_dir / "store.db").stat().st_mode) == 0o600
    metrics = node.api.get("/metrics").text
    found = re.search(
        r'meshgate_certificate_expiry_seconds\{certificate="b",namespace="default"\} (\S+)',
        metrics,
    )
    assert found is not None, metrics
    assert 88 * 86400 < float(found.group(1)) <= 90 * 86400
