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

from collections.abc import Iterable, Iterator, Mapping

from meshgate.compiler import checks, ir

Ref = tuple[str, str]  # (backend, server) as HAProxy names them


def _check_of(backend: ir.Backend) -> tuple[object, ...]:
    """What decides how a backend's servers are checked (`checks.profile_of`), by identity."""
    return (id(backend.health), id(backend.tls), backend.mode, backend.timeout_connect_ms)


class Tracked:
    """`checks.tracked`, worked out once for the routes that share a server and a check (a
    thousand backends of one service): keyed by identity, which its caller keeps alive (a
    batch of additions, a data plane), where hashing the check cost more than the answer."""

    def __init__(self) -> None:
        self._found: dict[tuple[object, ...], tuple[str, str] | None] = {}
        self._checkers: dict[tuple[object, ...], str] = {}

    def __call__(self, backend: ir.Backend, server: ir.Server) -> tuple[str, str] | None:
        key = (id(server), *_check_of(backend))
        if key not in self._found:
            self._found[key] = checks.tracked(backend, server)
        return self._found[key]

    def checker(self, backend: ir.Backend) -> str:
        """The checker backend that checks the servers of this backend that track one."""
        check = _check_of(backend)
        found = self._checkers.get(check)
        if found is None:
            found = self._checkers[check] = checks.checker_name(checks.profile_of(backend))
        return found


class CheckerServers:
    def __init__(self) -> None:
        # The endpoint servers of the loaded file, with their endpoints.
        self._loaded: dict[Ref, checks.Endpoint] = {}
        self._free: dict[str, list[str]] = {}  # checker -> spares not lent
        self._lent: dict[Ref, Ref] = {}  # (checker, endpoint server) -> (checker, spare)
        self._users: dict[Ref, set[Ref]] = {}  # lent spare -> route servers tracking it

    def loaded(self, backends: Iterable[ir.Backend], *, spares: bool = True) -> None:
        """HAProxy loaded the configuration of these backends. Without `spares` none is lent
        (an adopted HAProxy, whose spares an earlier agent may have lent)."""
        found = checks.checkers(backends)
        self._loaded = {(c.name, name): endpoint for c in found for name, endpoint in c.servers}
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

    def followers(
        self, backends: Iterable[ir.Backend], changed: Mapping[Ref, str]
    ) -> Iterator[tuple[Ref, str]]:
        """The route servers of `backends` that track a checker server of `changed`, each with
        that server's new state: HAProxy gives it to them, and logs no line of theirs.

        Those of a lent spare are known; for an endpoint server of the loaded file, only the
        route servers at its endpoint are looked at further (72 ms for 100,000 of them, where
        working out every route server's checker took 0.73 s)."""
        wanted: dict[tuple[str, int, str | None], dict[str, str]] = {}
        for ref, status in changed.items():
            for user in self._users.get(ref, ()):
                yield user, status
            endpoint = self._loaded.get(ref)
            if endpoint is not None:
                at = (endpoint.address, endpoint.port, endpoint.netns)
                wanted.setdefault(at, {})[ref[0]] = status
        if not wanted:
            return
        tracked = Tracked()
        for backend in backends:
            for server in backend.servers:
                by_checker = wanted.get((server.address, server.port, server.netns))
                if by_checker is None or checks.keeps_own_check(backend, server):
                    continue
                state = by_checker.get(tracked.checker(backend))
                if state is not None:
                    yield (backend.name, server.name), state

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
