"""The DNS follower with a scripted resolver: answers kept, changes announced, failures kept out."""

from __future__ import annotations

import asyncio

from meshgate.discovery.dns import Answer, DnsFollower, DnsLookupError, Resolver
from meshgate.model import Service, validate_resource
from meshgate.model.discovery import DnsDiscovery
from meshgate.model.service import Instance


class Scripted(Resolver):
    def __init__(self) -> None:
        super().__init__()
        self.answers: dict[str, list[str] | Exception] = {}
        self.asked: list[str] = []
        self.failed: dict[str, list[str]] = {}

    async def resolve(self, spec: DnsDiscovery) -> Answer:
        self.asked.append(spec.name)
        answer = self.answers[spec.name]
        if isinstance(answer, Exception):
            raise answer
        failed = tuple(self.failed.get(spec.name, ()))
        return Answer([Instance(address=a, port=spec.port or 0) for a in sorted(answer)], failed)


def dns_service(name: str, host: str, interval: str = "1s") -> Service:
    resource = validate_resource(
        {"kind": "service", "name": name, "dns": {"name": host, "port": 80, "interval": interval}}
    )
    assert isinstance(resource, Service)
    return resource


async def test_answers_are_kept_and_changes_announced() -> None:
    resolver = Scripted()
    resolver.answers["a.test"] = ["127.0.0.2"]
    now = [0.0]
    changes: list[int] = []
    follower = DnsFollower(resolver, lambda: changes.append(1), clock=lambda: now[0])
    follower.follow([dns_service("web", "a.test")])
    key = ("default", "web")
    assert await follower._refresh(key) is True
    assert [i.address for i in follower.instances()[key]] == ["127.0.0.2"]
    assert await follower._refresh(key) is False  # the same answer is no change

    resolver.answers["a.test"] = DnsLookupError("a.test A: timed out")
    assert await follower._refresh(key) is True  # a new failure: the status should say so
    assert follower.errors()[key] == "a.test A: timed out"
    assert [i.address for i in follower.instances()[key]] == ["127.0.0.2"]  # last answer kept
    assert await follower._refresh(key) is False

    resolver.answers["a.test"] = ["127.0.0.3", "127.0.0.2"]
    assert await follower._refresh(key) is True
    assert follower.errors() == {}
    assert [i.address for i in follower.instances()[key]] == ["127.0.0.2", "127.0.0.3"]

    resolver.answers["a.test"] = []  # the name is gone: the service has no instances
    assert await follower._refresh(key) is True
    assert follower.instances() == {}


async def test_run_resolves_on_each_interval_and_forgets_removed_services() -> None:
    resolver = Scripted()
    resolver.answers["a.test"] = ["127.0.0.2"]
    changes: list[int] = []
    follower = DnsFollower(resolver, lambda: changes.append(1))
    follower.follow([dns_service("web", "a.test")])
    task = asyncio.create_task(follower.run())
    try:
        for _ in range(50):
            await asyncio.sleep(0.02)
            if changes:
                break
        assert changes == [1]
        assert resolver.asked == ["a.test"]  # once, then not again before its interval
        follower.follow([])
        assert follower.instances() == {}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_partial_answer_is_used_and_its_failed_lookups_reported() -> None:
    resolver = Scripted()
    resolver.answers["a.test"] = ["127.0.0.2"]
    resolver.failed["a.test"] = ["b.test AAAA: SERVFAIL"]
    changes: list[int] = []
    follower = DnsFollower(resolver, lambda: changes.append(1))
    follower.follow([dns_service("web", "a.test")])
    key = ("default", "web")
    assert await follower._refresh(key) is True
    assert [i.address for i in follower.instances()[key]] == ["127.0.0.2"]
    assert follower.errors()[key] == "b.test AAAA: SERVFAIL"
    resolver.failed["a.test"] = []
    assert await follower._refresh(key) is True  # recovered: the status should say so
    assert follower.errors() == {}
