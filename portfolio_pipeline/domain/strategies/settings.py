"""Schema of ``config/strategies.yaml``: manual overrides, Kelly sizing, liquidity flags
and the theta/vega history band (registered in
:data:`portfolio_pipeline.config.loader.CONFIG_FILES`)."""

from __future__ import annotations

import math

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.domain.strategies.legs import StrategyType

__all__ = [
    "KellySettings",
    "LiquiditySettings",
    "StrategiesFile",
    "StrategyOverride",
    "ThetaVegaSettings",
]


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class StrategyOverride(_Strict):
    """A manual name/type for a strategy id; with ``legs``, a manual grouping."""

    id: str = Field(min_length=1, max_length=64)
    account_id: str = Field(min_length=1)
    name: str | None = None
    type: StrategyType | None = None
    legs: dict[str, float] | None = Field(
        default=None, description="position_key -> signed quantity claimed before auto-tagging"
    )

    @model_validator(mode="after")
    def _something(self) -> StrategyOverride:
        if self.name is None and self.type is None and not self.legs:
            raise ValueError("an override needs a name, a type or legs")
        if self.legs and any(q == 0 or not math.isfinite(q) for q in self.legs.values()):
            raise ValueError("leg quantities must be finite and non-zero")
        return self


class KellySettings(_Strict):
    """Fractional Kelly per strategy type (no default: every number is the user's)."""

    fraction: float = Field(gt=0, le=1, description="multiplier of full Kelly, e.g. 0.25")
    min_trades: int = Field(ge=1, description="closed strategies needed before sizing")
    shrinkage_trades: float = Field(
        ge=0, description="f * n / (n + shrinkage_trades): pulls small samples toward 0"
    )
    max_fraction: float = Field(gt=0, le=1, description="cap on the recommended fraction of NLV")
    type_caps: dict[StrategyType, float] = Field(
        default_factory=dict, description="stricter caps per strategy type"
    )


class LiquiditySettings(_Strict):
    max_spread_pct: float = Field(default=0.10, gt=0, description="(ask-bid)/mid above = illiquid")
    max_daily_volume_share: float = Field(
        default=0.10, gt=0, le=1, description="share of daily volume one day's exit may take"
    )


class ThetaVegaSettings(_Strict):
    band_low: float = Field(default=0.25, ge=0)
    band_high: float = Field(default=0.40, gt=0)
    window: int = Field(default=20, ge=3, description="sessions of the rolling correlation")

    @model_validator(mode="after")
    def _band(self) -> ThetaVegaSettings:
        if self.band_low >= self.band_high:
            raise ValueError("band_low must be below band_high")
        return self


class StrategiesFile(_Strict):
    """Schema of ``config/strategies.yaml``."""

    overrides: list[StrategyOverride] = Field(default_factory=list)
    sizing: KellySettings | None = None
    liquidity: LiquiditySettings = LiquiditySettings()
    theta_vega: ThetaVegaSettings = ThetaVegaSettings()

    @model_validator(mode="after")
    def _unique(self) -> StrategiesFile:
        seen: set[tuple[str, str]] = set()
        for o in self.overrides:
            if (o.account_id, o.id) in seen:
                raise ValueError(f"override {o.id!r} of account {o.account_id!r} appears twice")
            seen.add((o.account_id, o.id))
        return self
