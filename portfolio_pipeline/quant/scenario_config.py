"""Schema of ``config/stress_scenarios.yaml`` (shared by the example and the user's file;
registered in :data:`portfolio_pipeline.config.loader.CONFIG_FILES`).

Settings of the stress assets: how each underlying follows the scenario drivers, the
shock grid, the historical replay windows, Monte Carlo and correlation stress.  Only
pydantic and the quant type aliases are imported here, so reading the configuration does
not load the numeric kernels.
"""

from __future__ import annotations

import datetime as dt
from typing import Literal, TypeAlias

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.quant._typing import Innovations, ScenarioAmericanMethod, SkewRule

__all__ = [
    "AnchorClose",
    "BuiltinWindow",
    "CorrelationConfig",
    "CorrelationOverride",
    "GridConfig",
    "HistoricalConfig",
    "HistoricalWindow",
    "MonteCarloConfig",
    "Proxy",
    "RiskProfileConfig",
    "StressScenariosFile",
    "UnderlyingStress",
]


class _Strict(StrictModel):
    """The stress-scenario schemas share the project-wide rules of :class:`StrictModel`."""


Proxy: TypeAlias = Literal["spx", "ndx", "vix"]
BuiltinWindow: TypeAlias = Literal["feb_2018", "oct_2008", "mar_2020"]


class UnderlyingStress(_Strict):
    """How one underlying follows the scenario drivers."""

    proxy: Proxy = Field(
        default="spx",
        description="history it moves with: spx (S&P 500), ndx (NDX proxy from the Nasdaq "
        "Composite), vix (volatility-index underlyings)",
    )
    beta: float = Field(default=1.0, description="log-return beta to its proxy")
    vix_beta: float = Field(
        default=1.0, ge=0, description="ATM implied-vol points per VIX point (0 for vix proxies)"
    )
    skew_slope: float = Field(
        default=-1.0,
        le=0.5,
        ge=-5.0,
        description="d sigma / d ln(K/S) of the smile (decimal vol per unit log-moneyness), "
        "used by sticky_moneyness",
    )
    dividend_yield: float = Field(default=0.0, ge=0, le=0.2, description="continuous, decimal")


class GridConfig(_Strict):
    spot_shocks_pct: list[float] = Field(
        default=[-30, -20, -15, -10, -5, -2, 0, 2, 5, 10, 20], min_length=1
    )
    vol_shocks_points: list[float] = Field(default=[-5, 0, 5, 10, 20], min_length=1)
    vix_targets: list[float] = Field(default=[30, 40, 50, 80])
    horizons_days: list[int] = Field(default=[0, 1, 5], min_length=1)
    skew_rule: SkewRule = "sticky_strike"
    min_vol: float = Field(default=0.01, gt=0, lt=1)
    american_method: ScenarioAmericanMethod = Field(
        default="lr",
        description="pricer of American (equity/ETF) options in the grid and the historical "
        "replay: lr = Leisen-Reimer tree (accurate), bs2002 = Bjerksund-Stensland 2002 "
        "(~20x faster, up to ~0.7% low), interp_lr = tree premium interpolated on a grid "
        "(for large scenario sets)",
    )
    american_steps: int = Field(
        default=101,
        ge=11,
        le=2001,
        description="tree steps for american_method lr (101: ~0.1% from a fine PDE grid at "
        "a quarter of the cost of 201 steps; the cost grows as steps^2)",
    )

    @model_validator(mode="after")
    def _zero_cell(self) -> GridConfig:
        if 0 not in self.spot_shocks_pct or 0 not in self.vol_shocks_points:
            raise ValueError("spot_shocks_pct and vol_shocks_points must contain 0 (today's cell)")
        if 0 not in self.horizons_days:
            raise ValueError("horizons_days must contain 0")
        if any(not -100 < s <= 1000 for s in self.spot_shocks_pct):
            raise ValueError("spot_shocks_pct must be in (-100, 1000]")
        if any(not -100 < v <= 1000 for v in self.vol_shocks_points):
            raise ValueError("vol_shocks_points must be in (-100, 1000]")
        if any(not 0 < v <= 500 for v in self.vix_targets):
            raise ValueError("vix_targets must be in (0, 500]")
        if any(h < 0 or h > 3650 for h in self.horizons_days):
            raise ValueError("horizons_days must be in [0, 3650]")
        for name in ("spot_shocks_pct", "vol_shocks_points", "vix_targets", "horizons_days"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicate values")
        return self


class AnchorClose(_Strict):
    """A published S&P 500 / VIX close (user windows with anchors)."""

    date: dt.date
    spx: float = Field(gt=0)
    vix: float = Field(gt=0)


class HistoricalWindow(_Strict):
    """A user replay window: S&P 500 from the shipped history (1999-2018) or anchors."""

    name: str = Field(pattern=r"^[a-z0-9_]{1,48}$")
    start: dt.date
    end: dt.date
    description: str = ""
    vix_fill: Literal["history", "realised_vol"] = Field(
        default="history",
        description="history: arch VIX (2014-2019); realised_vol: 21-day realised S&P vol "
        "x 100 (scaled to an anchor when one falls in the window)",
    )
    anchors: list[AnchorClose] = Field(
        default=[],
        description="published closes; when given the path is these plus geometric fill",
    )

    @model_validator(mode="after")
    def _dates(self) -> HistoricalWindow:
        if self.start >= self.end:
            raise ValueError(f"window {self.name}: start must be before end")
        if self.anchors:
            days = [a.date for a in self.anchors]
            if days != sorted(set(days)) or days[0] != self.start or days[-1] != self.end:
                raise ValueError(
                    f"window {self.name}: anchors must be increasing dates from start to end"
                )
        return self


class HistoricalConfig(_Strict):
    builtin: list[BuiltinWindow] = Field(default=["feb_2018", "oct_2008", "mar_2020"])
    windows: list[HistoricalWindow] = Field(default=[])
    realised_vol_window: int = Field(default=21, ge=5, le=252)
    vol_rule: Literal["vol_beta", "full_vix"] = Field(
        default="vol_beta",
        description="vol_beta: each option takes beta(expiry, moneyness) x the VIX change, "
        "fitted on the stored surface history (quant.vol_beta; beta 1 where a bucket has too "
        "few days); full_vix: every option takes the whole VIX change",
    )
    vol_beta_min_observations: int = Field(default=20, ge=1, le=10_000)

    @model_validator(mode="after")
    def _unique(self) -> HistoricalConfig:
        names = [*self.builtin, *(w.name for w in self.windows)]
        if len(set(names)) != len(names):
            raise ValueError("historical window names must be unique (built-ins included)")
        return self


class MonteCarloConfig(_Strict):
    n_scenarios: int = Field(default=10_000, ge=100, le=1_000_000)
    horizons_days: list[int] = Field(default=[1, 10], min_length=1)
    seed: int = Field(default=20_180_205, ge=0)
    innovations: Innovations = "t"
    history_years: float = Field(default=10.0, gt=1, le=30, description="GARCH fit window")
    regime_vol_multiplier: dict[str, float] = Field(
        default={"calm": 1.0, "normal": 1.0, "elevated": 1.25, "crisis": 1.5},
        description="regime name (config/risk_matrix.yaml) -> multiplier of simulated shocks",
    )
    histogram_bins: int = Field(default=30, ge=5, le=200)
    american_method: ScenarioAmericanMethod = Field(
        default="interp_lr",
        description="pricer of American (equity/ETF) options in the simulated scenarios: "
        "interp_lr = the Leisen-Reimer tree's early-exercise premium interpolated on a grid "
        "per contract and horizon on top of the exact European value (measured on 10,000 "
        "scenarios of an 80-option SPY book: <= 0.03% from the tree at 1 day, 1.4x faster "
        "than bs2002), bs2002 = Bjerksund-Stensland 2002 (up to 1.8-2.7% low), lr = the tree "
        "in every scenario (~8x slower)",
    )
    american_steps: int = Field(
        default=101, ge=11, le=2001,
        description="tree steps for american_method lr and interp_lr (101: 0.09% from "
        "QuantLib's finite-difference engine)",
    )

    @model_validator(mode="after")
    def _check(self) -> MonteCarloConfig:
        if any(not 1 <= h <= 252 for h in self.horizons_days):
            raise ValueError("horizons_days must be in [1, 252]")
        if any(not 0 < m <= 10 for m in self.regime_vol_multiplier.values()):
            raise ValueError("regime_vol_multiplier values must be in (0, 10]")
        return self


class CorrelationOverride(_Strict):
    a: Proxy
    b: Proxy
    rho: float = Field(ge=-1, le=1)


class CorrelationConfig(_Strict):
    crisis_weight: float = Field(
        default=0.6, ge=0, le=1, description="share of the way every |rho| is pushed to 1"
    )
    overrides: list[CorrelationOverride] = Field(default=[])


class RiskProfileConfig(_Strict):
    """The risk profile (P&L vs underlying price): the price axis, its dates and its vol."""

    range_pct: float = Field(
        default=20.0, gt=0, lt=100,
        description="price axis from -range to +range % of today's price (the shock grid's spot "
        "shocks are added as points, so the two share them)",
    )
    points: int = Field(default=41, ge=5, le=401, description="evenly spaced points on the axis")
    sessions_forward: list[int] = Field(
        default=[5], description="T+n curves, n exchange sessions after the session (T+0 always)"
    )
    max_expiries: int = Field(
        default=4, ge=0, le=24, description="curves at the nearest this many expiries of the book"
    )
    vol_shift_points: float = Field(
        default=0.0, gt=-100, le=1000,
        description="ATM implied vol change applied to every curve (0: vol held, as the grid's skew_rule)",
    )

    @model_validator(mode="after")
    def _check(self) -> RiskProfileConfig:
        if any(not 1 <= n <= 252 for n in self.sessions_forward):
            raise ValueError("sessions_forward must be in [1, 252]")
        if len(set(self.sessions_forward)) != len(self.sessions_forward):
            raise ValueError("sessions_forward has duplicate values")
        return self


class StressScenariosFile(_Strict):
    """Schema of ``config/stress_scenarios.yaml``."""

    rate: float = Field(default=0.0, ge=-0.05, le=0.5, description="risk-free rate, decimal")
    default_underlying: UnderlyingStress = UnderlyingStress()
    underlyings: dict[str, UnderlyingStress] = Field(default={})
    grid: GridConfig = GridConfig()
    historical: HistoricalConfig = HistoricalConfig()
    monte_carlo: MonteCarloConfig = MonteCarloConfig()
    correlation: CorrelationConfig = CorrelationConfig()
    risk_profile: RiskProfileConfig = RiskProfileConfig()

    def underlying(self, root: str) -> UnderlyingStress:
        """Settings of ``root`` (case-insensitive), else :attr:`default_underlying`."""
        by_upper = {k.upper(): v for k, v in self.underlyings.items()}
        return by_upper.get(root.upper(), self.default_underlying)
