"""The project's own exception types; every layer maps foreign errors to these at its boundary."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input: where (a dotted field path) and why (plain language)."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class MeshgateError(Exception):
    """Base class of every error meshgate raises on purpose."""


class ValidationFailed(MeshgateError):  # noqa: N818
    """User input was rejected; carries every problem found, each with its field path."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(str(p) for p in problems))

    def prefixed(self, prefix: str) -> ValidationFailed:
        """The same problems with their paths placed under `prefix`."""
        return ValidationFailed(
            [Problem(f"{prefix}.{p.path}" if p.path else prefix, p.message) for p in self.problems]
        )
