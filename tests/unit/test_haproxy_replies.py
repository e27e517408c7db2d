"""Reply parsing and error classification, on replies captured from HAProxy 2.6.12."""

from __future__ import annotations

import pytest

from meshgate.haproxy import processes, replies, server_states, stat_csv
from meshgate.haproxy.replies import (
    CommandKind,
    MapEntryNotFound,
    MapVersionInvalid,
    NoReply,
    NoSuchBackend,
    NoSuchMap,
    NoSuchServer,
    PermissionDenied,
    RuntimeCommandFailed,
    ServerAlreadyExists,
    ServerHasConnections,
    ServerNotInMaintenance,
    UnexpectedReply,
    UnknownCommand,
)
from meshgate.haproxy.server_states import ServerAdminFlags, ServerOpState
from meshgate.haproxy.stat_csv import StatType

SHOW_INFO = (
    "Name: HAProxy\nVersion: 2.6.12-1+deb12u4\nRelease_date: 2026/10/17\nNbthread: 2\n"
    "Nbproc: 1\nProcess_num: 1\nPid: 3847\nUptime: 0d 0h10m16s\nUptime_sec: 616\n"
    "CurrConns: 0\nCumConns: 310\nCumReq: 1\nStopping: 0\nJobs: 5\nUnstoppable Jobs: 1\n"
    "Listeners: 4\nBuild info: 2.6.12-1+deb12u4\nStart_time_sec: 1795757135\nTainted: 0\n\n"
)

STAT_HEADER = (
    "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,"
    "wredis,status,weight,act,bck,chkfail,chkdown,lastchg,downtime,qlimit,pid,iid,sid,throttle,"
    "lbtot,tracked,type,rate,rate_lim,rate_max,check_status,check_code,check_duration,hrsp_1xx,"
    "hrsp_2xx,hrsp_3xx,hrsp_4xx,hrsp_5xx,hrsp_other,hanafail,req_rate,req_rate_max,req_tot,"
    "cli_abrt,srv_abrt,comp_in,comp_out,comp_byp,comp_rsp,lastsess,last_chk,last_agt,qtime,ctime,"
    "rtime,ttime,agent_status,agent_code,agent_duration,check_desc,agent_desc,check_rise,"
    "check_fall,check_health,agent_rise,agent_fall,agent_health,addr,cookie,mode,algo,conn_rate,"
    "conn_rate_max,conn_tot,intercepted,dcon,dses,wrew,connect,reuse,cache_lookups,cache_hits,"
    "srv_icur,src_ilim,qtime_max,ctime_max,rtime_max,ttime_max,eint,idle_conn_cur,safe_conn_cur,"
    "used_conn_cur,need_conn_est,uweight,agg_server_status,agg_server_check_status,"
    "agg_check_status,-,ssl_sess,ssl_reused_sess,ssl_failed_handshake,h2_headers_rcvd,"
    "h2_data_rcvd,h2_settings_rcvd,h2_rst_stream_rcvd,h2_goaway_rcvd,"
    "h2_detected_conn_protocol_errors,h2_detected_strm_protocol_errors,h2_rst_stream_resp,"
    "h2_goaway_resp,h2_open_connections,h2_backend_open_streams,h2_total_connections,"
    "h2_backend_total_streams,h1_open_connections,h1_open_streams,h1_total_connections,"
    "h1_total_streams,h1_bytes_in,h1_bytes_out,h1_spliced_bytes_in,h1_spliced_bytes_out,\n"
)
SHOW_STAT = STAT_HEADER + (
    "fe,FRONTEND,,,0,0,9979,0,0,0,0,0,0,,,,,OPEN,,,,,,,,,1,2,0,,,,0,0,0,0,,,,0,0,0,0,0,0,,0,0,0,,"
    ",0,0,0,0,,,,,,,,,,,,,,,,,,,,,http,,0,0,0,0,0,0,0,,,0,0,,,,,,,0,,,,,,,,,-,0,0,0,0,0,0,0,0,0,0,"
    "0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n"
    "be,s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,1,0,0,0,0,0,,1,4,1,,0,,2,0,,0,L4OK,,0,0,0,0,0,0,0,,,,0,"
    "0,0,,,,,-1,,,0,0,0,0,,,,Layer4 check passed,,2,3,4,,,,127.0.0.1:18081,,http,,,,,,,,0,0,0,,,0,"
    ",0,0,0,0,0,0,0,0,1,1,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "be_dyn,a1,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check,10,1,0,,,0,,,1,4,1,,0,,2,0,,0,,,,0,0,0,0,0,0,,"
    ",,0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:44049,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,"
    "0,10,,,,-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "be_dyn,b6,0,0,0,0,,0,0,0,,0,,0,0,0,0,MAINT,1,1,0,0,1,0,0,,1,4,2,,0,,2,0,,0,,,,0,0,0,0,0,0,,,"
    ",0,0,0,,,,,-1,,,0,0,0,0,,,,,,,,,,,,[::1]:8080,,http,,,,,,,,0,0,0,,,0,0,0,0,0,0,0,0,0,0,0,1,,,,"
    "-,0,0,0,,,,,,,,,,,,,,,,,,,,,,\n"
    "tcp2,d1,0,0,1,1,,1,0,0,,0,,0,0,0,0,DRAIN,1,1,0,,,0,,,1,10,1,,1,,2,1,,1,,,,,,,,,,,,,,0,0,,,,,"
    "0,,,0,0,0,0,,,,,,,,,,,,127.0.0.1:18081,,tcp,,,,,,,,0,1,0,,,0,0,0,0,0,0,0,0,0,1,1,1,,,,-,0,0,0"
    ",,,,,,,,,,,,,,,,,,,,,,\n"
    "be_dyn,BACKEND,0,0,0,0,1,0,0,0,0,0,,0,0,0,0,UP,10,1,0,,0,0,0,,1,4,0,,0,,1,0,,0,,,,0,0,0,0,0,0"
    ",,,,0,0,0,0,0,0,0,-1,,,0,0,0,0,,,,,,,,,,,,,,http,roundrobin,,,,,,,0,0,0,0,0,,,0,0,0,0,0,,,,,10"
    ",0,0,0,-,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,\n\n"
)

SERVERS_STATE = (
    "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
    "3 be_static 1 static 127.0.0.1 2 0 1 1 0 1 0 2 0 0 0 0 - 36903 - 0 0 - - 0\n"
    "4 be_dyn 1 a1 127.0.0.1 2 0 10 10 0 1 0 0 0 0 0 0 - 44049 - 0 0 - - 0\n"
    "4 be_dyn 2 b6 ::1 0 1 1 1 0 1 0 0 14 0 0 0 - 8080 - 0 0 - - 0\n"
    "7 be2 2 d2 127.0.0.1 0 9 3 7 0 1 0 0 14 0 0 0 - 18081 - 0 0 - - 0\n\n"
)

PROC_HEADER = "#<PID>          <type>          <reloads>       <uptime>        <version>      \n"
SHOW_PROC = PROC_HEADER + (
    "3844            master          0 [failed: 0]   0d00h10m10s     2.6.12-1+deb12u4\n"
    "# workers\n"
    "3847            worker          0               0d00h10m10s     2.6.12-1+deb12u4\n"
    "# programs\n\n"
)
SHOW_PROC_OLD_WORKERS = PROC_HEADER + (
    "22176           master          1 [failed: 0]   0d00h00m00s     2.6.12-1+deb12u4\n"
    "# workers\n"
    "22186           worker          0               0d00h00m00s     2.6.12-1+deb12u4\n"
    "# old workers\n"
    "22179           worker          1               0d00h00m00s     2.6.12-1+deb12u4\n"
    "# programs\n\n"
)
# After a reload whose configuration failed to load: the worker survived one more reload.
SHOW_PROC_FAILED = PROC_HEADER + (
    "3844            master          3 [failed: 1]   0d00h11m27s     2.6.12-1+deb12u4\n"
    "# workers\n"
    "13319           worker          1               0d00h00m11s     2.6.12-1+deb12u4\n"
    "# programs\n\n"
)
# From the management guide: programs have no version.
SHOW_PROC_PROGRAMS = PROC_HEADER + (
    "1162            master          5 [failed: 0]   0d00h02m07s     2.5-dev13\n"
    "# workers\n"
    "1271            worker          1               0d00h00m00s     2.5-dev13\n"
    "# old workers\n"
    "1233            worker          3               0d00h00m43s     2.0-dev3-6019f6-289\n"
    "# programs\n"
    "1244            foo             0               0d00h00m00s     -\n"
    "1255            bar             0               0d00h00m00s     -\n\n"
)

SHOW_MAP_LIST = (
    "# id (file) description\n2 (/tmp/hx/routes.map) pattern loaded from file "
    "'/tmp/hx/routes.map' used by map at file 'h.cfg' line 26. curr_ver=1 next_ver=2 "
    "entry_cnt=1657\n\n"
)
SHOW_MAP = "0x555c721257e0 /c be\n0x7fc78004dfc0 /d be2\n0x7fc78004e000 /c other\n\n"

UNKNOWN_COMMAND = (
    "Unknown command, but maybe one of the following ones is a better match:\n"
    "  add acl [@<ver>] <acl> <pattern>        : add an acl entry\n"
    "  quit                                    : disconnect\n\n"
)


def test_set_var_replies() -> None:
    replies.check_reply(CommandKind.SET_VAR, "\n")  # the master's reply on success
    with pytest.raises(replies.ExperimentalModeRequired):
        replies.check_reply(
            CommandKind.SET_VAR, "\nThis command is restricted to experimental mode only.\n\n"
        )
    with pytest.raises(replies.NoSuchProcess):
        replies.check_reply(
            CommandKind.SET_VAR, "Can't find the target PID matching the prefix '@1'\n"
        )
    with pytest.raises(replies.RuntimeCommandFailed):
        replies.check_reply(CommandKind.SET_VAR, "fetch method 'int' : failed to parse 'x'\n")


def test_parse_info() -> None:
    info = replies.parse_info(SHOW_INFO)
    assert info["Name"] == "HAProxy"
    assert info["Pid"] == "3847"
    assert info["Uptime"] == "0d 0h10m16s"
    assert info["Unstoppable Jobs"] == "1"
    assert info["Build info"] == "2.6.12-1+deb12u4"


def test_parse_stat_rows_and_types() -> None:
    rows = {(row.pxname, row.svname): row for row in stat_csv.parse_stat_csv(SHOW_STAT)}
    assert rows[("fe", "FRONTEND")].type is StatType.FRONTEND
    assert rows[("fe", "FRONTEND")].status == "OPEN"
    assert rows[("fe", "FRONTEND")].qcur == 0  # empty for frontends: read as 0
    server = rows[("be", "s1")]
    assert server.type is StatType.SERVER
    assert (server.status, server.check_status, server.addr) == ("UP", "L4OK", "127.0.0.1:18081")
    assert (server.weight, server.iid, server.sid) == (1, 4, 1)
    assert server.raw["check_desc"] == "Layer4 check passed"
    assert rows[("be_dyn", "a1")].status == "no check"
    assert rows[("be_dyn", "a1")].weight == 10
    assert rows[("be_dyn", "b6")].addr == "[::1]:8080"
    assert rows[("be_dyn", "b6")].chkdown == 1
    draining = rows[("tcp2", "d1")]
    assert (draining.status, draining.scur, draining.stot, draining.mode) == ("DRAIN", 1, 1, "tcp")
    backend = rows[("be_dyn", "BACKEND")]
    assert backend.type is StatType.BACKEND
    assert backend.mode == "http" and backend.raw["algo"] == "roundrobin"


def test_parse_stat_counters() -> None:
    header = "# pxname,svname,type,scur,stot,bin,bout,hrsp_2xx,hrsp_5xx,req_tot,status\n"
    row = "fe,FRONTEND,0,3,1200,5000000000,123,1100,7,1199,OPEN\n"
    (parsed,) = stat_csv.parse_stat_csv(header + row)
    assert (parsed.scur, parsed.stot, parsed.bin, parsed.bout) == (3, 1200, 5_000_000_000, 123)
    assert (parsed.hrsp_2xx, parsed.hrsp_5xx, parsed.req_tot) == (1100, 7, 1199)


def test_parse_stat_without_header() -> None:
    assert stat_csv.parse_stat_csv("\n") == []


def test_parse_servers_state() -> None:
    servers = server_states.parse_servers_state(SERVERS_STATE)
    assert [(s.backend, s.name) for s in servers] == [
        ("be_static", "static"), ("be_dyn", "a1"), ("be_dyn", "b6"), ("be2", "d2"),
    ]  # fmt: skip
    static, dynamic, maint, drained = servers
    assert (static.addr, static.port, static.op_state) == (
        "127.0.0.1",
        36903,
        ServerOpState.RUNNING,
    )
    assert static.status == "UP" and static.fqdn is None
    assert (dynamic.weight, dynamic.initial_weight, dynamic.backend_id) == (10, 10, 4)
    assert (maint.addr, maint.port) == ("::1", 8080)
    assert maint.admin_state == ServerAdminFlags.FMAINT
    assert maint.admin_state.in_maintenance and maint.status == "MAINT"
    assert drained.admin_state == ServerAdminFlags.FMAINT | ServerAdminFlags.FDRAIN
    assert drained.admin_state.draining
    assert (drained.weight, drained.initial_weight) == (3, 7)


def test_server_down_without_maintenance() -> None:
    line = "4 be_dyn 3 c 127.0.0.1 0 0 1 1 5 7 2 0 6 0 0 0 - 80 - 0 0 - - 0\n"
    (down,) = server_states.parse_servers_state(SERVERS_STATE.split("3 be_static")[0] + line)
    assert down.status == "DOWN" and not down.admin_state.in_maintenance


@pytest.mark.parametrize(
    "reply",
    ["", "2\n# be_id\n", "1\n", "1\n# be_id be_name\nnot numbers at all\n"],
)
def test_parse_servers_state_rejects_unknown_shapes(reply: str) -> None:
    with pytest.raises(UnexpectedReply):
        server_states.parse_servers_state(reply)


def test_parse_proc() -> None:
    proc = processes.parse_proc(SHOW_PROC)
    assert (proc.master_pid, proc.reloads, proc.failed_reloads) == (3844, 0, 0)
    assert proc.master.uptime_s == 610
    assert proc.master.version == "2.6.12-1+deb12u4"
    assert [(w.pid, w.kind, w.reloads) for w in proc.workers] == [(3847, "worker", 0)]
    assert proc.old_workers == [] and proc.programs == []


def test_parse_proc_with_old_workers() -> None:
    proc = processes.parse_proc(SHOW_PROC_OLD_WORKERS)
    assert [w.pid for w in proc.workers] == [22186]
    assert [(w.pid, w.reloads) for w in proc.old_workers] == [(22179, 1)]


def test_parse_proc_after_failed_reload() -> None:
    proc = processes.parse_proc(SHOW_PROC_FAILED)
    assert (proc.reloads, proc.failed_reloads) == (3, 1)
    assert [(w.pid, w.reloads) for w in proc.workers] == [(13319, 1)]


def test_parse_proc_with_programs() -> None:
    proc = processes.parse_proc(SHOW_PROC_PROGRAMS)
    assert [w.pid for w in proc.old_workers] == [1233]
    assert proc.old_workers[0].uptime_s == 43
    assert [(p.pid, p.kind, p.version) for p in proc.programs] == [
        (1244, "foo", "-"), (1255, "bar", "-"),
    ]  # fmt: skip


def test_parse_proc_without_failed_counter() -> None:
    # Older versions print only the count.
    reply = (
        PROC_HEADER + "10 master 2 0d00h00m05s 2.2.0\n# workers\n11 worker 0 0d00h00m01s 2.2.0\n"
    )
    proc = processes.parse_proc(reply)
    assert (proc.reloads, proc.failed_reloads, proc.workers[0].pid) == (2, 0, 11)


@pytest.mark.parametrize(
    "reply",
    ["", "Unknown command.\n", PROC_HEADER + "# workers\n1 worker 0 0d00h00m00s 2.6\n"],
)
def test_parse_proc_rejects_unknown_shapes(reply: str) -> None:
    with pytest.raises(UnexpectedReply):
        processes.parse_proc(reply)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("0d00h11m16s", 676), ("2d01h00m00s", 176400), ("0d00h00m00s", 0), ("5s", 5)],
)
def test_parse_uptime(text: str, seconds: int) -> None:
    assert processes.parse_uptime(text) == seconds


def test_parse_uptime_rejects_garbage() -> None:
    with pytest.raises(UnexpectedReply):
        processes.parse_uptime("soon")


def test_maps() -> None:
    assert replies.parse_prepare_map("New version created: 12\n\n") == 12
    with pytest.raises(NoSuchMap):
        replies.parse_prepare_map("Unknown map identifier. Please use #<id> or <file>.\n\n")
    assert replies.parse_map_entries(SHOW_MAP) == {"/c": "be", "/d": "be2"}  # first wins
    assert replies.parse_map_entries("\n") == {}
    (info,) = replies.parse_map_list(SHOW_MAP_LIST)
    assert (info.id, info.path, info.current_version, info.next_version, info.entry_count) == (
        2, "/tmp/hx/routes.map", 1, 2, 1657,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "reply"),
    [
        (CommandKind.SET_SERVER, "\n"),
        (CommandKind.SET_SERVER, "\n\n"),
        (CommandKind.HEALTH, "\n"),
        (CommandKind.CHANGE_MAP, "\n"),
        (CommandKind.SHUTDOWN_SESSIONS, "\n"),
        (CommandKind.ADD_SERVER, "New server registered.\n\n"),
        (CommandKind.DEL_SERVER, "Server deleted.\n"),
        (CommandKind.PREPARE_MAP, "New version created: 1\n\n"),
        (
            CommandKind.SET_SERVER_ADDR,
            "IP changed from '127.0.0.1' to '::1', no need to change the port by 'stats socket "
            "command'\n\n",
        ),
        (
            CommandKind.SET_SERVER_ADDR,
            "no need to change the addr, port changed from '18081' to '18080' by 'stats socket "
            "command'\n\n",
        ),
        (CommandKind.SET_SERVER_ADDR, "no need to change the addr by 'stats socket command'\n\n"),
        (CommandKind.READ, SHOW_INFO),
        (CommandKind.READ, "\n"),  # an empty map
        (CommandKind.RELOAD, ""),
    ],
)
def test_success_replies(kind: CommandKind, reply: str) -> None:
    replies.check_reply(kind, reply)


@pytest.mark.parametrize(
    ("kind", "reply", "error"),
    [
        (CommandKind.SET_SERVER, "No such server.\n\n", NoSuchServer),
        (CommandKind.DEL_SERVER, "No such server.\n", NoSuchServer),
        (CommandKind.SET_SERVER, "No such backend.\n\n", NoSuchBackend),
        (CommandKind.ADD_SERVER, "No such backend.\n", NoSuchBackend),
        (CommandKind.READ, "Can't find backend.\n\n", NoSuchBackend),
        (CommandKind.READ, "No such proxy.\n\n", NoSuchBackend),
        (CommandKind.READ, UNKNOWN_COMMAND, UnknownCommand),
        (CommandKind.SET_SERVER, "Permission denied\n\n", PermissionDenied),
        (CommandKind.READ, "Unknown map identifier. Please use #<id> or <file>.\n\n", NoSuchMap),
        (CommandKind.CHANGE_MAP, "entry not found.\n\n", MapEntryNotFound),
        (CommandKind.CHANGE_MAP, "Key not found.\n", MapEntryNotFound),
        (CommandKind.CHANGE_MAP, "Version number out of range.\n\n", MapVersionInvalid),
        (
            CommandKind.CHANGE_MAP,
            "Version number in the future, please use 'prepare map' before.\n\n",
            MapVersionInvalid,
        ),
        (
            CommandKind.ADD_SERVER,
            "Already exists a server with the same name in backend.\n\n",
            ServerAlreadyExists,
        ),
        (
            CommandKind.DEL_SERVER,
            "Only servers in maintenance mode can be deleted.\n",
            ServerNotInMaintenance,
        ),
        (
            CommandKind.DEL_SERVER,
            "Server still has connections attached to it, cannot remove it.\n",
            ServerHasConnections,
        ),
        (CommandKind.SET_SERVER, "Require 'backend/server'.\n\n", RuntimeCommandFailed),
        (
            CommandKind.SET_SERVER,
            "Absolute weight can only be between 0 and 256 inclusive.\n\n",
            RuntimeCommandFailed,
        ),
        (
            CommandKind.ADD_SERVER,
            "'cookie' option is not accepted for dynamic server\n\n",
            RuntimeCommandFailed,
        ),
        (CommandKind.ADD_SERVER, "unknown keyword 'bogus'.\n\n", RuntimeCommandFailed),
        (
            CommandKind.SET_SERVER_ADDR,
            "Invalid addr '1.2.3.400' by 'stats socket command'\n\n",
            RuntimeCommandFailed,
        ),
        (CommandKind.CHANGE_MAP, "", NoReply),  # dropped: larger than the CLI buffer
        (CommandKind.READ, "", NoReply),
    ],
)
def test_error_replies(kind: CommandKind, reply: str, error: type[RuntimeCommandFailed]) -> None:
    with pytest.raises(error) as caught:
        replies.check_reply(kind, reply)
    assert type(caught.value) is error
    assert caught.value.kind is kind
    assert caught.value.reply == reply.strip()


def test_server_streams_agree_with_the_full_parse() -> None:
    rows = stat_csv.parse_stat_csv(SHOW_STAT)
    expected = {
        (row.pxname, row.svname): row.scur + row.qcur for row in rows if row.type is StatType.SERVER
    }
    assert stat_csv.server_streams(SHOW_STAT) == expected
    assert expected[("tcp2", "d1")] == 1
    # Replies of many `show stat <backend>` run together, each with its header.
    assert stat_csv.server_streams(SHOW_STAT + SHOW_STAT) == expected
    assert stat_csv.server_streams("No such proxy.\n") == {}


def test_a_prompt_mode_session_splits_into_one_reply_per_command() -> None:
    from meshgate.haproxy.session import PROMPT, split_replies

    # What 2.6 wrote for `prompt`, `add server`, `set server ... state ready`, `del server`.
    output = "\n> New server registered.\n\n> \n> Server deleted.\n> "
    assert split_replies(output) == ["\n", "New server registered.\n\n", "\n", "Server deleted.\n"]
    # A session cut in the middle of a reply: the incomplete one is left out.
    assert split_replies("\n> New server registered.\n\n> No such") == [
        "\n",
        "New server registered.\n\n",
    ]
    assert split_replies("") == [] and PROMPT == "\n> "


def test_a_reply_parsed_in_parts_is_the_reply_parsed_whole() -> None:
    whole = stat_csv.parse_stat_csv(SHOW_STAT)
    assert len(whole) >= 3
    parts = list(stat_csv.stat_csv_parts(SHOW_STAT, 2))
    assert [len(part) for part in parts[:-1]] == [2] * (len(parts) - 1)
    assert [row for part in parts for row in part] == whole
    assert list(stat_csv.stat_csv_parts("\n", 2)) == []
