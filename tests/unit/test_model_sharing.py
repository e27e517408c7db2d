"""Equal parts of many gateway models are one object, and nothing they say changes."""

from __future__ import annotations

from typing import Any

from meshgate.agent.published import UNKNOWN, Published
from meshgate.model import Gateway, to_document, validate_resource


def gateway(name: str, **fields: Any) -> Gateway:
    found = validate_resource({"name": name, "port": "9000/http", **fields})
    assert isinstance(found, Gateway)
    return found


def test_equal_ports_timeouts_and_plain_routes_are_shared() -> None:
    a = gateway("a", routes={"web": {"weight": 100}})
    b = gateway("b", routes={"web": {"weight": 100}})
    assert a.port is b.port and a.timeouts is b.timeouts
    assert a.routes["web"] is b.routes["web"]
    # What each says is its own: the documents are those of unshared models.
    assert to_document(a) == {**to_document(b), "name": "a"}
    assert to_document(a)["routes"] == {"web": {"weight": 100, "rewrites": []}}


def test_parts_that_differ_or_hold_lists_are_not_shared() -> None:
    weighted = gateway("a", routes={"web": {"weight": 100}})
    unweighted = gateway("b", routes={"web": {}})
    assert weighted.routes["web"] is not unweighted.routes["web"]  # another field given
    rewriting = [gateway(n, routes={"web": {"rewrites": [{"path": "/x"}]}}) for n in "cd"]
    assert rewriting[0].routes["web"] is not rewriting[1].routes["web"]
    assert rewriting[0].routes["web"] == rewriting[1].routes["web"]
    other_port = gateway("e", port="9001/http")
    assert other_port.port is not weighted.port
    assert other_port.port.number == 9001


def test_gateways_given_the_same_fields_share_one_set_of_them() -> None:
    a = gateway("a", routes={"web": {"weight": 100}}, virtual_hosts=["a.test"])
    b = gateway("b", routes={"web": {"weight": 100}}, virtual_hosts=["b.test"])
    assert a.model_fields_set is b.model_fields_set
    bare = gateway("c", routes={"web": {"weight": 100}})
    assert bare.model_fields_set == a.model_fields_set - {"virtual_hosts"}
    # A copy with a change has a set of its own: the shared one is left as it was.
    moved = a.model_copy(update={"bind": "127.0.0.2"})
    assert "bind" in moved.model_fields_set and "bind" not in b.model_fields_set
    assert (moved.bind, b.bind) == ("127.0.0.2", "0.0.0.0")


def test_published_status_answers_as_the_status_did() -> None:
    status = {"state": "serving", "applied_version": 7, "errors": [], "routes": {"r": {}}}
    published = Published(status)
    assert published.get("applied_version") == 7
    assert published.get("errors") == []
    assert published.same({**status})
    assert not published.same({**status, "applied_version": 8})
    assert not UNKNOWN.same({}) and UNKNOWN.get("applied_version") is None
