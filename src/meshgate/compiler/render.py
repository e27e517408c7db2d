"""The IR to HAProxy's text: haproxy.cfg plus one file per map. Pure: returns strings."""

from __future__ import annotations

import operator
from collections.abc import Callable, Hashable
from dataclasses import fields
from functools import cache
from pathlib import PurePosixPath
from typing import Any, Generic, TypeVar

import jinja2

from meshgate.compiler import checks, ir, policies
from meshgate.compiler.rules import (
    backend_lines,
    balance_directive,
    check_lines,
    checker_server_options,
    frontend_rules,
    server_options,
    switching_rules,
)
from meshgate.compiler.tls_text import (
    CERTS_DIR,
    bind_options,
    certs_dir,
    crt_list_text,
    hsts_lines,
    redirect_location,
    server_tls_words,
)
from meshgate.stats.logline import POLLED_RING_BYTES, RING, log_formats
from meshgate.stats.sampling import KEEP_SCALE, KEEP_VAR

CONFIG_FILE = "haproxy.cfg"
MAPS_DIR = "maps"


T = TypeVar("T")
V = TypeVar("V")


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("meshgate.compiler", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # the output is HAProxy configuration, not HTML
    )


def _template(name: str = "haproxy.cfg.j2") -> jinja2.Template:
    return _environment().get_template(name)


class _Kept(Generic[T, V]):
    """What was made of each item in the last render, found by `key(item)`, and, with `same`,
    only for an item that would make the same. The item is kept with what was made of it,
    so an id in a key cannot be reused meanwhile: a key `id` found names that very object."""

    def __init__(
        self,
        key: Callable[[T], Hashable],
        same: Callable[[T, T], bool] | None = None,
    ) -> None:
        self._key = key
        self._same = same
        self._last: dict[Hashable, tuple[T, V]] = {}
        self._now: dict[Hashable, tuple[T, V]] = {}

    def get(self, item: T, make: Callable[[T], V]) -> V:
        key = self._key(item)
        found = self._now.get(key) or self._last.get(key)
        if found is None or (self._same is not None and not self._same(found[0], item)):
            found = (item, make(item))
        self._now[key] = found
        return found[1]

    def end(self) -> None:
        """Keep only what this render used."""
        self._last, self._now = self._now, {}


_HEAD_FIELDS = tuple(f.name for f in fields(ir.Backend) if f.name != "servers")
_head_values = operator.attrgetter(*_HEAD_FIELDS)


def _same_head(old: ir.Backend, new: ir.Backend) -> bool:
    # A tuple comparison looks at identity first: the same objects are found equal at once.
    return bool(_head_values(old) == _head_values(new))


class RenderMemo:
    """What the last render made, for the writer of the run directory to render again only
    what changed. Made for one run directory: other settings start it over.

    - The rules of each frontend, found by identity (the compiler reuses the frontends a
      change leaves alone): an instance registered at 1,000 gateways renders no rules.
    - The head of each backend section (all but its server lines), found by name and equal
      fields: such a registration gives 1,000 backends new servers and nothing else.
    - The server lines, found by equal servers and settings (`checks.shared_servers`): the
      routes to one service have the same ones, made once for all of them.

    Rendering those 1,000 sections whole took 48 ms, in a thread holding the interpreter lock
    the event loop needs; kept whole besides, they were twice the memory of the heads."""

    def __init__(self) -> None:
        self.settings: ir.Settings | None = None
        self._start_over()

    def _start_over(self) -> None:
        # As the block of text it renders to: 100,000 gateways' rules as lines were 700,000
        # strings, each with its own header (about 40 MB more than their text).
        self.frontend_rules = _Kept[ir.Frontend, str](id)
        self.backend_heads = _Kept[ir.Backend, str](lambda b: b.name, _same_head)
        self.server_lines = _Kept[ir.Backend, str](checks.shared_servers)

    def start(self, settings: ir.Settings) -> None:
        if settings != self.settings:
            self.settings = settings
            self._start_over()

    def end(self) -> None:
        for kept in (self.frontend_rules, self.backend_heads, self.server_lines):
            kept.end()


def maps_dir(settings: ir.Settings) -> str:
    return str(PurePosixPath(settings.run_dir) / MAPS_DIR)


def server_endpoint(server: ir.Server) -> str:
    return f"{server.address}:{server.port}"


def _server_options(backend: ir.Backend, server: ir.Server, certs: str) -> str:
    words = [server_options(backend, server, checks.tracked(backend, server))]
    if backend.tls is not None:
        words += server_tls_words(backend.tls, certs)
    return " ".join(words)


def _checker_lines(checker: checks.Checker) -> list[str]:
    """A checker backend's directives after its mode line (see compiler.checks)."""
    profile = checker.profile
    lines = []
    if profile.timeout_connect_ms:
        lines.append(f"timeout connect {profile.timeout_connect_ms}ms")
    return lines + check_lines(profile.health)


def _checker_server_options(
    profile: checks.Profile, endpoint: checks.Endpoint | None, certs: str
) -> str:
    """A checker server's options; `endpoint` None for a spare (no network namespace)."""
    words = [checker_server_options(profile.health, endpoint.netns if endpoint else None)]
    if profile.tls is not None:
        words += server_tls_words(profile.tls, certs)
    return " ".join(words)


def _indented(lines: list[str]) -> str:
    """Lines as the text of a section's body."""
    return "".join(f"    {line}\n" for line in lines)


def render_config(dataplane: ir.DataPlane, memo: RenderMemo | None = None) -> str:
    """haproxy.cfg for `dataplane`; `memo` (see `RenderMemo`) spares rendering again what an
    earlier call with the same memo rendered."""
    memo = memo if memo is not None else RenderMemo()
    memo.start(dataplane.settings)
    directory = maps_dir(dataplane.settings)
    certs = certs_dir(dataplane.settings)
    http_format, tcp_format = log_formats(dataplane.settings.log_details, dataplane.settings.flows)
    common: dict[str, Any] = {
        "settings": dataplane.settings,
        "certs_dir": certs,
        "state_ring": ir.STATE_RING,
    }
    backend_template = _template("backend.cfg.j2")
    backend_helpers: dict[str, Any] = {
        **common,
        "backend_lines": backend_lines,
        "policy_lines": lambda backend: policies.backend_rules(backend, directory),
        "balance": balance_directive,
        "decides_own_states": checks.decides_own_states,
    }

    def head(backend: ir.Backend) -> str:
        return backend_template.render(backend=backend, **backend_helpers)

    def server_lines(backend: ir.Backend) -> str:
        return "".join(
            f"    server {server.name} {server_endpoint(server)} "
            f"{_server_options(backend, server, certs)}\n"
            for server in backend.servers
        )

    def backend_section(backend: ir.Backend) -> str:
        return memo.backend_heads.get(backend, head) + memo.server_lines.get(backend, server_lines)

    text = _template().render(
        **common,
        run_dir=dataplane.settings.run_dir,
        frontends=dataplane.frontends,
        backends=dataplane.backends,
        backend_section=backend_section,
        checkers=checks.checkers(dataplane.backends),
        checker_lines=_checker_lines,
        checker_server_options=lambda profile, endpoint: _checker_server_options(
            profile, endpoint, certs
        ),
        switching_rules=switching_rules,
        frontend_rules=lambda frontend: memo.frontend_rules.get(
            frontend, lambda f: _indented(frontend_rules(f, directory))
        ),
        policy_sections=policies.sections(dataplane),
        bind_options=lambda frontend: bind_options(frontend, certs),
        hsts_lines=hsts_lines,
        redirects=dataplane.redirects,
        redirect_location=redirect_location,
        http_log_format=http_format,
        tcp_log_format=tcp_format,
        keep_var=KEEP_VAR,
        keep_scale=KEEP_SCALE,
        ring=RING,
        polled_ring_bytes=POLLED_RING_BYTES,
    )
    memo.end()
    return text


def render_files(
    dataplane: ir.DataPlane, *, config: str | None = None, memo: RenderMemo | None = None
) -> dict[str, str]:
    """File name (relative to the run dir) to content: the config first, then the maps, then
    the crt-lists and certificate files (which hold private keys: see `is_secret`). `config`:
    the configuration's text, when the caller knows it is unchanged; `memo`: see
    `render_config`."""
    files = {CONFIG_FILE: config if config is not None else render_config(dataplane, memo)}
    for map_file in dataplane.maps:
        files[f"{MAPS_DIR}/{map_file.name}"] = map_file.text()
    certs = certs_dir(dataplane.settings)
    for frontend in dataplane.frontends:
        if frontend.tls is not None:
            files[f"{CERTS_DIR}/{frontend.tls.crt_list}"] = crt_list_text(frontend.tls, certs)
    for pem_file in (*dataplane.certificates, *dataplane.ca_files):
        files[f"{CERTS_DIR}/{pem_file.name}"] = pem_file.text
    return files


def is_secret(name: str) -> bool:
    """Whether a rendered file (by its name relative to the run dir) holds a private key: it
    is written readable by its owner only, and never printed."""
    return (
        name.startswith(f"{CERTS_DIR}/") and name.endswith(".pem") and not name.endswith(".ca.pem")
    )
