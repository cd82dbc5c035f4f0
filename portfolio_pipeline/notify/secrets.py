"""Secrets for channels: read from named environment variables, never shown.

A :class:`Secret` prints as ``***`` in ``str``/``repr``/f-strings; only
:meth:`Secret.reveal` gives the value, at the single place it goes on the wire.  A
:class:`Redactor` scrubs known secret values from any text (error messages from HTTP or
SMTP libraries, which may echo a URL) before it is logged or stored.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Final

__all__ = ["REDACTED", "MissingSecretError", "Redactor", "Secret", "secret_from_env"]

REDACTED: Final = "***"


class MissingSecretError(RuntimeError):
    """A channel's environment variable is unset or empty (the message names the variable)."""


class Secret:
    """A secret string that never prints."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})"

    def __str__(self) -> str:
        return REDACTED

    def __format__(self, spec: str) -> str:
        return REDACTED

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("a Secret cannot be pickled")


def secret_from_env(name: str, *, owner: str, environ: Mapping[str, str] | None = None) -> Secret:
    """The value of environment variable ``name``; ``owner`` (e.g. the channel) is named in errors."""
    env = os.environ if environ is None else environ
    value = env.get(name, "").strip()
    if not value:
        raise MissingSecretError(f"{owner}: environment variable {name} is not set")
    return Secret(value)


class Redactor:
    """Replaces every known secret value (and, for URLs, nothing else) with ``***``."""

    __slots__ = ("_values",)

    def __init__(self, secrets: Iterable[Secret] = ()) -> None:
        # Longest first, so a secret containing another is replaced whole.
        values = {s.reveal() for s in secrets if s.reveal()}
        self._values: tuple[str, ...] = tuple(sorted(values, key=len, reverse=True))

    def __call__(self, text: object) -> str:
        out = str(text)
        for value in self._values:
            out = out.replace(value, REDACTED)
        return out

    def __repr__(self) -> str:
        return f"Redactor({len(self._values)} secret(s))"
