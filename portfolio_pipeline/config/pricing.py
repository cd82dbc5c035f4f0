"""Schema of ``config/pricing.yaml``: rates, dividend yields, betas and analytics thresholds.

The same model validates ``pricing.yaml`` and ``pricing.example.yaml`` (registered in
``portfolio_pipeline.config.loader.CONFIG_FILES``).  The file is optional: without it the
defaults below apply (:data:`DEFAULT_PRICING`).
"""

from __future__ import annotations

import itertools
from datetime import date

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class RatePoint(_Strict):
    """A flat risk-free rate in force from ``effective`` until the next point."""

    effective: date
    rate: float = Field(ge=-0.05, le=0.5, description="continuously compounded decimal")


class BetaSettings(_Strict):
    """Beta of each underlying to the reference index (for beta-weighted delta)."""

    reference: str = Field(default="SPX", min_length=1, description="reference index root")
    window: int = Field(default=252, ge=20, description="sessions of daily log returns (OLS)")
    min_observations: int = Field(default=60, ge=10)
    fallback: float = Field(default=1.0, description="beta when history is too short")
    overrides: dict[str, float] = Field(
        default_factory=dict, description="root -> beta, used instead of the estimate"
    )


class AttributionSettings(_Strict):
    unexplained_relative: float = Field(default=0.25, gt=0, description="fraction of |actual|")
    unexplained_absolute: float = Field(default=250.0, ge=0, description="account currency")


class ReconciliationSettings(_Strict):
    """Computed daily P&L vs the broker's own: |diff| <= max(absolute, relative * |broker|)."""

    absolute: float = Field(default=50.0, ge=0)
    relative: float = Field(default=0.01, ge=0)


class RiskSettings(_Strict):
    levels: list[float] = Field(default_factory=lambda: [0.95, 0.99], min_length=1)
    rolling_window: int = Field(default=63, ge=5)
    min_observations: int = Field(default=20, ge=2, description="below this, metrics are NULL")
    garch_refit_sessions: int = Field(
        default=21, ge=1, description="GARCH parameters are refitted every N returns"
    )
    periods_per_year: int = Field(default=252, ge=1)

    @model_validator(mode="after")
    def _levels(self) -> RiskSettings:
        if any(not 0.5 < lv < 1.0 for lv in self.levels):
            raise ValueError("levels must lie in (0.5, 1), e.g. 0.95")
        return self


class PricingConfig(_Strict):
    """Schema of ``config/pricing.yaml``."""

    risk_free: list[RatePoint] = Field(min_length=1)
    dividend_yields: dict[str, float] = Field(default_factory=dict)
    default_dividend_yield: float = 0.0
    beta: BetaSettings = BetaSettings()
    attribution: AttributionSettings = AttributionSettings()
    reconciliation: ReconciliationSettings = ReconciliationSettings()
    risk: RiskSettings = RiskSettings()

    @model_validator(mode="after")
    def _ordered(self) -> PricingConfig:
        dates = [p.effective for p in self.risk_free]
        if any(a >= b for a, b in itertools.pairwise(dates)):
            raise ValueError("risk_free points must be in strictly increasing 'effective' order")
        return self

    def rate_on(self, day: date) -> float:
        """The flat risk-free rate in force on ``day`` (the first point's before it)."""
        rate = self.risk_free[0].rate
        for point in self.risk_free:
            if point.effective > day:
                break
            rate = point.rate
        return rate

    def dividend_yield(self, root: str) -> float:
        return self.dividend_yields.get(root.upper(), self.default_dividend_yield)

    def beta_override(self, root: str) -> float | None:
        return self.beta.overrides.get(root.upper())


DEFAULT_PRICING = PricingConfig(risk_free=[RatePoint(effective=date(2000, 1, 1), rate=0.02)])
"""Used when ``config/pricing.yaml`` is absent (a flat 2 % rate, no dividends)."""
