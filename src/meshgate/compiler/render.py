"""The IR to HAProxy's text: haproxy.cfg plus one file per map. Pure: returns strings."""

from __future__ import annotations

from functools import cache
from pathlib import PurePosixPath

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


@cache
def _template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("meshgate.compiler", "templates"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # the output is HAProxy configuration, not HTML
    )
    return environment.get_template("haproxy.cfg.j2")


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


def render_config(dataplane: ir.DataPlane) -> str:
    directory = maps_dir(dataplane.settings)
    certs = certs_dir(dataplane.settings)
    http_format, tcp_format = log_formats(dataplane.settings.log_details, dataplane.settings.flows)
    return _template().render(
        run_dir=dataplane.settings.run_dir,
        settings=dataplane.settings,
        frontends=dataplane.frontends,
        backends=dataplane.backends,
        checkers=checks.checkers(dataplane.backends),
        checker_lines=_checker_lines,
        checker_server_options=lambda profile, endpoint: _checker_server_options(
            profile, endpoint, certs
        ),
        switching_rules=switching_rules,
        frontend_rules=lambda frontend: frontend_rules(frontend, directory),
        backend_lines=backend_lines,
        policy_lines=lambda backend: policies.backend_rules(backend, directory),
        policy_sections=policies.sections(dataplane),
        balance=balance_directive,
        server_options=lambda backend, server: _server_options(backend, server, certs),
        endpoint=server_endpoint,
        bind_options=lambda frontend: bind_options(frontend, certs),
        hsts_lines=hsts_lines,
        redirects=dataplane.redirects,
        redirect_location=redirect_location,
        certs_dir=certs,
        http_log_format=http_format,
        tcp_log_format=tcp_format,
        keep_var=KEEP_VAR,
        keep_scale=KEEP_SCALE,
        ring=RING,
        state_ring=ir.STATE_RING,
        polled_ring_bytes=POLLED_RING_BYTES,
    )


def render_files(dataplane: ir.DataPlane, *, config: str | None = None) -> dict[str, str]:
    """File name (relative to the run dir) to content: the config first, then the maps, then
    the crt-lists and certificate files (which hold private keys: see `is_secret`). `config`:
    the configuration's text, when the caller knows it is unchanged."""
    files = {CONFIG_FILE: config if config is not None else render_config(dataplane)}
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
