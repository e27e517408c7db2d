"""Runtime API command text: exact output, and refusal of anything that could change its meaning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshgate.haproxy import commands
from meshgate.haproxy.commands import ServerAdminState, UnsafeRuntimeArgument
from meshgate.haproxy.transport import MAX_REQUEST_BYTES, RequestTooLarge, encode_request

MAP = "/run/meshgate/maps/hosts.map"


def test_reading_commands() -> None:
    assert commands.show_info() == "show info"
    assert commands.show_stat() == "show stat"
    assert commands.show_stat("be_app") == "show stat be_app -1 -1"
    assert commands.show_servers_state() == "show servers state"
    assert commands.show_servers_state("be_app") == "show servers state be_app"
    assert commands.show_map() == "show map"
    assert commands.show_map(MAP) == f"show map {MAP}"
    assert commands.show_map(MAP, version=3) == f"show map @3 {MAP}"


def test_master_commands() -> None:
    assert commands.show_proc() == "show proc"
    assert commands.reload() == "reload"
    assert commands.on_worker(1234, "show info") == "@!1234 show info"
    assert commands.on_worker_relative(1, "show servers state") == "@1 show servers state"


def test_process_variable_commands() -> None:
    assert commands.set_proc_var_int("proc.mg_log_keep", 5) == "set var proc.mg_log_keep int(5)"
    assert commands.set_proc_var_int("proc.mg_log_keep", -1) == "set var proc.mg_log_keep int(-1)"
    line = commands.experimental(commands.on_worker_relative(1, "set var proc.x int(0)"))
    assert line == "experimental-mode on; @1 set var proc.x int(0)"


@pytest.mark.parametrize(
    "name", ["txn.mg", "proc.X", "proc.a b", "proc.a;x", "proc.", "proc.a)", "sess.a", 5]
)
def test_only_process_variables_can_be_set(name: object) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_proc_var_int(name, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [True, 1.5, "1", 2**63, -(2**63) - 1])
def test_process_variable_values_are_integers(value: object) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_proc_var_int("proc.mg_log_keep", value)  # type: ignore[arg-type]


def test_server_commands() -> None:
    assert commands.set_server_weight("be", "s1", 42) == "set server be/s1 weight 42"
    assert commands.set_server_state("be", "s1", "drain") == "set server be/s1 state drain"
    assert (
        commands.set_server_state("be", "s1", ServerAdminState.MAINT)
        == "set server be/s1 state maint"
    )
    assert (
        commands.set_server_addr("be", "s1", "10.0.0.2", 8080)
        == "set server be/s1 addr 10.0.0.2 port 8080"
    )
    assert commands.enable_health("be", "s1") == "enable health be/s1"
    assert commands.disable_health("be", "s1") == "disable health be/s1"
    assert commands.del_server("be", "s1") == "del server be/s1"
    assert commands.shutdown_server_sessions("be", "s1") == "shutdown sessions server be/s1"


def test_add_server() -> None:
    assert commands.add_server("be", "s1", "127.0.0.1", 80) == "add server be/s1 127.0.0.1:80"
    assert (
        commands.add_server(
            "be:1.0_x",
            "i-1.a_b",
            "10.1.2.3",
            8080,
            server_weight=50,
            check=True,
            inter_ms=2000,
            rise=2,
            fall=3,
        )
        == "add server be:1.0_x/i-1.a_b 10.1.2.3:8080 weight 50 check inter 2000 rise 2 fall 3"
    )


def test_add_server_ipv6_is_written_as_is() -> None:
    # HAProxy takes the port after the last colon.
    assert commands.add_server("be", "s", "::1", 80) == "add server be/s ::1:80"
    assert commands.add_server("be", "s", "2001:DB8:0::1", 80) == "add server be/s 2001:db8::1:80"


def test_add_server_check_settings_need_check() -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_server("be", "s", "127.0.0.1", 80, inter_ms=100)


def test_map_commands() -> None:
    assert commands.prepare_map(MAP) == f"prepare map {MAP}"
    assert commands.add_map_entry(MAP, "a.example.com", "gw_a") == (
        f"add map {MAP} a.example.com gw_a"
    )
    assert commands.add_map_entry(MAP, "0:8999", "be_a", version=7) == (
        f"add map @7 {MAP} 0:8999 be_a"
    )
    assert commands.commit_map(MAP, 7) == f"commit map @7 {MAP}"
    assert commands.set_map_entry(MAP, "k", "v") == f"set map {MAP} k v"
    assert commands.del_map_entry(MAP, "k") == f"del map {MAP} k"
    assert commands.clear_map(MAP) == f"clear map {MAP}"
    assert commands.clear_map(MAP, version=2) == f"clear map @2 {MAP}"


def test_add_map_payload() -> None:
    command, payload = commands.add_map_payload(MAP, [("/a", "be_a"), ("/b", "be_b")], version=4)
    assert command == f"add map @4 {MAP}"
    assert payload == "/a be_a\n/b be_b"
    assert encode_request(command, payload) == f"add map @4 {MAP} <<\n/a be_a\n/b be_b\n\n".encode()


def test_encode_request() -> None:
    assert encode_request("show info") == b"show info\n"
    assert encode_request("add map @1 /m.map", "") == b"add map @1 /m.map <<\n\n"
    with pytest.raises(RequestTooLarge):
        encode_request("add map @1 /m.map", "k v\n" * (MAX_REQUEST_BYTES // 4))


@pytest.mark.parametrize(
    "name",
    [
        "",
        "be app",
        "be\nshow info",
        "be;show info",
        "be/x",
        "#3",
        "be\\x",
        "be\x00",
        "bé",
        "a" * 129,
    ],
)
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_server_weight(name, "s", 1)
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_server_weight("be", name, 1)
    with pytest.raises(UnsafeRuntimeArgument):
        commands.show_servers_state(name)


@pytest.mark.parametrize(
    "path", ["", "maps/a.map", "/a map", "/a\n", "/a;b", "//a", "/a#b", "/a@b", "/" + "a" * 1024]
)
def test_unsafe_map_paths_are_refused(path: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.prepare_map(path)


@pytest.mark.parametrize(
    "word",
    ["", "a b", "a\tb", "a\nb", "a;b", "a\\b", '"a"', "'a'", "#1", "a<<", "<<", "é", "a" * 1025],
)
def test_unsafe_map_words_are_refused(word: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_map_entry(MAP, word, "v")
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_map_entry(MAP, "k", word)
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_map_payload(MAP, [("k", word)])


def test_map_words_allow_what_routes_need() -> None:
    for word in ("*.example.com", "0:8999", "/api/v1?x=1&y=%20", "gw:1.0/sava", "a#b"):
        assert commands.map_word(word) == word


@pytest.mark.parametrize(
    "address", ["example.com", "127.0.0.1 check", "127.0.0.1\n", "fe80::1%eth0", "1.2.3.400", ""]
)
def test_addresses_must_be_ip_literals(address: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_server("be", "s", address, 80)


@pytest.mark.parametrize("port", [0, 65536, -1, True])
def test_ports_are_bounded(port: int) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_server_addr("be", "s", "127.0.0.1", port)


@pytest.mark.parametrize("weight", [-1, 257, False])
def test_weights_are_bounded(weight: int) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_server_weight("be", "s", weight)
    assert commands.set_server_weight("be", "s", 256).endswith("weight 256")
    assert commands.set_server_weight("be", "s", 0).endswith("weight 0")


def test_server_state_is_one_of_three() -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_server_state("be", "s", "up")


def test_on_worker_takes_one_command() -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.on_worker(12, "show info; show stat")
    with pytest.raises(UnsafeRuntimeArgument):
        commands.on_worker(0, "show info")


@given(st.text(max_size=40), st.text(max_size=40))
def test_no_text_adds_a_command_or_argument(backend: str, server: str) -> None:
    """Whatever the names, the command is refused or is exactly five plain words."""
    try:
        command = commands.set_server_weight(backend, server, 1)
    except UnsafeRuntimeArgument:
        return
    assert command.isascii() and command.isprintable()
    assert not any(char in command for char in ";\\#\"'")
    assert command.split(" ") == ["set", "server", f"{backend}/{server}", "weight", "1"]


@given(st.text(max_size=40), st.text(max_size=40))
def test_no_map_entry_adds_a_command_or_argument(key: str, value: str) -> None:
    try:
        command = commands.add_map_entry(MAP, key, value, version=1)
        _, payload = commands.add_map_payload(MAP, [(key, value)], version=1)
    except UnsafeRuntimeArgument:
        return
    assert command.isascii() and command.isprintable() and ";" not in command
    assert command.split(" ") == ["add", "map", "@1", MAP, key, value]
    assert payload.split(" ") == [key, value] and "\n" not in payload
