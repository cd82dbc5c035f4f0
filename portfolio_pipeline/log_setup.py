"""The one logging setup of every process: the ``portfolio`` CLI, the Dagster code location
(webserver, daemon, run workers) and ``portfolio-stream``.

``PORTFOLIO_LOG_FORMAT`` selects the format of what goes to stderr:

- ``text``: ``<time> <LEVEL> <logger>: <message>``, for a terminal;
- ``json``: one JSON object per line (python-json-logger) with ``timestamp`` (ISO-8601,
  UTC, with its offset), ``level``, ``logger``, ``message``, every ``extra={...}`` field
  of the call, and ``exception`` (the formatted traceback) when one is attached, for
  journald, Docker or a log shipper.

Unset, each process keeps its own default: text for the CLI, JSON for the streaming
service (a long-running service whose lines are read by machines).  The Dagster code
location changes nothing unless the variable is set (Dagster's own console output is
Dagster's); with ``json`` the platform's loggers write JSON lines to stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import IO, Final, Literal, get_args

__all__ = [
    "LOG_FORMAT_ENV",
    "PLATFORM_LOGGERS",
    "TEXT_FORMAT",
    "LogFormat",
    "LogFormatError",
    "configure_code_location_logging",
    "configure_logging",
    "formatter",
    "log_format",
]

LOG_FORMAT_ENV: Final = "PORTFOLIO_LOG_FORMAT"
"""Environment variable selecting ``text`` or ``json`` log lines."""

LogFormat = Literal["text", "json"]

PLATFORM_LOGGERS: Final = ("portfolio", "portfolio_pipeline", "streaming_service")
"""Logger namespaces of this project."""

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_HANDLER_MARK: Final = "portfolio_log_handler"
"""Attribute set on the handlers installed here, so a second setup replaces them."""


class LogFormatError(ValueError):
    """``PORTFOLIO_LOG_FORMAT`` holds something other than ``text`` or ``json``."""


def log_format(environ: Mapping[str, str] | None = None, *, default: LogFormat = "text") -> LogFormat:
    """The format ``PORTFOLIO_LOG_FORMAT`` asks for (``default`` when unset or empty)."""
    env = os.environ if environ is None else environ
    raw = env.get(LOG_FORMAT_ENV, "").strip().lower()
    if not raw:
        return default
    for choice in get_args(LogFormat):
        if raw == choice:
            return choice  # type: ignore[no-any-return]
    raise LogFormatError(
        f"{LOG_FORMAT_ENV}: {env[LOG_FORMAT_ENV].strip()[:40]!r} is not a log format; "
        f"expected one of {', '.join(get_args(LogFormat))}"
    )


def formatter(fmt: LogFormat, text_format: str = TEXT_FORMAT) -> logging.Formatter:
    """A formatter for ``fmt``: JSON lines, or ``text_format`` (a %-style format)."""
    if fmt == "text":
        return logging.Formatter(text_format)
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(
        "%(levelname)s %(name)s %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
        timestamp=True,  # datetime.fromtimestamp(record.created, UTC).isoformat()
        json_ensure_ascii=False,
    )


def _handler(fmt: LogFormat, text_format: str, stream: IO[str] | None) -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(formatter(fmt, text_format))
    setattr(handler, _HANDLER_MARK, True)
    return handler


def _drop_own_handlers(target: logging.Logger) -> None:
    for old in [h for h in target.handlers if getattr(h, _HANDLER_MARK, False)]:
        target.removeHandler(old)


def configure_logging(
    level: int,
    *,
    default: LogFormat = "text",
    environ: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
) -> LogFormat:
    """Set the root logger's level and its stderr handler in the selected format.

    Like ``logging.basicConfig`` the handler is added only when the root logger has no
    handler of someone else's (a test harness's capture stays in place); a handler this
    function installed before is replaced, so calling it twice never doubles a line.
    Returns the format in force.
    """
    fmt = log_format(environ, default=default)
    root = logging.getLogger()
    _drop_own_handlers(root)
    if not root.handlers:
        root.addHandler(_handler(fmt, TEXT_FORMAT, stream))
    root.setLevel(level)
    return fmt


def configure_code_location_logging(
    environ: Mapping[str, str] | None = None, *, stream: IO[str] | None = None
) -> LogFormat | None:
    """JSON lines for the platform's loggers inside Dagster processes, when asked for.

    Called where the code location is loaded (``definitions.py``), i.e. in the webserver's
    and daemon's code server and in every run worker.  With ``PORTFOLIO_LOG_FORMAT=json``
    the platform's loggers get their own stderr handler at INFO and stop propagating (so
    no line appears twice); otherwise, or when the process's entry point (the CLI running
    a job in-process) has set up logging already, nothing is touched and ``None`` is
    returned.
    """
    env = os.environ if environ is None else environ
    if not env.get(LOG_FORMAT_ENV, "").strip():
        return None
    if any(getattr(h, _HANDLER_MARK, False) for h in logging.getLogger().handlers):
        return None
    fmt = log_format(env)
    if fmt != "json":
        return None
    for name in PLATFORM_LOGGERS:
        target = logging.getLogger(name)
        _drop_own_handlers(target)
        target.addHandler(_handler(fmt, TEXT_FORMAT, stream))
        if target.level == logging.NOTSET:
            target.setLevel(logging.INFO)
        target.propagate = False
    return fmt
