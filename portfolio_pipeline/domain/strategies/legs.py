"""The vocabulary of strategy tagging: legs, strategy types and recognised pieces.

A :class:`Leg` is one signed position of an account; tagging groups legs into
strategies of the types of :data:`StrategyType` (see
:mod:`portfolio_pipeline.domain.strategies.patterns` for the rules).  Pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Final, Literal, get_args

from portfolio_pipeline.domain.positions import Contract

__all__ = [
    "ASSIGNMENT_KINDS",
    "OPTION_SEC_TYPES",
    "QUANTITY_EPS",
    "STRATEGY_TYPES",
    "Classification",
    "Leg",
    "Piece",
    "StrategyType",
    "merge_legs",
    "sorted_legs",
]

StrategyType = Literal[
    "long_call",
    "long_put",
    "short_call",
    "short_put",
    "cash_secured_put",
    "covered_call",
    "vertical",
    "iron_condor",
    "iron_butterfly",
    "strangle",
    "straddle",
    "butterfly",
    "broken_wing_butterfly",
    "calendar",
    "diagonal",
    "ratio_spread",
    "jade_lizard",
    "stock_hedge",
    "futures_hedge",
    "custom",
]
STRATEGY_TYPES: tuple[str, ...] = get_args(StrategyType)
OPTION_SEC_TYPES: tuple[str, ...] = ("OPT", "FOP")
ASSIGNMENT_KINDS: tuple[str, ...] = ("assignment", "exercise")
QUANTITY_EPS: Final[float] = 1e-9
"""Quantities within this of zero are no position (matching, carrying, P&L split)."""


@dataclass(frozen=True, slots=True)
class Leg:
    """A signed quantity of one contract (a position, or the part a strategy holds)."""

    position_key: str
    contract: Contract
    quantity: float
    multiplier: float

    @property
    def is_option(self) -> bool:
        return self.contract.sec_type in OPTION_SEC_TYPES

    def sort_key(self) -> tuple[str, str, str, float, str, str]:
        c = self.contract
        return (
            c.underlying.upper(),
            c.sec_type,
            c.expiry.isoformat() if c.expiry else "",
            float(c.strike or 0.0),
            c.right or "",
            self.position_key,
        )

    def with_quantity(self, quantity: float) -> Leg:
        return replace(self, quantity=quantity)


@dataclass(frozen=True, slots=True)
class Classification:
    strategy_type: StrategyType
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Piece:
    """One recognised structure: its type, a detail ("put credit") and its legs."""

    strategy_type: StrategyType
    detail: str
    legs: tuple[Leg, ...]



def sorted_legs(legs: Iterable[Leg]) -> list[Leg]:
    """Legs in their canonical order (:meth:`Leg.sort_key`)."""
    return sorted(legs, key=Leg.sort_key)


def merge_legs(legs: Iterable[Leg]) -> dict[str, Leg]:
    """One leg per position key, quantities added (first-seen order); flat keys dropped."""
    merged: dict[str, Leg] = {}
    for leg in legs:
        if leg.position_key in merged:
            prev = merged[leg.position_key]
            merged[leg.position_key] = prev.with_quantity(prev.quantity + leg.quantity)
        else:
            merged[leg.position_key] = leg
    return {k: v for k, v in merged.items() if abs(v.quantity) > QUANTITY_EPS}
