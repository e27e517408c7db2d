"""Instances from run-time sources merged into one list per service, remembering each one's
source. Pure.

The compiler already puts a service's manifest instances first and skips registered ones whose
id the manifest uses; here the API's registrations come before DNS answers in the same way, so
an id that two sources name is served once, as the more deliberate source says.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from meshgate.model.service import Instance

ServiceKey = tuple[str, str]
Sources = dict[ServiceKey, dict[str, str]]  # service -> instance id -> "api" | "dns"


def merge(
    api: Mapping[ServiceKey, Sequence[Instance]],
    dns: Mapping[ServiceKey, Sequence[Instance]],
) -> tuple[dict[ServiceKey, list[Instance]], Sources]:
    merged: dict[ServiceKey, list[Instance]] = {}
    sources: Sources = {}
    for source, found in (("api", api), ("dns", dns)):
        for key, instances in found.items():
            ids = sources.setdefault(key, {})
            for instance in instances:
                if instance.id not in ids:
                    ids[instance.id] = source
                    merged.setdefault(key, []).append(instance)
    return merged, sources
