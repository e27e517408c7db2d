"""Operating the API as kubectl users expect: deletes that would break routes, output of `get`
applied again, dry runs, waiting for the data plane, merge patches, events, kind names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshgate.api import create_app
from meshgate.api.waiting import Written, judge
from meshgate.events import EventLog
from meshgate.store import Key, SqliteStore
from tests.tlscerts import Authority
from tests.unit.test_api_resources import CANARY, STABLE, errors, sava, service, url


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = await SqliteStore.open(tmp_path / "store.db")
    yield store
    await store.close()


@pytest.fixture
def events() -> EventLog:
    return EventLog()


@pytest.fixture
async def client(store: SqliteStore, events: EventLog) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(store, events=events))
    async with httpx.AsyncClient(transport=transport, base_url="http://meshgate") as client:
        yield client


async def apply(client: httpx.AsyncClient, *documents: Any, **params: str) -> httpx.Response:
    return await client.post("/api/v1/apply", json=list(documents), params=params)


# --- deletes that would break routes -------------------------------------------------------


async def test_deleting_a_service_gateways_route_to_is_refused_unless_forced(
    client: httpx.AsyncClient,
) -> None:
    assert (await apply(client, service(), service(CANARY), sava())).status_code == 200
    refused = await client.delete(url("services", STABLE))
    assert refused.status_code == 409
    (message,) = [m for _, m in errors(refused)]
    assert f"gateway sava (route {STABLE})" in message and "force" in message
    assert (await client.get(url("services", STABLE))).status_code == 200

    forced = await client.delete(url("services", STABLE), params={"force": "true"})
    assert forced.status_code == 204
    assert (await client.get(url("services", STABLE))).status_code == 404


async def test_deleting_a_gateway_another_chains_to_is_refused(client: httpx.AsyncClient) -> None:
    inner = {"name": "inner", "port": 9071, "routes": {"[127.0.0.1:8081]": {}}}
    outer = {"name": "outer", "port": 9072, "routes": {"inner": {}}}
    other = {"name": "outer", "namespace": "elsewhere", "port": 9073, "routes": {"x": {}}}
    assert (await apply(client, inner, outer, other)).status_code == 200
    refused = await client.delete(url("gateways", "inner"))
    assert refused.status_code == 409
    assert "gateway outer (route inner)" in errors(refused)[0][1]
    # The gateway that routes is not itself in use; its namesake elsewhere is unrelated.
    assert (await client.delete(url("gateways", "outer"))).status_code == 204
    assert (await client.delete(url("gateways", "inner"))).status_code == 204


async def test_a_certificate_in_use_stays_even_with_force(client: httpx.AsyncClient) -> None:
    issued = Authority().issue("a.example.com")
    certificate = {"kind": "certificate", "name": "a", "cert": issued.cert, "key": issued.key_text}
    gateway = {"name": "tls", "port": 9443, "tls": {"certificates": ["a"]}, "routes": {"x": {}}}
    assert (await apply(client, certificate, gateway)).status_code == 200
    refused = await client.delete(url("certificates", "a"), params={"force": "true"})
    assert refused.status_code == 409 and "gateway tls" in errors(refused)[0][1]


# --- get output applies again ----------------------------------------------------------------


async def test_get_output_applies_and_its_version_acts_as_if_match(
    client: httpx.AsyncClient,
) -> None:
    await apply(client, sava())
    fetched = (await client.get(url("gateways", "sava"))).json()
    assert "status" in fetched and "version" in fetched
    again = await apply(client, fetched)
    assert again.status_code == 200, again.text
    assert again.json()["applied"][0]["result"] == "unchanged"

    changed = {**fetched, "port": "9080/http"}
    assert (await apply(client, changed)).json()["applied"][0]["result"] == "configured"
    stale = await apply(client, {**fetched, "port": "9081/http"})  # still the old version
    assert stale.status_code == 412
    assert errors(stale)[0][0] == "documents.0.version"
    assert "not " + str(fetched["version"]) in errors(stale)[0][1]
    assert (await client.get(url("gateways", "sava"))).json()["port"] == "9080/http"


async def test_a_certificate_from_get_keeps_its_stored_key(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    issued = Authority().issue("a.example.com")
    document = {"kind": "certificate", "name": "a", "cert": issued.cert, "key": issued.key_text}
    assert (await apply(client, document)).status_code == 200
    fetched = (await client.get(url("certificates", "a"))).json()
    assert fetched["has_key"] is True and "key" not in fetched
    assert (await apply(client, fetched)).json()["applied"][0]["result"] == "unchanged"
    put = await client.put(url("certificates", "a"), json=fetched)
    assert put.status_code == 200, put.text
    stored = await store.get(Key("certificates", "default", "a"))
    assert stored is not None and stored.value["key"] == issued.key_text

    elsewhere = await apply(client, {**fetched, "name": "b", "version": None})
    assert elsewhere.status_code == 422
    assert errors(elsewhere)[0][0] == "documents.0.has_key"


async def test_a_version_in_a_put_body_acts_as_if_match(client: httpx.AsyncClient) -> None:
    created = (await client.put(url("gateways", "sava"), json=sava())).json()
    stale = {**created, "version": created["version"] + 100}
    refused = await client.put(url("gateways", "sava"), json=stale)
    assert refused.status_code == 412 and errors(refused)[0][0] == "If-Match"


@pytest.mark.parametrize("version", ["7", 0, True, 1.5])
async def test_a_version_that_is_not_one_is_a_field_error(
    client: httpx.AsyncClient, version: Any
) -> None:
    refused = await apply(client, sava(version=version))
    assert refused.status_code == 422
    assert errors(refused)[0][0] == "documents.0.version"


# --- dry runs ------------------------------------------------------------------------------


async def test_a_dry_run_checks_everything_and_writes_nothing(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    before = await store.revision()
    answer = await apply(client, service(), sava(), dry_run="true")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["dry_run"] is True
    assert [e["result"] for e in body["applied"]] == ["created", "created"]
    assert body["applied"][1]["document"]["routes"][CANARY]["weight"] == 10
    assert await store.revision() == before
    assert (await client.get(url("gateways", "sava"))).status_code == 404

    invalid = await apply(client, sava(port="99999"), dry_run="true")
    assert invalid.status_code == 422 and errors(invalid)[0][0].startswith("documents.0.port")


# --- warnings and waiting --------------------------------------------------------------------


async def test_apply_warns_of_routes_to_nothing(client: httpx.AsyncClient) -> None:
    answer = (await apply(client, service(), sava())).json()
    service_entry, gateway_entry = answer["applied"]
    assert service_entry["warnings"] == []
    (warning,) = gateway_entry["warnings"]
    assert warning.startswith(f"routes.{CANARY}: target '{CANARY}' does not exist")
    # Written in the same batch or already stored, a target resolves.
    assert (await apply(client, service(CANARY), sava())).json()["applied"][1]["warnings"] == []


async def test_waiting_without_an_agent_times_out_naming_what_is_not_live(
    client: httpx.AsyncClient,
) -> None:
    answer = (await apply(client, service(), wait="200ms")).json()
    assert answer["wait"]["done"] is False and answer["wait"]["timed_out"] is True
    (pending,) = answer["wait"]["pending"]
    assert (pending["kind"], pending["name"]) == ("service", STABLE)
    assert "not reported" in pending["reason"]


async def test_waiting_ends_when_the_status_reports_the_version(
    client: httpx.AsyncClient, store: SqliteStore
) -> None:
    async def agent() -> None:
        while (record := await store.get(Key("services", "default", STABLE))) is None:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        status = {"applied_version": record.revision, "instances": []}
        await store.put(Key("status.services", "default", STABLE), status)

    reporting = asyncio.create_task(agent())
    answer = (await apply(client, service(), wait="10s")).json()
    await reporting
    assert answer["wait"] == {"done": True, "timed_out": False, "rejected": [], "pending": []}


async def test_a_bad_wait_is_a_field_error(client: httpx.AsyncClient) -> None:
    refused = await apply(client, service(), wait="soon")
    assert refused.status_code == 422 and errors(refused)[0][0] == "wait"


def test_judging_a_status() -> None:
    written = Written("gateway", "default", "sava", 7)
    assert judge(written, None)[0] == "pending"
    assert judge(written, {"applied_version": 7, "state": "degraded"}) == ("live", "")
    reason = "port 9070 on 0.0.0.0 cannot be bound: Address already in use"
    rejected = {"applied_version": 3, "observed_version": 7, "state": "rejected"}
    rejected["errors"] = [reason]
    assert judge(written, rejected) == ("rejected", reason)
    # A rejection of an older version says nothing about this one.
    verdict, reason = judge(written, {**rejected, "observed_version": 6})
    assert (verdict, reason) == ("pending", "the data plane runs version 3, not 7")


# --- merge patches ---------------------------------------------------------------------------


async def test_patch_merges_into_the_stored_document(client: httpx.AsyncClient) -> None:
    created = (await client.put(url("gateways", "sava"), json=sava())).json()
    patch = {"routes": {STABLE: {"weight": 80}, CANARY: {"weight": "20%"}}}
    headers = {"Content-Type": "application/merge-patch+json"}
    patched = await client.patch(url("gateways", "sava"), json=patch, headers=headers)
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["routes"][STABLE]["weight"] == 80 and body["routes"][CANARY]["weight"] == 20
    assert body["version"] > created["version"] and body["port"] == "9070/http"

    removed = await client.patch(url("gateway", "sava"), json={"routes": {CANARY: None}})
    assert removed.status_code == 422  # 80 alone does not total 100
    assert errors(removed)[0][0].startswith("routes")

    stale = await client.patch(
        url("gateways", "sava"), json={"port": 9090}, headers={"If-Match": str(created["version"])}
    )
    assert stale.status_code == 412


async def test_patch_bad_input(client: httpx.AsyncClient) -> None:
    missing = await client.patch(url("gateways", "nothing"), json={"port": 9090})
    assert missing.status_code == 404
    await client.put(url("gateways", "sava"), json=sava())
    not_object = await client.patch(url("gateways", "sava"), json=[1])
    assert not_object.status_code == 422
    bad = await client.patch(url("gateways", "sava"), json={"routes": {STABLE: {"weight": "x"}}})
    assert bad.status_code == 422 and errors(bad)[0][0] == f"routes.{STABLE}.weight"
    renamed = await client.patch(url("gateways", "sava"), json={"name": "other"})
    assert renamed.status_code == 422 and errors(renamed)[0][0] == "name"


# --- kind names, events ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gateway", "gateways", "gw", "Gateways"])
async def test_kinds_go_by_singular_plural_and_short_names(
    client: httpx.AsyncClient, kind: str
) -> None:
    await client.put(url("gateways", "sava"), json=sava())
    assert (await client.get(url(kind, "sava"))).json()["name"] == "sava"
    assert [g["name"] for g in (await client.get(f"/api/v1/{kind}")).json()["items"]] == ["sava"]


async def test_events_are_listed_and_filtered(client: httpx.AsyncClient, events: EventLog) -> None:
    events.record("reload", "HAProxy reloaded: first configuration")
    events.record("applied", "version 2 is live", kind="gateway", namespace="default", name="a")
    events.record("applied", "version 3 is live", kind="service", namespace="default", name="a")
    everything = (await client.get("/api/v1/events")).json()["items"]
    assert [e["type"] for e in everything] == ["reload", "applied", "applied"]
    gateways = await client.get("/api/v1/events", params={"kind": "gateways", "name": "a"})
    assert [e["message"] for e in gateways.json()["items"]] == ["version 2 is live"]
    newest = await client.get("/api/v1/events", params={"limit": 1, "since": "1m"})
    assert [e["id"] for e in newest.json()["items"]] == [3]
    after = await client.get("/api/v1/events", params={"after": 2})
    assert [e["id"] for e in after.json()["items"]] == [3]


@pytest.mark.parametrize(
    ("params", "field"),
    [({"kind": "pods"}, "kind"), ({"type": "boom"}, "type"), ({"since": "soon"}, "since"),
     ({"limit": 0}, "limit"), ({"after": "x"}, "after")],
)  # fmt: skip
async def test_bad_event_filters_name_the_field(
    client: httpx.AsyncClient, params: dict[str, Any], field: str
) -> None:
    refused = await client.get("/api/v1/events", params=params)
    assert refused.status_code == 422
    assert errors(refused)[0][0] == field


async def test_registrations_are_events(client: httpx.AsyncClient, events: EventLog) -> None:
    await apply(client, service())
    instances = f"{url('services', STABLE)}/instances"
    registered = await client.post(instances, json={"address": "127.0.0.1", "port": 9000})
    assert registered.status_code == 201
    assert (await client.delete(f"{instances}/127.0.0.1:9000")).status_code == 204
    assert [(e.type, e.name, e.instance) for e in events.query()] == [
        ("registered", STABLE, "127.0.0.1:9000"),
        ("deregistered", STABLE, "127.0.0.1:9000"),
    ]


async def test_a_batch_of_many_reads_the_store_by_listing_with_the_same_answers(
    client: httpx.AsyncClient,
) -> None:
    """Past `READ_ONE_BY_ONE` documents an apply lists each kind instead of reading each key:
    what is unchanged, configured or created, and which routes lead nowhere, are as before."""
    from meshgate.api.stored import READ_ONE_BY_ONE

    count = READ_ONE_BY_ONE + 10

    def gateway(n: int, **changes: Any) -> dict[str, Any]:
        return sava(name=f"g{n}", virtual_hosts=[f"h{n}.example.com"], **changes)

    assert (await apply(client, service(), gateway(0), gateway(1))).status_code == 200
    batch = [gateway(0), gateway(1, port="9071/http"), *(gateway(n) for n in range(2, count))]
    answer = await apply(client, service(CANARY), *batch)
    assert answer.status_code == 200, answer.text
    applied = answer.json()["applied"]
    assert [e["result"] for e in applied[:4]] == ["created", "unchanged", "configured", "created"]
    assert all(e["warnings"] == [] for e in applied)  # STABLE stored, CANARY in the batch
    alone = sava(name="alone", virtual_hosts=["alone.example.com"])
    alone["routes"] = {**alone["routes"], "nowhere": {"weight": "0%"}}
    answer = await apply(client, alone, *(gateway(n) for n in range(count)))
    (warning,) = answer.json()["applied"][0]["warnings"]
    assert warning.startswith("routes.nowhere: target 'nowhere' does not exist")
