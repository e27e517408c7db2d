"""HAProxy's messages parsed into levels, and the node's log formats."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from meshgate.haproxy.messages import echoes_a_command, parse_message
from meshgate.logconfig import configure_logging


def test_haproxy_messages_carry_their_level_and_pid() -> None:
    alert = parse_message("[ALERT]    (11093) : config : parsing [h.cfg:10] : 'http-check send'")
    assert (alert.level, alert.pid) == (logging.ERROR, 11093)
    assert alert.text == "config : parsing [h.cfg:10] : 'http-check send'"
    notice = parse_message("[NOTICE]   (7) : haproxy version is 2.6.12")
    assert (notice.level, notice.text) == (logging.INFO, "haproxy version is 2.6.12")
    warning = parse_message("[WARNING]  (7) : Server b/s1 is DOWN, reason: Layer7 wrong status.")
    assert warning.level == logging.WARNING
    # A line without the prefix continues the message before it, at its level.
    continued = parse_message("   | a config excerpt", logging.ERROR)
    assert (continued.level, continued.text, continued.pid) == (
        logging.ERROR,
        "| a config excerpt",
        None,
    )


def test_messages_echoing_a_runtime_command_are_told_apart_without_parsing() -> None:
    assert echoes_a_command("[NOTICE]   (7) : CLI : 'server b/r0' : New server registered.")
    assert echoes_a_command("[WARNING]  (7) : CLI : Server b/r0 is UP/READY (leaving forced ma")
    assert echoes_a_command("[NOTICE]   (7) : CLI : Server deleted.")
    # What a check, a reload or the configuration says is not an echo; nor is an alert.
    assert not echoes_a_command("[WARNING]  (7) : Server b/s1 is DOWN, reason: Layer7 wrong st")
    assert not echoes_a_command("[WARNING]  (7) : Proxy default.gw stopped (cumulated conns: FE")
    assert not echoes_a_command("[ALERT]    (7) : CLI : backend 'b' has no server available!")
    assert not echoes_a_command("[ALERT]    (7) : config : parsing [h.cfg:10] : 'CLI : x'")
    assert not echoes_a_command("   | CLI : a config excerpt")


@pytest.fixture
def restored() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers, root.level = handlers, level
        structlog.reset_defaults()


def test_json_format_renders_structlog_and_stdlib_lines_alike(restored: None) -> None:
    out = io.StringIO()
    configure_logging("json", "info", out)
    structlog.get_logger("meshgate.agent").info("revision 7 applied", how="runtime")
    logging.getLogger("haproxy").warning("%s", "Server b/s1 is DOWN", extra={"pid": 12})
    structlog.get_logger("meshgate.stats").debug("stats poll failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["logger"], e["level"], e["event"]) for e in lines] == [
        ("meshgate.agent", "info", "revision 7 applied"),
        ("haproxy", "warning", "Server b/s1 is DOWN"),
    ]
    assert lines[0]["how"] == "runtime" and lines[1]["pid"] == 12 and "time" in lines[0]


def test_text_format_is_one_line_per_event(restored: None) -> None:
    out = io.StringIO()
    configure_logging("text", "warning", out)
    structlog.get_logger("meshgate.agent").info("revision 7 applied")
    structlog.get_logger("meshgate.agent").warning("gateway rejected", gateway="default/a",
                                                   reason="port 80 in use")  # fmt: skip
    (line,) = out.getvalue().splitlines()
    assert line.split(" ", 1)[1] == (
        "warning meshgate.agent: gateway rejected gateway=default/a reason='port 80 in use'"
    )
