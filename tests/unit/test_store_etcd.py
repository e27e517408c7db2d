"""EtcdStore beyond the shared contract: `--store` URLs, mutual TLS, unreachable members, a
watch that outlives a member's restart. Real etcd processes throughout."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from meshgate.store import Key
from meshgate.store.etcd import EtcdStore, StoreUnavailableError
from meshgate.store.etcd_wire import Layout, prefix_end, watch_range
from meshgate.store.target import StoreUrlError, parse_etcd_url
from tests.etcd_cluster import TlsFiles, etcd_cluster
from tests.integration.haproxy_helpers import free_port
from tests.tlscerts import Authority

GW = Key("gateways", "default", "a")


def unique_prefix() -> str:
    return f"/meshgate-test-{uuid.uuid4().hex}/"


def test_urls_name_every_member() -> None:
    target = parse_etcd_url("etcd://10.0.0.1:2379,[::1]:2380,etcd.example:2379/")
    assert target.endpoints == (
        "http://10.0.0.1:2379",
        "http://[::1]:2380",
        "http://etcd.example:2379",
    )
    assert not target.tls and target.prefix == "/meshgate/"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://127.0.0.1:2379", "expected etcd://"),
        ("127.0.0.1:2379", "expected etcd://"),
        ("etcd://", "no member address"),
        ("etcd://127.0.0.1", "is not HOST:PORT"),
        ("etcd://127.0.0.1:0", "is not HOST:PORT"),
        ("etcd://127.0.0.1:99999", "is not HOST:PORT"),
        ("etcd://user@127.0.0.1:2379", "is not HOST:PORT"),
        ("etcd://127.0.0.1:2379/path?x", "is not HOST:PORT"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(StoreUrlError, match=message):
        parse_etcd_url(url)


def test_tls_files_must_fit_the_url(tmp_path: Path) -> None:
    pem = tmp_path / "x.pem"
    pem.write_text("x")
    with pytest.raises(StoreUrlError, match="need an etcds:// URL"):
        parse_etcd_url("etcd://127.0.0.1:2379", ca=pem)
    with pytest.raises(StoreUrlError, match="go together"):
        parse_etcd_url("etcds://127.0.0.1:2379", cert=pem)
    with pytest.raises(StoreUrlError, match=r"--store-ca: .* is not a readable file"):
        parse_etcd_url("etcds://127.0.0.1:2379", ca=tmp_path / "missing.pem")
    with pytest.raises(StoreUrlError, match="--store-prefix"):
        parse_etcd_url("etcd://127.0.0.1:2379", prefix="meshgate")


def test_a_watch_of_some_kinds_spans_only_their_keys() -> None:
    layout = Layout("/m/")
    start, end = watch_range(layout, ["services", "gateways", "instances", "certificates"])
    assert (start, end) == (b"/m/certificates/", b"/m/services0")
    assert not start <= b"/m/status.heartbeats/cluster/a" < end
    assert watch_range(layout, None) == (b"/m/", b"/m0")


def test_prefix_end() -> None:
    assert prefix_end(b"/meshgate/") == b"/meshgate0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\x00"


async def test_nothing_listening_is_a_clear_error() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailableError, match=f"no etcd member answers: .*:{port}"):
        await EtcdStore.open(parse_etcd_url(f"etcd://127.0.0.1:{port}"))


async def test_mutual_tls(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path / "etcd", tls=True) as cluster:
        assert cluster.tls is not None
        files = cluster.tls
        target = parse_etcd_url(
            cluster.url,
            prefix=unique_prefix(),
            ca=files.ca,
            cert=files.client_cert,
            key=files.client_key,
        )
        async with await EtcdStore.open(target) as store:
            base = await store.revision()
            events = store.watch(base)
            await store.put(GW, {"tls": True})
            event = await asyncio.wait_for(anext(events), 5)
            assert event.value == {"tls": True}

        # Without a client certificate, the cluster refuses us.
        anonymous = parse_etcd_url(cluster.url, ca=files.ca)
        with pytest.raises(StoreUnavailableError, match=r"client certificate|certificate required"):
            await EtcdStore.open(anonymous)

        # A CA that did not sign the members' certificate: we refuse them.
        stranger = TlsFiles.make(tmp_path / "stranger")
        untrusting = parse_etcd_url(
            cluster.url, ca=stranger.ca, cert=files.client_cert, key=files.client_key
        )
        with pytest.raises(StoreUnavailableError, match="not trusted"):
            await EtcdStore.open(untrusting)

        # A client certificate from another CA: the cluster refuses it.
        foreign = Authority("another CA").issue("meshgate-client")
        (tmp_path / "foreign.pem").write_text(foreign.cert)
        (tmp_path / "foreign-key.pem").write_text(foreign.key_text)
        refused = parse_etcd_url(
            cluster.url,
            ca=files.ca,
            cert=tmp_path / "foreign.pem",
            key=tmp_path / "foreign-key.pem",
        )
        with pytest.raises(StoreUnavailableError):
            await EtcdStore.open(refused)


async def test_a_dead_member_is_skipped(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        url = f"etcd://127.0.0.1:{free_port()},{cluster.members[0].address}"
        async with await EtcdStore.open(parse_etcd_url(url, prefix=unique_prefix())) as store:
            record = await store.put(GW, {"v": 1})
            assert (await store.get(GW)) == record


async def test_a_watch_resumes_across_a_member_restart(tmp_path: Path) -> None:
    with etcd_cluster(tmp_path / "etcd") as cluster:
        target = parse_etcd_url(cluster.url, prefix=unique_prefix())
        async with await EtcdStore.open(target) as store:
            base = await store.revision()
            events = store.watch(base)
            await store.put(GW, {"v": 1})
            assert (await asyncio.wait_for(anext(events), 5)).value == {"v": 1}
            member = cluster.members[0]
            member.stop()
            with pytest.raises(StoreUnavailableError, match="no etcd member answers"):
                await store.put(GW, {"v": "while down"})
            cluster.restart(member)
            cluster.wait_ready()
            await store.put(GW, {"v": 2})
            # Nothing lost, nothing repeated: the watch picked up after revision base + 1.
            event = await asyncio.wait_for(anext(events), 10)
            assert (event.value, event.revision) == ({"v": 2}, (await store.revision()))
