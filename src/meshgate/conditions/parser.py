"""Recursive-descent parser: condition text to the tree in `ast.py`.

Grammar (keywords are case-insensitive; NOT is `!` or `not`, AND is `and`, `&&` or `&`,
OR is `or`, `||` or `|`):

    condition   := conjunction (OR conjunction)*
    conjunction := unary (AND unary)*
    unary       := NOT unary | primary
    primary     := '(' condition ')' | 'true' | 'false' | '<' raw acl '>' | test

A test starts with its subject (`user-agent`, `host`, `cookie`, `header`, `query`, `path`,
`method`, `source`) or with `has` / `contains` / `misses`. Every user-written piece is checked by
the rules in `haproxy.py` as soon as it is read, so the error points at the user's column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

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
    TextMatch,
    UserAgentContains,
)
from meshgate.conditions.haproxy import (
    MAX_NETWORKS,
    check_name,
    check_raw_acl,
    check_regex,
    check_value,
    normalise_host,
    normalise_method,
    normalise_network,
)
from meshgate.conditions.lexer import Token, TokenKind, tokenize

# Parentheses and `not` nest; bounding them keeps recursion far from Python's limit whatever
# the input.
MAX_DEPTH = 32

_SUBJECTS = (
    "user-agent, host, cookie, header, query, path, method, source, has, contains, misses, "
    "true, false, not or '('"
)

# Operators after a subject: spelling (see `_operator_key`) to (comparison, positive?).
_Operators = dict[str, tuple[TextMatch, bool]]
_EQUALITY: _Operators = {
    "==": (TextMatch.EQUALS, True),
    "!=": (TextMatch.EQUALS, False),
    "!": (TextMatch.EQUALS, False),
}
_USER_AGENT: _Operators = {
    "==": (TextMatch.CONTAINS, True),
    "!=": (TextMatch.CONTAINS, False),
    "!": (TextMatch.CONTAINS, False),
    "is": (TextMatch.CONTAINS, True),
    "not": (TextMatch.CONTAINS, False),
}
_HOST: _Operators = {
    **_EQUALITY,
    "is": (TextMatch.EQUALS, True),
    "not": (TextMatch.EQUALS, False),
    "has": (TextMatch.EQUALS, True),
    "contains": (TextMatch.EQUALS, True),
    "misses": (TextMatch.EQUALS, False),
}
_COOKIE_OR_HEADER: _Operators = {
    "has": (TextMatch.CONTAINS, True),
    "contains": (TextMatch.CONTAINS, True),
    "misses": (TextMatch.CONTAINS, False),
    **_EQUALITY,
}
_PATH: _Operators = {
    **_EQUALITY,
    "starts": (TextMatch.PREFIX, True),
    "ends": (TextMatch.SUFFIX, True),
    "matches": (TextMatch.REGEX, True),
}


def parse_condition(text: str, *, allow_raw_acl: bool = False) -> Condition:
    """Parse `text`; raises ConditionError with the 1-based column of the first problem."""
    parser = _Parser(tokenize(text, allow_raw_acl=allow_raw_acl))
    condition = parser.condition()
    parser.expect_end()
    return condition


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tokens
        self._pos = 0
        self._depth = 0

    # --- token access -----------------------------------------------------------------------

    def _peek(self) -> Token:
        return self._tokens[self._pos]

    def _next(self) -> Token:
        token = self._tokens[self._pos]
        if token.kind is not TokenKind.END:
            self._pos += 1
        return token

    def _word(self, what: str, after: str) -> Token:
        """The next token, which must be a (bare or quoted) word."""
        token = self._next()
        if token.kind is not TokenKind.WORD:
            raise _expected(f"{what} after {after}", token)
        return token

    @contextmanager
    def _nested(self, opener: Token) -> Iterator[None]:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise ConditionError(
                f"condition is nested too deeply (more than {MAX_DEPTH} levels)", opener.column
            )
        try:
            yield
        finally:
            self._depth -= 1

    # --- connectives --------------------------------------------------------------------------

    def condition(self) -> Condition:
        first = self._peek()
        operands = [self._conjunction()]
        while _is_operator(self._peek(), TokenKind.OR, "or"):
            self._next()
            operands.append(self._conjunction())
        return operands[0] if len(operands) == 1 else Or(tuple(operands), first.column)

    def _conjunction(self) -> Condition:
        first = self._peek()
        operands = [self._unary()]
        while _is_operator(self._peek(), TokenKind.AND, "and"):
            self._next()
            operands.append(self._unary())
        return operands[0] if len(operands) == 1 else And(tuple(operands), first.column)

    def _unary(self) -> Condition:
        token = self._peek()
        if _is_operator(token, TokenKind.NOT, "not"):
            self._next()
            with self._nested(token):
                return Not(self._unary(), token.column)
        return self._primary()

    def _primary(self) -> Condition:
        token = self._next()
        if token.kind is TokenKind.LPAREN:
            with self._nested(token):
                inner = self.condition()
            closing = self._next()
            if closing.kind is not TokenKind.RPAREN:
                raise _expected(
                    f"'and', 'or' or ')' to close the '(' at column {token.column}", closing
                )
            return inner
        if token.kind is TokenKind.RAW:
            return RawAcl(check_raw_acl(token.text, token.column), token.column)
        keyword = token.keyword()
        if keyword in ("true", "false"):
            return Constant(keyword == "true", token.column)
        parse_test = self._tests().get(keyword or "")
        if parse_test is None:
            raise _expected(f"a condition ({_SUBJECTS})", token)
        return parse_test(token)

    def expect_end(self) -> None:
        token = self._peek()
        if token.kind is TokenKind.RPAREN:
            raise ConditionError("unbalanced ')': there is no '(' for it to close", token.column)
        if token.kind is not TokenKind.END:
            raise _expected("'and', 'or' or end of condition", token)

    # --- tests ----------------------------------------------------------------------------------

    def _tests(self) -> dict[str, Callable[[Token], Condition]]:
        return {
            "has": self._presence,
            "contains": self._presence,
            "misses": self._presence,
            "user-agent": self._user_agent,
            "user.agent": self._user_agent,
            "useragent": self._user_agent,
            "host": self._host,
            "cookie": self._cookie_or_header,
            "header": self._cookie_or_header,
            "query": self._query,
            "path": self._path,
            "method": self._method,
            "source": self._source,
        }

    def _presence(self, verb: Token) -> Condition:
        """`has cookie N`, `misses header N`, `contains query N`, ..."""
        kind_token = self._next()
        kind = kind_token.keyword()
        if kind not in ("cookie", "header", "query"):
            raise _expected(f"'cookie', 'header' or 'query' after {verb.describe()}", kind_token)
        what = "query parameter" if kind == "query" else kind
        after = repr(f"{verb.spelling} {kind_token.spelling}")
        name_token = self._word(f"a {what} name", after)
        name = check_name(name_token.text, name_token.column, what)
        test: Condition
        if kind == "cookie":
            test = CookiePresent(name, verb.column)
        elif kind == "header":
            test = HeaderPresent(name, verb.column)
        else:
            test = QueryPresent(name, verb.column)
        return Not(test, verb.column) if verb.keyword() == "misses" else test

    def _user_agent(self, subject: Token) -> Condition:
        _, positive, value = self._comparison(subject, _USER_AGENT)
        test = UserAgentContains(check_value(value.text, value.column), subject.column)
        return _signed(test, positive)

    def _host(self, subject: Token) -> Condition:
        _, positive, value = self._comparison(subject, _HOST)
        return _signed(
            HostEquals(normalise_host(value.text, value.column), subject.column), positive
        )

    def _cookie_or_header(self, subject: Token) -> Condition:
        what = subject.keyword() or ""
        name_token = self._word(f"a {what} name", subject.describe())
        name = check_name(name_token.text, name_token.column, what)
        match, positive, value = self._comparison(name_token, _COOKIE_OR_HEADER)
        checked = check_value(value.text, value.column)
        test: Condition
        if what == "cookie":
            test = CookieMatch(name, match, checked, subject.column)
        else:
            test = HeaderMatch(name, match, checked, subject.column)
        return _signed(test, positive)

    def _query(self, subject: Token) -> Condition:
        name_token = self._word("a query parameter name", subject.describe())
        name = check_name(name_token.text, name_token.column, "query parameter")
        _, positive, value = self._comparison(name_token, _EQUALITY)
        test = QueryEquals(name, check_value(value.text, value.column), subject.column)
        return _signed(test, positive)

    def _path(self, subject: Token) -> Condition:
        match, positive, value = self._comparison(subject, _PATH)
        if match is TextMatch.REGEX:
            checked = check_regex(value.text, value.column)
        else:
            checked = check_value(value.text, value.column)
        return _signed(PathMatch(match, checked, subject.column), positive)

    def _method(self, subject: Token) -> Condition:
        _, positive, value = self._comparison(subject, _EQUALITY)
        return _signed(
            MethodIs(normalise_method(value.text, value.column), subject.column), positive
        )

    def _source(self, subject: Token) -> Condition:
        """`source in CIDR[, CIDR...]` or `source not in ...`."""
        token = self._next()
        positive = token.keyword() != "not"
        if not positive:
            token = self._next()
        if token.keyword() != "in":
            after = "'not'" if not positive else subject.describe()
            raise _expected(f"'in' after {after}", token)
        networks: list[str] = []
        separator = token
        while True:
            network = self._word("a network (like 10.0.0.0/8)", separator.describe())
            if len(networks) == MAX_NETWORKS:
                raise ConditionError(f"at most {MAX_NETWORKS} networks are allowed", network.column)
            networks.append(normalise_network(network.text, network.column))
            if self._peek().kind is not TokenKind.COMMA:
                break
            separator = self._next()
        return _signed(SourceIn(tuple(networks), subject.column), positive)

    def _comparison(self, after: Token, operators: _Operators) -> tuple[TextMatch, bool, Token]:
        """An operator from `operators` and the value word after it."""
        operator = self._next()
        key = _operator_key(operator)
        if key not in operators:
            choices = ", ".join(repr(choice) for choice in operators)
            raise _expected(f"one of {choices} after {after.describe()}", operator)
        match, positive = operators[key]
        if key in ("starts", "ends"):
            with_token = self._next()
            if with_token.keyword() != "with":
                raise _expected(f"'with' after {operator.describe()}", with_token)
            operator = with_token
        what = "a regular expression" if match is TextMatch.REGEX else "a value"
        return match, positive, self._word(what, operator.describe())


def _operator_key(token: Token) -> str | None:
    symbols = {TokenKind.EQ: "==", TokenKind.NE: "!=", TokenKind.NOT: "!"}
    return symbols.get(token.kind) or token.keyword()


def _is_operator(token: Token, kind: TokenKind, word: str) -> bool:
    return token.kind is kind or token.keyword() == word


def _signed(test: Condition, positive: bool) -> Condition:
    return test if positive else Not(test, test.column)


def _expected(what: str, found: Token) -> ConditionError:
    return ConditionError(f"expected {what}, found {found.describe()}", found.column)
