"""The Certificate resource: PEM parsing, key match, chain order, expiry, each with its field."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import Certificate, to_document, validate_resource
from meshgate.model.pem import dns_names
from tests.tlscerts import Authority, cert_pem, key_pem, new_key

CA = Authority()
CHAINED = Authority("chained CA", intermediate=True)
LEAF = CA.issue("a.example.com", "www.a.example.com")


def certificate(allow_expired: bool = False, **fields: Any) -> Certificate:
    data = {"kind": "certificate", "name": "a", **fields}
    resource = validate_resource(data, allow_expired=allow_expired)
    assert isinstance(resource, Certificate)
    return resource


def problem(**fields: Any) -> Problem:
    with pytest.raises(ValidationFailed) as caught:
        certificate(**fields)
    (found,) = caught.value.problems
    return found


def test_a_leaf_with_its_key_is_servable_and_described() -> None:
    resource = certificate(cert=LEAF.cert, key=LEAF.key_text)
    assert resource.servable
    assert resource.info.names == ("a.example.com", "www.a.example.com")
    assert resource.info.subject == "CN=a.example.com"
    assert resource.info.serial == LEAF.serial
    assert 88 <= resource.info.days_left(datetime.datetime.now(datetime.UTC)) <= 90
    assert resource.combined_pem() == resource.cert + resource.key  # type: ignore[operator]


def test_a_chain_in_order_is_accepted_and_kept_whole() -> None:
    leaf = CHAINED.issue("b.example.com")
    resource = certificate(cert=leaf.cert, key=leaf.key_text)
    assert len(resource.chain) == 2
    assert resource.cert == leaf.cert


def test_what_is_stored_is_the_parsed_pem_without_stray_text() -> None:
    written = f"# a comment\n\n{LEAF.cert}\n\ntrailing words\n"
    resource = certificate(cert=written, key="\n" + LEAF.key_text)
    assert resource.cert == LEAF.cert
    assert to_document(resource)["cert"] == LEAF.cert
    assert "\n\n" not in resource.combined_pem()


def test_a_certificate_without_key_is_a_ca_bundle() -> None:
    other = Authority("other CA")
    resource = certificate(cert=CA.cert + other.cert)
    assert not resource.servable
    assert resource.bundle_pem() == CA.cert + other.cert


def test_rsa_keys_work_too() -> None:
    leaf = CA.issue("rsa.example.com", key_kind="rsa")
    assert certificate(cert=leaf.cert, key=leaf.key_text).servable


def test_a_key_of_another_certificate_is_refused_on_key() -> None:
    found = problem(cert=LEAF.cert, key=key_pem(new_key()))
    assert found.path == "key"
    assert "does not match the certificate" in found.message


@pytest.mark.parametrize(
    ("fields", "path", "words"),
    [
        ({"cert": "hello"}, "cert", "not a PEM certificate"),
        (
            {"cert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
            "cert",
            "does not parse",
        ),
        ({"cert": LEAF.cert, "key": "garbage"}, "key", "not a PEM private key"),
        (
            {
                "cert": LEAF.cert,
                "key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
            },
            "key",
            "does not parse",
        ),
        ({"cert": LEAF.cert + LEAF.key_text}, "cert", "contains a private key"),
        ({"cert": "é" + LEAF.cert}, "cert", "plain ASCII"),
        ({"key": LEAF.key_text}, "cert", "is required"),
        ({"cert": LEAF.cert, "key": LEAF.key_text, "extra": 1}, "extra", "unknown field"),
    ],
)
def test_garbage_is_refused_with_its_field(fields: dict[str, Any], path: str, words: str) -> None:
    found = problem(**fields)
    assert found.path == path
    assert words in found.message


def test_messages_never_quote_key_material() -> None:
    key = LEAF.key_text
    broken = key.replace("PRIVATE KEY-----\n", "PRIVATE KEY-----\n!!", 1)
    for fields in ({"cert": LEAF.cert, "key": broken}, {"cert": key}):
        found = problem(**fields)
        body = key.splitlines()[1]
        assert body not in found.message


def test_an_encrypted_key_is_refused() -> None:
    encrypted = LEAF.key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    ).decode()
    found = problem(cert=LEAF.cert, key=encrypted)
    assert (found.path, found.message) == ("key", "is encrypted; give the key without a passphrase")


def test_a_chain_out_of_order_is_refused() -> None:
    leaf = CHAINED.issue("c.example.com")
    assert CHAINED.intermediate is not None
    reversed_chain = cert_pem(CHAINED.intermediate.certificate) + cert_pem(leaf.certificate)
    found = problem(cert=reversed_chain, key=leaf.key_text)
    # The first certificate must be the one the key belongs to...
    assert found.path == "key"
    # ...and with the right leaf first, an unrelated second certificate is not its issuer.
    found = problem(
        cert=leaf.cert.split("-----END CERTIFICATE-----\n")[0]
        + "-----END CERTIFICATE-----\n"
        + CA.cert,
        key=leaf.key_text,
    )
    assert found.path == "cert"
    assert "certificate 1 is not issued by certificate 2" in found.message


def test_an_expired_certificate_is_refused_unless_already_stored() -> None:
    old = CA.issue("old.example.com", expired=True)
    found = problem(cert=old.cert, key=old.key_text)
    assert found.path == "cert"
    assert "the certificate expired on" in found.message
    # The agent loads what the store holds; an expired certificate is reported, not dropped.
    assert certificate(allow_expired=True, cert=old.cert, key=old.key_text).servable


def test_files_must_have_been_read_before_validation() -> None:
    found = problem(cert_file="/etc/tls/a.pem", key=LEAF.key_text)
    assert found.path == "cert_file"


def test_names_come_from_the_san_else_the_common_name() -> None:
    assert dns_names(LEAF.certificate) == ("a.example.com", "www.a.example.com")
    assert dns_names(CA.certificate) == ("meshgate test ca",)
