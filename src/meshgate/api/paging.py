"""Pages of a list (`?limit=N&continue=TOKEN`), as Kubernetes lists page: items in key order,
and a token that says where the next page starts. Pure.

The token is the last name of the page, encoded, so a page is found by a search in the sorted
names and stays correct when resources are added or deleted between pages (a new one may or
may not appear, depending on where it sorts; none is repeated or skipped otherwise).
"""

from __future__ import annotations

import base64
import binascii
import json
from bisect import bisect_right
from collections.abc import Sequence

from meshgate.errors import Problem, ValidationFailed

MAX_LIMIT = 10_000


def encode_token(last: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": last}).encode()).decode().rstrip("=")


def decode_token(token: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        after = data["after"]
    except (binascii.Error, ValueError, KeyError, TypeError):
        raise ValidationFailed(
            [Problem("continue", "is not a token from a previous page")]
        ) from None
    if not isinstance(after, str):
        raise ValidationFailed([Problem("continue", "is not a token from a previous page")])
    return after


def page(
    names: Sequence[str], limit: int | None, token: str | None
) -> tuple[list[str], str | None]:
    """The names of one page (`names` sorted), and the token of the next (None: no more)."""
    start = bisect_right(names, decode_token(token)) if token else 0
    end = len(names) if limit is None else start + limit
    chosen = list(names[start:end])
    following = encode_token(chosen[-1]) if chosen and end < len(names) else None
    return chosen, following
