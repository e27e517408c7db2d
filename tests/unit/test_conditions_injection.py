"""Property: no condition text can put anything into HAProxy's configuration but ACL terms.

For any input, either parsing (or expansion) fails with ConditionError, or every rendered term is
one self-contained `{ ... }` block that HAProxy's line parser reads the way we meant: one line, no
comment, no environment variable, no `%[...]`, quotes balanced, no word that closes the block
early and no value that HAProxy would take for an option.
"""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshgate.conditions import ConditionError, parse_condition, render_condition, to_dnf

# Characters and fragments that mean something to HAProxy or to the condition language.
NASTY = [
    "\n", "\r", "\t", "\x00", "\x7f", "\u2028", "é", "\u212a", "'", '"', "\\", "\\\"", "{", "}",
    "#", "$", "$HOME", "${HOME}", "%[", "%[src]", "||", "|", "&&", "!", "!=", "==", "=", "(", ")",
    "<", ">", ",", " ", "-", "--", "-i", "-f", "-m", "if", "unless", "or", "and", "not",
]  # fmt: skip
KEYWORDS = [
    "user-agent", "user.agent", "useragent", "host", "cookie", "header", "query", "path",
    "method", "source", "has", "contains", "misses", "is", "not", "in", "starts", "ends", "with",
    "matches", "true", "false", "and", "or", "AND", "Or", "&&", "||", "&", "|", "!", "==", "=",
    "!=", "(", ")", ",", "IE", "Firefox", "beta", "10.0.0.0/8", "::1", "GET", "/api",
    "a.example.com", "x-canary",
]  # fmt: skip

_ENV = re.compile(r"\$[A-Za-z0-9_{]")


def quoted(text: str) -> str:
    """`text` as a quoted value of the condition language."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


fragments = st.one_of(
    st.sampled_from(NASTY),
    st.sampled_from(KEYWORDS),
    st.text(max_size=12),
    st.text(max_size=12).map(quoted),
    st.lists(st.sampled_from(NASTY + KEYWORDS), max_size=6).map(lambda s: f"<{' '.join(s)}>"),
)
separators = st.sampled_from([" ", " ", " ", "", "\n", "\t"])


@st.composite
def token_soup(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(fragments, separators), max_size=14))
    return "".join(fragment + separator for fragment, separator in parts)


# Well-formed tests with an arbitrary value, so the value checks see every kind of text.
TEMPLATES = [
    "user-agent == {v}", "user.agent != {v}", "host == {v}", "host misses {v}",
    "has cookie {v}", "misses header {v}", "has query {v}", "cookie {v} has x", "header {v} == x",
    "cookie beta has {v}", "cookie beta != {v}", "header x-env contains {v}", "query q == {v}",
    "path == {v}", "path starts with {v}", "path ends with {v}", "path matches {v}",
    "method == {v}", "source in {v}", "source not in 10.0.0.0/8, {v}",
    "has cookie a and (user-agent == {v} or not cookie b misses {v})", "<{v}>",
]  # fmt: skip


@st.composite
def templated(draw: st.DrawFn) -> str:
    template = draw(st.sampled_from(TEMPLATES))
    value = draw(
        st.one_of(
            st.text(max_size=40),
            st.lists(st.sampled_from(NASTY)).map("".join),
            st.from_regex(r"[A-Za-z0-9/._:-]{1,12}", fullmatch=True),
        )
    )
    rendered_value = draw(st.sampled_from([quoted(value), value]))
    return template.replace("{v}", rendered_value)


# Whole conditions: connectives, negation and parentheses around templated tests, so the
# expansion to an OR of ANDs runs on text that mostly parses.
nested = st.recursive(
    templated(),
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from([" and ", " && ", " or ", " | ", "&", "||"]), inner).map(
            lambda parts: f"({parts[0]}){parts[1]}({parts[2]})"
        ),
        inner.map(lambda text: f"not ({text})"),
        inner.map(lambda text: f"!{text}"),
    ),
    max_leaves=8,
)


def haproxy_words(term: str) -> list[tuple[str, bool]]:
    """Split like HAProxy 2.6 splits a line whose only quoting is single quotes: (word, quoted)."""
    words: list[tuple[str, bool]] = []
    current: list[str] = []
    in_quotes = was_quoted = started = False
    for char in term:
        if char == "'":
            in_quotes = not in_quotes
            was_quoted = started = True
        elif char == " " and not in_quotes:
            if started:
                words.append(("".join(current), was_quoted))
            current, was_quoted, started = [], False, False
        else:
            current.append(char)
            started = True
    assert not in_quotes, f"unbalanced quote in {term!r}"
    if started:
        words.append(("".join(current), was_quoted))
    return words


def assert_safe_term(term: str) -> None:
    assert all(0x20 <= ord(char) < 0x7F for char in term), f"unprintable text in {term!r}"
    assert "%[" not in term
    assert term.startswith(("{ ", "!{ ")) and term.endswith(" }"), term
    words = haproxy_words(term)
    assert words[0] in (("{", False), ("!{", False)), term
    assert words[-1] == ("}", False), term
    inner = words[1:-1]
    assert inner, term
    for index, (word, was_quoted) in enumerate(inner):
        # Only `}` (and `{`) as a whole word change the block's structure.
        assert word not in ("{", "}"), term
        if was_quoted:
            assert word, f"empty value in {term!r}"
            if word.startswith("-"):
                assert inner[index - 1] == ("--", False), f"value read as an option in {term!r}"
        else:
            assert not any(char in word for char in "{}#\"'\\"), term
            assert _ENV.search(word) is None, term
    outside_quotes = re.sub(r"'[^']*'", "''", term)
    assert outside_quotes.count("{") == 1 and outside_quotes.count("}") == 1, term


def check(text: str, *, allow_raw_acl: bool) -> None:
    try:
        dnf = to_dnf(parse_condition(text, allow_raw_acl=allow_raw_acl))
    except ConditionError as error:
        assert error.column >= 1
        assert str(error) == f"column {error.column}: {error.message}"
        return
    for conjunction in dnf:
        for term in conjunction:
            assert_safe_term(term)
    rendered = render_condition(dnf, ["{ var(txn.gateway) -m str 'g' }"])
    if rendered is not None:
        assert "\n" not in rendered and "\r" not in rendered


fast = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fast
@given(st.text(max_size=80))
def test_arbitrary_text(text: str) -> None:
    check(text, allow_raw_acl=False)
    check(text, allow_raw_acl=True)


@fast
@given(token_soup())
def test_token_soup(text: str) -> None:
    check(text, allow_raw_acl=False)
    check(text, allow_raw_acl=True)


@fast
@given(templated())
def test_arbitrary_values_in_valid_positions(text: str) -> None:
    check(text, allow_raw_acl=False)
    check(text, allow_raw_acl=True)


@fast
@given(nested)
def test_nested_conditions(text: str) -> None:
    check(text, allow_raw_acl=False)
    check(text, allow_raw_acl=True)


def test_known_attacks_are_rejected() -> None:
    attacks = [
        'cookie a has "x\' }\nbackend evil"',
        'cookie a has "}"',
        "user-agent == \"x' || { always_true } '\"",
        'path == "/%[req.hdr(x)]"',
        "has cookie a}",
        'has header "x-a\nuse_backend evil"',
        'host == "a.com\' }"',
        "source in 10.0.0.0/8 }",
        "< always_true } || { always_true >",
        "< src 1.2.3.4 # >",
        "< hdr(x) -m str ${SECRET} >",
        "< always_true\nbackend evil >",
        "< path_beg /a if >",
    ]
    for text in attacks:
        try:
            parse_condition(text, allow_raw_acl=True)
        except ConditionError:
            continue
        raise AssertionError(f"accepted {text!r}")


def test_values_that_look_like_options_stay_values() -> None:
    (conjunction,) = to_dnf(parse_condition('cookie a has "-f /etc/passwd"'))
    assert conjunction == ("{ req.cook(a) -m sub -- '-f /etc/passwd' }",)
    assert_safe_term(conjunction[0])
