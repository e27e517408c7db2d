"""`Store` on an etcd v3 cluster, through etcd's JSON gateway over httpx.

Every call is one HTTP request to one member; a member that cannot be reached is skipped for
the next (only before the request was sent, so a write is never sent twice). A watch is one
streamed `/v3/watch` response per `watch()` call, read by a task of its own; when its stream
breaks it reconnects, with jittered backoff, from the revision after the last one it
delivered, so callers see one unbroken, ordered history or a CompactedError.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import math
import random
import ssl
from collections.abc import AsyncIterator, Callable, Collection, Sequence
from typing import Any

import httpx

from meshgate.store import etcd_wire as wire
from meshgate.store.base import (
    CompactedError,
    ConflictError,
    Delete,
    Key,
    NotFoundError,
    Op,
    Put,
    Record,
    StoreClosedError,
    StoreError,
    WatchEvent,
    check_ops,
)
from meshgate.store.batches import MAX_TXN_OPS, PartialCommitError, split
from meshgate.store.target import EtcdTarget, StoreUrlError

logger = logging.getLogger(__name__)

_TIMEOUT_SECONDS = 5.0
_BACKOFF_FIRST_SECONDS = 0.1
_BACKOFF_MAX_SECONDS = 3.0
_READS = frozenset({"/v3/kv/range", "/v3/lease/keepalive"})
_GRPC_NOT_FOUND = 5
_GRPC_UNAVAILABLE = 14


class StoreUnavailableError(StoreError):
    """No etcd member answered, or the cluster cannot serve the request now (no leader)."""


class EtcdStore:
    """`Store` on etcd. Create with `await EtcdStore.open(target)`; end with `close()`."""

    def __init__(self, target: EtcdTarget, client: httpx.AsyncClient) -> None:
        """Use `open`."""
        self._target = target
        self._layout = wire.Layout(target.prefix)
        self._client = client
        self._preferred = 0  # the member that answered last
        self._closed = False
        self._watch_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def open(cls, target: EtcdTarget) -> EtcdStore:
        """Connect, and read the revision once so that a wrong address or certificate fails
        here, with its reason, rather than at the first write."""
        client = httpx.AsyncClient(
            verify=_tls_context(target), timeout=_TIMEOUT_SECONDS, trust_env=False
        )
        store = cls(target, client)
        try:
            await store.revision()
        except BaseException:
            await client.aclose()
            raise
        return store

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self._target.endpoints

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def get(self, key: Key) -> Record | None:
        reply = await self._call("/v3/kv/range", {"key": wire.b64(self._layout.encode(key))})
        kvs = reply.get("kvs", [])
        return wire.record(self._layout, kvs[0]) if kvs else None

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> builtins.list[Record]:
        body = wire.range_body(self._layout, kind, namespace, keys_only)
        reply = await self._call("/v3/kv/range", body)
        return wire.records(self._layout, reply.get("kvs", []), namespace, keys_only)

    async def put(
        self,
        key: Key,
        value: dict[str, Any],
        *,
        expect_revision: int | None = None,
        lease: int | None = None,
    ) -> Record:
        _, (record,) = await self._apply([Put(key, value, expect_revision, lease)])
        assert isinstance(record, Record)
        return record

    async def delete(self, key: Key, *, expect_revision: int | None = None) -> bool:
        """As `SqliteStore.delete`: a conditional delete of an absent key is NotFoundError."""
        try:
            _, (deleted,) = await self._apply([Delete(key, expect_revision)])
        except ConflictError as exc:
            if exc.actual == 0:
                raise NotFoundError(f"{key} does not exist") from exc
            raise
        if deleted is False and expect_revision is not None:
            raise NotFoundError(f"{key} does not exist")
        return deleted is True

    async def commit(self, ops: Sequence[Op]) -> int:
        revision, _ = await self._apply(ops)
        return revision

    async def commit_batches(self, ops: Sequence[Op]) -> builtins.list[int]:
        """Write `ops` in as few transactions as etcd takes (`store.batches`), returning the
        revision of each op. One transaction when they fit: all or nothing. Else every
        compare is checked first, in read-only transactions, so that a write that conflicts
        with what was there when it began writes nothing; then the transactions follow one
        another, each with its own compares again. Only a writer that changes one of the
        keys in between can stop it midway: PartialCommitError says how many ops landed."""
        check_ops(ops)
        encoded = [wire.to_json(op.value) if isinstance(op, Put) else None for op in ops]
        batches = split(
            [len(e or b"") + len(str(op.key)) for op, e in zip(ops, encoded, strict=True)]
        )
        if len(batches) <= 1:
            revision, _ = await self._apply(ops, encoded)
            return [revision] * len(ops)
        compared = [op for op in ops if op.expect_revision is not None]
        for start in range(0, len(compared), MAX_TXN_OPS):
            await self._check(compared[start : start + MAX_TXN_OPS])
        revisions: builtins.list[int] = []
        for batch in batches:
            part = [ops[i] for i in batch]
            try:
                revision, _ = await self._apply(part, [encoded[i] for i in batch])
            except ConflictError as exc:
                raise PartialCommitError(exc.key, exc.expected, exc.actual, len(revisions)) from exc
            revisions += [revision] * len(part)
        return revisions

    async def revision(self) -> int:
        reply = await self._call("/v3/kv/range", {"key": wire.b64(self._layout.prefix.encode())})
        return wire.as_int(reply["header"]["revision"])

    def watch(
        self, from_revision: int, kinds: Collection[str] | None = None
    ) -> AsyncIterator[WatchEvent]:
        return self.watch_with_progress(from_revision, kinds, None)

    def watch_with_progress(
        self,
        from_revision: int,
        kinds: Collection[str] | None,
        progress: Callable[[int], None] | None,
    ) -> AsyncIterator[WatchEvent]:
        """`watch`, also calling `progress(R)` when etcd says every event up to revision R was
        sent (a progress notification, or events of other kinds in the range): in order with
        the events, so R is never reported before the events it covers were taken."""
        if self._closed:
            raise StoreClosedError("store is closed")
        if from_revision < 0:
            raise ValueError("from_revision must be >= 0")
        return self._watch(from_revision, None if kinds is None else frozenset(kinds), progress)

    def snapshot(self) -> EtcdSnapshot:
        """Reads at one revision: the first read's."""
        return EtcdSnapshot(self)

    async def grant_lease(self, ttl_seconds: float) -> int:
        if not ttl_seconds > 0:
            raise ValueError("a lease needs a positive TTL")
        # etcd counts whole seconds, and raises a TTL below its minimum (about 1.5 election
        # timeouts) to that minimum.
        reply = await self._call("/v3/lease/grant", {"TTL": str(math.ceil(ttl_seconds))})
        return wire.as_int(reply["ID"])

    async def keepalive(self, lease: int) -> None:
        reply = await self._call("/v3/lease/keepalive", {"ID": str(lease)})
        if wire.as_int(reply.get("result", reply).get("TTL")) <= 0:
            raise NotFoundError(f"lease {lease} does not exist or has expired")

    async def revoke(self, lease: int) -> None:
        await self._call("/v3/lease/revoke", {"ID": str(lease)})

    async def compact(self, revision: int) -> None:
        """Discard the history before `revision` (etcd's compaction; the embedded store keeps
        a fixed number of revisions instead)."""
        await self._call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for task in self._watch_tasks:
            task.cancel()
        if self._watch_tasks:
            await asyncio.wait(self._watch_tasks)
        await self._client.aclose()

    # --- internals ---

    async def _apply(
        self, ops: Sequence[Op], encoded: Sequence[bytes | None] | None = None
    ) -> tuple[int, builtins.list[Record | bool]]:
        check_ops(ops)
        if not ops:
            return await self.revision(), []
        if encoded is None:
            encoded = [wire.to_json(op.value) if isinstance(op, Put) else None for op in ops]
        reply = await self._call("/v3/kv/txn", wire.txn_body(self._layout, ops, encoded))
        if not reply.get("succeeded"):
            raise wire.first_conflict(ops, reply)
        revision = wire.as_int(reply["header"]["revision"])
        return revision, wire.txn_results(ops, reply, revision)

    async def _check(self, ops: Sequence[Op]) -> None:
        """ConflictError unless every op's compare holds now; writes nothing."""
        body = wire.txn_body(
            self._layout, ops, [b"{}" if isinstance(op, Put) else None for op in ops]
        )
        reply = await self._call("/v3/kv/txn", {**body, "success": []})
        if not reply.get("succeeded"):
            raise wire.first_conflict(ops, reply)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """`path` on the member that answered last, else the next. A read also moves on from
        a member that answers but cannot serve (stopping, or cut off from the leader); a
        write is not sent twice."""
        if self._closed:
            raise StoreClosedError("store is closed")
        failures = []
        count = len(self.endpoints)
        for step in range(count):
            index = (self._preferred + step) % count
            endpoint = self.endpoints[index]
            try:
                response = await self._client.post(endpoint + path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Not sent: safe to try the next member, a write included.
                failures.append(f"{endpoint}: {_reason(exc, self._target.tls)}")
                continue
            except (httpx.TransportError, ssl.SSLError) as exc:
                # A TLS alert may surface raw, when the server refuses our certificate late.
                reason = _reason(exc, self._target.tls)
                raise StoreUnavailableError(f"etcd at {endpoint}: {reason}") from exc
            try:
                reply = _reply(endpoint, response)
            except StoreUnavailableError as exc:
                if path not in _READS:
                    raise
                failures.append(str(exc))
                continue
            self._preferred = index
            return reply
        raise StoreUnavailableError("no etcd member answers: " + "; ".join(failures))

    async def _range(
        self, body: dict[str, Any], revision: int | None
    ) -> tuple[builtins.list[dict[str, Any]], int]:
        """A range's kvs, and the revision it read at; at `revision` when given."""
        if revision is not None:
            body = {**body, "revision": str(revision)}
        try:
            reply = await self._call("/v3/kv/range", body)
        except StoreError as exc:
            if revision is not None and "compacted" in str(exc):
                raise CompactedError(revision, revision) from exc
            raise
        return reply.get("kvs", []), wire.as_int(reply["header"]["revision"])

    async def _pinned_reads(self, keys: Sequence[Key], revision: int) -> builtins.list[Record]:
        """The records of `keys` as of `revision` (absent ones left out), in one transaction
        of reads per MAX_TXN_OPS keys."""
        found: builtins.list[Record] = []
        for start in range(0, len(keys), MAX_TXN_OPS):
            body = wire.pinned_reads_body(self._layout, keys[start : start + MAX_TXN_OPS], revision)
            try:
                reply = await self._call("/v3/kv/txn", body)
            except StoreError as exc:
                if "compacted" in str(exc):
                    raise CompactedError(revision, revision) from exc
                raise
            found += wire.pinned_reads_records(self._layout, reply)
        return found

    async def _watch(
        self,
        after: int,
        kinds: frozenset[str] | None,
        progress: Callable[[int], None] | None = None,
    ) -> AsyncIterator[WatchEvent]:
        queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        task = asyncio.create_task(self._follow(after, kinds, queue), name="store-etcd-watch")
        self._watch_tasks.add(task)
        task.add_done_callback(self._watch_tasks.discard)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, int):
                    if progress is not None:
                        progress(item)
                    continue
                for event in item:
                    yield event
        finally:
            task.cancel()

    async def _follow(
        self,
        after: int,
        kinds: frozenset[str] | None,
        queue: asyncio.Queue[_Delivery],
    ) -> None:
        backoff = _BACKOFF_FIRST_SECONDS
        try:
            while not self._closed:
                endpoint = self.endpoints[self._preferred % len(self.endpoints)]
                try:
                    async for result in self._stream(endpoint, after, kinds):
                        backoff = _BACKOFF_FIRST_SECONDS
                        if result.get("canceled"):
                            compacted = wire.as_int(result.get("compact_revision"))
                            if compacted:
                                # Watchable history starts at `compacted`.
                                queue.put_nowait(CompactedError(after, compacted - 1))
                                return
                            raise StoreError(f"etcd ended the watch: {result.get('cancel_reason')}")
                        raw = result.get("events", [])
                        if raw:
                            after = max(wire.as_int(e["kv"]["mod_revision"]) for e in raw)
                            events = wire.watch_events(self._layout, result, kinds)
                            queue.put_nowait(events if events else after)
                        elif not result.get("created"):
                            # A progress notification: every event up to here was sent.
                            after = max(after, wire.as_int(result["header"].get("revision")))
                            queue.put_nowait(after)
                except (httpx.TransportError, ssl.SSLError, StoreUnavailableError) as exc:
                    logger.warning("etcd watch on %s broke (%s); reconnecting", endpoint, exc)
                if self._closed:
                    return
                self._preferred += 1  # the next attempt tries another member
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
        except StoreError as exc:
            queue.put_nowait(exc)
        finally:
            queue.put_nowait(None)

    async def _stream(
        self, endpoint: str, after: int, kinds: frozenset[str] | None
    ) -> AsyncIterator[dict[str, Any]]:
        body = wire.watch_body(self._layout, after, kinds)
        timeout = httpx.Timeout(_TIMEOUT_SECONDS, read=None)
        async with self._client.stream(
            "POST", endpoint + "/v3/watch", json=body, timeout=timeout
        ) as response:
            if response.status_code != 200:
                _reply(
                    endpoint, httpx.Response(response.status_code, content=await response.aread())
                )
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                message = json.loads(line)
                if "error" in message:
                    raise _error(endpoint, message["error"])
                yield message["result"]


class EtcdSnapshot:
    """Reads pinned to one revision (`store.snapshot.PinnedReads`): the first read's header
    revision, which every later read names. A revision compacted meanwhile raises
    CompactedError: read again from a new snapshot."""

    def __init__(self, store: EtcdStore) -> None:
        self._store = store
        self.revision: int | None = None

    async def get(self, key: Key) -> Record | None:
        layout = self._store._layout
        kvs = await self._read({"key": wire.b64(layout.encode(key))})
        return wire.record(layout, kvs[0]) if kvs else None

    async def list(
        self, kind: str | None = None, namespace: str | None = None, *, keys_only: bool = False
    ) -> builtins.list[Record]:
        layout = self._store._layout
        kvs = await self._read(wire.range_body(layout, kind, namespace, keys_only))
        return wire.records(layout, kvs, namespace, keys_only)

    async def list_span(
        self, kinds: Collection[str], *, keys_only: bool = False
    ) -> builtins.list[Record]:
        """The records of every kind of `kinds`, sorted by key, in one range: where an agent
        reads all it serves from, where `list` would take one range a kind."""
        layout = self._store._layout
        kvs = await self._read(wire.span_body(layout, kinds, keys_only))
        wanted = frozenset(kinds)
        found = wire.records(layout, kvs, None, keys_only)
        return [r for r in found if r.key.kind in wanted]

    async def get_many(self, keys: Sequence[Key]) -> builtins.list[Record]:
        """The records of `keys` (absent ones left out), read in one round trip (per 128
        keys) at the snapshot's revision, which an earlier read must have set."""
        if self.revision is None:
            raise ValueError("get_many reads at the revision of an earlier read")
        return await self._store._pinned_reads(keys, self.revision) if keys else []

    async def _read(self, body: dict[str, Any]) -> builtins.list[dict[str, Any]]:
        kvs, revision = await self._store._range(body, self.revision)
        if self.revision is None:
            self.revision = revision
        return kvs


# What a watch's reader hands its consumer: events, a revision up to which everything was
# sent, the error that ended it, or None at its end.
_Delivery = builtins.list[WatchEvent] | int | BaseException | None


def _tls_context(target: EtcdTarget) -> ssl.SSLContext | bool:
    if not target.tls:
        return True
    try:
        context = ssl.create_default_context(cafile=str(target.ca) if target.ca else None)
        if target.cert is not None:
            context.load_cert_chain(str(target.cert), str(target.key))
    except (ssl.SSLError, OSError) as exc:
        raise StoreUrlError(f"--store TLS files: {exc}") from exc
    return context


def _reason(exc: Exception, tls: bool = False) -> str:
    text = str(exc) or str(exc.__cause__ or "") or type(exc).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return f"the member's certificate is not trusted (--store-ca): {text}"
    if "alert" in text.lower() or "certificate required" in text.lower():
        return f"the member refused our client certificate (--store-cert/--store-key): {text}"
    if tls and isinstance(exc, httpx.ReadError | httpx.RemoteProtocolError):
        # With TLS 1.3 a server that rejects the client certificate just closes the connection.
        return (
            f"the member closed the TLS connection ({text}); it may have refused our client "
            "certificate (--store-cert/--store-key)"
        )
    return text


def _reply(endpoint: str, response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError as exc:
        raise StoreError(f"etcd at {endpoint}: HTTP {response.status_code}, not JSON") from exc
    if response.status_code != 200 or ("error" in body and "header" not in body):
        raise _error(endpoint, body)
    if "error" in body.get("result", {}):  # a streamed call's one message
        raise _error(endpoint, body["result"])
    return dict(body)


def _error(endpoint: str, body: Any) -> StoreError:
    if not isinstance(body, dict):
        return StoreError(f"etcd at {endpoint}: {body}")
    message = body.get("message") or body.get("error") or "unknown error"
    code = body.get("code") or body.get("grpc_code")
    if code == _GRPC_NOT_FOUND:
        return NotFoundError(message)
    if code == _GRPC_UNAVAILABLE or any(
        sign in message for sign in ("no leader", "timed out", "closing", "leader changed")
    ):
        return StoreUnavailableError(f"etcd at {endpoint}: {message}")
    if "too many operations in txn" in message:
        return StoreError(
            f"etcd at {endpoint}: {message}: one transaction (an apply's documents and their "
            "statuses) may hold at most etcd's --max-txn-ops operations, 128 by default"
        )
    return StoreError(f"etcd at {endpoint}: {message}")
