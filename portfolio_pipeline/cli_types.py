"""Validated click parameter types: a bad argument is a usage error naming the option."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import click

__all__ = ["FINITE_FLOAT", "FiniteFloat", "LazyChoice", "SafePath", "SessionDate", "existing_file"]


class LazyChoice(click.Choice[str]):
    """A :class:`click.Choice` whose choices are computed on first use.

    The choices of some options come from modules that import numpy or pydantic
    (``OrderStatus``, ``StrategyType``); building the command tree must not import them,
    so ``portfolio --help`` stays fast.  ``load`` runs when the option's help, shell
    completion or a value needs the choices, once."""

    def __init__(self, load: Callable[[], Iterable[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        self.case_sensitive = case_sensitive

    @property
    def choices(self) -> tuple[str, ...]:
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Iterable[str]) -> None:
        self._choices = tuple(value)


class FiniteFloat(click.ParamType[float]):
    """A finite float within ``[minimum, maximum]`` (``nan``, ``inf``, ``1e308`` refused)."""

    name = "number"

    def __init__(self, minimum: float = -1e12, maximum: float = 1e12, *, min_open: bool = False) -> None:
        self.minimum = minimum
        self.maximum = maximum
        self.min_open = min_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float | int) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        low_ok = number > self.minimum if self.min_open else number >= self.minimum
        if not low_ok or number > self.maximum:
            bracket = "(" if self.min_open else "["
            self.fail(f"{value!r} is outside {bracket}{self.minimum:g}, {self.maximum:g}]", param, ctx)
        return number


FINITE_FLOAT = FiniteFloat()


class SessionDate(click.ParamType[date]):
    """A ``YYYY-MM-DD`` date inside the exchange calendar's range (returns a ``date``)."""

    name = "YYYY-MM-DD"

    def __init__(self, first: date | None = None, last: date | None = None) -> None:
        self.first = first
        self.last = last

    def _bounds(self) -> tuple[date, date]:
        from portfolio_pipeline.exchange_calendar import DEFAULT_END, DEFAULT_START

        return self.first or DEFAULT_START, self.last or DEFAULT_END

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, datetime):
            day = value.date()
        elif isinstance(value, date):
            day = value
        else:
            text = str(value).strip()
            try:
                day = date.fromisoformat(text)
            except ValueError:
                self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)
            if len(text) != 10:
                self.fail(f"{value!r} is not a date (YYYY-MM-DD)", param, ctx)
        first, last = self._bounds()
        if not first <= day <= last:
            self.fail(f"{day} is outside the supported range {first}..{last}", param, ctx)
        return day


class SafePath(click.Path):
    """``click.Path`` whose checks report a NUL byte or an over-long name as a usage error."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            raise
        except (ValueError, OSError) as exc:
            self.fail(f"{value!r} is not a usable file name ({exc})", param, ctx)


def existing_file() -> SafePath:
    """An existing regular file, as a ``Path``."""
    return SafePath(exists=True, dir_okay=False, path_type=Path)
