"""Runtime commands for certificates, CA files, crt-lists and TLS servers, and their replies as
captured from HAProxy 2.6.12."""

from __future__ import annotations

import pytest

from meshgate.haproxy import commands, replies
from meshgate.haproxy.commands import UnsafeRuntimeArgument
from meshgate.haproxy.replies import CommandKind, RuntimeCommandFailed
from tests.tlscerts import Authority

LEAF = Authority().issue("a.example.com")
PEM = LEAF.cert + LEAF.key_text


def test_certificate_transaction_commands() -> None:
    assert commands.new_ssl_cert("/r/certs/a.pem") == "new ssl cert /r/certs/a.pem"
    command, payload = commands.set_ssl_cert("/r/certs/a.pem", PEM)
    assert command == "set ssl cert /r/certs/a.pem"
    assert payload == PEM.rstrip("\n")
    assert commands.commit_ssl_cert("/r/certs/a.pem") == "commit ssl cert /r/certs/a.pem"
    assert commands.abort_ssl_cert("/r/certs/a.pem") == "abort ssl cert /r/certs/a.pem"
    assert commands.show_ssl_cert() == "show ssl cert"
    assert commands.show_ssl_cert("/r/certs/a.pem") == "show ssl cert /r/certs/a.pem"


def test_ca_file_commands() -> None:
    assert commands.new_ssl_ca_file("/r/ca.pem") == "new ssl ca-file /r/ca.pem"
    assert commands.set_ssl_ca_file("/r/ca.pem", LEAF.cert)[0] == "set ssl ca-file /r/ca.pem"
    assert commands.commit_ssl_ca_file("/r/ca.pem") == "commit ssl ca-file /r/ca.pem"
    assert commands.abort_ssl_ca_file("/r/ca.pem") == "abort ssl ca-file /r/ca.pem"


@pytest.mark.parametrize(
    "pem",
    [
        PEM.replace("-----END CERTIFICATE-----\n", "-----END CERTIFICATE-----\n\n"),  # ends payload
        PEM + "show info\n",
        PEM.replace("\n", "\r\n"),
        "",
        "-----BEGIN CERTIFICATE-----\nab;c\n-----END CERTIFICATE-----",
    ],
)
def test_payloads_are_pem_lines_only(pem: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.set_ssl_cert("/r/a.pem", pem)


@pytest.mark.parametrize(
    "path", ["relative.pem", "/r/a b.pem", "/r/a.pem;show info", "/r//a", "/r/a\n"]
)
def test_paths_are_checked(path: str) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.commit_ssl_cert(path)


def test_crt_list_lines() -> None:
    command, payload = commands.add_ssl_crt_list(
        "/r/p.crtlist",
        "/r/a.pem",
        min_version="TLSv1.2",
        alpn=True,
        filters=["a.example.com", "*.w.example.com"],
    )
    assert command == "add ssl crt-list /r/p.crtlist"
    assert (
        payload == "/r/a.pem [alpn h2,http/1.1 ssl-min-ver TLSv1.2] a.example.com *.w.example.com"
    )
    assert commands.crt_list_line("/r/a.pem", min_version="TLSv1.3", alpn=False) == (
        "/r/a.pem [ssl-min-ver TLSv1.3]"
    )


@pytest.mark.parametrize(
    ("version", "filters"),
    [
        ("TLSv1.0", []),
        ("TLSv1.2 verify none", []),
        ("TLSv1.2", ["a.example.com [verify none]"]),
        ("TLSv1.2", ["a.example.com\n/etc/passwd"]),
        ("TLSv1.2", ["!a.example.com"]),
        ("TLSv1.2", ["A.EXAMPLE.COM"]),
        ("TLSv1.2", ["*"]),
    ],
)
def test_crt_list_lines_refuse_anything_else(version: str, filters: list[str]) -> None:
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_ssl_crt_list(
            "/r/p", "/r/a.pem", min_version=version, alpn=True, filters=filters
        )


def test_tls_servers() -> None:
    assert commands.add_server(
        "be", "s", "127.0.0.1", 443, ssl=True, ca_file="/r/ca.pem", sni="api.internal"
    ) == (
        "add server be/s 127.0.0.1:443 ssl verify required ca-file /r/ca.pem"
        " sni str(api.internal) check-sni api.internal"
    )
    assert commands.add_server("be", "s", "127.0.0.1", 443, ssl=True, verify=False) == (
        "add server be/s 127.0.0.1:443 ssl verify none"
    )
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_server("be", "s", "127.0.0.1", 443, sni="x.example.com")
    with pytest.raises(UnsafeRuntimeArgument):
        commands.add_server("be", "s", "127.0.0.1", 443, ssl=True, sni="x) str(y")


# Replies as HAProxy 2.6.12 wrote them.
OK = [
    (CommandKind.NEW_SSL, "New empty certificate store '/r/c.pem'!\n\n"),
    (CommandKind.NEW_SSL, "New CA file created '/r/ca3.pem'!\n\n"),
    (CommandKind.SET_SSL, "Transaction created for certificate /r/a.pem!\n\n"),
    (CommandKind.SET_SSL, "transaction created for CA /r/ca.pem!\n\n"),
    (CommandKind.COMMIT_SSL, "Committing /r/a.pem.\nSuccess!\n\n"),
    (CommandKind.COMMIT_SSL, "Committing /r/ca.pem\nSuccess!\n\n"),
    (
        CommandKind.ADD_CRT_LIST,
        "Inserting certificate '/r/c.pem' in crt-list '/r/p'.\nSuccess!\n\n",
    ),
    (CommandKind.ABORT_SSL, "Transaction aborted for certificate '/r/a.pem'!\n\n"),
]
FAILED = [
    (
        CommandKind.SET_SSL,
        "Can't replace a certificate which is not referenced by the configuration!\n"
        "Can't update /r/nope.pem!\n\n",
    ),
    (
        CommandKind.SET_SSL,
        "unable to load certificate from file '/r/a.pem'.\nCan't load the payload\n"
        "Can't update /r/a.pem!\n\n",
    ),
    (CommandKind.COMMIT_SSL, "No ongoing transaction! !\nCan't commit /r/a.pem!\n\n"),
    (
        CommandKind.COMMIT_SSL,
        "inconsistencies between private key and certificate loaded '/r/a.pem'.\n"
        "Can't commit /r/a.pem!\n\n",
    ),
    (CommandKind.ABORT_SSL, "No ongoing transaction!\n\n"),
    (CommandKind.ADD_CRT_LIST, ""),
]


@pytest.mark.parametrize(("kind", "reply"), OK)
def test_success_replies(kind: CommandKind, reply: str) -> None:
    replies.check_reply(kind, reply)


@pytest.mark.parametrize(("kind", "reply"), FAILED)
def test_failure_replies(kind: CommandKind, reply: str) -> None:
    with pytest.raises(RuntimeCommandFailed):
        replies.check_reply(kind, reply)
