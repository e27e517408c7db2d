"""Deciding how a new data plane reaches HAProxy: the smallest list of actions. Pure.

Map contents (route weights, virtual-host aliases) and the servers of an existing backend are
data HAProxy can change at run time, so such changes need no reload: maps are swapped
atomically (or a few values set one by one), servers are added, re-weighted, or drained and
deleted. Certificates are data too: new content for a loaded certificate or CA file is swapped
in by a runtime transaction, and a certificate added to a TLS port is loaded and appended to
the port's crt-list. Anything else — a new or changed frontend or backend, a certificate
removed from a port or a changed default certificate, a server that HAProxy 2.6 cannot add at
run time — needs a reload, which the supervisor makes hitless.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import operator
from dataclasses import dataclass

from meshgate.compiler import ir


@dataclass(frozen=True)
class ReplaceMap:
    """Swap a map's whole content atomically (prepare / add / commit)."""

    name: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class SetMapEntries:
    """New values for keys a map already has (`set map`), side by side: a handful of entries of
    a large map, where swapping the whole content would send all of it."""

    name: str
    entries: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class DeleteMapEntries:
    """Keys to remove from a map (`del map`), side by side: for dispatch.map, where a gateway
    whose routes are all unusable loses its entries while the rest of the map stays."""

    name: str
    keys: tuple[str, ...]


@dataclass(frozen=True)
class AddServer:
    backend: str
    server: ir.Server
    health: ir.HealthCheck
    tls: ir.ServerTls | None = None


@dataclass(frozen=True)
class UpdateCertificate:
    """New content for a certificate file HAProxy has loaded (set ssl cert / commit ssl cert):
    every listener using it serves the new one for new handshakes."""

    name: str  # file name under the certs directory
    pem: str = dataclasses.field(repr=False)  # holds the private key: never in logs


@dataclass(frozen=True)
class AddCertificate:
    """Load a certificate file HAProxy does not know yet (new ssl cert, set, commit)."""

    name: str
    pem: str = dataclasses.field(repr=False)


@dataclass(frozen=True)
class AddCrtListEntry:
    """Append a line to a TLS port's crt-list (add ssl crt-list)."""

    crt_list: str  # file name under the certs directory
    entry: ir.CrtListEntry


@dataclass(frozen=True)
class UpdateCaFile:
    """New content for a CA file HAProxy has loaded (set ssl ca-file / commit ssl ca-file)."""

    name: str
    pem: str


@dataclass(frozen=True)
class SetServerWeight:
    backend: str
    server: str
    weight: int


@dataclass(frozen=True)
class RemoveServer:
    """Drain (no new traffic, running requests finish), then delete."""

    backend: str
    server: str


@dataclass(frozen=True)
class Reload:
    reason: str


RuntimeAction = (
    ReplaceMap
    | SetMapEntries
    | DeleteMapEntries
    | AddServer
    | SetServerWeight
    | RemoveServer
    | UpdateCertificate
    | AddCertificate
    | AddCrtListEntry
    | UpdateCaFile
)
Action = RuntimeAction | Reload


def plan(running: ir.DataPlane | None, desired: ir.DataPlane) -> list[Action]:
    """Actions that take HAProxy from `running` to `desired`, in the order to run them.

    Certificates come first, so a host routed by a new map entry already has its certificate;
    new servers come next and departing ones last, so a route never goes without instances in
    between; maps come after the additions for the same reason.
    """
    if running is None:
        return [Reload("first configuration")]
    if running.settings != desired.settings:
        return [Reload("data-plane settings changed")]
    if running.redirects != desired.redirects:
        return [Reload("HTTPS redirects changed")]
    entries = _crt_list_additions(running.frontends, desired.frontends)
    if isinstance(entries, Reload):
        return [entries]
    certificates = _certificate_changes(running, desired, entries)
    if isinstance(certificates, Reload):
        return [certificates]
    if {m.name for m in running.maps} != {m.name for m in desired.maps}:
        return [Reload("map files added or removed")]
    # Both are sorted by name, names unique: they name the same backends when the pairs in
    # step that differ have the same names. A backend the compiler reused is the same object
    # (the usual case), which makes this walk cheap for 100,000 backends.
    changed = [
        (old, new)
        for old, new in zip(running.backends, desired.backends, strict=False)
        if old is not new
    ]
    if len(running.backends) != len(desired.backends) or any(
        old.name != new.name for old, new in changed
    ):
        return [Reload("backends added or removed")]
    additions: list[AddServer] = []
    weights: list[SetServerWeight] = []
    removals: list[RemoveServer] = []
    # The routes to one service share their server tuples (the compiler makes them once per
    # change): their difference is worked out once, not once per backend.
    diffs: dict[tuple[int, int], _ServerDiff | Reload] = {}
    for old, new in changed:
        name = new.name
        if _backend_rest(old) != _backend_rest(new):
            return [Reload(f"backend {name} changed")]
        pair = (id(old.servers), id(new.servers))
        diff = diffs.get(pair)
        if diff is None:
            diff = diffs[pair] = _server_diff(new, old.servers, new.servers)
        if isinstance(diff, Reload):
            return [diff]
        added, reweighted, removed = diff
        removals += [RemoveServer(name, server) for server in removed]
        additions += [AddServer(name, server, new.health, new.tls) for server in added]
        weights += [SetServerWeight(name, server, weight) for server, weight in reweighted]
    old_maps = {m.name: m for m in running.maps}
    maps = [
        action
        for new_map in desired.maps
        if old_maps[new_map.name] != new_map
        for action in map_changes(old_maps[new_map.name], new_map)
    ]
    # A server whose address changed is removed before its replacement of the same name is
    # added; every other removal waits until additions and maps are in place.
    replaced = {(a.backend, a.server.name) for a in additions}
    first = [r for r in removals if (r.backend, r.server) in replaced]
    last = [r for r in removals if (r.backend, r.server) not in replaced]
    return [*certificates, *entries, *first, *additions, *weights, *maps, *last]


# What changes among a backend's servers: those to add, the new weights, those to remove
# (first, those that an addition replaces).
_ServerDiff = tuple[tuple[ir.Server, ...], tuple[tuple[str, int], ...], tuple[str, ...]]


def _server_diff(
    backend: ir.Backend, old: tuple[ir.Server, ...], new: tuple[ir.Server, ...]
) -> _ServerDiff | Reload:
    """How a backend's servers go from `old` to `new`, or the reload that must do it. Reads
    nothing of the backend but what decides whether a server can be added at run time, which
    the backends sharing these servers share too (their routes' settings are the same)."""
    old_servers = {s.name: s for s in old}
    new_servers = {s.name: s for s in new}
    added: list[ir.Server] = []
    reweighted: list[tuple[str, int]] = []
    replaced: list[str] = []
    for server_name, server in new_servers.items():
        before = old_servers.get(server_name)
        # A server's backup flag cannot be changed at run time: it is added anew.
        if before is None or not _same_but(before, server, _SERVER_FIELDS):
            reason = _cannot_add_at_run_time(backend, server)
            if reason:
                return Reload(reason)
            if before is not None:
                replaced.append(server_name)
            added.append(server)
        elif before.weight != server.weight:
            reweighted.append((server_name, server.weight))
    gone = [s for s in old_servers if s not in new_servers]
    return tuple(added), tuple(reweighted), (*replaced, *gone)


# A whole map goes to HAProxy in `add map` payloads of about this many entries (12 kB of
# entries of up to 80 bytes), plus `prepare map` and `commit map`.
ENTRIES_PER_PAYLOAD = 150
# dispatch.map entries set rather than the map swapped: a swap is three round trips through the
# master, where this many `set map` lines take one session on the worker.
SET_IN_SESSION = 1_000


def map_changes(old: ir.MapFile, new: ir.MapFile) -> list[RuntimeAction]:
    """Set the changed values when the keys are the same and setting them takes fewer commands
    than swapping the whole map; otherwise swap it (which is also atomic).

    Values set one by one are not swapped atomically, so numbers that grow are set before
    numbers that shrink: the weights of a gateway's routes never all read 0 in between."""
    if new.name in ir.DISPATCH_MAPS:
        return dispatch_changes(old, new)
    if len(old.entries) != len(new.entries):
        return [ReplaceMap(new.name, new.entries)]
    # Entries of unchanged gateways are the very same tuples (the compiler's memo), in the same
    # order: comparing pairs in step is cheap even for a hundred thousand entries.
    changed = [
        (o, n) for o, n in zip(old.entries, new.entries, strict=True) if o is not n and o != n
    ]
    swap_commands = 2 + len(new.entries) // ENTRIES_PER_PAYLOAD
    if len(changed) > swap_commands or any(o[0] != n[0] for o, n in changed):
        return [ReplaceMap(new.name, new.entries)]
    growing = tuple(n for o, n in changed if _grows(o[1], n[1]))
    others = tuple(n for o, n in changed if not _grows(o[1], n[1]))
    return [SetMapEntries(new.name, entries) for entries in (growing, others) if entries]


def dispatch_changes(old: ir.MapFile, new: ir.MapFile) -> list[RuntimeAction]:
    """dispatch.map and lone.map by key: entries set (added when absent) and removed one by
    one while that takes fewer commands than swapping the whole map. Not atomic, and it need
    not be: a gateway whose entries are half there has its other draws chosen by its fallback
    walk."""
    if old.entries == new.entries:
        return []
    before = dict(old.entries)
    after = dict(new.entries)
    changed = tuple((k, v) for k, v in new.entries if before.get(k) != v)
    removed = tuple(k for k in before if k not in after)
    # Entries set go to HAProxy in one session on the worker, one round trip for all of
    # them (a weight change redraws its gateway's 100 slots); deletes one at a time.
    swap_commands = 2 + len(new.entries) // ENTRIES_PER_PAYLOAD
    if len(changed) > SET_IN_SESSION or len(removed) > swap_commands:
        return [ReplaceMap(new.name, new.entries)]
    actions: list[RuntimeAction] = []
    if changed:
        actions.append(SetMapEntries(new.name, changed))
    if removed:
        actions.append(DeleteMapEntries(new.name, removed))
    return actions


def _grows(old: str, new: str) -> bool:
    return old.isdigit() and new.isdigit() and int(new) > int(old)


def _crt_list_additions(
    running: tuple[ir.Frontend, ...], desired: tuple[ir.Frontend, ...]
) -> list[AddCrtListEntry] | Reload:
    """Lines to append to crt-lists, when that is all that changed in the frontends.

    HAProxy appends lines at run time but cannot reorder or remove them here, so the port's
    first line (its default certificate) and every existing line must stay as they are. The
    running list's order may then differ from the file's; only the first line's position has
    a meaning, because SNI filters pick the others.
    """
    if len(running) != len(desired):
        return Reload("frontends changed")
    additions: list[AddCrtListEntry] = []
    for old, new in zip(running, desired, strict=True):
        if old is new or old == new:
            continue
        if (
            old.tls is None
            or new.tls is None
            or dataclasses.replace(old, tls=None) != dataclasses.replace(new, tls=None)
            or old.tls.crt_list != new.tls.crt_list
        ):
            return Reload("frontends changed")
        remaining = list(new.tls.entries)
        for entry in old.tls.entries:
            if entry not in remaining:
                return Reload(f"certificates removed from port {new.port} or their names changed")
            remaining.remove(entry)
        if old.tls.entries[0] != new.tls.entries[0]:
            return Reload(f"the default certificate of port {new.port} changed")
        additions += [AddCrtListEntry(new.tls.crt_list, entry) for entry in remaining]
    return additions


def _certificate_changes(
    running: ir.DataPlane, desired: ir.DataPlane, entries: list[AddCrtListEntry]
) -> list[RuntimeAction] | Reload:
    """Certificate and CA files to load or to refill with new content."""
    old = {f.name: f.text for f in running.certificates}
    new = {f.name: f.text for f in desired.certificates}
    if old.keys() - new.keys():
        return Reload("certificates removed")
    listed = {e.entry.certificate for e in entries}
    if new.keys() - old.keys() - listed:
        return Reload("certificates added outside a crt-list")
    actions: list[RuntimeAction] = [
        UpdateCertificate(name, text)
        for name, text in new.items()
        if name in old and old[name] != text
    ]
    actions += [AddCertificate(name, text) for name, text in new.items() if name not in old]
    old_cas = {f.name: f.text for f in running.ca_files}
    new_cas = {f.name: f.text for f in desired.ca_files}
    if old_cas.keys() != new_cas.keys():
        return Reload("CA files added or removed")
    actions += [UpdateCaFile(n, t) for n, t in new_cas.items() if old_cas[n] != t]
    return actions


# The fields compared to tell whether a backend changed beyond its servers, and a server
# beyond its weight: field by field, where copying each with `dataclasses.replace` to compare
# them cost a third of a plan's time for 1,000 changed backends.
_BACKEND_FIELDS = tuple(f.name for f in dataclasses.fields(ir.Backend) if f.name != "servers")
_SERVER_FIELDS = tuple(f.name for f in dataclasses.fields(ir.Server) if f.name != "weight")
# A backend's fields but its servers, read at once: compared as tuples (each pair by identity
# first, then equality, as `_same_but` does), in a third of the time for 1,000 backends.
_backend_rest = operator.attrgetter(*_BACKEND_FIELDS)


def _same_but(old: object, new: object, names: tuple[str, ...]) -> bool:
    """Whether these fields of the two are equal (the same object, usually, for a backend
    whose servers alone changed)."""
    for name in names:
        a, b = getattr(old, name), getattr(new, name)
        if a is not b and a != b:
            return False
    return True


@functools.lru_cache(maxsize=4096)
def _is_ip(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def _cannot_add_at_run_time(backend: ir.Backend, server: ir.Server) -> str | None:
    """Why HAProxy 2.6 cannot add this server dynamically, or None if it can."""
    if server.cookie is not None:
        return "a server with a persistence cookie cannot be added at run time"
    if not _is_ip(server.address):
        return "a server named by host name cannot be added at run time"
    if server.netns is not None:
        return "a server in another network namespace cannot be added at run time"
    return None
