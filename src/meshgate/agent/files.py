"""The run directory's files: written atomically, and only those whose content changed.

A runtime change at a thousand gateways changes a map or a few server lines, but rendering and
writing the whole 10 MB configuration took most of the pass. `RunFiles` keeps what it last wrote:
the configuration is rendered again only when a part it is made of changed (the compiler reuses
unchanged frontends and backends, so identity tells), and a file is written only when its text
differs from what was last written there. It keeps a digest of each file, not its text: at
100,000 gateways the configuration alone is 200 MB.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from meshgate.compiler import CONFIG_FILE, ir, render_files
from meshgate.compiler.render import RenderMemo
from meshgate.compiler.tls_text import CERTS_DIR


def write_files(directory: Path, files: dict[str, str]) -> None:
    """Write each file atomically (rename), so HAProxy never reads a half-written one.

    Files under certs/ hold private keys: the directory is its owner's alone and each file is
    created with mode 0600 before any byte is written to it.
    """
    for relative, content in files.items():
        path = directory / relative
        secret = relative.startswith(f"{CERTS_DIR}/")
        path.parent.mkdir(mode=0o700 if secret else 0o777, parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.tmp")
        if secret:
            temporary.unlink(missing_ok=True)
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(content)
        else:
            temporary.write_text(content)
        os.replace(temporary, path)


def prune_certificates(directory: Path, files: dict[str, str]) -> None:
    """Delete certificate files no longer in use, so no private key outlives its resource on
    disk. HAProxy has what it serves in memory; the files only matter to the next reload."""
    certs = directory / CERTS_DIR
    if not certs.is_dir():
        return
    for path in certs.iterdir():
        if f"{CERTS_DIR}/{path.name}" not in files:
            path.unlink(missing_ok=True)


def _same_config(old: ir.DataPlane, new: ir.DataPlane) -> bool:
    """Whether haproxy.cfg renders the same for both: its parts are equal, reused objects
    compared by identity (map contents, certificates and CA files live in files of their own)."""
    return (
        old.settings == new.settings
        and old.redirects == new.redirects
        and _same_items(old.frontends, new.frontends)
        and _same_items(old.backends, new.backends)
    )


def _same_items(old: tuple[object, ...], new: tuple[object, ...]) -> bool:
    return len(old) == len(new) and all(a is b or a == b for a, b in zip(old, new, strict=True))


def _digest(text: str) -> bytes:
    # By the megabyte: encoding 200 MB of configuration at once would hold a second copy.
    digest = hashlib.blake2b(digest_size=16)
    for start in range(0, len(text), 1 << 20):
        digest.update(text[start : start + (1 << 20)].encode())
    return digest.digest()


class RunFiles:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._written: dict[str, bytes] = {}  # relative path -> digest of the text written there
        self._rendered: ir.DataPlane | None = None
        self._memo = RenderMemo()  # only the frontends and backends that changed are rendered

    def hold(self, dataplane: ir.DataPlane) -> bool:
        """Whether the directory already holds exactly `dataplane`'s files (as an earlier
        meshgate left them); if so they count as written."""
        files = render_files(dataplane, memo=self._memo)
        for name, text in files.items():
            try:
                if (self.directory / name).read_text() != text:
                    return False
            except OSError:
                return False
        self._written = {name: _digest(text) for name, text in files.items()}
        self._rendered = dataplane
        return True

    def write(self, dataplane: ir.DataPlane) -> None:
        """Make the directory hold `dataplane`'s files; delete certificates no longer used."""
        previous = self._rendered
        same = previous is not None and _same_config(previous, dataplane)
        # An unchanged configuration is not rendered: its text is left out and its digest kept.
        files = render_files(dataplane, config="" if same else None, memo=self._memo)
        digests = {name: _digest(text) for name, text in files.items()}
        if same:
            digests[CONFIG_FILE] = self._written[CONFIG_FILE]
        changed = {name: files[name] for name, d in digests.items() if self._written.get(name) != d}
        write_files(self.directory, changed)
        prune_certificates(self.directory, files)
        self._written = digests
        self._rendered = dataplane

    def digest(self) -> str:
        """A short hash of the files last written (configuration, maps, certificates): the
        same on every node that runs the same thing. Made of each file's digest, taken when
        it was written, so asking after every pass costs little."""
        total = hashlib.sha256()
        for name in sorted(self._written):
            total.update(f"{name}\0{self._written[name].hex()}\n".encode())
        return "sha256:" + total.hexdigest()[:16]
