"""One log for the node: meshgate's own lines (structlog and stdlib loggers) and HAProxy's
messages, in one format (`text` for people, `json` for collectors), filtered by one level.

Everything goes through the stdlib root logger to stderr, so a library's warning and HAProxy's
alert end up shaped like meshgate's own lines, and `--log-level` filters all of them alike.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal, TextIO

import structlog

LogFormat = Literal["text", "json"]
LEVELS = ("debug", "info", "warning", "error")


def render_text(logger: object, method: str, event: structlog.types.EventDict) -> str:
    """`TIME LEVEL LOGGER: EVENT key=value ...`, one line (a traceback follows on its own)."""
    fields = dict(event)
    head = (
        f"{fields.pop('time', '')} {fields.pop('level', method):<7} "
        f"{fields.pop('logger', '')}: {fields.pop('event', '')}"
    )
    trace = fields.pop("exception", None)
    rest = "".join(f" {key}={value!r}" if isinstance(value, str) and " " in value
                   else f" {key}={value}" for key, value in fields.items())  # fmt: skip
    return head + rest + (f"\n{trace}" if trace else "")


def configure_logging(
    log_format: LogFormat = "text", level: str = "info", stream: TextIO | None = None
) -> None:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if log_format == "json" else render_text
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level.upper())
    # uvicorn's own access lines would repeat what the access log and stats already say.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
