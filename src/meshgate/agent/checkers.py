"""Which checker servers (compiler.checks) a route server added at run time can track.

HAProxy 2.6 tracks only servers of its configuration file. Those are the checker servers of
the endpoints the file was rendered for, and a few spares per checker, in maintenance, that
the driver lends to a new endpoint: it sets the spare's address and puts it in service, then
adds the route servers tracking it; when the last of them is removed, the spare goes back to
maintenance and can be lent again. A reload renders every endpoint a server of its own, and
all spares are free again.

Pure state: the driver sends the commands and tells this what it did.
"""

from __future__ import annotations

from collections.abc import Iterable

from meshgate.compiler import checks, ir

Ref = tuple[str, str]  # (backend, server) as HAProxy names them


class CheckerServers:
    def __init__(self) -> None:
        self._loaded: frozenset[Ref] = frozenset()  # endpoint servers of the loaded file
        self._free: dict[str, list[str]] = {}  # checker -> spares not lent
        self._lent: dict[Ref, Ref] = {}  # (checker, endpoint server) -> (checker, spare)
        self._users: dict[Ref, set[Ref]] = {}  # lent spare -> route servers tracking it

    def loaded(self, backends: Iterable[ir.Backend], *, spares: bool = True) -> None:
        """HAProxy loaded the configuration of these backends. Without `spares` none is lent
        (an adopted HAProxy, whose spares an earlier agent may have lent)."""
        found = checks.checkers(backends)
        self._loaded = frozenset((c.name, name) for c in found for name, _ in c.servers)
        self._free = {c.name: list(c.spares) for c in found} if spares else {}
        self._lent = {}
        self._users = {}

    def target(self, backend: ir.Backend, server: ir.Server) -> Ref | None:
        """The checker server this route server tracks now, or None: it checks itself (agent
        or passive checks, or no checker server for its endpoint and no spare left)."""
        return self.target_of(checks.tracked(backend, server))

    def target_of(self, ref: Ref | None) -> Ref | None:
        """`target`, from what `checks.tracked` answered for the route server."""
        if ref is None or ref in self._loaded:
            return ref
        return self._lent.get(ref)

    def lend(self, backend: ir.Backend, server: ir.Server) -> Ref | None:
        """A spare for this server's endpoint when it needs one and one is free; the caller
        sets the spare's address and puts it in service before adding trackers."""
        return self.lend_for(checks.tracked(backend, server))

    def lend_for(self, ref: Ref | None) -> Ref | None:
        """`lend`, from what `checks.tracked` answered for the route server."""
        if ref is None or ref in self._loaded or ref in self._lent:
            return None
        free = self._free.get(ref[0])
        if not free:
            return None
        spare = (ref[0], free.pop(0))
        self._lent[ref] = spare
        self._users[spare] = set()
        return spare

    def tracking(self, route_server: Ref, target: Ref) -> None:
        """A route server was added that tracks `target`."""
        users = self._users.get(target)
        if users is not None:
            users.add(route_server)

    def untracked(self, removed: Iterable[Ref]) -> list[Ref]:
        """Route servers were deleted; returns the spares nothing tracks any more, free again
        (the caller puts them back in maintenance)."""
        gone = set(removed)
        freed = []
        for spare, users in list(self._users.items()):
            if users & gone:
                users -= gone
                if not users:
                    freed.append(spare)
        for spare in freed:
            del self._users[spare]
            self._lent = {ref: lent for ref, lent in self._lent.items() if lent != spare}
            self._free.setdefault(spare[0], []).append(spare[1])
        return freed
