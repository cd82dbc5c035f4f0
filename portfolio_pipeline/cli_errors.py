"""The command line's one error boundary: bad input is one line and an exit code.

Every ``portfolio`` sub-command and ``portfolio-stream`` run inside
:func:`report_errors`.  Known error types (configuration, domain/import data, broker,
file system, text encoding, database) print ``error: <what and where>`` on stderr and
exit non-zero without a traceback; anything else is an internal error, reported the
same way with its type named.  ``-v`` adds the full traceback.

Exit codes: 2 bad input (config, file, data, argument; an unknown order, alert or account),
3 database unavailable or refusing a value, 4 broker failure, 1 a valid request whose
operation failed or was refused (a failed pipeline run, an undelivered test message, an
illegal order transition) or an internal error, 130 interrupted.  Commands raise
:class:`CliError` for their own refusals.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any, Final

import click

__all__ = [
    "BAD_INPUT",
    "EXIT_BAD_INPUT",
    "EXIT_BROKER",
    "EXIT_DATABASE",
    "EXIT_INTERNAL",
    "FAILED",
    "CliError",
    "ReportingCommand",
    "ReportingGroup",
    "describe_error",
    "report_errors",
]

EXIT_INTERNAL: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_DATABASE: Final = 3
EXIT_BROKER: Final = 4
EXIT_INTERRUPTED: Final = 130
BAD_INPUT: Final = EXIT_BAD_INPUT
FAILED: Final = EXIT_INTERNAL  # an operation that failed or was refused

_MAX_LINE: Final = 500


def _first_line(text: str) -> str:
    line = next((part for part in text.splitlines() if part.strip()), "").strip()
    return line if len(line) <= _MAX_LINE else line[: _MAX_LINE - 3] + "..."


def _clean(text: str) -> str:
    """Control characters (NUL, escapes, bidi overrides) shown as escapes, never raw."""
    return "".join(
        ch if ch.isprintable() or ch in "\n\t" else ch.encode("unicode_escape").decode("ascii")
        for ch in text
    )


def describe_error(exc: BaseException) -> tuple[str, int, bool]:
    """``(message, exit code, expected)`` for an error escaping a command.

    ``expected`` is False for an internal error (a bug): still reported on one line, but
    named as such so that it is not mistaken for a problem with the input.
    """
    from sqlalchemy.exc import DataError, DBAPIError, SQLAlchemyError

    from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError
    from portfolio_pipeline.config import ConfigError
    from portfolio_pipeline.domain.errors import DomainError

    if isinstance(exc, ConfigError):
        # one line per problem, each naming file and key
        return "\n".join(_clean(str(p)) for p in exc.problems), EXIT_BAD_INPUT, True
    if isinstance(exc, DomainError | BrokerDataError):
        return _clean(_first_line(str(exc))), EXIT_BAD_INPUT, True
    if isinstance(exc, BrokerError):
        return _clean(_first_line(str(exc))), EXIT_BROKER, True
    if isinstance(exc, UnicodeError):
        return _clean(_first_line(f"not valid text: {exc}")), EXIT_BAD_INPUT, True
    if isinstance(exc, OSError):
        name = exc.filename if exc.filename is not None else ""
        reason = exc.strerror or str(exc)
        text = f"{name}: {reason}" if name else reason
        return _clean(_first_line(text)), EXIT_BAD_INPUT, True
    if isinstance(exc, DataError):  # a value the database refuses (e.g. NUL in PostgreSQL text)
        orig = exc.orig if exc.orig is not None else exc
        return _clean(_first_line(f"invalid value: {orig}")), EXIT_BAD_INPUT, True
    if isinstance(exc, DBAPIError):
        orig = exc.orig if exc.orig is not None else exc
        return _clean(_first_line(f"database: {orig}")), EXIT_DATABASE, True
    if isinstance(exc, SQLAlchemyError):
        return _clean(_first_line(f"database: {exc}")), EXIT_DATABASE, True
    detail = _first_line(str(exc)) or "(no message)"
    return (
        _clean(f"internal error ({type(exc).__name__}: {detail}); run with -v for the traceback"),
        EXIT_INTERNAL,
        False,
    )


@contextmanager
def report_errors(verbose: Callable[[], bool]) -> Iterator[None]:
    """Turn an exception into ``error: ...`` on stderr and ``SystemExit(code)``."""
    try:
        yield
    except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
        raise
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        raise SystemExit(EXIT_INTERRUPTED) from None
    except Exception as exc:
        if verbose():
            traceback.print_exc(file=sys.stderr)
        message, code, _ = describe_error(exc)
        for line in message.splitlines():
            click.echo(f"error: {line}", err=True)
        raise SystemExit(code) from None


def _verbose(ctx: click.Context) -> Callable[[], bool]:
    return lambda: bool(ctx.find_root().params.get("verbose"))


class ReportingGroup(click.Group):
    """A group whose sub-commands report errors through :func:`report_errors`."""

    def invoke(self, ctx: click.Context) -> object:
        with report_errors(_verbose(ctx)):
            return super().invoke(ctx)


class ReportingCommand(click.Command):
    """A command that reports errors through :func:`report_errors`."""

    def invoke(self, ctx: click.Context) -> object:
        with report_errors(_verbose(ctx)):
            return super().invoke(ctx)


class CliError(click.ClickException):
    """A command's own refusal: ``error: <message>`` on stderr; exit :data:`BAD_INPUT`
    unless told otherwise (:data:`FAILED` for an operation that failed)."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(_clean(message))
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
