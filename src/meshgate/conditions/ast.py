"""The syntax tree of the condition language, and the error every part of the language raises.

The tree says what a condition means, not how HAProxy spells it: `user-agent != IE` is a `Not` of a
`UserAgentContains`, and only the translation in `haproxy.py` knows that IE means two substrings.
Negative spellings (`!=`, `misses`, `not in`) become `Not` nodes so that the translation handles
negation in exactly one place.

Every node carries the 1-based column where it starts in the condition text, so later stages can
point at the offending part of what the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import TypeAlias

from meshgate.errors import MeshgateError


class ConditionError(MeshgateError):
    """A condition was rejected; `column` is 1-based and points into the condition text."""

    def __init__(self, message: str, column: int) -> None:
        self.message = message
        self.column = column
        super().__init__(f"column {column}: {message}")

    def __reduce__(self) -> tuple[type[ConditionError], tuple[str, int]]:
        # Exceptions pickle their `args`; ours has two named arguments, so say so explicitly.
        return (ConditionError, (self.message, self.column))


class TextMatch(Enum):
    """How a text value is compared with what the request carries."""

    EQUALS = "equals"
    CONTAINS = "contains"
    PREFIX = "prefix"
    SUFFIX = "suffix"
    REGEX = "regex"


# --- connectives -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Constant:
    """`true` or `false`."""

    value: bool
    column: int


@dataclass(frozen=True)
class Not:
    operand: Condition
    column: int


@dataclass(frozen=True)
class And:
    """All operands hold; the parser flattens `a and b and c` into one node of three operands."""

    operands: tuple[Condition, ...]
    column: int


@dataclass(frozen=True)
class Or:
    operands: tuple[Condition, ...]
    column: int


# --- tests on the request --------------------------------------------------------------------


@dataclass(frozen=True)
class UserAgentContains:
    """The User-Agent header contains `value`; a browser name is kept as written here."""

    value: str
    column: int


@dataclass(frozen=True)
class HostEquals:
    """The Host header, without its port, equals `host` (already lower-cased)."""

    host: str
    column: int


@dataclass(frozen=True)
class CookiePresent:
    name: str
    column: int


@dataclass(frozen=True)
class HeaderPresent:
    name: str
    column: int


@dataclass(frozen=True)
class QueryPresent:
    name: str
    column: int


@dataclass(frozen=True)
class CookieMatch:
    """The value of cookie `name` equals or contains `value`."""

    name: str
    match: TextMatch
    value: str
    column: int


@dataclass(frozen=True)
class HeaderMatch:
    """A value of header `name` equals or contains `value`."""

    name: str
    match: TextMatch
    value: str
    column: int


@dataclass(frozen=True)
class QueryEquals:
    name: str
    value: str
    column: int


@dataclass(frozen=True)
class PathMatch:
    """The request path (without the query string) compared with `value` by `match`."""

    match: TextMatch
    value: str
    column: int


@dataclass(frozen=True)
class MethodIs:
    """The request method is `method` (upper case)."""

    method: str
    column: int


@dataclass(frozen=True)
class SourceIn:
    """The client address lies in one of `networks` (normalised CIDR text)."""

    networks: tuple[str, ...]
    column: int


@dataclass(frozen=True)
class RawAcl:
    """Vamp's `< acl >` form: HAProxy ACL text the operator chose to allow."""

    text: str
    column: int


Test: TypeAlias = (
    UserAgentContains
    | HostEquals
    | CookiePresent
    | HeaderPresent
    | QueryPresent
    | CookieMatch
    | HeaderMatch
    | QueryEquals
    | PathMatch
    | MethodIs
    | SourceIn
    | RawAcl
)
Condition: TypeAlias = Constant | Not | And | Or | Test


def requires_http(cond: Condition) -> bool:
    """Whether evaluating `cond` needs an HTTP request (so it cannot guard a tcp gateway).

    Looks at the tree as written, before any folding, so it errs towards HTTP: a test the user
    wrote is taken as meant, even where a constant makes it irrelevant.
    """
    if isinstance(cond, Constant | SourceIn):
        return False
    if isinstance(cond, Not):
        return requires_http(cond.operand)
    if isinstance(cond, And | Or):
        return any(requires_http(operand) for operand in cond.operands)
    return True
