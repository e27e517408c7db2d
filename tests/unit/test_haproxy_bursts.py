"""HAProxy's messages of one kind in a burst are logged once, then summed up."""

from __future__ import annotations

import logging

from meshgate.haproxy.bursts import LONGEST_S, QUIET_S, Bursts, kind_of
from meshgate.haproxy.messages import Message

WARN = logging.WARNING


def up(backend: str, server: str = "r0") -> Message:
    text = f"CLI : Server {backend}/{server} is UP/READY (leaving forced maintenance)."
    return Message(WARN, text)


def added(backend: str) -> Message:
    return Message(logging.INFO, f"CLI : 'server {backend}/r0' : New server registered.", 42)


def test_names_and_numbers_do_not_make_a_kind() -> None:
    assert kind_of(up("default.gw0001.svc.7ad9b9")) == kind_of(up("default.gw0999.svc.a0048a"))
    stopped = "Proxy default.gw0001.svc.7ad9b9 stopped (cumulated conns: FE: 0, BE: 12)."
    other = "Proxy default.gw0002.svc.8ad9b9 stopped (cumulated conns: FE: 3, BE: 0)."
    assert kind_of(Message(WARN, stopped)) == kind_of(Message(WARN, other))


def test_a_burst_finds_the_same_kinds_as_the_pattern_over_each_whole_text() -> None:
    texts = [
        "CLI : Server a.b/r0 is UP/READY (leaving forced maintenance).",
        "CLI : Server c.d/i1 is UP/READY (leaving forced maintenance).",
        "CLI : Server x y/r0 is UP/READY (leaving forced maintenance).",  # a space: not a name
        "CLI : Server 'q/r0 is UP/READY (leaving forced maintenance).",
        "CLI : Server /r0 is UP/READY (leaving forced maintenance).",
        "CLI : 'server e.f/r0' : New server registered.",
        "CLI : 'server e f/r0' : New server registered.",
        "Proxy default.gw1 stopped (cumulated conns: FE: 0, BE: 12).",
        "Proxy default gw1 stopped (cumulated conns: FE: 0, BE: 12).",
        "Server b/s is going DOWN for maintenance. 0 active and 1 backup servers left.",
        "Server b/s is going DOWN for maintenance. 10 active and 0 backup servers left.",
        "Server deleted.",
        "12 servers",
        "1x2 servers",
    ]
    bursts = Bursts()
    for level in (WARN, logging.INFO):
        for round_ in range(3):
            for text in texts:
                message = Message(level, text)
                assert bursts._kind_of(message) == kind_of(message), (round_, text)


def test_a_different_reason_or_level_is_another_kind() -> None:
    down = 'Server b/s is DOWN, reason: Layer4 connection problem, info: "Connection refused"'
    timeout = "Server b/s is DOWN, reason: Layer4 timeout"
    assert kind_of(Message(WARN, down)) != kind_of(Message(WARN, timeout))
    assert kind_of(Message(WARN, down)) != kind_of(Message(logging.ERROR, down))


def test_a_burst_of_interleaved_kinds_is_one_line_each_then_one_summary_each() -> None:
    bursts = Bursts()
    logged: list[Message] = []
    for index in range(1000):
        logged += bursts.feed(added(f"b{index}"), now=0.001 * index)
        logged += bursts.feed(up(f"b{index}"), now=0.001 * index)
    assert [m.text for m in logged] == [added("b0").text, up("b0").text]
    assert not bursts.due(1.0)
    assert bursts.due(1.0 + QUIET_S)
    summary = bursts.flush()
    assert [m.text for m in summary] == [
        f"999 more like it, the last: {added('b999').text}",
        f"999 more like it, the last: {up('b999').text}",
    ]
    assert summary[0].pid == 42 and summary[1].level == WARN
    assert not bursts.open() and bursts.flush() == []


def test_a_message_after_the_burst_is_logged_again_with_the_summary_first() -> None:
    bursts = Bursts()
    assert bursts.feed(up("b0"), now=0.0) == [up("b0")]
    assert bursts.feed(up("b1"), now=0.1) == []
    later = bursts.feed(up("b2"), now=0.1 + QUIET_S)
    assert [m.text for m in later] == [f"1 more like it, the last: {up('b1').text}", up("b2").text]


def test_a_steady_stream_is_summed_up_at_least_every_longest_s() -> None:
    bursts = Bursts()
    logged: list[Message] = []
    now = 0.0
    while now < 2.5 * LONGEST_S:
        logged += bursts.feed(up("b"), now=now)
        now += 0.01
    summaries = [m for m in logged if "more like it" in m.text]
    assert len(summaries) == 2


def test_a_lone_message_leaves_nothing_to_sum_up() -> None:
    bursts = Bursts()
    assert bursts.feed(up("b0"), now=0.0) == [up("b0")]
    assert bursts.flush() == []


def test_echoes_of_runtime_commands_are_counted_and_said_once_when_the_burst_ends() -> None:
    bursts = Bursts()
    logged: list[Message] = []
    for index in range(2000):
        logged += bursts.echo(now=0.0001 * index)
    logged += bursts.feed(up("b0"), now=0.2)
    assert logged == [up("b0")]
    assert not bursts.due(0.3) and bursts.due(0.3 + QUIET_S)
    later = bursts.echo(now=0.3 + QUIET_S)  # the next burst's first echo ends this one
    assert [(m.level, m.text) for m in later] == [
        (logging.INFO, "messages about runtime commands not shown: 2000")
    ]
    assert [m.text for m in bursts.flush()] == ["messages about runtime commands not shown: 1"]
    assert bursts.flush() == []
