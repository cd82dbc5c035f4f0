"""Durable private line files (the event buffer, the pending proposals): mode 0600,
every write flushed and ``fsync``-ed before it returns."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

__all__ = ["append_lines", "rewrite_lines"]

PRIVATE_MODE = 0o600


def append_lines(path: Path, text: str) -> None:
    """Append ``text`` (whole lines) to ``path`` (created 0600) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_MODE)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def rewrite_lines(path: Path, lines: Iterable[str]) -> None:
    """Replace ``path`` by ``lines`` atomically: a 0600 temp file, fsync, rename."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, PRIVATE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
