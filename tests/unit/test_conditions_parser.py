"""Parsing the condition language: every spelling, precedence, quoting and error columns."""

from __future__ import annotations

import pickle

import pytest

from meshgate.conditions import (
    And,
    Condition,
    ConditionError,
    Constant,
    CookieMatch,
    CookiePresent,
    HeaderMatch,
    HeaderPresent,
    HostEquals,
    MethodIs,
    Not,
    Or,
    PathMatch,
    QueryEquals,
    QueryPresent,
    RawAcl,
    SourceIn,
    TextMatch,
    UserAgentContains,
    parse_condition,
    requires_http,
)
from meshgate.errors import MeshgateError


def error_of(text: str, *, allow_raw_acl: bool = False) -> ConditionError:
    with pytest.raises(ConditionError) as caught:
        parse_condition(text, allow_raw_acl=allow_raw_acl)
    return caught.value


def without_columns(cond: Condition) -> object:
    """The tree as nested tuples, so tests can compare meaning without counting columns."""
    if isinstance(cond, Not):
        return ("not", without_columns(cond.operand))
    if isinstance(cond, And | Or):
        return (type(cond).__name__.lower(), *(without_columns(op) for op in cond.operands))
    fields = {k: v for k, v in vars(cond).items() if k != "column"}
    return (type(cond).__name__, *fields.values())


def shape(text: str) -> object:
    return without_columns(parse_condition(text))


UA_FIREFOX = ("UserAgentContains", "Firefox")
COOKIE_A = ("CookiePresent", "a")
COOKIE_B = ("CookiePresent", "b")
COOKIE_C = ("CookiePresent", "c")


# --- user-agent ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "subject", ["user-agent", "user.agent", "useragent", "USER-AGENT", "User.Agent"]
)
@pytest.mark.parametrize("operator", ["==", "=", "is", "IS"])
def test_user_agent_positive_spellings(subject: str, operator: str) -> None:
    assert parse_condition(f"{subject} {operator} Firefox") == UserAgentContains("Firefox", 1)


@pytest.mark.parametrize("operator", ["!=", "!", "not", "NOT"])
def test_user_agent_negative_spellings(operator: str) -> None:
    assert shape(f"user-agent {operator} Firefox") == ("not", UA_FIREFOX)


def test_user_agent_without_spaces() -> None:
    assert shape("user-agent==Firefox") == UA_FIREFOX
    assert shape("user-agent!=Firefox") == ("not", UA_FIREFOX)


def test_value_case_is_kept() -> None:
    assert shape("USER-AGENT == firefox") == ("UserAgentContains", "firefox")


def test_quoted_value_with_spaces_and_escapes() -> None:
    cond = parse_condition(r'user-agent == "Mozilla/5.0 (X11; \"Linux\")"')
    assert cond == UserAgentContains('Mozilla/5.0 (X11; "Linux")', 1)


def test_backslash_escapes_in_quotes() -> None:
    # `\\` is one backslash; a backslash before anything else is kept, so regexes read naturally.
    assert parse_condition(r'path matches "^/a\\d$"') == PathMatch(TextMatch.REGEX, r"^/a\d$", 1)
    assert parse_condition(r'path matches "^/a\d$"') == PathMatch(TextMatch.REGEX, r"^/a\d$", 1)


def test_quoted_word_is_never_a_keyword() -> None:
    assert shape('cookie "and" has "or"') == ("CookieMatch", "and", TextMatch.CONTAINS, "or")


# --- host ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("operator", ["==", "=", "is", "has", "contains", "HAS"])
def test_host_positive_spellings(operator: str) -> None:
    assert parse_condition(f"host {operator} Sava.Example.COM") == HostEquals("sava.example.com", 1)


@pytest.mark.parametrize("operator", ["!=", "!", "not", "misses"])
def test_host_negative_spellings(operator: str) -> None:
    assert shape(f"host {operator} a.example.com") == ("not", ("HostEquals", "a.example.com"))


@pytest.mark.parametrize("host", ["a_b.com", "a.com:8080", "-a.com", "a..b/c"])
def test_host_must_be_a_host_name(host: str) -> None:
    error = error_of(f'host == "{host}"')
    assert error.column == 9
    assert "invalid host" in error.message


# --- presence -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("has cookie beta", ("CookiePresent", "beta")),
        ("contains cookie beta", ("CookiePresent", "beta")),
        ("misses cookie beta", ("not", ("CookiePresent", "beta"))),
        ("has header X-Canary", ("HeaderPresent", "X-Canary")),
        ("contains header X-Canary", ("HeaderPresent", "X-Canary")),
        ("misses header X-Canary", ("not", ("HeaderPresent", "X-Canary"))),
        ("has query debug", ("QueryPresent", "debug")),
        ("misses query debug", ("not", ("QueryPresent", "debug"))),
        ("HAS COOKIE beta", ("CookiePresent", "beta")),
        ('has cookie "beta"', ("CookiePresent", "beta")),
    ],
)
def test_presence(text: str, expected: object) -> None:
    assert shape(text) == expected


def test_presence_nodes_carry_columns() -> None:
    assert parse_condition("  has cookie b") == CookiePresent("b", 3)
    assert parse_condition("has header h") == HeaderPresent("h", 1)
    assert parse_condition("has query q") == QueryPresent("q", 1)


# --- cookie and header values ---------------------------------------------------------------------


@pytest.mark.parametrize("subject", ["cookie", "header", "Cookie", "HEADER"])
@pytest.mark.parametrize(
    ("operator", "match", "positive"),
    [
        ("has", TextMatch.CONTAINS, True),
        ("contains", TextMatch.CONTAINS, True),
        ("misses", TextMatch.CONTAINS, False),
        ("==", TextMatch.EQUALS, True),
        ("=", TextMatch.EQUALS, True),
        ("!=", TextMatch.EQUALS, False),
    ],
)
def test_cookie_and_header_values(
    subject: str, operator: str, match: TextMatch, positive: bool
) -> None:
    node_type = CookieMatch if subject.lower() == "cookie" else HeaderMatch
    expected: Condition = node_type("grp", match, "b", 1)
    if not positive:
        expected = Not(expected, 1)
    assert parse_condition(f"{subject} grp {operator} b") == expected


# --- extensions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("path == /api", PathMatch(TextMatch.EQUALS, "/api", 1)),
        ("path starts with /api", PathMatch(TextMatch.PREFIX, "/api", 1)),
        ("PATH Starts WITH /api", PathMatch(TextMatch.PREFIX, "/api", 1)),
        ("path ends with .json", PathMatch(TextMatch.SUFFIX, ".json", 1)),
        ('path matches "^/v[0-9]+/(a|b)$"', PathMatch(TextMatch.REGEX, "^/v[0-9]+/(a|b)$", 1)),
        (r'path matches "^/a\.b$"', PathMatch(TextMatch.REGEX, r"^/a\.b$", 1)),
        ("method == post", MethodIs("POST", 1)),
        ("method = GET", MethodIs("GET", 1)),
        ("query v == 2", QueryEquals("v", "2", 1)),
        ("source in 10.1.2.3/8", SourceIn(("10.0.0.0/8",), 1)),
        ("source in 10.0.0.0/8, 192.168.1.7", SourceIn(("10.0.0.0/8", "192.168.1.7/32"), 1)),
        ("source in 2001:DB8::/32,::1", SourceIn(("2001:db8::/32", "::1/128"), 1)),
    ],
)
def test_extensions(text: str, expected: Condition) -> None:
    assert parse_condition(text) == expected


@pytest.mark.parametrize(
    "text", ["path != /a", "method != GET", "query v != 2", "source not in 10.0.0.0/8"]
)
def test_negated_extensions(text: str) -> None:
    assert isinstance(parse_condition(text), Not)


def test_invalid_regex_is_reported_at_the_value() -> None:
    error = error_of('path matches "(unclosed"')
    assert error.column == 14
    assert "invalid regular expression" in error.message


def test_regex_that_python_only_warns_about_is_accepted() -> None:
    assert parse_condition('path matches "[[a]"') == PathMatch(TextMatch.REGEX, "[[a]", 1)


@pytest.mark.parametrize("method", ["G3T", "GÉT", "A" * 21])
def test_invalid_method(method: str) -> None:
    assert error_of(f"method == {method}").column == 11


def test_invalid_network_is_reported_at_its_column() -> None:
    error = error_of("source in 10.0.0.0/8, 300.1.1.1")
    assert error.column == 23
    assert "invalid network" in error.message


def test_too_many_networks() -> None:
    networks = ", ".join(f"10.0.{i}.0/24" for i in range(17))
    assert "at most 16" in error_of(f"source in {networks}").message


# --- connectives ----------------------------------------------------------------------------------


@pytest.mark.parametrize("spelling", ["and", "AND", "And", "&&", "&"])
def test_and_spellings(spelling: str) -> None:
    assert shape(f"has cookie a {spelling} has cookie b") == ("and", COOKIE_A, COOKIE_B)


@pytest.mark.parametrize("spelling", ["or", "OR", "Or", "||", "|"])
def test_or_spellings(spelling: str) -> None:
    assert shape(f"has cookie a {spelling} has cookie b") == ("or", COOKIE_A, COOKIE_B)


@pytest.mark.parametrize("spelling", ["not ", "NOT ", "!", "! "])
def test_not_spellings(spelling: str) -> None:
    assert shape(f"{spelling}has cookie a") == ("not", COOKIE_A)


def test_and_binds_tighter_than_or() -> None:
    assert shape("has cookie a or has cookie b and has cookie c") == (
        "or",
        COOKIE_A,
        ("and", COOKIE_B, COOKIE_C),
    )
    assert shape("has cookie a and has cookie b or has cookie c") == (
        "or",
        ("and", COOKIE_A, COOKIE_B),
        COOKIE_C,
    )


def test_not_binds_tighter_than_and() -> None:
    assert shape("not has cookie a and has cookie b") == ("and", ("not", COOKIE_A), COOKIE_B)


def test_parentheses_override_precedence() -> None:
    assert shape("has cookie a and (has cookie b or has cookie c)") == (
        "and",
        COOKIE_A,
        ("or", COOKIE_B, COOKIE_C),
    )


def test_nested_not() -> None:
    assert shape("not not !(has cookie a)") == ("not", ("not", ("not", COOKIE_A)))


def test_chains_are_flat() -> None:
    assert shape("has cookie a && has cookie b & has cookie c") == (
        "and",
        COOKIE_A,
        COOKIE_B,
        COOKIE_C,
    )


@pytest.mark.parametrize(("text", "value"), [("true", True), ("FALSE", False), ("(True)", True)])
def test_constants(text: str, value: bool) -> None:
    assert parse_condition(text) == Constant(value, 1 + text.startswith("("))


def test_vamp_example() -> None:
    assert shape("user-agent == Firefox and has cookie beta") == (
        "and",
        UA_FIREFOX,
        ("CookiePresent", "beta"),
    )


def test_whitespace_including_newlines_separates_tokens() -> None:
    assert shape("has cookie a\n\tand\r\nhas cookie b") == ("and", COOKIE_A, COOKIE_B)


# --- raw ACLs -------------------------------------------------------------------------------------


def test_raw_acl_is_disabled_by_default() -> None:
    error = error_of("has cookie a or < hdr_sub(user-agent) Android >")
    assert error.column == 17
    assert "--allow-raw-acl" in error.message


def test_raw_acl_when_allowed() -> None:
    cond = parse_condition("< hdr_sub(user-agent) Android >", allow_raw_acl=True)
    assert cond == RawAcl("hdr_sub(user-agent) Android", 1)
    assert requires_http(cond)


@pytest.mark.parametrize(
    "inner",
    ["", "  ", "path_beg /a } || { always_true", "a # b", "hdr(x) 'y'", 'a "b"', "a\\b",
     "a\nb", "path_beg /a if", "x UNLESS y", "hdr(x) %[src]", "hdr(x) $HOME", "hdr(x) ${A}",
     "hdr(x) é"],
)  # fmt: skip
def test_unsafe_raw_acl_is_rejected(inner: str) -> None:
    assert error_of(f"has cookie a or <{inner}>", allow_raw_acl=True).column == 17


def test_raw_acl_may_use_a_regex_anchor() -> None:
    assert parse_condition("<path_reg ^/a$>", allow_raw_acl=True) == RawAcl("path_reg ^/a$", 1)


def test_unterminated_raw_acl() -> None:
    assert error_of("< src 10.0.0.1", allow_raw_acl=True).column == 1


# --- errors ---------------------------------------------------------------------------------------


def test_error_type_and_text() -> None:
    error = error_of("user-agent ==")
    assert isinstance(error, MeshgateError)
    assert (error.column, error.message) == (
        14,
        "expected a value after '==', found end of condition",
    )
    assert str(error) == "column 14: expected a value after '==', found end of condition"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.column, copy.message) == (14, error.message)


@pytest.mark.parametrize(
    ("text", "column", "fragment"),
    [
        ("", 1, "expected a condition"),
        ("   ", 4, "found end of condition"),
        ("has cookie", 11, "expected a cookie name after 'has cookie'"),
        ("has", 4, "expected 'cookie', 'header' or 'query' after 'has'"),
        ("has biscuit x", 5, "found 'biscuit'"),
        ("foo == bar", 1, "found 'foo'"),
        ("(has cookie a", 14, "')' to close the '(' at column 1"),
        ("(has cookie a or (has cookie b)", 32, "')' to close the '(' at column 1"),
        ("has cookie a)", 13, "unbalanced ')'"),
        ("()", 2, "expected a condition"),
        ("has cookie a has cookie b", 14, "expected 'and', 'or' or end of condition"),
        ("has cookie a and", 17, "expected a condition"),
        ("or has cookie a", 1, "found 'or'"),
        ("user-agent Firefox", 12, "after 'user-agent'"),
        ("host ~ a.com", 6, "'~'"),
        ("cookie beta", 12, "after 'beta'"),
        ("cookie == x", 8, "expected a cookie name after 'cookie'"),
        ("path starts /api", 13, "expected 'with' after 'starts'"),
        ("path matches", 13, "expected a regular expression after 'matches'"),
        ("source 10.0.0.0/8", 8, "expected 'in'"),
        ("source in", 10, "expected a network"),
        ("source in 10.0.0.0/8,", 22, "after ','"),
        ('user-agent == "Firefox', 15, "unterminated quoted value"),
        ("user-agent == Fire>fox", 19, "unexpected '>'"),
        ("user-agent == =", 15, "expected a value after '=='"),
    ],
)
def test_error_columns(text: str, column: int, fragment: str) -> None:
    error = error_of(text)
    assert error.column == column, error
    assert fragment in error.message, error


@pytest.mark.parametrize(
    "name",
    ["-x", ".x", "a b", "a(b", "a,b", "a;b", "x" * 129, "é", "a\x00"],
)
def test_invalid_names(name: str) -> None:
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    error = error_of(f'has cookie "{escaped}"')
    assert error.column == 12
    assert "invalid cookie name" in error.message


def test_longest_name_is_accepted() -> None:
    assert parse_condition("has header " + "x" * 128) == HeaderPresent("x" * 128, 1)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("it's", "single quote"),
        ("a\\b", "backslash"),
        ("a\tb", "control characters"),
        ("a\x7fb", "control characters"),
        ("a\nb", "control characters"),
        ("café", "ASCII"),
        ("%[src]", "'%['"),
        ("", "empty"),
        ("}", "lone brace"),
        ("x" * 257, "at most 256"),
    ],
)
def test_invalid_values(value: str, fragment: str) -> None:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    error = error_of(f'cookie beta has "{escaped}"')
    assert error.column == 17
    assert fragment in error.message


def test_longest_value_is_accepted() -> None:
    assert shape("cookie a has " + "v" * 256) == ("CookieMatch", "a", TextMatch.CONTAINS, "v" * 256)


def test_deep_nesting_is_refused_not_a_crash() -> None:
    assert "nested too deeply" in error_of("(" * 200 + "true" + ")" * 200).message
    assert "nested too deeply" in error_of("not " * 200 + "true").message


def test_nesting_within_the_limit_is_fine() -> None:
    assert parse_condition("(" * 30 + "true" + ")" * 30) == Constant(True, 31)


def test_overlong_condition() -> None:
    assert "too long" in error_of("has cookie a or " * 300 + "true").message


# --- requires_http ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("source in 10.0.0.0/8", False),
        ("not source in 10.0.0.0/8 or true", False),
        ("false", False),
        ("source in 10.0.0.0/8 and has cookie a", True),
        ("not (source in ::1 or path == /)", True),
        ("method == GET", True),
        ("host == a.com", True),
    ],
)
def test_requires_http(text: str, expected: bool) -> None:
    assert requires_http(parse_condition(text)) is expected
