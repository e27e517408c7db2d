"""The condition language of gateway routes: parse it, and translate it into HAProxy ACL terms.

    cond = parse_condition("user-agent == Firefox and has cookie beta")
    render_condition(to_dnf(cond), guards=["{ var(txn.gw) -m str 'sava' }"])

Pure: no I/O. Errors are ConditionError, which names the 1-based column of the problem.
"""

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
    RawAcl,
    SourceIn,
    Test,
    TextMatch,
    UserAgentContains,
    requires_http,
)
from meshgate.conditions.haproxy import (
    MAX_CONJUNCTIONS,
    MAX_LINE_WORDS,
    Dnf,
    count_words,
    render_alternatives,
    render_condition,
    to_dnf,
)
from meshgate.conditions.parser import parse_condition

__all__ = [
    "MAX_CONJUNCTIONS",
    "MAX_LINE_WORDS",
    "And",
    "Condition",
    "ConditionError",
    "Constant",
    "CookieMatch",
    "CookiePresent",
    "Dnf",
    "HeaderMatch",
    "HeaderPresent",
    "HostEquals",
    "MethodIs",
    "Not",
    "Or",
    "PathMatch",
    "QueryEquals",
    "QueryPresent",
    "RawAcl",
    "SourceIn",
    "Test",
    "TextMatch",
    "UserAgentContains",
    "count_words",
    "parse_condition",
    "render_alternatives",
    "render_condition",
    "requires_http",
    "to_dnf",
]
