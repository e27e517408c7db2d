"""What changes in a watched manifest directory do to the store, as transcripts."""

from __future__ import annotations

from meshgate.model import Resource, validate_resource
from meshgate.watchdir.plan import FileChange, Owned, Parsed, plan_changes


def svc(name: str) -> Resource:
    return validate_resource({"kind": "service", "name": name, "instances": ["127.0.0.1:1"]})


def key(name: str) -> tuple[str, str, str]:
    return ("services", "default", name)


def owned(digest: str, *names: str) -> Owned:
    return Owned(digest, frozenset(key(n) for n in names))


def test_new_file_is_applied() -> None:
    plan = plan_changes({}, ["a.yaml"], {"a.yaml": Parsed("d1", (svc("x"), svc("y")))})
    assert plan.rejections == []
    assert plan.changes == [FileChange("a.yaml", "d1", (svc("x"), svc("y")), frozenset())]


def test_changed_file_deletes_what_it_no_longer_defines() -> None:
    plan = plan_changes(
        {"a.yaml": owned("d1", "x", "y")}, ["a.yaml"], {"a.yaml": Parsed("d2", (svc("x"),))}
    )
    assert plan.changes == [FileChange("a.yaml", "d2", (svc("x"),), frozenset({key("y")}))]


def test_removed_file_deletes_everything_it_defined() -> None:
    plan = plan_changes({"a.yaml": owned("d1", "x"), "b.yaml": owned("d2", "z")}, ["b.yaml"], {})
    assert plan.changes == [FileChange("a.yaml", None, (), frozenset({key("x")}))]


def test_invalid_file_changes_nothing() -> None:
    before = {"a.yaml": owned("d1", "x")}
    plan = plan_changes(before, ["a.yaml"], {"a.yaml": Parsed("d2", errors=("a.yaml:3: bad",))})
    assert plan.changes == []
    assert [(r.path, r.errors) for r in plan.rejections] == [("a.yaml", ("a.yaml:3: bad",))]


def test_a_resource_defined_in_two_files_rejects_the_newcomer() -> None:
    plan = plan_changes(
        {"a.yaml": owned("d1", "x")}, ["a.yaml", "b.yaml"], {"b.yaml": Parsed("d2", (svc("x"),))}
    )
    assert plan.changes == []
    assert plan.rejections[0].errors == ("service default/x is also defined in a.yaml",)
    twice = plan_changes({}, ["c.yaml"], {"c.yaml": Parsed("d", (svc("q"), svc("q")))})
    assert twice.rejections[0].errors == ("service default/q is defined twice in this file",)


def test_a_resource_moving_between_files_is_never_deleted() -> None:
    before = {"a.yaml": owned("d1", "x", "y")}
    plan = plan_changes(
        before,
        ["a.yaml", "b.yaml"],
        {"a.yaml": Parsed("d2", (svc("x"),)), "b.yaml": Parsed("d3", (svc("y"),))},
    )
    assert plan.rejections == []
    assert plan.changes == [
        FileChange("a.yaml", "d2", (svc("x"),), frozenset()),
        FileChange("b.yaml", "d3", (svc("y"),), frozenset()),
    ]
    # The same move when the old file is removed outright.
    moved = plan_changes(before, ["b.yaml"], {"b.yaml": Parsed("d3", (svc("x"), svc("y")))})
    assert moved.changes[0] == FileChange("a.yaml", None, (), frozenset())
