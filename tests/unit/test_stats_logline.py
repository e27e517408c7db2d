"""The request-log line: the formats HAProxy is given, and lines HAProxy 2.6 wrote with them."""

from __future__ import annotations

import pytest

from meshgate.compiler import ir
from meshgate.stats import logline
from meshgate.stats.accesslog import entry

# Captured from HAProxy 2.6.12 running configurations meshgate rendered (ring, raw format).
HTTP_OK = b"17343 default.gw.s1.3116af 127.0.0.1:18101 200 0 601 602 0 169 92 -- 127.0.0.1 GET /"
HTTP_503 = b"17343 default.gw.s1.3116af 127.0.0.1:18101 503 0 0 0 0 187 93 -- 127.0.0.1 GET /"
NO_SERVER = b"17343 default.nothing.dead.de2162 <NOSRV> 503 -1 -1 0 -1 217 82 SC 127.0.0.1 GET /"
TCP = b"17343 default.tcpgw.s1.b2b26f 127.0.0.1:18101 - 0 - 1 1 171 68 -- 127.0.0.1"
COMPACT_OK = b"17064 default.gw.s1.3116af 127.0.0.1:18101 200 0 605 606"
COMPACT_NO_SERVER = b"17064 default.nothing.dead.de2162 <NOSRV> 503 -1 -1 0"
COMPACT_TCP = b"17064 default.tcpgw.s1.b2b26f 127.0.0.1:18101 - 0 - 5"
STATE_CHANGE = (
    b"Server default.gw.dead.b2282e/127.0.0.1:18109 is DOWN, reason: Layer4 connection problem,"
    b' info: "Connection refused", check duration: 0ms. 0 active and 0 backup servers left.'
)
NO_BACKEND = b"backend default.gw.dead.b2282e has no server available!"


@pytest.mark.parametrize("detailed", [False, True])
def test_the_formats_put_the_fields_where_the_parser_reads_them(detailed: bool) -> None:
    http_format, tcp_format = logline.log_formats(detailed)
    if not detailed:
        # Read from the ring: marked, and the mark taken off before parsing.
        assert http_format.startswith(logline.MARK) and tcp_format.startswith(logline.MARK)
        http_format = http_format.removeprefix(logline.MARK)
        tcp_format = tcp_format.removeprefix(logline.MARK)
    http, tcp = http_format.split(" "), tcp_format.split(" ")
    assert len(http) in logline.SHAPES and len(tcp) in logline.SHAPES
    assert http[logline.PID] == tcp[logline.PID] == "%pid"
    assert http[logline.BACKEND] == tcp[logline.BACKEND] == "%b"
    assert http[logline.SERVER] == tcp[logline.SERVER] == "%s"
    assert http[logline.STATUS] == "%ST"
    assert http[logline.CONNECT] == tcp[logline.CONNECT] == "%Tc"
    assert (http[logline.RESPONSE], http[logline.TOTAL]) == ("%Tr", "%Ta")
    assert tcp[logline.TOTAL] == "%Tt"
    if detailed:
        assert (len(http), len(tcp)) == (logline.FIELDS, logline.TCP_FIELDS)
        assert http[logline.QUEUE] == tcp[logline.QUEUE] == "%Tw"
        assert (http[logline.BYTES_OUT], http[logline.BYTES_IN]) == ("%B", "%U")
        assert (http[logline.CLIENT], http[logline.METHOD]) == ("%ci", "%HM")
        assert http[-1] == "%HPO"  # the path is last: the only field that may hold spaces
    else:
        assert len(http) == len(tcp) == logline.COMPACT_FIELDS


def test_compact_lines_split_but_carry_no_access_record() -> None:
    for line in (COMPACT_OK, COMPACT_NO_SERVER, COMPACT_TCP):
        fields = logline.split(line)
        assert fields is not None and len(fields) == logline.COMPACT_FIELDS
        assert logline.record(fields) is None
    fields = logline.split(COMPACT_OK)
    assert fields is not None
    assert [logline.milliseconds(fields[i]) for i in (4, 5, 6)] == [0, 605, 606]
    tcp = logline.split(COMPACT_TCP)
    assert tcp is not None
    assert logline.milliseconds(tcp[logline.RESPONSE]) == -1


def test_an_http_line() -> None:
    fields = logline.split(HTTP_OK)
    assert fields is not None
    record = logline.record(fields)
    assert record == logline.AccessRecord(
        pid=17343,
        backend="default.gw.s1.3116af",
        server="127.0.0.1:18101",
        status=200,
        queue_ms=0,
        connect_ms=0,
        response_ms=601,
        total_ms=602,
        bytes_out=169,
        bytes_in=92,
        termination="--",
        client="127.0.0.1",
        method="GET",
        path="/",
    )


def test_a_request_no_server_took_has_minus_one_for_the_steps_it_missed() -> None:
    fields = logline.split(NO_SERVER)
    assert fields is not None
    record = logline.record(fields)
    assert record is not None
    assert (record.server, record.status, record.termination) == ("<NOSRV>", 503, "SC")
    assert (record.queue_ms, record.connect_ms, record.response_ms, record.total_ms) == (
        -1, -1, -1, 0,
    )  # fmt: skip


def test_a_tcp_line_has_no_status_response_time_method_or_path() -> None:
    fields = logline.split(TCP)
    assert fields is not None
    record = logline.record(fields)
    assert record is not None
    assert (record.status, record.response_ms, record.method, record.path) == (None, -1, None, None)
    assert (record.connect_ms, record.total_ms) == (0, 1)
    assert (record.bytes_out, record.bytes_in) == (171, 68)


def test_a_path_with_spaces_stays_one_field() -> None:
    fields = logline.split(HTTP_OK + b" and more")
    assert fields is not None
    assert fields[logline.PATH] == b"/ and more"


def test_lines_of_other_shapes_are_not_requests() -> None:
    # Split only counts fields; a long message may have as many words as a request line, and
    # then its first word, not a backend of the data plane, is what rejects it (LatencyBook).
    state = logline.split(STATE_CHANGE)
    assert state is None or logline.record(state) is None
    assert logline.split(NO_BACKEND) is None
    assert logline.split(b"") is None
    bad_numbers = HTTP_OK.replace(b" 169 92 ", b" x y ")
    fields = logline.split(bad_numbers)
    assert fields is not None and logline.record(fields) is None


def test_milliseconds_reads_minus_and_dash_as_did_not_happen() -> None:
    assert logline.milliseconds(b"12") == 12
    assert logline.milliseconds(b"-1") == -1
    assert logline.milliseconds(b"-") == -1


def test_access_log_entry_names_the_route_and_instance() -> None:
    fields = logline.split(HTTP_503)
    assert fields is not None
    routes = {"default.gw.s1.3116af": ir.RouteRef("default", "gw", "s1")}
    item = entry(fields, routes, at=0.25)
    assert item["time"] == "1970-01-01T00:00:00.250Z"
    assert (item["namespace"], item["gateway"], item["route"]) == ("default", "gw", "s1")
    assert (item["instance"], item["status"], item["path"]) == ("127.0.0.1:18101", 503, "/")
    assert (item["bytes_in"], item["bytes_out"], item["total_ms"]) == (93, 187, 0)


def test_access_log_entry_of_a_request_without_server_has_no_instance() -> None:
    fields = logline.split(NO_SERVER)
    assert fields is not None
    item = entry(fields, {}, at=0.0)
    assert item["instance"] is None
    assert item["route"] is None  # a backend the data plane does not run
