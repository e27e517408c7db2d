"""Certificates made on the spot for tests: a CA, leaves it signs, and the broken kinds.

Nothing here is checked in: each test run issues its own, so none expires in the repository.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def new_key(kind: str = "ec") -> Key:
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: Key) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def cert_pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class Issued:
    """A leaf certificate with its key; `chain` is what a server presents (leaf first)."""

    certificate: x509.Certificate
    key: Key
    chain: tuple[x509.Certificate, ...] = field(default=())

    @property
    def cert(self) -> str:
        return "".join(cert_pem(c) for c in (self.certificate, *self.chain))

    @property
    def key_text(self) -> str:
        return key_pem(self.key)

    @property
    def serial(self) -> str:
        return format(self.certificate.serial_number, "X")

    def document(self, name: str, **extra: object) -> dict[str, object]:
        return {
            "kind": "certificate",
            "name": name,
            "cert": self.cert,
            "key": self.key_text,
            **extra,
        }


class Authority:
    """A CA that signs leaves (directly, or through an intermediate with `intermediate=True`)."""

    def __init__(self, name: str = "meshgate test CA", *, intermediate: bool = False) -> None:
        self.key = new_key()
        self.certificate = _build(
            subject=name,
            issuer=_name(name),
            public_key=self.key.public_key(),
            signer=self.key,
            ca=True,
        )
        self.intermediate: Issued | None = None
        if intermediate:
            key = new_key()
            certificate = _build(
                subject=f"{name} intermediate",
                issuer=self.certificate.subject,
                public_key=key.public_key(),
                signer=self.key,
                ca=True,
            )
            self.intermediate = Issued(certificate, key)

    @property
    def cert(self) -> str:
        return cert_pem(self.certificate)

    def issue(
        self,
        *names: str,
        days: float = 90,
        expired: bool = False,
        key_kind: str = "ec",
    ) -> Issued:
        key = new_key(key_kind)
        signer: Issued | None = self.intermediate
        start = now() - datetime.timedelta(days=400 if expired else 1)
        end = now() - datetime.timedelta(days=1) if expired else now() + datetime.timedelta(days)
        certificate = _build(
            subject=names[0],
            issuer=(signer.certificate if signer else self.certificate).subject,
            public_key=key.public_key(),
            signer=signer.key if signer else self.key,
            names=names,
            not_before=start,
            not_after=end,
        )
        return Issued(certificate, key, (signer.certificate,) if signer else ())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _build(
    *,
    subject: str,
    issuer: x509.Name,
    public_key: object,
    signer: Key,
    ca: bool = False,
    names: tuple[str, ...] = (),
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(public_key)  # type: ignore[arg-type]
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now() - datetime.timedelta(days=1))
        .not_valid_after(not_after or now() + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([_general_name(n) for n in names]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())
