"""Certificates through the API: stored with their key, never returned with it; references
from gateways and services checked at admission; files read by the server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshgate.api import create_app
from meshgate.store import Key, SqliteStore
from tests.tlscerts import Authority, key_pem, new_key

CA = Authority()
A = CA.issue("a.example.com")
SOON = CA.issue("soon.example.com", days=10)


def gateway(name: str = "site", certs: tuple[str, ...] = ("a",), **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "port": 8443,
        "tls": {"certificates": list(certs)},
        "routes": {"[127.0.0.1:8080]": {}},
        **extra,
    }


def errors(response: httpx.Response) -> list[tuple[str, str]]:
    return [(e["path"], e["message"]) for e in response.json()["errors"]]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


@pytest.fixture
async def client(store: SqliteStore) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        yield client


async def test_a_certificate_is_stored_whole_and_returned_without_its_key(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    created = await client.post("/api/v1/certificates", json=A.document("a"))
    assert created.status_code == 201, created.text
    stored = await store.get(Key("certificates", "default", "a"))
    assert stored is not None and stored.value["key"] == A.key_text
    for response in (
        created,
        await client.get("/api/v1/certificates/a"),
        await client.put("/api/v1/certificates/a", json=A.document("a")),
    ):
        body = response.json()
        assert "key" not in body and "PRIVATE KEY" not in response.text
        assert body["has_key"] is True
        assert body["cert"] == A.cert
    listed = await client.get("/api/v1/certificates")
    assert "PRIVATE KEY" not in listed.text
    (item,) = listed.json()["items"]
    status = item["status"]
    assert status["names"] == ["a.example.com"]
    assert status["subject"] == "CN=a.example.com"
    assert status["serial"] == A.serial
    assert 88 <= status["days_left"] <= 90 and status["expired"] is False
    assert "warnings" not in status


async def test_a_certificate_expiring_soon_is_accepted_with_a_warning(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/certificates", json=SOON.document("soon"))
    assert response.status_code == 201
    (warning,) = response.json()["status"]["warnings"]
    assert warning.startswith("expires in 9 days")


@pytest.mark.parametrize(
    ("document", "path", "words"),
    [
        (A.document("a", key=key_pem(new_key())), "key", "does not match"),
        ({"kind": "certificate", "name": "a", "cert": "garbage", "key": A.key_text}, "cert", "PEM"),
        (CA.issue("old.example.com", expired=True).document("a"), "cert", "expired on"),
    ],
)
async def test_bad_certificates_are_422_with_the_field_and_nothing_is_stored(
    client: httpx.AsyncClient, store: SqliteStore, document: dict[str, Any], path: str, words: str
) -> None:
    before = await store.revision()
    for response in (
        await client.post("/api/v1/certificates", json=document),
        await client.post("/api/v1/apply", json=[document]),
    ):
        assert response.status_code == 422
        ((where, message),) = errors(response)
        assert where.removeprefix("documents.0.") == path and words in message
        assert "PRIVATE KEY" not in response.text
    assert await store.revision() == before


async def test_a_gateway_naming_an_unknown_certificate_is_422(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    before = await store.revision()
    response = await client.post("/api/v1/gateways", json=gateway(certs=("nope",)))
    assert response.status_code == 422
    assert errors(response) == [
        ("tls.certificates.0", "certificate 'nope' does not exist in namespace default")
    ]
    assert await store.revision() == before


async def test_a_certificate_and_its_gateway_may_come_in_one_apply(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post("/api/v1/apply", json=[gateway(), A.document("a")])
    assert response.status_code == 200, response.text
    later = await client.post("/api/v1/apply", json=[gateway("other", ("a", "b"), port=9443)])
    assert errors(later) == [
        ("documents.0.tls.certificates.1", "certificate 'b' does not exist in namespace default")
    ]


async def test_a_service_trusting_an_unknown_ca_is_422(client: httpx.AsyncClient) -> None:
    service = {"kind": "service", "name": "api", "tls": {"ca": "internal-ca"}}
    response = await client.post("/api/v1/services", json=service)
    assert errors(response) == [
        ("tls.ca", "certificate 'internal-ca' does not exist in namespace default")
    ]
    ca = {"kind": "certificate", "name": "internal-ca", "cert": CA.cert}
    assert (await client.post("/api/v1/apply", json=[service, ca])).status_code == 200


async def test_a_certificate_in_use_cannot_be_deleted_or_lose_its_key(
    client: httpx.AsyncClient,
) -> None:
    await client.post("/api/v1/apply", json=[A.document("a"), gateway()])
    deleted = await client.delete("/api/v1/certificates/a")
    assert deleted.status_code == 409
    message = "certificate default/a is in use by gateway site; change them first"
    assert errors(deleted)[0][1] == message
    keyless = {"kind": "certificate", "name": "a", "cert": A.cert}
    replaced = await client.put("/api/v1/certificates/a", json=keyless)
    assert errors(replaced) == [("key", "is required: gateway site serves this certificate")]
    assert (await client.delete("/api/v1/gateways/site")).status_code == 204
    assert (await client.delete("/api/v1/certificates/a")).status_code == 204


async def test_over_the_api_only_files_under_the_cert_dir_are_read(
    store: SqliteStore, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "a.crt").write_text(A.cert)
    (certs / "a.key").write_text(A.key_text)
    secret = tmp_path / "secret.pem"  # readable by the server, outside the directory
    secret.write_text(A.key_text)
    (certs / "link.key").symlink_to(secret)
    document = {"kind": "certificate", "name": "a", "cert_file": "a.crt", "key_file": "a.key"}
    transport = httpx.ASGITransport(app=create_app(store, cert_dir=certs))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        response = await client.post("/api/v1/certificates", json=document)
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["cert"] == A.cert and "cert_file" not in body and body["has_key"]

        outside = "must name a file under the server's certificate directory (--cert-dir)"
        for escape in (str(secret), "../secret.pem", "link.key", ".", "/etc/shadow"):
            refused = await client.post("/api/v1/apply", json=[{**document, "key_file": escape}])
            assert errors(refused) == [("documents.0.key_file", outside)], escape
        # Under the directory, a missing file is told apart by no more than a general reason.
        for name in ("none.key", "sub/none.key"):
            missing = await client.post("/api/v1/apply", json=[{**document, "key_file": name}])
            reason = f"cannot read {name}: no such readable file"
            assert errors(missing) == [("documents.0.key_file", reason)]


async def test_without_a_cert_dir_the_api_reads_no_file_at_all(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    real = tmp_path / "a.crt"
    real.write_text(A.cert)
    answers = []
    for given in (str(real), str(tmp_path / "none.crt"), "/etc/shadow", "../../etc/shadow"):
        document = {"kind": "certificate", "name": "a", "cert_file": given, "key": A.key_text}
        response = await client.post("/api/v1/certificates", json=document)
        assert response.status_code == 422
        answers.append(errors(response))
    # The same answer whether the file exists or not: no oracle.
    assert all(answer == answers[0] for answer in answers)
    ((path, message),) = answers[0]
    assert path == "cert_file" and message.startswith("files are not read over the API")


async def test_only_a_document_with_tls_has_the_stored_certificates_read(
    client: httpx.AsyncClient, store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reading them is a trip to the store and a validation of each: a weight change, made
    many times a second during a rollout, has no need of it."""
    assert (
        await client.post("/api/v1/apply", json=[gateway(), A.document("a")])
    ).status_code == 200
    routes = {"[127.0.0.1:8080]": {"weight": 100}, "[127.0.0.1:8081]": {"weight": 0}}
    plain = {"name": "plain", "port": 8080, "routes": routes}
    assert (await client.post("/api/v1/gateways", json=plain)).status_code == 201
    listed: list[str | None] = []
    list_records = store.list

    async def counted(kind: str | None = None, *args: Any, **kwargs: Any) -> Any:
        listed.append(kind)
        return await list_records(kind, *args, **kwargs)

    monkeypatch.setattr(store, "list", counted)
    weight = {"routes": {"[127.0.0.1:8080]": {"weight": 50}, "[127.0.0.1:8081]": {"weight": 50}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    patched = await client.patch("/api/v1/gateways/plain", json=weight, headers=headers)
    assert patched.status_code == 200, patched.text
    assert "certificates" not in listed
    named = {"tls": {"certificates": ["a", "nope"]}}
    refused = await client.patch("/api/v1/gateways/plain", json=named, headers=headers)
    assert errors(refused) == [
        ("tls.certificates.1", "certificate 'nope' does not exist in namespace default")
    ]
    assert "certificates" in listed
