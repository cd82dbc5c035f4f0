"""What a trade does to the book's risk numbers and limits (pure).

The one place a proposed trade's effect is stated, for ``portfolio whatif`` and the
streaming hedge proposer alike: :class:`RiskChange` (the trade's dollar Greeks and margin,
in the units of :class:`~portfolio_pipeline.domain.limits.RiskSnapshot`), :func:`apply_change`
(the snapshot after the trade) and :func:`limit_changes` (every limit's utilisation before
and after, and whether the trade causes or cures a breach).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.regime import RegimeState

__all__ = ["LimitChange", "RiskChange", "apply_change", "describe_changes", "limit_changes"]

Effect = Literal["causes breach", "cures breach", "still breached", "within"]


@dataclass(frozen=True, slots=True)
class RiskChange:
    """A trade's effect on the risk snapshot's numbers ($; margin: maintenance requirement)."""

    beta_weighted_dollar_delta: float = 0.0
    dollar_gamma_1pct: float = 0.0
    vega_per_point: float = 0.0
    theta_per_day: float = 0.0
    maint_margin: float = 0.0

    def __add__(self, other: RiskChange) -> RiskChange:
        return RiskChange(*(a + b for a, b in zip(_values(self), _values(other), strict=True)))

    def scaled(self, n: float) -> RiskChange:
        return RiskChange(*(n * a for a in _values(self)))

    @property
    def is_zero(self) -> bool:
        return all(v == 0.0 for v in _values(self))


def _values(c: RiskChange) -> tuple[float, float, float, float, float]:
    return (
        c.beta_weighted_dollar_delta,
        c.dollar_gamma_1pct,
        c.vega_per_point,
        c.theta_per_day,
        c.maint_margin,
    )


def apply_change(risk: RiskSnapshot, change: RiskChange) -> RiskSnapshot:
    """The snapshot after the trade (NLV unchanged: a trade at its value moves no equity)."""
    return replace(
        risk,
        beta_weighted_dollar_delta=risk.beta_weighted_dollar_delta
        + change.beta_weighted_dollar_delta,
        dollar_gamma_1pct=risk.dollar_gamma_1pct + change.dollar_gamma_1pct,
        vega_per_point=risk.vega_per_point + change.vega_per_point,
        theta_per_day=risk.theta_per_day + change.theta_per_day,
        maint_margin=risk.maint_margin + change.maint_margin,
    )


@dataclass(frozen=True, slots=True)
class LimitChange:
    before: LimitCheck
    after: LimitCheck

    @property
    def effect(self) -> Effect:
        if self.after.breached:
            return "still breached" if self.before.breached else "causes breach"
        return "cures breach" if self.before.breached else "within"


def limit_changes(
    before: RiskSnapshot, change: RiskChange, regime: RegimeState
) -> list[LimitChange]:
    """Every limit of ``regime`` before and after ``change``."""
    after = apply_change(before, change)
    return [
        LimitChange(b, a)
        for b, a in zip(
            evaluate_limits(before, regime), evaluate_limits(after, regime), strict=True
        )
    ]


def describe_changes(changes: Sequence[LimitChange]) -> str:
    """One line: the breaches caused and cured ('no limit changes state' when none)."""
    caused = [c.after.metric for c in changes if c.effect == "causes breach"]
    cured = [c.after.metric for c in changes if c.effect == "cures breach"]
    parts = []
    if caused:
        parts.append("causes breach of " + ", ".join(caused))
    if cured:
        parts.append("cures breach of " + ", ".join(cured))
    return "; ".join(parts) or "no limit changes state"
