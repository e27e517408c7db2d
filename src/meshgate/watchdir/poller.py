"""`meshgate up --watch DIR`: apply what the manifest files in DIR say, as they change.

The directory is polled (every second by default): a file whose size or modification time
changed is read and hashed, and only a changed hash counts, so touching a file does nothing.
What to write or delete is decided by `plan`; each file's change is checked like an API write
(port clashes with the stored gateways) and committed in one store transaction, so a file is
applied whole or not at all. Which file defined what is kept in the store, so a file removed
while meshgate was down still deletes its resources at the next start.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from meshgate.api.admission import batch_conflicts, stored_gateways
from meshgate.api.resources import status_key
from meshgate.discovery import registry
from meshgate.errors import ValidationFailed
from meshgate.model import ManifestError, load_documents, parse_text, resource_key, to_document
from meshgate.store import ConflictError, Delete, Key, Put, Store
from meshgate.watchdir.plan import FileChange, Owned, Parsed, ResourceKey, plan_changes

log = structlog.get_logger("meshgate.watch")
SUFFIXES = (".yaml", ".yml", ".json")
STATE_KIND = "watched-files"
STATE_NAMESPACE = "default"
MAX_FILE_BYTES = 8 * 1024 * 1024


@dataclass
class ScanResult:
    applied: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    rejected: dict[str, list[str]] = field(default_factory=dict)


def manifest_names(directory: Path) -> list[str]:
    """The manifest files in `directory` (not below it), by name. Hidden files are skipped:
    editors save through them (`.x.yaml.swp`, `.#x.yaml`)."""
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return []
    return sorted(
        p.name
        for p in entries
        if p.suffix in SUFFIXES and not p.name.startswith(".") and p.is_file()
    )


def parse_file(path: Path, digest: str, data: bytes, *, allow_raw_acl: bool) -> Parsed:
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return Parsed(digest, errors=(f"{path}: the file is not UTF-8 text",))
    try:
        resources = load_documents(parse_text(text, str(path)), allow_raw_acl=allow_raw_acl)
    except ManifestError as exc:
        return Parsed(digest, errors=tuple(exc.lines()))
    return Parsed(digest, resources=tuple(resources))


class ManifestDirWatcher:
    def __init__(
        self,
        store: Store,
        directory: Path,
        *,
        allow_raw_acl: bool = False,
        interval_s: float = 1.0,
    ) -> None:
        self.store = store
        self.directory = directory.resolve()
        self.allow_raw_acl = allow_raw_acl
        self.interval_s = interval_s
        self._state_key = Key(STATE_KIND, STATE_NAMESPACE, str(self.directory))
        self._owned: dict[str, Owned] | None = None
        self._stat: dict[str, tuple[int, int, str]] = {}  # name -> (mtime_ns, size, digest)
        self._rejected: dict[str, str] = {}  # name -> digest that was rejected

    async def run(self) -> None:
        log.info("watching manifests", directory=str(self.directory))
        while True:
            try:
                await self.scan()
            except (OSError, ValidationFailed) as exc:
                log.error("manifest scan failed", error=str(exc))
            await asyncio.sleep(self.interval_s)

    async def scan(self) -> ScanResult:
        """One look at the directory; applies what changed."""
        owned = await self._load_owned()
        names = manifest_names(self.directory)
        parsed: dict[str, Parsed] = {}
        for name in names:
            digest = self._digest(name)
            if digest is None:
                continue
            previous = owned.get(name)
            if (previous and previous.digest == digest) or self._rejected.get(name) == digest:
                continue
            path = self.directory / name
            try:
                data = path.read_bytes()
            except OSError:
                continue  # removed since it was listed: the next scan sees it gone
            # Hashed again from what is parsed, so the digest kept is that of the content used.
            digest = hashlib.sha256(data).hexdigest()
            parsed[name] = parse_file(path, digest, data, allow_raw_acl=self.allow_raw_acl)
        plan = plan_changes(owned, names, parsed)
        result = ScanResult()
        for rejection in plan.rejections:
            self._reject(result, rejection.path, rejection.digest, list(rejection.errors))
        clashed: list[str] = []
        for change in plan.changes:
            problems = await self._apply(change)
            if problems:
                assert change.digest is not None  # a removal has nothing to clash
                self._reject(result, change.path, change.digest, problems)
                clashed.append(change.path)
                continue
            self._rejected.pop(change.path, None)
            if change.digest is None:
                owned.pop(change.path, None)
                result.removed.append(change.path)
                log.info("manifest file removed", file=change.path, deleted=len(change.deletes))
            else:
                keys = frozenset(resource_key(r) for r in change.resources)
                owned[change.path] = Owned(change.digest, keys)
                result.applied.append(change.path)
                log.info("manifest file applied", file=change.path, resources=len(keys))
        if result.applied or result.removed:
            await self._save_owned(owned)
            # A file refused for clashing with the store may fit now that others changed.
            for name in clashed:
                self._rejected.pop(name, None)
        return result

    def _reject(self, result: ScanResult, name: str, digest: str, errors: list[str]) -> None:
        self._rejected[name] = digest
        result.rejected[name] = errors
        log.warning("manifest file rejected; nothing changed", file=name, errors=errors)

    def _digest(self, name: str) -> str | None:
        """The content hash, computed again only when size or modification time changed."""
        path = self.directory / name
        try:
            info = path.stat()
            cached = self._stat.get(name)
            if cached and cached[:2] == (info.st_mtime_ns, info.st_size):
                return cached[2]
            if info.st_size > MAX_FILE_BYTES:
                log.warning("manifest file too large; ignored", file=name, bytes=info.st_size)
                return None
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            return None  # removed between listing and reading: the next scan sees it gone
        self._stat[name] = (info.st_mtime_ns, info.st_size, digest)
        return digest

    async def _apply(self, change: FileChange) -> list[str]:
        """Write one file's change in one transaction; the problems that stopped it, if any."""
        deletes = set(change.deletes)
        others = [
            g
            for g in stored_gateways(await self.store.list("gateways"))
            if resource_key(g) not in deletes
        ]
        clashes = batch_conflicts(list(enumerate(change.resources)), others)
        if clashes:
            return [
                f"{change.path}: {change.resources[i].kind} {change.resources[i].name}: {p}"
                for i, p in clashes
            ]
        ops: list[Put | Delete] = []
        for resource in change.resources:
            key = Key(*resource_key(resource))
            document = to_document(resource)
            current = await self.store.get(key)
            if current is None or current.value != document:
                expected = 0 if current is None else current.revision
                ops.append(Put(key, document, expect_revision=expected))
        for kind, namespace, name in sorted(deletes):
            ops += await self._deletion(Key(kind, namespace, name))
        try:
            await self.store.commit(ops)
        except ConflictError as exc:
            return [f"{change.path}: changed meanwhile through the API ({exc}); will retry"]
        return []

    async def _deletion(self, key: Key) -> list[Put | Delete]:
        current = await self.store.get(key)
        if current is None:
            return []
        ops: list[Put | Delete] = [
            Delete(key, expect_revision=current.revision),
            Delete(status_key(key)),
        ]
        if key.kind == "services":
            ops += [
                Delete(r.key)
                for r in await registry.registered_for(self.store, key.namespace, key.name)
            ]
        return ops

    async def _load_owned(self) -> dict[str, Owned]:
        if self._owned is None:
            record = await self.store.get(self._state_key)
            files: dict[str, Any] = (record.value.get("files") or {}) if record else {}
            self._owned = {
                name: Owned(
                    str(entry.get("digest", "")),
                    frozenset(_key(k) for k in entry.get("keys", []) if len(k) == 3),
                )
                for name, entry in files.items()
            }
        return self._owned

    async def _save_owned(self, owned: dict[str, Owned]) -> None:
        files = {
            name: {"digest": state.digest, "keys": sorted(list(k) for k in state.keys)}
            for name, state in owned.items()
        }
        await self.store.put(self._state_key, {"files": files})


def _key(parts: list[str]) -> ResourceKey:
    return (str(parts[0]), str(parts[1]), str(parts[2]))
