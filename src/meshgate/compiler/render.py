"""The IR to HAProxy's text: haproxy.cfg plus one file per map. Pure: returns strings."""

from __future__ import annotations

from functools import cache
from pathlib import PurePosixPath

import jinja2

from meshgate.compiler import ir
from meshgate.compiler.rules import (
    CHOSEN,
    backend_lines,
    balance_directive,
    frontend_rules,
    server_options,
)
from meshgate.stats.logline import HTTP_LOG_FORMAT, TCP_LOG_FORMAT

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


def render_config(dataplane: ir.DataPlane) -> str:
    directory = maps_dir(dataplane.settings)
    return _template().render(
        run_dir=dataplane.settings.run_dir,
        settings=dataplane.settings,
        frontends=dataplane.frontends,
        backends=dataplane.backends,
        chosen=CHOSEN,
        frontend_rules=lambda frontend: frontend_rules(frontend, directory),
        backend_lines=backend_lines,
        balance=balance_directive,
        server_options=server_options,
        endpoint=server_endpoint,
        http_log_format=HTTP_LOG_FORMAT,
        tcp_log_format=TCP_LOG_FORMAT,
    )


def render_files(dataplane: ir.DataPlane) -> dict[str, str]:
    """File name (relative to the run dir) to content: the config first, then the maps."""
    files = {CONFIG_FILE: render_config(dataplane)}
    for map_file in dataplane.maps:
        files[f"{MAPS_DIR}/{map_file.name}"] = map_file.text()
    return files
