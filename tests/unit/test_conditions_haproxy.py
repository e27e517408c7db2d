"""Translating conditions into HAProxy terms: term formats, the OR-of-ANDs form and its text."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshgate.conditions import (
    MAX_LINE_WORDS,
    And,
    Condition,
    ConditionError,
    Constant,
    CookieMatch,
    CookiePresent,
    HeaderPresent,
    HostEquals,
    Not,
    Or,
    PathMatch,
    RawAcl,
    SourceIn,
    TextMatch,
    UserAgentContains,
    count_words,
    parse_condition,
    render_alternatives,
    render_condition,
    to_dnf,
)


def dnf(text: str, *, allow_raw_acl: bool = False) -> tuple[tuple[str, ...], ...]:
    return to_dnf(parse_condition(text, allow_raw_acl=allow_raw_acl))


def term(text: str) -> str:
    """The single term `text` translates to."""
    ((only,),) = dnf(text)
    return only


A = "{ req.cook(a) -m found }"
B = "{ req.cook(b) -m found }"
C = "{ req.cook(c) -m found }"
NOT_A, NOT_B, NOT_C = ("!" + t for t in (A, B, C))


# --- term formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user-agent == Firefox", "{ req.fhdr(user-agent) -m sub -i 'Firefox' }"),
        ("user-agent == firefox", "{ req.fhdr(user-agent) -m sub -i 'Firefox' }"),
        ("user-agent == Chrome", "{ req.fhdr(user-agent) -m sub -i 'Chrome' }"),
        ("user-agent == SAFARI", "{ req.fhdr(user-agent) -m sub -i 'Safari' }"),
        ("user-agent == Edge", "{ req.fhdr(user-agent) -m sub -i 'Edg' }"),
        ('user-agent == "Opera Mini"', "{ req.fhdr(user-agent) -m sub -i 'Opera Mini' }"),
        ("user-agent != Firefox", "!{ req.fhdr(user-agent) -m sub -i 'Firefox' }"),
        (
            "host == Sava.Example.com",
            "{ req.hdr(host),field(1,:),lower -m str 'sava.example.com' }",
        ),
        ("host misses a.com", "!{ req.hdr(host),field(1,:),lower -m str 'a.com' }"),
        ("has cookie beta", "{ req.cook(beta) -m found }"),
        ("misses cookie beta", "!{ req.cook(beta) -m found }"),
        ("has header X-Canary", "{ req.hdr(X-Canary) -m found }"),
        ("misses header X-Canary", "!{ req.hdr(X-Canary) -m found }"),
        ("cookie group has blue", "{ req.cook(group) -m sub 'blue' }"),
        ("cookie group misses blue", "!{ req.cook(group) -m sub 'blue' }"),
        ("cookie group == blue", "{ req.cook(group) -m str 'blue' }"),
        ("header X-Env contains stage", "{ req.hdr(X-Env) -m sub 'stage' }"),
        ("header X-Env != stage", "!{ req.hdr(X-Env) -m str 'stage' }"),
        ("path == /api", "{ path -m str '/api' }"),
        ("path != /api", "!{ path -m str '/api' }"),
        ("path starts with /api", "{ path -m beg '/api' }"),
        ("path ends with .json", "{ path -m end '.json' }"),
        (r'path matches "^/v\d+/"', r"{ path -m reg '^/v\d+/' }"),
        ("method == get", "{ method GET }"),
        ("method != DELETE", "!{ method DELETE }"),
        ("query debug == 1", "{ url_param(debug) -m str '1' }"),
        ("has query debug", "{ url_param(debug) -m found }"),
        ("misses query debug", "!{ url_param(debug) -m found }"),
        ("source in 10.1.0.0/8, 192.168.1.0/24", "{ src 10.0.0.0/8 192.168.1.0/24 }"),
        ("source not in fd00::/8", "!{ src fd00::/8 }"),
        ('cookie x == "a b # c $HOME"', "{ req.cook(x) -m str 'a b # c $HOME' }"),
    ],
)
def test_term_formats(text: str, expected: str) -> None:
    assert term(text) == expected


def test_value_that_looks_like_an_option_follows_a_double_dash() -> None:
    assert term("cookie x == -i") == "{ req.cook(x) -m str -- '-i' }"
    assert term("user-agent == -f") == "{ req.fhdr(user-agent) -m sub -i -- '-f' }"


def test_raw_acl_term() -> None:
    assert term_raw("< hdr_sub(user-agent) Android >") == "{ hdr_sub(user-agent) Android }"


def term_raw(text: str) -> str:
    ((only,),) = dnf(text, allow_raw_acl=True)
    return only


# --- normal form --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("has cookie a and (has cookie b or has cookie c)", ((A, B), (A, C))),
        ("(has cookie a or has cookie b) and has cookie c", ((A, C), (B, C))),
        ("not (has cookie a and has cookie b)", ((NOT_A,), (NOT_B,))),
        ("not (has cookie a or has cookie b)", ((NOT_A, NOT_B),)),
        ("not not has cookie a", ((A,),)),
        ("not (has cookie a and not has cookie b)", ((NOT_A,), (B,))),
        ("has cookie a or has cookie b and has cookie c", ((A,), (B, C))),
        ("has cookie a or has cookie a", ((A,),)),
        ("has cookie a and has cookie a", ((A,),)),
        ("has cookie a or (has cookie a and has cookie b)", ((A,),)),
        ("(has cookie a and has cookie b) or has cookie a", ((A,),)),
        ("has cookie a and misses cookie a", ()),
        ("has cookie a or misses cookie a", ((A,), (NOT_A,))),
    ],
)
def test_normal_form(text: str, expected: tuple[tuple[str, ...], ...]) -> None:
    assert dnf(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", ((),)),
        ("false", ()),
        ("not true", ()),
        ("not false", ((),)),
        ("true and has cookie a", ((A,),)),
        ("false and has cookie a", ()),
        ("true or has cookie a", ((),)),
        ("false or has cookie a", ((A,),)),
        ("has cookie a and not (false or has cookie b)", ((A, NOT_B),)),
        ("not (true and has cookie a)", ((NOT_A,),)),
    ],
)
def test_constants_fold(text: str, expected: tuple[tuple[str, ...], ...]) -> None:
    assert dnf(text) == expected


def test_internet_explorer_is_two_alternatives() -> None:
    msie = "{ req.fhdr(user-agent) -m sub -i 'MSIE' }"
    trident = "{ req.fhdr(user-agent) -m sub -i 'Trident' }"
    assert dnf("user-agent == IE") == ((msie,), (trident,))
    assert dnf("user-agent == ie and has cookie a") == ((msie, A), (trident, A))
    assert dnf("user-agent != IE") == (("!" + msie, "!" + trident),)


def test_output_is_deterministic_and_in_written_order() -> None:
    text = "(has cookie c or has cookie a) and (has cookie b or true)"
    assert dnf(text) == ((C,), (A,))
    assert dnf(text) == dnf(text)


def test_too_complex() -> None:
    # Seven two-way choices ANDed together expand to 2**7 = 128 conjunctions.
    text = " and ".join(f"(has cookie a{i} or has cookie b{i})" for i in range(7))
    with pytest.raises(ConditionError) as caught:
        dnf(text)
    assert caught.value.column == 1
    assert caught.value.message.startswith("condition is too complex")


def test_six_choices_fit() -> None:
    text = " and ".join(f"(has cookie a{i} or has cookie b{i})" for i in range(6))
    assert len(dnf(text)) == 64


def test_trees_built_by_hand_are_checked_too() -> None:
    unsafe: list[Condition] = [
        CookieMatch("a b", TextMatch.EQUALS, "x", 3),
        CookieMatch("a", TextMatch.EQUALS, "x' }\nbackend evil", 3),
        CookieMatch("a", TextMatch.PREFIX, "x", 3),
        HostEquals("a.com\n", 3),
        PathMatch(TextMatch.REGEX, "(", 3),
        SourceIn(("10.0.0.0/8 || { always_true }",), 3),
        SourceIn((), 3),
        RawAcl("x } || { always_true", 3),
        Not(UserAgentContains("%[src]", 3), 1),
        HeaderPresent("", 3),
    ]
    for cond in unsafe:
        with pytest.raises(ConditionError) as caught:
            to_dnf(cond)
        assert caught.value.column == 3, cond


# Random trees over four cookies: the OR of ANDs must agree with the tree on every request.
COOKIES = "abcd"
small_trees = st.recursive(
    st.one_of(
        st.sampled_from(COOKIES).map(lambda name: CookiePresent(name, 1)),
        st.booleans().map(lambda value: Constant(value, 1)),
    ),
    lambda inner: st.one_of(
        inner.map(lambda operand: Not(operand, 1)),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: And(tuple(ops), 1)),
        st.lists(inner, min_size=2, max_size=3).map(lambda ops: Or(tuple(ops), 1)),
    ),
    max_leaves=10,
)


def evaluate(cond: Condition, cookies: set[str]) -> bool:
    if isinstance(cond, Constant):
        return cond.value
    if isinstance(cond, CookiePresent):
        return cond.name in cookies
    if isinstance(cond, Not):
        return not evaluate(cond.operand, cookies)
    if isinstance(cond, And):
        return all(evaluate(op, cookies) for op in cond.operands)
    assert isinstance(cond, Or)
    return any(evaluate(op, cookies) for op in cond.operands)


def evaluate_term(term: str, cookies: set[str]) -> bool:
    name = term.split("req.cook(")[1][0]
    return (name in cookies) != term.startswith("!")


@settings(max_examples=300, deadline=None)
@given(small_trees)
def test_normal_form_means_the_same_as_the_tree(cond: Condition) -> None:
    form = to_dnf(cond)
    for mask in range(2 ** len(COOKIES)):
        cookies = {name for bit, name in enumerate(COOKIES) if mask & (1 << bit)}
        in_form = any(all(evaluate_term(t, cookies) for t in conj) for conj in form)
        assert in_form == evaluate(cond, cookies)
    # Simplified: no repeats, no contradictions, no conjunction implied by another.
    sets = [frozenset(conj) for conj in form]
    for index, conj in enumerate(sets):
        assert len(conj) == len(form[index])
        assert not any(("!" + t) in conj for t in conj)
        assert not any(other <= conj for j, other in enumerate(sets) if j != index)


# --- rendering ----------------------------------------------------------------------------------


def test_render_joins_conjunctions_with_or() -> None:
    assert render_condition(((A, B), (C,))) == f"{A} {B} || {C}"


def test_render_prefixes_guards_to_every_conjunction() -> None:
    guards = ["{ var(txn.gw) -m str 'sava' }", "{ rand(100) lt 50 }"]
    assert render_condition(((A,), (B, C)), guards) == (
        f"{guards[0]} {guards[1]} {A} || {guards[0]} {guards[1]} {B} {C}"
    )


def test_render_never_is_none() -> None:
    assert render_condition(()) is None
    assert render_condition((), ["{ g }"]) is None


def test_render_always() -> None:
    assert render_condition(((),)) == "{ always_true }"
    assert render_condition(((),), ["{ g }"]) == "{ g }"
    assert render_condition(((A,), ())) == "{ always_true }"


def test_render_does_not_repeat_a_guard() -> None:
    assert render_condition(((A, B),), [A]) == f"{A} {B}"


def test_render_alternatives_one_text_per_conjunction() -> None:
    assert render_alternatives(((A,), (B, C)), ["{ g }"]) == [f"{{ g }} {A}", f"{{ g }} {B} {C}"]
    assert render_alternatives(()) == []
    assert render_alternatives(((A,), ())) == ["{ always_true }"]


def test_count_words() -> None:
    assert count_words("{ req.cook(x) -m sub 'a b  c' }") == 6
    assert count_words(render_condition(dnf("has cookie a or has cookie b")) or "") == 11
    assert count_words("") == 0


# --- real HAProxy -------------------------------------------------------------------------------

REPRESENTATIVE = [
    "user-agent == Firefox and has cookie beta",
    "user.agent != IE",
    "useragent is Edge or user-agent == Chrome or user-agent == Safari",
    "host == Sava.Example.com or host misses other.example.com",
    "has header X-Canary and misses cookie stable",
    'cookie group has blue or cookie group == "dark blue" or cookie group misses red',
    "header X-Env contains stage and header X-Env != prod",
    "path == /api or path starts with /v2/ or path ends with .json",
    r'path matches "^/v[0-9]+/(users|items)\.json$"',
    "method == POST and not method == PUT",
    "query debug == 1 or has query trace or misses query x",
    "source in 10.0.0.0/8, 192.168.1.0/24, 2001:db8::/32",
    "source not in ::1",
    'cookie x == -i or header y has "a # b $HOME {c}"',
    "not (has cookie a and (has cookie b or not has cookie c))",
    "true",
]


def _haproxy_check(tmp_path: Path, lines: list[str]) -> subprocess.CompletedProcess[str]:
    rules = "\n".join(f"    http-request deny if {line}" for line in lines)
    config = tmp_path / "haproxy.cfg"
    # `haproxy -c` does not bind, but it rejects port 0, so a fixed loopback port is named.
    config.write_text(
        "defaults\n"
        "    mode http\n"
        "    timeout connect 1s\n"
        "    timeout client 1s\n"
        "    timeout server 1s\n"
        "frontend main\n"
        "    bind 127.0.0.1:18080\n"
        f"{rules}\n"
        "    default_backend app\n"
        "backend app\n"
        "    server app1 127.0.0.1:18081\n"
    )
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    return subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_accepts_rendered_conditions(tmp_path: Path) -> None:
    lines = []
    for text in REPRESENTATIVE:
        rendered = render_condition(to_dnf(parse_condition(text)), ["{ src 127.0.0.1 }"])
        assert rendered is not None, text
        assert count_words(f"http-request deny if {rendered}") <= MAX_LINE_WORDS, text
        lines.append(rendered)
    lines.append(render_condition(dnf("true")) or "")
    raw = "< hdr_sub(user-agent) Android > and < path_reg ^/a$ >"
    lines.append(render_condition(dnf(raw, allow_raw_acl=True)) or "")
    result = _haproxy_check(tmp_path, lines)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_line_word_limit_is_real(tmp_path: Path) -> None:
    # The limit count_words guards against: a 65-word line is a fatal error in HAProxy 2.6.
    networks = " ".join(["10.0.0.1"] * (MAX_LINE_WORDS - 6))
    assert _haproxy_check(tmp_path, [f"{{ src {networks} }}"]).returncode == 0
    too_long = _haproxy_check(tmp_path, [f"{{ src {networks} 10.0.0.2 }}"])
    assert too_long.returncode != 0
    assert "too many words" in too_long.stdout + too_long.stderr


# Each case: a condition and requests (method, target, headers) with whether it should match.
_Request = tuple[str, str, dict[str, str]]
SEMANTICS: list[tuple[str, list[tuple[_Request, bool]]]] = [
    (
        "user-agent == IE",
        [
            (("GET", "/", {"User-Agent": "Mozilla/5.0 (compatible; MSIE 10.0)"}), True),
            (("GET", "/", {"User-Agent": "Mozilla/5.0 (Trident/7.0; rv:11.0)"}), True),
            (("GET", "/", {"User-Agent": "Mozilla/5.0 Firefox/126.0"}), False),
        ],
    ),
    (
        "user-agent != IE",
        [
            (("GET", "/", {"User-Agent": "Mozilla/5.0 (Trident/7.0; rv:11.0)"}), False),
            (("GET", "/", {"User-Agent": "Mozilla/5.0 firefox/126.0"}), True),
        ],
    ),
    (
        "user-agent == firefox",
        [(("GET", "/", {"User-Agent": "Mozilla/5.0 (X11, Linux) Firefox/126.0"}), True)],
    ),
    (
        "host == Sava.Example.com",
        [
            (("GET", "/", {"Host": "SAVA.example.COM:8080"}), True),
            (("GET", "/", {"Host": "sava.example.com"}), True),
            (("GET", "/", {"Host": "sava.example.com.evil"}), False),
        ],
    ),
    (
        "cookie x == -i",
        [
            (("GET", "/", {"Cookie": "a=1; x=-i"}), True),
            (("GET", "/", {"Cookie": "x=abc"}), False),
        ],
    ),
    (
        r'path matches "^/v[0-9]+/a\.json$"',
        [
            (("GET", "/v2/a.json?x=1", {}), True),
            (("GET", "/v2/aXjson", {}), False),
        ],
    ),
    (
        "method == POST and has query debug",
        [
            (("POST", "/?debug=1", {}), True),
            (("GET", "/?debug=1", {}), False),
            (("POST", "/?x=1", {}), False),
        ],
    ),
    ("source in 127.0.0.0/8, ::1", [(("GET", "/", {}), True)]),
    ("source not in 127.0.0.1", [(("GET", "/", {}), False)]),
    (
        "not (has cookie a and (has cookie b or not has cookie c))",
        [
            (("GET", "/", {"Cookie": "a=1; b=1"}), False),
            (("GET", "/", {"Cookie": "a=1; c=1"}), True),
            (("GET", "/", {}), True),
        ],
    ),
    (
        "header X-Env contains stage and path starts with /api",
        [
            (("GET", "/api/x", {"X-Env": "pre-stage-2"}), True),
            (("GET", "/apx", {"X-Env": "pre-stage-2"}), False),
        ],
    ),
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _status(port: int, request: _Request, case: int) -> int:
    method, target, headers = request
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, target, headers={"X-Case": str(case), **headers})
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")
def test_haproxy_matches_requests_as_the_language_says(tmp_path: Path) -> None:
    port = _free_port()
    rules = []
    for case, (text, _) in enumerate(SEMANTICS):
        rendered = render_condition(dnf(text), [f"{{ req.hdr(x-case) -m str '{case}' }}"])
        assert rendered is not None
        rules.append(f"    http-request return status 200 if {rendered}\n")
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        "global\n    maxconn 64\n"
        "defaults\n    mode http\n    timeout client 5s\n    timeout connect 1s\n"
        "    timeout server 1s\n"
        f"frontend main\n    bind 127.0.0.1:{port}\n{''.join(rules)}"
        "    http-request return status 403\n"
    )
    haproxy = shutil.which("haproxy")
    assert haproxy is not None
    log_path = tmp_path / "haproxy.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([haproxy, "-db", "-f", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, log_path.read_text()
                assert time.monotonic() < deadline, "haproxy did not start listening"
                time.sleep(0.05)
        for case, (text, requests) in enumerate(SEMANTICS):
            for request, should_match in requests:
                expected = 200 if should_match else 403
                assert _status(port, request, case) == expected, (text, request)
    finally:
        process.terminate()
        process.wait(timeout=10)
