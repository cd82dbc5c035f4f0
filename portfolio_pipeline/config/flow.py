"""Schema of ``config/flow.yaml``: the options-flow assets (chain snapshots, GEX, zero
gamma, put/call, pinning, unusual activity) and their checks.

Optional: without the file :data:`DEFAULT_FLOW` applies. The dealer-positioning modes are
those of :mod:`portfolio_pipeline.quant.flow` (its docstring states each assumption).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.quant.flow import FlowThresholds

__all__ = ["DEFAULT_FLOW", "FlowConfig"]

PositioningName = Literal[
    "customers_sell_calls_buy_puts", "customers_buy_calls_buy_puts", "net_customer"
]


class ChainWindowSettings(StrictModel):
    """Contracts snapshotted: expiries within ``max_days`` calendar days, strikes within
    ``spot x (1 -/+ moneyness)`` (a fraction: 0.06 = 6 %)."""

    max_days: int = Field(default=35, ge=1, le=400)
    moneyness: float = Field(default=0.06, gt=0, lt=1)


class ZeroGammaSettings(StrictModel):
    """The spot sweep of the zero-gamma search, as fractions of spot."""

    lower: float = Field(default=0.75, gt=0, lt=1)
    upper: float = Field(default=1.25, gt=1, le=3)
    points: int = Field(default=25, ge=3, le=2001)


class UnusualSettings(StrictModel):
    """Unusual activity thresholds (:class:`quant.flow.FlowThresholds`)."""

    min_volume: float = Field(default=500.0, ge=0, description="contracts")
    volume_oi_ratio: float = Field(default=1.0, gt=0)
    size_multiple: float = Field(default=5.0, gt=1)
    far_otm: float = Field(default=0.10, gt=0, lt=1, description="fraction of spot")
    average_sessions: int = Field(
        default=20, ge=1, le=250, description="sessions in the average volume"
    )

    def thresholds(self) -> FlowThresholds:
        return FlowThresholds(
            self.min_volume, self.volume_oi_ratio, self.size_multiple, self.far_otm
        )


class FlowChecks(StrictModel):
    """Data-quality checks of the chain snapshots."""

    stale_quote_minutes: float = Field(
        default=30.0, gt=0, description="quote older than the snapshot by this"
    )
    max_bad_fraction: float = Field(
        default=0.01, ge=0, le=1, description="share of contracts a check tolerates"
    )


class FlowConfig(StrictModel):
    """The options-flow configuration (``config/flow.yaml``)."""

    underlyings: list[str] = Field(default_factory=lambda: ["SPX"])
    positioning: PositioningName = "customers_sell_calls_buy_puts"
    window: ChainWindowSettings = Field(default_factory=ChainWindowSettings)
    put_call_buckets_days: list[int] = Field(default_factory=lambda: [7, 30, 90])
    pinning_top: int = Field(default=3, ge=1, le=20)
    zero_gamma: ZeroGammaSettings = Field(default_factory=ZeroGammaSettings)
    unusual: UnusualSettings = Field(default_factory=UnusualSettings)
    checks: FlowChecks = Field(default_factory=FlowChecks)

    @field_validator("underlyings")
    @classmethod
    def _unique_upper(cls, value: list[str]) -> list[str]:
        upper = [v.strip().upper() for v in value]
        if any(not v for v in upper):
            raise ValueError("an underlying is empty")
        if len(set(upper)) != len(upper):
            raise ValueError("underlyings repeat")
        return upper

    @model_validator(mode="after")
    def _buckets(self) -> FlowConfig:
        b = self.put_call_buckets_days
        if not b or b != sorted(set(b)) or b[0] <= 0:
            raise ValueError("put_call_buckets_days must be positive, increasing calendar days")
        return self


DEFAULT_FLOW = FlowConfig()
