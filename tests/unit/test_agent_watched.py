"""What the agent keeps of a watched change until its next load (`meshgate.agent.watched`)."""

from __future__ import annotations

from meshgate.agent.watched import kept
from meshgate.store import Key, WatchEvent

GW = Key("gateways", "default", "a")


def test_a_put_without_its_whole_record_keeps_its_key_not_its_value() -> None:
    # The embedded store's events: the load reads the key again, the value is never used.
    event = WatchEvent("put", GW, 7, {"routes": {"[127.0.0.1:1]": {"weight": 1}}})
    made = kept(event)
    assert (made.type, made.key, made.revision, made.value) == ("put", GW, 7, None)
    assert made.record() is None  # as before: the load reads it


def test_a_put_carrying_its_whole_record_is_kept_as_it_came() -> None:
    # etcd's events: the next load takes the record from the event and reads nothing.
    event = WatchEvent("put", GW, 7, {"port": "80/http"}, create_revision=3)
    assert kept(event) is event
    assert kept(event).record() is not None


def test_a_delete_is_kept_as_it_came() -> None:
    event = WatchEvent("delete", GW, 8, None)
    assert kept(event) is event
