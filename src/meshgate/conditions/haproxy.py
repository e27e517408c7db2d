"""Translation of condition trees into HAProxy's condition form, and the rules that keep it safe.

HAProxy conditions have no parentheses: `if A B || C D` means (A and B) or (C and D), and `!`
negates one term. So a tree is turned into an OR of ANDs (`Dnf`) of anonymous ACL terms
(`{ fetch -m method 'value' }`), with NOT pushed down to single terms by De Morgan.

Everything a user wrote reaches the configuration only through the checks below, which the
parser calls (so errors carry the user's column) and the renderer calls again, so that a tree
built by other code cannot smuggle text into the configuration either. What HAProxy 2.6 does
with a line, and hence why each check exists:
- `#` outside quotes starts a comment, `$NAME` and `${NAME}` outside single quotes are replaced
  by environment variables, and a newline ends the directive. Inside single quotes none of that
  happens, and there are no escapes, so a value in single quotes is literal if it holds no `'`.
- The parser of `{ ... }` ends the block at the first word that is exactly `}` after quotes are
  removed, so the value `}` would end it early.
- After the fetch, words starting with `-` are options (`-i`, `-f FILE`, ...) until `--`; a value
  starting with `-` is therefore written after `--`.
- A directive has at most 64 words (`MAX_LINE_WORDS`); longer lines are a fatal error.
"""

from __future__ import annotations

import ipaddress
import re
import warnings
from collections.abc import Iterable, Sequence

from meshgate.conditions.ast import (
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
    SourceIn,
    Test,
    TextMatch,
    UserAgentContains,
)

Dnf = tuple[tuple[str, ...], ...]
"""An OR of ANDs of rendered HAProxy ACL terms. `((),)` is always true, `()` is never true."""

MAX_CONJUNCTIONS = 64
MAX_LINE_WORDS = 64  # HAProxy 2.6 rejects a configuration line with more words than this
MAX_VALUE_LENGTH = 256
MAX_NETWORKS = 16  # every network is a word of the directive; see MAX_LINE_WORDS
MAX_METHOD_LENGTH = 20
MAX_HOST_LENGTH = 253

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*")
_METHOD = re.compile(r"[A-Za-z]+")
# `$` followed by a name character or `{` is an environment variable outside quotes.
_ENV_REFERENCE = re.compile(r"\$[A-Za-z0-9_{]")

# What each browser puts in its User-Agent: modern Edge says "Edg/", Internet Explorer says
# "MSIE" up to version 10 and "Trident" in 11.
_BROWSERS: dict[str, tuple[str, ...]] = {
    "chrome": ("Chrome",),
    "firefox": ("Firefox",),
    "safari": ("Safari",),
    "edge": ("Edg",),
    "ie": ("MSIE", "Trident"),
}

_MATCH_METHODS = {
    TextMatch.EQUALS: "str",
    TextMatch.CONTAINS: "sub",
    TextMatch.PREFIX: "beg",
    TextMatch.SUFFIX: "end",
    TextMatch.REGEX: "reg",
}


# --- checks on what users write ----------------------------------------------------------------


def check_name(name: str, column: int, what: str) -> str:
    """A cookie, header or query parameter name; it is written unquoted inside `fetch(...)`."""
    if _NAME.fullmatch(name) is None:
        raise ConditionError(
            f"invalid {what} name {_show(name)}: expected a letter or digit followed by up to "
            "127 letters, digits, '.', '_' or '-'",
            column,
        )
    return name


def check_value(value: str, column: int, *, allow_backslash: bool = False) -> str:
    """A value that will be written inside single quotes."""
    problem = _value_problem(value, allow_backslash=allow_backslash)
    if problem is not None:
        raise ConditionError(f"invalid value {_show(value)}: {problem}", column)
    return value


def check_regex(pattern: str, column: int) -> str:
    # Backslashes are the point of a regular expression, and are literal inside single quotes.
    check_value(pattern, column, allow_backslash=True)
    try:
        # Python warns about patterns whose meaning may change in its own future versions
        # ("possible nested set"); HAProxy compiles with PCRE, so only hard errors count.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except re.error as error:
        raise ConditionError(
            f"invalid regular expression {_show(pattern)}: {error.msg}", column
        ) from None
    return pattern


def normalise_host(host: str, column: int) -> str:
    if len(host) > MAX_HOST_LENGTH or _HOST.fullmatch(host) is None:
        raise ConditionError(
            f"invalid host {_show(host)}: expected a host name of letters, digits, '-' and '.'",
            column,
        )
    return host.lower()


def normalise_method(method: str, column: int) -> str:
    # Checked before upper-casing: str.upper() turns some non-ASCII letters into ASCII ones.
    if len(method) > MAX_METHOD_LENGTH or _METHOD.fullmatch(method) is None or not method.isascii():
        raise ConditionError(
            f"invalid method {_show(method)}: expected up to {MAX_METHOD_LENGTH} letters, like GET",
            column,
        )
    return method.upper()


def normalise_network(text: str, column: int) -> str:
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise ConditionError(
            f"invalid network {_show(text)}: expected an IPv4 or IPv6 address or CIDR block, "
            "like 10.0.0.0/8",
            column,
        ) from None
    rendered = str(network)
    if re.fullmatch(r"[0-9A-Fa-f.:/]+", rendered) is None:
        # Python accepts IPv6 scope ids ("fe80::1%eth0"); HAProxy patterns do not.
        raise ConditionError(f"invalid network {_show(text)}: scope ids are not supported", column)
    return rendered


def check_raw_acl(text: str, column: int) -> str:
    """The inside of `< ... >`, already allowed by the operator; returns it stripped."""
    acl = text.strip(" ")
    if not acl:
        raise ConditionError("empty raw ACL: expected HAProxy ACL text between '<' and '>'", column)
    for char in acl:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise ConditionError(
                f"a raw ACL must be one line without control characters; found {_show(char)}",
                column,
            )
        if not char.isascii():
            raise ConditionError(f"a raw ACL must be ASCII; found {_show(char)}", column)
        if char in "{}#'\"\\":
            raise ConditionError(f"a raw ACL may not contain {_show(char)}", column)
    if "%[" in acl:
        raise ConditionError("a raw ACL may not contain '%['", column)
    if _ENV_REFERENCE.search(acl):
        raise ConditionError(
            "a raw ACL may not contain '$' before a name or '{' (environment variables)", column
        )
    for word in acl.split():
        # A condition keyword inside the braces would at best be a pattern; refuse the confusion.
        if word.lower() in ("if", "unless"):
            raise ConditionError(f"a raw ACL may not contain the word {_show(word)}", column)
    return acl


def _value_problem(value: str, *, allow_backslash: bool) -> str | None:
    if not value:
        return "values may not be empty"
    if len(value) > MAX_VALUE_LENGTH:
        return f"values are at most {MAX_VALUE_LENGTH} characters long"
    for char in value:
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return "values may not contain control characters or line breaks"
        if not char.isascii():
            return "values must be ASCII"
        if char == "'":
            return "values may not contain a single quote (')"
        if char == "\\" and not allow_backslash:
            return "values may not contain a backslash"
    if "%[" in value:
        return "values may not contain '%['"
    if value in ("{", "}"):
        return "a value may not be a lone brace"
    return None


def _show(text: str) -> str:
    shown = text if len(text) <= 40 else text[:37] + "..."
    return repr(shown)


# --- terms --------------------------------------------------------------------------------------


def _pattern(value: str) -> str:
    """A value as an ACL pattern: single-quoted, after `--` if it could be read as an option."""
    quoted = f"'{value}'"
    return f"-- {quoted}" if value.startswith("-") else quoted


def acl_bodies(test: Test) -> tuple[str, ...]:
    """The ACL bodies (text between the braces) of which at least one must match for `test`.

    Only `user-agent == IE` needs more than one. Every user-written piece is checked again here.
    """
    column = test.column
    if isinstance(test, UserAgentContains):
        value = check_value(test.value, column)
        needles = _BROWSERS.get(value.lower(), (value,)) if value.isascii() else (value,)
        return tuple(f"req.fhdr(user-agent) -m sub -i {_pattern(n)}" for n in needles)
    if isinstance(test, HostEquals):
        host = normalise_host(test.host, column)
        return (f"req.hdr(host),field(1,:),lower -m str {_pattern(host)}",)
    if isinstance(test, CookiePresent):
        return (f"req.cook({check_name(test.name, column, 'cookie')}) -m found",)
    if isinstance(test, HeaderPresent):
        return (f"req.hdr({check_name(test.name, column, 'header')}) -m found",)
    if isinstance(test, QueryPresent):
        return (f"url_param({check_name(test.name, column, 'query parameter')}) -m found",)
    if isinstance(test, CookieMatch | HeaderMatch):
        if test.match not in (TextMatch.EQUALS, TextMatch.CONTAINS):
            raise ConditionError(f"unsupported comparison {test.match.value!r}", column)
        if isinstance(test, CookieMatch):
            fetch = f"req.cook({check_name(test.name, column, 'cookie')})"
        else:
            fetch = f"req.hdr({check_name(test.name, column, 'header')})"
        value = check_value(test.value, column)
        return (f"{fetch} -m {_MATCH_METHODS[test.match]} {_pattern(value)}",)
    if isinstance(test, QueryEquals):
        name = check_name(test.name, column, "query parameter")
        return (f"url_param({name}) -m str {_pattern(check_value(test.value, column))}",)
    if isinstance(test, PathMatch):
        if test.match is TextMatch.REGEX:
            value = check_regex(test.value, column)
        else:
            value = check_value(test.value, column)
        return (f"path -m {_MATCH_METHODS[test.match]} {_pattern(value)}",)
    if isinstance(test, MethodIs):
        return (f"method {normalise_method(test.method, column)}",)
    if isinstance(test, SourceIn):
        if not test.networks or len(test.networks) > MAX_NETWORKS:
            raise ConditionError(f"expected 1 to {MAX_NETWORKS} networks", column)
        networks = [normalise_network(network, column) for network in test.networks]
        return ("src " + " ".join(networks),)
    return (check_raw_acl(test.text, column),)


# --- normal form --------------------------------------------------------------------------------

# A literal is an ACL body and whether it is negated; a conjunction keeps literals in the order
# they were written, so the same condition always renders to the same text.
_Literal = tuple[str, bool]
_Conjunction = tuple[_Literal, ...]
_TOO_COMPLEX = (
    f"condition is too complex: HAProxy needs it as an OR of ANDs, and it expands to more than "
    f"{MAX_CONJUNCTIONS} alternatives; simplify it or split it across routes"
)


def to_dnf(cond: Condition) -> Dnf:
    """`cond` as an OR of ANDs of rendered terms, folded and simplified.

    Simplification drops contradictory conjunctions (`a !a`), repeated literals and conjunctions
    implied by a smaller one (`a || a b` is `a`), which is also what folds the constants: `true`
    is the empty conjunction and absorbs every other; `false` is no conjunction at all.
    """
    conjunctions = _dnf(cond, negated=False)
    return tuple(
        tuple(f"!{{ {body} }}" if negated else f"{{ {body} }}" for body, negated in conjunction)
        for conjunction in conjunctions
    )


def _dnf(cond: Condition, *, negated: bool) -> list[_Conjunction]:
    if isinstance(cond, Constant):
        return [()] if cond.value != negated else []
    if isinstance(cond, Not):
        return _dnf(cond.operand, negated=not negated)
    if isinstance(cond, And | Or):
        parts = [_dnf(operand, negated=negated) for operand in cond.operands]
        # De Morgan: a negated AND is an OR of negations, and the other way round.
        if isinstance(cond, And) != negated:
            return _product(parts)
        return _simplify(conjunction for part in parts for conjunction in part)
    atoms = acl_bodies(cond)
    if negated:
        return [tuple((atom, True) for atom in atoms)]
    return _simplify(((atom, False),) for atom in atoms)


def _product(parts: list[list[_Conjunction]]) -> list[_Conjunction]:
    """AND of several DNFs: every way of picking one conjunction from each."""
    result: list[_Conjunction] = [()]
    for part in parts:
        combined: list[_Conjunction] = []
        for left in result:
            for right in part:
                merged = _merge(left, right)
                if merged is not None:
                    combined.append(merged)
        # Both inputs have at most MAX_CONJUNCTIONS entries, so `combined` stays small enough
        # to simplify before the limit is enforced.
        result = _simplify(combined)
    return result


def _merge(left: _Conjunction, right: _Conjunction) -> _Conjunction | None:
    """Both conjunctions at once, or None when that is a contradiction."""
    merged = tuple(dict.fromkeys(left + right))
    present = set(merged)
    if any((body, not negated) in present for body, negated in merged):
        return None
    return merged


def _simplify(conjunctions: Iterable[_Conjunction]) -> list[_Conjunction]:
    """Drop duplicate conjunctions and those implied by a smaller one; enforce the size limit."""
    candidates = list(conjunctions)
    sets = [frozenset(conjunction) for conjunction in candidates]
    kept: list[int] = []
    # Smallest first, so that a conjunction is only ever absorbed by one already kept; the sort is
    # stable and the output returns to the written order.
    for index in sorted(range(len(candidates)), key=lambda i: len(sets[i])):
        if any(sets[other] <= sets[index] for other in kept):
            continue
        kept.append(index)
        if len(kept) > MAX_CONJUNCTIONS:
            raise ConditionError(_TOO_COMPLEX, 1)
    return [candidates[index] for index in sorted(kept)]


# --- text ---------------------------------------------------------------------------------------


def render_condition(dnf: Dnf, guards: Sequence[str] = ()) -> str | None:
    """The text after `if ` in an HAProxy rule: `guards` ANDed into every conjunction.

    None when `dnf` is never true (the caller leaves the rule out). An always-true conjunction
    with no guards needs a term of its own, `{ always_true }`, because `if` wants one.
    """
    alternatives = render_alternatives(dnf, guards)
    return " || ".join(alternatives) if alternatives else None


def render_alternatives(dnf: Dnf, guards: Sequence[str] = ()) -> list[str]:
    """One condition text per conjunction, each with the guards; empty when never true.

    For callers that write one rule per alternative instead of one `||` line: equivalent when
    the first matching rule wins (or the action is idempotent), and it keeps lines under
    HAProxy's `MAX_LINE_WORDS` where guards repeated in every conjunction would not.
    """
    if any(not conjunction for conjunction in dnf):
        # One conjunction that always holds makes the others irrelevant.
        dnf = ((),)
    alternatives = []
    for conjunction in dnf:
        terms = list(dict.fromkeys([*guards, *conjunction]))
        alternatives.append(" ".join(terms) if terms else "{ always_true }")
    return alternatives


def count_words(text: str) -> int:
    """How many words HAProxy sees in `text`, for text quoted the way this module quotes.

    A directive may have at most `MAX_LINE_WORDS` words, which bounds how long a rendered
    condition may get in one rule; callers check their whole line with this.
    """
    words = 0
    in_word = False
    in_quotes = False
    for char in text:
        if char == "'":
            in_quotes = not in_quotes
        elif char in " \t" and not in_quotes:
            in_word = False
            continue
        if not in_word:
            words += 1
            in_word = True
    return words
