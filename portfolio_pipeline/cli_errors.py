"""One error style for every ``portfolio`` command.

A failure prints one line ``error: <what, naming the argument or file>`` on stderr and
exits with:

* :data:`BAD_INPUT` (2): an argument, file or configuration that is wrong or names
  nothing that exists (an unknown order, alert or account, a date with no stored session);
* :data:`FAILED` (1): a valid request whose operation failed or was refused (a pipeline
  run failed, a notification channel did not deliver, an illegal order transition).

Click's own usage errors (a missing argument, an unknown option) keep Click's usage text
and exit 2.
"""

from __future__ import annotations

from typing import IO, Any

import click

BAD_INPUT = 2
FAILED = 1


class CliError(click.ClickException):
    """``error: <message>`` on stderr; exit :data:`BAD_INPUT` unless told otherwise."""

    def __init__(self, message: str, exit_code: int = BAD_INPUT) -> None:
        super().__init__(message)
        self.exit_code = exit_code  # type: ignore[misc]  # click declares a class default

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)
