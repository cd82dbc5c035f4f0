"""Schema of a what-if scenario (``portfolio scenario run FILE.yaml`` and the Dagster
``scenario_job``'s run config, which is validated into this model)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel

__all__ = ["ScenarioSpec"]


class ScenarioSpec(StrictModel):
    """One scenario applied to a stored session's book (full revaluation)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="the key it is stored under")
    session: dt.date | None = Field(
        default=None, description="stored session (default: the latest)"
    )
    spot_moves_pct: dict[str, float] = Field(
        default={}, description="underlying -> simple move in % (-10 = 10% lower)"
    )
    spx_move_pct: float | None = Field(
        default=None,
        description="move of SPX in %: every underlying not in spot_moves_pct moves by its "
        "beta x this (volatility indices stay)",
    )
    vol_shift_points: float = Field(
        default=0.0, gt=-100, le=1000, description="implied vol points added"
    )
    vol_scale: float = Field(
        default=1.0, gt=0, le=10, description="implied vols multiplied (before the shift)"
    )
    rate_shift_bp: float = Field(
        default=0.0, ge=-1000, le=5000, description="risk-free rate change, basis points"
    )
    days_forward: int = Field(default=0, ge=0, le=3650, description="calendar days of decay")
    trades: list[str] = Field(
        default=[],
        description="extra legs ('sell 1 SPX 2018-03-16 2600P'), as portfolio whatif takes them",
    )

    @model_validator(mode="after")
    def _moves(self) -> ScenarioSpec:
        for k, v in self.spot_moves_pct.items():
            if not -100 < v <= 1000:
                raise ValueError(f"spot_moves_pct[{k}] must be in (-100, 1000], got {v}")
        if self.spx_move_pct is not None and not -100 < self.spx_move_pct <= 1000:
            raise ValueError(f"spx_move_pct must be in (-100, 1000], got {self.spx_move_pct}")
        return self
