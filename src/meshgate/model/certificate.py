"""The Certificate resource (SPEC §1 "Certificate"): a PEM chain and its private key.

With a key it is something a gateway can serve; without one it is a bundle of trusted
certificates, which a service names as the CA that its instances' certificates must chain to.
`cert_file` / `key_file` are read by whoever admits the document (the CLI, the API server) and
replaced by the PEM text, so what is stored never depends on a file elsewhere.
"""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import Literal

from cryptography import x509
from pydantic import Field, ValidationInfo, model_validator

from meshgate.model import pem
from meshgate.model.fields import NamespaceName, ResourceName
from meshgate.model.names import DEFAULT_NAMESPACE
from meshgate.model.service import Model
from meshgate.model.values import FieldError


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Certificate(Model):
    kind: Literal["certificate"] = "certificate"
    name: ResourceName
    namespace: NamespaceName = DEFAULT_NAMESPACE
    cert: str | None = None
    key: str | None = Field(default=None, repr=False)  # never shown: not in logs either
    cert_file: str | None = None
    key_file: str | None = None

    @model_validator(mode="after")
    def _pem(self, info: ValidationInfo) -> Certificate:
        for field in ("cert_file", "key_file"):
            if getattr(self, field) is not None:
                # Reading files is the admitting side's job (see meshgate.certificate_files);
                # a document that still names one was not read by anyone.
                raise FieldError(field, "was not read; apply it with the meshgate CLI or API")
        if self.cert is None:
            raise FieldError("cert", "is required: give the PEM text (cert) or a file (cert_file)")
        chain = pem.parse_certificates(self.cert)
        key_text = None
        if self.key is not None:
            key = pem.parse_private_key(self.key)
            pem.check_key_matches(chain[0], key)
            pem.check_chain_order(chain)
            key_text = pem.private_key_pem(key)
        allow_expired = bool(info.context and info.context.get("allow_expired"))
        if not allow_expired:
            pem.check_not_expired(chain, utc_now())
        # Stored and served as re-serialised from what was parsed (see meshgate.model.pem).
        object.__setattr__(self, "cert", pem.certificates_pem(chain))
        object.__setattr__(self, "key", key_text)
        return self

    @cached_property
    def chain(self) -> list[x509.Certificate]:
        assert self.cert is not None  # the validator made sure
        return pem.parse_certificates(self.cert)

    @cached_property
    def info(self) -> pem.CertificateInfo:
        return pem.describe(self.chain[0])

    @property
    def servable(self) -> bool:
        """Whether a gateway can present it: only with its private key."""
        return self.key is not None

    def combined_pem(self) -> str:
        """What HAProxy loads for a TLS listener: the chain, then the key, in one file."""
        assert self.cert is not None and self.key is not None
        return self.cert + self.key

    def bundle_pem(self) -> str:
        """The certificates alone: what a CA file holds."""
        assert self.cert is not None
        return self.cert
