"""Admission: whether a write may happen, decided before it touches the store. Pure.

One document is checked on its own (`validate_resource`), then against what else exists: a
gateway's port must not clash with the gateways already stored or with the others written in
the same batch, and the certificates a gateway serves or a service trusts must exist (stored,
or written in the same batch). Every problem found is reported, each with its field path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

from meshgate.errors import Problem, ValidationFailed
from meshgate.model import Certificate, Gateway, Resource, Service, resource_key, validate_resource
from meshgate.model.planes import foreign_plane_targets, service_plane_ports
from meshgate.model.ports import PortIndex, owner_name, port_conflicts
from meshgate.model.snapshot import ca_problems, certificate_problems
from meshgate.store import Key, Record

ResourceKey = tuple[str, str, str]
Certificates = Mapping[tuple[str, str], Certificate]


class StoredGateways:
    """The gateways in `records` (values of kind `gateways`) as models.

    Stored values passed admission when written; one that no longer validates (a rule got
    stricter since) cannot serve as a reason to reject someone else's write, so it is skipped.
    Each is validated once per version: with thousands of gateways, validating all of them on
    every write would dominate the API's response time.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, str], tuple[int, Gateway | None]] = {}

    def __call__(self, records: Iterable[Record], namespace: str | None = None) -> list[Gateway]:
        """`records`: every stored gateway, or with `namespace` every one of that namespace."""
        gateways = []
        models: dict[tuple[str, str], tuple[int, Gateway | None]] = {}
        if namespace is not None:  # the other namespaces' models stay
            models = {key: model for key, model in self._models.items() if key[0] != namespace}
        for record in records:
            key = (record.key.namespace, record.key.name)
            cached = self._models.get(key)
            if cached is None or cached[0] != record.revision:
                cached = (record.revision, _as_gateway(record))
            models[key] = cached
            if cached[1] is not None:
                gateways.append(cached[1])
        # Only the gateways stored now: a deleted one's model would be kept for good.
        self._models = models
        return gateways

    async def refresh(
        self,
        heads: Sequence[Record],
        get: Callable[[Key], Awaitable[Record | None]],
        shared: dict[tuple[str, str, str], tuple[int, Resource | str]] | None = None,
    ) -> list[Gateway]:
        """As a call with every record, from a keys-only listing (`heads`): only the values
        whose version is not the one validated last are read, with `get`. `shared`: models
        validated by others from the same store, by (kind, namespace, name), to look in
        first and to leave new ones in."""
        gateways = []
        for head in heads:
            key = (head.key.namespace, head.key.name)
            cached = self._models.get(key)
            found = shared.get(("gateways", *key)) if shared is not None else None
            if cached is not None and cached[0] == head.revision:
                pass
            elif found is not None and found[0] == head.revision:
                model = found[1]
                cached = (found[0], model if isinstance(model, Gateway) else None)
                self._models[key] = cached
            else:
                record = await get(head.key)
                if record is None:
                    continue  # deleted since it was listed
                validated = validated_gateway(record)
                cached = (record.revision, validated if isinstance(validated, Gateway) else None)
                self._models[key] = cached
                if shared is not None:
                    shared[("gateways", *key)] = (record.revision, validated)
            if cached[1] is not None:
                gateways.append(cached[1])
        if len(self._models) > len(heads):
            listed = {(h.key.namespace, h.key.name) for h in heads}
            for gone in self._models.keys() - listed:
                del self._models[gone]
        return gateways


def _as_gateway(record: Record) -> Gateway | None:
    try:
        resource = validate_resource(record.value, allow_raw_acl=True, kind="gateway")
    except ValidationFailed:
        return None
    return resource if isinstance(resource, Gateway) else None


def validated_gateway(record: Record) -> Resource | str:
    """As the agent's loader validates a stored gateway: the model, or why it is invalid."""
    try:
        return validate_resource(
            record.value, allow_raw_acl=True, kind="gateway", allow_expired=True
        )
    except ValidationFailed as exc:
        return str(exc)


def stored_gateways(records: Iterable[Record]) -> list[Gateway]:
    """Uncached: for one-off checks."""
    return StoredGateways()(records)


def stored_certificates(records: Iterable[Record]) -> dict[tuple[str, str], Certificate]:
    """The certificates in `records`, by (namespace, name); expired ones count: they exist."""
    found = {}
    for record in records:
        try:
            resource = validate_resource(record.value, kind="certificate", allow_expired=True)
        except ValidationFailed:
            continue
        if isinstance(resource, Certificate):
            found[(resource.namespace, resource.name)] = resource
    return found


def cites_certificates(document: Any) -> bool:
    """Whether a document may name certificates (a gateway's `tls.certificates`, a service's
    `tls.ca`): only then need the stored ones be read, and each validated, to check it."""
    return not isinstance(document, Mapping) or document.get("tls") is not None


def reference_problems(resource: Resource, certificates: Certificates) -> list[Problem]:
    """Certificates a gateway serves or a service trusts that do not exist (or cannot serve)."""
    if isinstance(resource, Gateway):
        return certificate_problems(resource, certificates)
    if isinstance(resource, Service):
        return ca_problems(resource, certificates)
    return []


def certificate_users(
    certificate: tuple[str, str], gateways: Iterable[Gateway], services: Iterable[Service] = ()
) -> list[str]:
    """Who needs a certificate: the gateways serving it and the services trusting it."""
    namespace, name = certificate
    users = [
        f"gateway {g.name}"
        for g in gateways
        if g.namespace == namespace and g.tls and name in g.tls.certificates
    ]
    users += [
        f"service {s.name}"
        for s in services
        if s.namespace == namespace and s.tls and s.tls.ca == name
    ]
    return users


def admit(
    data: Any,
    *,
    kind: str,
    name: str | None,
    namespace: str | None,
    others: Iterable[Gateway] = (),
    allow_raw_acl: bool = False,
    certificates: Certificates | None = None,
    ports: PortIndex[None] | None = None,
    plane_ports: Mapping[int, Gateway] | None = None,
) -> Resource:
    """Validate one document written to /api/v1/{kind}[/{name}][?namespace=].

    `kind` is singular. `name` and `namespace` come from the URL (None when it has none); the
    body may omit them, and when it repeats them they must agree. `others` are the gateways
    already stored (the resource's own stored version may be among them; it is ignored).
    `certificates` are those stored; None skips the check of references to them. `ports`: an
    index of `others`, kept from earlier writes (used unless its place there is contested);
    `plane_ports`: `service_plane_ports(others)`, kept likewise (None: found here).
    """
    if not isinstance(data, Mapping):
        raise ValidationFailed([Problem("", "the body must be one manifest document (a mapping)")])
    filled = dict(data)
    problems = []
    for field, from_url, where in (("name", name, "URL"), ("namespace", namespace, "query")):
        given = data.get(field)
        if given is None:
            if from_url is not None:
                filled[field] = from_url
        elif from_url is not None and given != from_url:
            message = f"{given!r} does not match the {field} {from_url!r} in the {where}"
            problems.append(Problem(field, message))
    if problems:
        raise ValidationFailed(problems)
    resource = validate_resource(filled, allow_raw_acl=allow_raw_acl, kind=kind)
    if isinstance(resource, Gateway):
        if ports is not None and not ports.contested(resource):
            conflicts = [clash.problem for clash in ports.clashes(resource)]
        else:
            others = list(others)
            conflicts = port_conflicts(resource, others)
        if plane_ports is None:
            plane_ports = service_plane_ports(others)
        conflicts += foreign_plane_targets(resource, plane_ports)
        if conflicts:
            raise ValidationFailed(conflicts)
    if certificates is not None:
        missing = reference_problems(resource, certificates)
        if missing:
            raise ValidationFailed(missing)
    if isinstance(resource, Certificate):
        served = keyless_served(resource, others)
        if served:
            raise ValidationFailed(served)
    return resource


def keyless_served(certificate: Certificate, gateways: Iterable[Gateway]) -> list[Problem]:
    """A certificate written without its key while gateways serve it."""
    if certificate.servable:
        return []
    users = certificate_users((certificate.namespace, certificate.name), gateways)
    if not users:
        return []
    return [Problem("key", f"is required: {', '.join(users)} serves this certificate")]


def batch_conflicts(
    resources: Sequence[tuple[int, Resource]], stored: Iterable[Gateway] = ()
) -> list[tuple[int, Problem]]:
    """Problems that only show when documents are seen together, as (document index, problem):
    one resource written twice, and gateways whose ports clash with a stored gateway or an
    earlier gateway of the batch (both documents are named then). A stored gateway that the
    batch rewrites is not considered: its new version is. Linear in the number of documents
    and stored gateways (see `ports`)."""
    problems: list[tuple[int, Problem]] = []
    first_seen: dict[ResourceKey, int] = {}
    for index, resource in resources:
        key = resource_key(resource)
        if key in first_seen:
            what = f"{resource.kind} {resource.namespace}/{resource.name}"
            problems.append((index, Problem("name", f"{what} is also document {first_seen[key]}")))
        else:
            first_seen[key] = index
    ports: PortIndex[int | None] = PortIndex()
    stored = [g for g in stored if resource_key(g) not in first_seen]
    for gateway in stored:
        ports.add(gateway, None)
    batch = [r for _, r in resources if isinstance(r, Gateway)]
    plane_ports = service_plane_ports([*stored, *batch])
    for index, resource in resources:
        if isinstance(resource, Gateway):
            problems += [(index, p) for p in foreign_plane_targets(resource, plane_ports)]
    for index, resource in resources:
        if not isinstance(resource, Gateway):
            continue
        for clash in ports.clashes(resource):
            problems.append((index, clash.problem))
            if clash.tag is not None:
                # The earlier document of the batch claims the same: name it too.
                who = owner_name(resource)
                message = f"{clash.subject} is also claimed by document {index} ({who})"
                problems.append((clash.tag, Problem(clash.problem.path, message)))
        ports.add(resource, index)
    return problems


def admit_batch(
    documents: Sequence[Any],
    *,
    stored: Iterable[Gateway] = (),
    allow_raw_acl: bool = False,
    prefix: str = "documents",
    certificates: Certificates | None = None,
) -> list[Resource]:
    """Validate every document of an apply; all problems of all documents are raised together,
    with paths under `prefix.N.` (N = the document's position). References to certificates
    are checked against `certificates` (those stored) and the batch's own, unless None."""
    if not documents:
        raise ValidationFailed([Problem(prefix, "there are no documents to apply")])
    stored = list(stored)
    valid: list[tuple[int, Resource]] = []
    located: list[tuple[int, Problem]] = []
    for index, data in enumerate(documents):
        try:
            valid.append((index, validate_resource(data, allow_raw_acl=allow_raw_acl)))
        except ValidationFailed as exc:
            located.extend((index, problem) for problem in exc.problems)
    located.extend(batch_conflicts(valid, stored))
    if certificates is not None:
        known = dict(certificates)
        known.update({(r.namespace, r.name): r for _, r in valid if isinstance(r, Certificate)})
        rewritten = {resource_key(r) for _, r in valid}
        unchanged = [g for g in stored if resource_key(g) not in rewritten]
        for index, resource in valid:
            located.extend((index, p) for p in reference_problems(resource, known))
            if isinstance(resource, Certificate):
                located.extend((index, p) for p in keyless_served(resource, unchanged))
    if located:
        # Stable sort: each document's problems together, in document order.
        located.sort(key=lambda item: item[0])
        raise ValidationFailed([_under(f"{prefix}.{index}", problem) for index, problem in located])
    return [resource for _, resource in valid]


def _under(prefix: str, problem: Problem) -> Problem:
    return Problem(f"{prefix}.{problem.path}" if problem.path else prefix, problem.message)
