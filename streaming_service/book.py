"""Every account and the whole book, live: one :class:`~streaming_service.engine.Engine`
per account (each checked against its own limits through the engine's limits hook) and
the book's limits on the sum of their risk.

:class:`BookEngine` offers what the service and the hedge desk use of an ``Engine``
(``apply`` / ``reprice_pending`` / ``evaluate``, ``risk_snapshot``, ``spot`` ...).  A
tick goes to every account engine that follows its symbol (VIX and VIX3M to all of
them).  :meth:`BookEngine.evaluate` returns the book's :class:`RiskState` whose
``checks`` hold the book's checks (scope ``"*"``) followed by every account's (scope:
its account id), so the one breach detector keys breaches by (account, metric) and
each breach names its account; :attr:`BookEngine.accounts` holds each account's own
state.  The book's checks are decided on exact numbers like an engine's own: when any
of them lies within ``guard`` of a decision level, every account engine reprices
exactly before the book is summed again.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from portfolio_pipeline.domain.limits import RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.regime import LimitSet, RegimeService
from portfolio_pipeline.domain.symbols import AGGREGATE
from streaming_service.engine import (
    Engine,
    NonFiniteGreeksError,
    RiskState,
    Tick,
    UnknownContractError,
)

__all__ = ["BOOK_SCOPE", "BookEngine"]

logger = logging.getLogger(__name__)

BOOK_SCOPE: Final = AGGREGATE
"""Scope of the whole book's limit checks."""


def book_risk(risks: Sequence[RiskSnapshot]) -> RiskSnapshot:
    """The sum of the accounts' dollar risk (NLV, Greeks and maintenance margin)."""
    return RiskSnapshot(
        scope=BOOK_SCOPE,
        nlv=sum(r.nlv for r in risks),
        beta_weighted_dollar_delta=sum(r.beta_weighted_dollar_delta for r in risks),
        dollar_gamma_1pct=sum(r.dollar_gamma_1pct for r in risks),
        vega_per_point=sum(r.vega_per_point for r in risks),
        theta_per_day=sum(r.theta_per_day for r in risks),
        maint_margin=sum(r.maint_margin for r in risks),
    )


class BookEngine:
    """Account engines plus the whole book (see the module docstring).

    Parameters
    ----------
    engines:
        account id -> its engine (built with ``scope=account_id`` and its limits hook).
    regimes:
        THE regime service (the book's default limits: the regime's own).
    book_limits:
        regime name -> the book's limits; default: the regime's own.
    guard, levels:
        The decision band of the book's checks (as ``Expansion``); ``guard=0`` never
        forces an exact repricing (engines without expansion are always exact).
    """

    def __init__(
        self,
        engines: Mapping[str, Engine],
        regimes: RegimeService,
        *,
        book_limits: Callable[[str], LimitSet] | None = None,
        guard: float = 0.0,
        levels: tuple[float, ...] = (1.0,),
    ) -> None:
        if not engines:
            raise ValueError("book engine: no account engine")
        self._engines = dict(engines)
        self._book_limits = book_limits or regimes.limits_for
        self._guard = guard
        self._levels = levels
        self._symbols = frozenset().union(*(e.symbols for e in self._engines.values()))
        self.accounts: Mapping[str, RiskState] = MappingProxyType({})

    # ------------------------------------------------------------------ the Engine surface

    @property
    def engines(self) -> Mapping[str, Engine]:
        return MappingProxyType(self._engines)

    @property
    def symbols(self) -> frozenset[str]:
        return self._symbols

    @property
    def roots(self) -> tuple[str, ...]:
        return tuple(sorted({r for e in self._engines.values() for r in e.roots}))

    @property
    def position_count(self) -> int:
        return sum(e.position_count for e in self._engines.values())

    @property
    def bad_groups(self) -> frozenset[str]:
        return frozenset().union(*(e.bad_groups for e in self._engines.values()))

    @property
    def rate(self) -> float:
        return next(iter(self._engines.values())).rate

    def _holding(self, root: str) -> Engine:
        return next(
            (e for e in self._engines.values() if root.upper() in e.roots),
            next(iter(self._engines.values())),
        )

    def spot(self, root: str) -> float:
        return self._holding(root).spot(root)

    def atm_vol(self, root: str) -> float:
        return self._holding(root).atm_vol(root)

    def dividend_yield(self, root: str) -> float:
        return self._holding(root).dividend_yield(root)

    def beta(self, root: str) -> float:
        return self._holding(root).beta(root)

    def apply(self, tick: Tick) -> None:
        """The tick to every engine that follows its symbol; a bad tick changes nothing
        (every engine validates it the same way before changing anything)."""
        symbol = tick.symbol.upper() if isinstance(tick.symbol, str) else ""
        targets = [e for e in self._engines.values() if symbol in e.symbols]
        if not targets:
            raise UnknownContractError(f"no position or index {tick.symbol!r} in any account")
        for engine in targets:
            engine.apply(tick)

    def reprice_pending(self) -> list[NonFiniteGreeksError]:
        return [err for e in self._engines.values() for err in e.reprice_pending()]

    def risk_snapshot(self) -> RiskSnapshot:
        """The book's dollar risk now (the sum of the accounts')."""
        return book_risk([e.risk_snapshot() for e in self._engines.values()])

    def evaluate(self) -> RiskState:
        """Each account against its limits, then the book against the book's limits."""
        states = {a: e.evaluate() for a, e in self._engines.items()}
        book = self._book_state(states)
        if self._guard > 0 and any(
            abs(c.utilisation - level) <= self._guard for c in book.checks for level in self._levels
        ):  # a book decision rests on these sums: every account exact at this instant
            for engine in self._engines.values():
                engine.reprice_all()
            states = {a: e.evaluate() for a, e in self._engines.items()}
            book = self._book_state(states)
        self.accounts = MappingProxyType(states)
        checks = (*book.checks, *(c for s in states.values() for c in s.checks))
        return RiskState(
            ts=book.ts, risk=book.risk, regime=book.regime, checks=checks, spots=book.spots
        )

    def _book_state(self, states: Mapping[str, RiskState]) -> RiskState:
        first = next(iter(states.values()))
        regime = dataclasses.replace(first.regime, limits=self._book_limits(first.regime.name))
        risk = book_risk([s.risk for s in states.values()])
        spots: dict[str, float] = {}
        for s in states.values():
            spots.update(s.spots)
        return RiskState(
            ts=max(s.ts for s in states.values()),
            risk=risk,
            regime=regime,
            checks=tuple(evaluate_limits(risk, regime)),
            spots=MappingProxyType(spots),
        )
