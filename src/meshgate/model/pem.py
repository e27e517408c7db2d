"""Reading and checking PEM certificates and keys. Pure: text in, parsed values or errors out.

Everything a certificate resource promises is checked here with `cryptography`: the text is
PEM, the key belongs to the first certificate, each certificate of the chain is issued by the
next, and (when asked) none has expired. What is kept is re-serialised from the parsed
objects, never the text as written: HAProxy then reads exactly what was checked, and nothing
outside the PEM blocks (comments, blank lines that would end a runtime-API payload, stray
text) survives.

Messages never quote key material: they end up in API responses and logs.
"""

from __future__ import annotations

import datetime
import itertools
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID

from meshgate.model.values import FieldError

# Larger inputs are not certificates anyone means to serve; the cap also bounds parsing work.
MAX_PEM_BYTES = 64 * 1024
MAX_CHAIN_LENGTH = 10
EXPIRY_WARNING_DAYS = 30
_SERVABLE_KEYS = (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)

PrivateKey = (
    rsa.RSAPrivateKey
    | ec.EllipticCurvePrivateKey
    | dsa.DSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)


@dataclass(frozen=True)
class CertificateInfo:
    """What a user wants to know about a leaf certificate at a glance."""

    subject: str
    names: tuple[str, ...]  # DNS names from subjectAltName, or the CN when there is none
    not_after: datetime.datetime
    serial: str  # upper-case hex, as openssl and HAProxy print it

    def days_left(self, now: datetime.datetime) -> int:
        return (self.not_after - now).days

    def seconds_left(self, now: datetime.datetime) -> float:
        return (self.not_after - now).total_seconds()


def _ascii(text: str, field: str) -> bytes:
    data = text.encode("utf-8")
    if len(data) > MAX_PEM_BYTES:
        raise FieldError(field, f"is larger than {MAX_PEM_BYTES // 1024} kB")
    if not text.isascii():
        raise FieldError(field, "is not PEM text (PEM is plain ASCII)")
    return data


def parse_certificates(text: str, field: str = "cert") -> list[x509.Certificate]:
    """Every certificate of a PEM text, in order; at least one."""
    data = _ascii(text, field)
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise FieldError(field, "is not a PEM certificate (no BEGIN CERTIFICATE block)")
    if b"PRIVATE KEY-----" in data:
        raise FieldError(field, "contains a private key; give it in 'key'")
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise FieldError(field, "is not a valid PEM certificate (it does not parse)") from None
    if len(certificates) > MAX_CHAIN_LENGTH:
        raise FieldError(field, f"holds more than {MAX_CHAIN_LENGTH} certificates")
    return certificates


def parse_private_key(text: str, field: str = "key") -> PrivateKey:
    data = _ascii(text, field)
    if b"PRIVATE KEY-----" not in data:
        raise FieldError(field, "is not a PEM private key (no BEGIN ... PRIVATE KEY block)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise FieldError(field, "is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise FieldError(field, "is not a valid PEM private key (it does not parse)") from None
    if not isinstance(key, _SERVABLE_KEYS):
        raise FieldError(field, "must be an RSA or ECDSA key (what TLS servers use)")
    return key


def check_key_matches(certificate: x509.Certificate, key: PrivateKey) -> None:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise FieldError("key", "does not match the certificate (the first one in 'cert')")


def check_chain_order(certificates: list[x509.Certificate]) -> None:
    """Each certificate must be issued by the one after it: leaf first, then its chain."""
    for index, (child, parent) in enumerate(itertools.pairwise(certificates)):
        try:
            child.verify_directly_issued_by(parent)
        except (ValueError, TypeError, InvalidSignature):
            raise FieldError(
                "cert",
                f"certificate {index + 1} is not issued by certificate {index + 2}: "
                "give the leaf first, then each issuer in order",
            ) from None


def check_not_expired(
    certificates: list[x509.Certificate], now: datetime.datetime, field: str = "cert"
) -> None:
    for index, certificate in enumerate(certificates):
        if certificate.not_valid_after_utc <= now:
            which = "the certificate" if index == 0 else f"certificate {index + 1} of the chain"
            expired = certificate.not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
            raise FieldError(field, f"{which} expired on {expired}")


def certificates_pem(certificates: list[x509.Certificate]) -> str:
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii") for c in certificates)


def private_key_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def dns_names(certificate: x509.Certificate) -> tuple[str, ...]:
    """The names a TLS client checks: subjectAltName DNS entries, else the subject's CN."""
    try:
        extension = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        common = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        values = [str(a.value) for a in common]
    else:
        values = extension.value.get_values_for_type(x509.DNSName)
    return tuple(dict.fromkeys(v.lower().rstrip(".") for v in values if v))


def describe(certificate: x509.Certificate) -> CertificateInfo:
    return CertificateInfo(
        subject=certificate.subject.rfc4514_string(),
        names=dns_names(certificate),
        not_after=certificate.not_valid_after_utc,
        serial=format(certificate.serial_number, "X"),
    )
