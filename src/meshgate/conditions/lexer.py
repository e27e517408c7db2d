"""Tokenizer for the condition language: text in, tokens with 1-based columns out.

Keywords are not recognised here: `has`, `cookie` or `and` written as bare words are WORD tokens
and the parser decides what they mean from their position (so `cookie and has x` can name a cookie
`and`). A quoted word is never a keyword. The symbols (`&&`, `||`, `!`, `==`, ...) are tokens of
their own, so `user-agent==Firefox` needs no spaces.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from meshgate.conditions.ast import ConditionError

# A condition is a short expression in a manifest; the cap keeps the parser's work bounded
# whatever arrives through the API.
MAX_CONDITION_LENGTH = 4096

RAW_ACL_DISABLED = "raw HAProxy ACLs are disabled; start the server with --allow-raw-acl"

_WHITESPACE = frozenset(" \t\r\n")
# Characters that end a bare word. Anything else (including `'`, `{`, `#` and non-ASCII) is part
# of the word; what a value may contain is decided later, with a message naming the culprit.
_DELIMITERS = frozenset('()!&|"<>=,') | _WHITESPACE


class TokenKind(Enum):
    WORD = "word"
    LPAREN = "'('"
    RPAREN = "')'"
    AND = "and"
    OR = "or"
    NOT = "'!'"
    EQ = "'=='"
    NE = "'!='"
    COMMA = "','"
    RAW = "raw ACL"
    END = "end of condition"


@dataclass(frozen=True)
class Token:
    kind: TokenKind
    text: str  # a WORD's value with quotes and escapes removed; a RAW token's inner text
    column: int  # 1-based
    spelling: str  # exactly as written, for error messages
    quoted: bool = False

    def keyword(self) -> str | None:
        """The lower-cased word if this token could be a keyword, else None.

        Only plain ASCII words qualify: Python lower-cases some non-ASCII letters to ASCII ones
        (KELVIN SIGN to `k`), and a keyword spelled with those is not a keyword.
        """
        if self.kind is TokenKind.WORD and not self.quoted and self.text.isascii():
            return self.text.lower()
        return None

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind is TokenKind.END:
            return "end of condition"
        shown = self.spelling if len(self.spelling) <= 40 else self.spelling[:37] + "..."
        # repr() keeps control characters and newlines visible and on one line.
        return repr(shown)


def tokenize(text: str, *, allow_raw_acl: bool = False) -> list[Token]:
    """Split `text` into tokens; the list always ends with one END token."""
    if len(text) > MAX_CONDITION_LENGTH:
        raise ConditionError(
            f"condition is too long ({len(text)} characters; at most {MAX_CONDITION_LENGTH})", 1
        )
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        column = pos + 1
        if char in _WHITESPACE:
            pos += 1
            continue
        if char == '"':
            token, pos = _quoted(text, pos)
        elif char == "<":
            if not allow_raw_acl:
                raise ConditionError(RAW_ACL_DISABLED, column)
            token, pos = _raw(text, pos)
        elif char == ">":
            raise ConditionError("unexpected '>' outside a raw ACL '< ... >'", column)
        elif char in "&|":
            # `&&` and `&` (and `||` and `|`) are the same operator in Vamp's language.
            length = 2 if text.startswith(char * 2, pos) else 1
            kind = TokenKind.AND if char == "&" else TokenKind.OR
            token = Token(kind, text[pos : pos + length], column, text[pos : pos + length])
            pos += length
        elif char == "=":
            length = 2 if text.startswith("==", pos) else 1
            token = Token(TokenKind.EQ, "==", column, text[pos : pos + length])
            pos += length
        elif char == "!":
            if text.startswith("!=", pos):
                token = Token(TokenKind.NE, "!=", column, "!=")
                pos += 2
            else:
                token = Token(TokenKind.NOT, "!", column, "!")
                pos += 1
        elif char in "(),":
            kind = {"(": TokenKind.LPAREN, ")": TokenKind.RPAREN, ",": TokenKind.COMMA}[char]
            token = Token(kind, char, column, char)
            pos += 1
        else:
            end = pos
            while end < len(text) and text[end] not in _DELIMITERS:
                end += 1
            token = Token(TokenKind.WORD, text[pos:end], column, text[pos:end])
            pos = end
        tokens.append(token)
    tokens.append(Token(TokenKind.END, "", len(text) + 1, ""))
    return tokens


def _quoted(text: str, start: int) -> tuple[Token, int]:
    """A `"..."` word. `\\"` and `\\\\` are escapes; any other backslash is kept as written, so a
    regular expression like `"^/a\\.b$"` needs no doubling (the way a POSIX shell treats
    backslashes inside double quotes)."""
    chars: list[str] = []
    pos = start + 1
    while pos < len(text):
        char = text[pos]
        if char == "\\" and pos + 1 < len(text) and text[pos + 1] in '"\\':
            chars.append(text[pos + 1])
            pos += 2
            continue
        if char == '"':
            spelling = text[start : pos + 1]
            return Token(TokenKind.WORD, "".join(chars), start + 1, spelling, quoted=True), pos + 1
        chars.append(char)
        pos += 1
    raise ConditionError("unterminated quoted value: expected a closing '\"'", start + 1)


def _raw(text: str, start: int) -> tuple[Token, int]:
    """Vamp's `< acl >` form: everything up to the next `>`; checked by the parser."""
    end = text.find(">", start + 1)
    if end < 0:
        raise ConditionError("unterminated raw ACL: expected a closing '>'", start + 1)
    spelling = text[start : end + 1]
    return Token(TokenKind.RAW, text[start + 1 : end], start + 1, spelling), end + 1
