"""Limit evaluation: portfolio risk numbers against the limits of the regime in force."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.positions import require_finite
from portfolio_pipeline.domain.regime import RegimeState

Metric = Literal[
    "beta_weighted_delta", "short_gamma", "vega", "theta", "margin_utilisation"
]


@dataclass(frozen=True, slots=True)
class RiskSnapshot:
    """Dollar risk of one account (or the whole book) at one moment."""

    scope: str
    nlv: float
    beta_weighted_dollar_delta: float
    dollar_gamma_1pct: float
    vega_per_point: float
    theta_per_day: float
    maint_margin: float

    def __post_init__(self) -> None:
        for name in (
            "nlv", "beta_weighted_dollar_delta", "dollar_gamma_1pct", "vega_per_point",
            "theta_per_day", "maint_margin",
        ):
            require_finite(getattr(self, name), name, f"risk snapshot {self.scope}")
        if self.nlv <= 0:
            raise InvalidDataError(f"risk snapshot {self.scope}: NLV must be > 0, got {self.nlv}")


@dataclass(frozen=True, slots=True)
class LimitCheck:
    """One metric against its limit, with the market state that set the limit."""

    scope: str
    metric: Metric
    value: float
    """The metric as a fraction of NLV (signed where the sign matters)."""
    limit: float
    """The bound on ``value`` (an upper bound, except ``theta``: a lower bound)."""
    utilisation: float
    """How much of the limit is used; > 1 is a breach."""
    regime: str
    vix: float
    vix3m: float | None

    @property
    def breached(self) -> bool:
        return self.utilisation > 1.0


def evaluate_limits(risk: RiskSnapshot, regime: RegimeState) -> list[LimitCheck]:
    """Every limit's utilisation for ``risk`` under ``regime`` (breaches have utilisation > 1)."""
    lim = regime.limits
    nlv = risk.nlv
    bwd = risk.beta_weighted_dollar_delta / nlv
    short_gamma = max(-risk.dollar_gamma_1pct, 0.0) / nlv
    vega = risk.vega_per_point / nlv
    theta = risk.theta_per_day / nlv
    margin = risk.maint_margin / nlv
    if lim.min_theta < 0:
        theta_util = theta / lim.min_theta if theta < 0 else 0.0
    elif lim.min_theta > 0:
        theta_util = lim.min_theta / theta if theta > 0 else math.inf
    else:
        theta_util = math.inf if theta < 0 else 0.0
    rows: list[tuple[Metric, float, float, float]] = [
        ("beta_weighted_delta", bwd, lim.max_abs_beta_weighted_delta, abs(bwd) / lim.max_abs_beta_weighted_delta),
        ("short_gamma", short_gamma, lim.max_short_gamma, short_gamma / lim.max_short_gamma),
        ("vega", vega, lim.max_abs_vega, abs(vega) / lim.max_abs_vega),
        ("theta", theta, lim.min_theta, theta_util),
        ("margin_utilisation", margin, lim.max_margin_utilisation, margin / lim.max_margin_utilisation),
    ]
    return [
        LimitCheck(
            scope=risk.scope, metric=m, value=v, limit=limit, utilisation=u,
            regime=regime.name, vix=regime.vix, vix3m=regime.vix3m,
        )
        for m, v, limit, u in rows
    ]


def breaches(risk: RiskSnapshot, regime: RegimeState) -> list[LimitCheck]:
    """Only the limits that are breached."""
    return [c for c in evaluate_limits(risk, regime) if c.breached]
