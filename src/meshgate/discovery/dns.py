"""Following the DNS names services name (`dns:`): resolve each on its interval, keep the answer.

Why meshgate resolves, rather than HAProxy's `resolvers` section with `server-template`:
- Resolved instances take the same path as registered ones: a changed answer is a runtime
  `add server` / drained `del server`, never a reload, and each server keeps a stable name
  (its address:port) that status, stats and sticky cookies can follow. A server-template
  fixes a number of slots in the configuration (a reload to grow it) and names them srv1..N,
  which says nothing about which address a slot holds at the moment.
- Every source of instances reports into one status (`source: dns`), and SRV priorities and
  weights are decided in one tested, pure place (`records`).
- The resolver address is ordinary configuration (`meshgate up --dns-server`, or per service
  `dns.server`), and a resolver that fails keeps the last good answer instead of emptying
  the backend; an authoritative "no such name" (NXDOMAIN, no records) does empty it. The
  lookups behind one SRV answer (A and AAAA of each target) fail one by one: one that fails
  keeps its own last answer, and the others' answers are used.
The price is one resolution per node and interval, in the agent, which is cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver
import structlog

from meshgate.discovery.records import SrvRecord, address_instances, srv_instances
from meshgate.model.discovery import DnsDiscovery, parse_ip_endpoint
from meshgate.model.service import Instance, Service

log = structlog.get_logger("meshgate.discovery")
ServiceKey = tuple[str, str]
QUERY_TIMEOUT_S = 2.0
# Each loop turn looks for names that are due at least this often.
TICK_S = 0.25


class DnsLookupError(Exception):
    """The resolver could not answer (timeout, refusal, no server); the last answer stands."""


@dataclass(frozen=True)
class Answer:
    """The instances a name resolved to, and the lookups behind them that failed (each kept
    its last good answer): a partial answer is still an answer."""

    instances: list[Instance]
    failed: tuple[str, ...] = ()


class Resolver:
    """Queries over dnspython. `default_server` ("IP[:PORT]") is used by names that do not
    name their own; without it, the system's resolver configuration (/etc/resolv.conf)."""

    def __init__(self, default_server: str | None = None, timeout_s: float = QUERY_TIMEOUT_S):
        self.default_server = default_server
        self.timeout_s = timeout_s
        self._resolvers: dict[str | None, dns.asyncresolver.Resolver] = {}
        # Per SRV name, the last answer of each of its targets' A and AAAA lookups, for when one
        # fails; replaced whole at each resolution, so targets that left the answer go too.
        self._last_lookups: dict[tuple[str | None, str], dict[tuple[str, str], list[str]]] = {}

    def _resolver(self, server: str | None) -> dns.asyncresolver.Resolver:
        server = server or self.default_server
        if server not in self._resolvers:
            if server is None:
                resolver = dns.asyncresolver.Resolver(configure=True)
            else:
                address, port = parse_ip_endpoint(server, 53)
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [address]
                resolver.port = port
            self._resolvers[server] = resolver
        return self._resolvers[server]

    async def _query(
        self, server: str | None, name: str, rdtype: str
    ) -> dns.resolver.Answer | None:
        """The answer, or None when the name authoritatively has no such records."""
        try:
            return await self._resolver(server).resolve(
                name, rdtype, lifetime=self.timeout_s, search=False
            )
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise DnsLookupError(f"{name} {rdtype}: {exc}") from None

    async def _addresses(self, server: str | None, name: str, rdtype: str) -> list[str]:
        answer = await self._query(server, name, rdtype)
        return [] if answer is None else [rr.address for rr in answer]

    async def resolve(self, spec: DnsDiscovery) -> Answer:
        """Raises DnsLookupError when nothing arrived (the caller keeps its last answer)."""
        if spec.type != "SRV":
            assert spec.port is not None  # the model requires it for A and AAAA
            addresses = await self._addresses(spec.server, spec.name, spec.type)
            return Answer(address_instances(addresses, spec.port, spec.weight))
        answer = await self._query(spec.server, spec.name, "SRV")
        if answer is None:
            return Answer([])
        records = [
            SrvRecord(rr.priority, rr.weight, rr.port, str(rr.target).rstrip(".")) for rr in answer
        ]
        targets = sorted({r.target for r in records if r.target})
        lookups = [(target, rdtype) for target in targets for rdtype in ("A", "AAAA")]
        results = await asyncio.gather(
            *(self._addresses(spec.server, t, rdtype) for t, rdtype in lookups),
            return_exceptions=True,
        )
        last = self._last_lookups.get((spec.server, spec.name), {})
        kept: dict[tuple[str, str], list[str]] = {}
        failed = []
        for lookup, result in zip(lookups, results, strict=True):
            if isinstance(result, DnsLookupError):
                failed.append(str(result))
                kept[lookup] = last.get(lookup, [])
            elif isinstance(result, BaseException):
                raise result
            else:
                kept[lookup] = result
        if failed and len(failed) == len(lookups):
            raise DnsLookupError("; ".join(failed))
        self._last_lookups[(spec.server, spec.name)] = kept
        found = {target: kept[target, "A"] + kept[target, "AAAA"] for target in targets}
        return Answer(srv_instances(records, found), tuple(failed))


@dataclass
class _Followed:
    spec: DnsDiscovery
    due: float
    instances: list[Instance] = field(default_factory=list)
    error: str | None = None


class DnsFollower:
    """Keeps the latest answer for every service that names DNS, and says when one changed.

    The agent tells it which services exist (`follow`, after each load of the store) and reads
    the answers (`instances`) when it compiles; `on_change` asks the agent for a pass.
    """

    def __init__(
        self,
        resolver: Resolver,
        on_change: Callable[[], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.resolver = resolver
        self.on_change = on_change
        self.clock = clock
        self._followed: dict[ServiceKey, _Followed] = {}
        self._wake = asyncio.Event()

    def follow(self, services: Sequence[Service]) -> None:
        wanted = {(s.namespace, s.name): s.dns for s in services if s.dns is not None}
        # A service that is gone takes its answer with it; the pass that saw it go already
        # compiles without the service, so nothing needs to be asked for.
        for key in self._followed.keys() - wanted.keys():
            del self._followed[key]
        for key, spec in wanted.items():
            current = self._followed.get(key)
            if current is None:
                self._followed[key] = _Followed(spec, due=self.clock())
            elif current.spec != spec:
                # The old answer stays until the new name answers, so a backend is not emptied
                # by an edit of its interval or resolver.
                current.spec, current.due = spec, self.clock()
        if any(f.due <= self.clock() for f in self._followed.values()):
            self._wake.set()

    def instances(self) -> dict[ServiceKey, list[Instance]]:
        return {key: list(f.instances) for key, f in self._followed.items() if f.instances}

    def errors(self) -> Mapping[ServiceKey, str]:
        return {key: f.error for key, f in self._followed.items() if f.error}

    async def run(self) -> None:
        """Resolve the names that are due, until cancelled."""
        while True:
            now = self.clock()
            due = [key for key, f in self._followed.items() if f.due <= now]
            if due:
                results = await asyncio.gather(*(self._refresh(key) for key in due))
                if any(results):
                    self.on_change()
            pending = [f.due for f in self._followed.values()]
            wait = min([TICK_S, *(max(0.0, d - self.clock()) for d in pending)])
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def _refresh(self, key: ServiceKey) -> bool:
        """Resolve one name; True when its instances changed, or it started or stopped
        failing."""
        followed = self._followed.get(key)
        if followed is None:
            return False
        spec = followed.spec
        followed.due = self.clock() + spec.interval / 1000
        try:
            answer = await self.resolver.resolve(spec)
        except DnsLookupError as exc:
            # A new failure is worth a pass: the service's status then says what failed.
            first = followed.error is None
            if first:
                log.warning("dns lookup failed; keeping the last answer", error=str(exc))
            followed.error = str(exc)
            return first
        if self._followed.get(key) is not followed or followed.spec != spec:
            return False  # changed meanwhile; the next turn resolves the new spec
        instances = answer.instances
        error = "; ".join(answer.failed) or None
        if error and error != followed.error:
            log.warning("dns lookups failed; keeping their last answers", error=error)
        error_changed = error != followed.error
        followed.error = error
        if instances == followed.instances:
            return error_changed
        log.info(
            "dns answer changed",
            service=f"{key[0]}/{key[1]}",
            instances=[i.endpoint for i in instances],
        )
        followed.instances = instances
        return True
