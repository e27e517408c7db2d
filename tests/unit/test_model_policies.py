"""Policies: valid values are kept typed, bad ones are rejected with their field path."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from meshgate.errors import ValidationFailed
from meshgate.model import Gateway, validate_resource
from meshgate.model.policies import REDACTED, hide_passwords


def sha512(password: str) -> str:
    return subprocess.run(
        ["openssl", "passwd", "-6", password], check=True, capture_output=True, text=True
    ).stdout.strip()


HASH = sha512("secret")


def gateway(policies: dict[str, Any], port: str = "9070/http") -> Gateway:
    resource = validate_resource(
        {"name": "web", "port": port, "policies": policies, "routes": {"a": {}}}
    )
    assert isinstance(resource, Gateway)
    return resource


def rejected(policies: dict[str, Any], port: str = "9070/http", on_route: bool = False) -> str:
    route = {"policies": policies} if on_route else {}
    document = {"name": "web", "port": port, "routes": {"a": route}}
    if not on_route:
        document["policies"] = policies
    with pytest.raises(ValidationFailed) as caught:
        validate_resource(document)
    (problem,) = caught.value.problems
    return problem.path


def test_a_full_policy_is_typed() -> None:
    policies = gateway(
        {
            "rate_limit": {"requests": 100, "per": "1m", "by": "header(X-Key)"},
            "allow": ["10.1.2.3/8", "127.0.0.1", "::1"],
            "basic_auth": {"realm": "admin", "users": {"alice": HASH}},
            "headers": {"response": {"set": {"Strict-Transport-Security": "max-age=1"}}},
            "redirect": {"scheme": "https"},
            "max_body": "10m",
        }
    ).policies
    assert policies is not None and policies.rate_limit is not None
    assert (policies.rate_limit.per, policies.rate_limit.header) == (60_000, "X-Key")
    assert policies.allow == ["10.0.0.0/8", "127.0.0.1/32", "::1/128"]
    assert policies.max_body == 10 << 20
    assert policies.redirect is not None and policies.redirect.status == 301


@pytest.mark.parametrize(
    ("policies", "path"),
    [
        ({"allow": ["10.0.0.300/8"]}, "policies.allow.0"),
        ({"deny": ["127.0.0.1", "fe80::1%eth0"]}, "policies.deny.1"),
        ({"rate_limit": {"requests": 0}}, "policies.rate_limit.requests"),
        ({"rate_limit": {"requests": 10**9}}, "policies.rate_limit.requests"),
        ({"rate_limit": {"requests": 1, "per": "500ms"}}, "policies.rate_limit.per"),
        ({"rate_limit": {"requests": 1, "by": "cookie(x)"}}, "policies.rate_limit.by"),
        ({"rate_limit": {"requests": 1, "by": "header(X\nY)"}}, "policies.rate_limit.by"),
        ({"headers": {"request": {"set": {"X-A": "a\r\nX-Evil: 1"}}}}, "policies.headers"),
        ({"headers": {"request": {"set": {"X-A": "%[src]"}}}}, "policies.headers"),
        ({"headers": {"response": {"set": {"X A": "1"}}}}, "policies.headers"),
        ({"headers": {"response": {"remove": ["Server\n"]}}}, "policies.headers"),
        ({"redirect": {"location": "example.com"}}, "policies.redirect.location"),
        ({"redirect": {"location": "javascript:alert(1)"}}, "policies.redirect.location"),
        ({"redirect": {"location": "https://a.b/\n"}}, "policies.redirect.location"),
        ({"redirect": {"scheme": "ftp"}}, "policies.redirect.scheme"),
        ({"redirect": {"scheme": "https", "code": 200}}, "policies.redirect.code"),
        ({"redirect": {}}, "policies.redirect"),
        ({"max_body": 0}, "policies.max_body"),
        ({"max_body": "5t"}, "policies.max_body"),
        ({"max_body": "2000000g"}, "policies.max_body"),
        ({"basic_auth": {"realm": "a", "users": {"alice": "secret"}}}, "policies.basic_auth"),
        ({"basic_auth": {"realm": "a", "users": {"alice": "$6$x$short"}}}, "policies.basic_auth"),
        ({"basic_auth": {"realm": 'a"b', "users": {"alice": HASH}}}, "policies.basic_auth.realm"),
        ({"basic_auth": {"realm": "a", "users": {"bad user": HASH}}}, "policies.basic_auth"),
        ({"basic_auth": {"realm": "a", "users": {}}}, "policies.basic_auth.users"),
        ({"unknown": 1}, "policies.unknown"),
    ],
)
def test_bad_input_is_rejected_with_its_path(policies: dict[str, Any], path: str) -> None:
    assert rejected(policies).startswith(path)
    assert rejected(policies, on_route=True).startswith(f"routes.a.{path}")


def test_plain_text_passwords_are_refused_with_the_user() -> None:
    path = rejected({"basic_auth": {"realm": "a", "users": {"alice": "hunter2"}}})
    assert path == "policies.basic_auth.users.alice"


def test_tcp_gateways_take_networks_only() -> None:
    assert gateway({"allow": ["127.0.0.1"]}, port="9070/tcp").policies is not None
    assert rejected({"max_body": "1m"}, port="9070/tcp") == "policies.max_body"
    path = rejected({"rate_limit": {"requests": 1}}, port="9070/tcp", on_route=True)
    assert path == "routes.a.policies.rate_limit"


def test_the_api_shows_users_never_their_hashes() -> None:
    auth = {"realm": "a", "users": {"alice": HASH}}
    document = {
        "policies": {"basic_auth": auth},
        "routes": {"a": {"policies": {"basic_auth": auth}}},
    }
    shown = hide_passwords(document)
    assert shown["policies"]["basic_auth"]["users"] == {"alice": REDACTED}
    assert shown["routes"]["a"]["policies"]["basic_auth"]["users"] == {"alice": REDACTED}
    assert HASH not in repr(shown) and HASH in repr(document)
    # The placeholder is not a hash: a document read back from the API cannot be re-applied
    # with it by mistake.
    assert rejected({"basic_auth": {"realm": "a", "users": {"alice": REDACTED}}})
