"""THE regime logic: market regime from the live VIX and the VIX/VIX3M term structure.

Configured by ``config/risk_matrix.yaml``.  State is derived from market data on every
call; the only memory is the previous regime the caller passes in for hysteresis, so
regime never accumulates inside a process.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field, model_validator

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.domain.structures import AccountType, StructureBan


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class LimitSet(_Strict):
    """NLV-relative limits (fractions of NLV; dollar Greeks as defined in domain.greeks).

    * ``max_abs_beta_weighted_delta``: |beta-weighted dollar delta| / NLV
    * ``max_short_gamma``: -(dollar gamma per 1% move) / NLV, when gamma is short
    * ``max_abs_vega``: |vega $ per vol point| / NLV
    * ``min_theta``: theta $/day / NLV must be at least this (negative = allowed bleed)
    * ``max_margin_utilisation``: maintenance margin / NLV
    """

    max_abs_beta_weighted_delta: float = Field(gt=0)
    max_short_gamma: float = Field(gt=0)
    max_abs_vega: float = Field(gt=0)
    min_theta: float
    max_margin_utilisation: float = Field(gt=0, le=1)


class LimitOverrides(_Strict):
    max_abs_beta_weighted_delta: float | None = Field(default=None, gt=0)
    max_short_gamma: float | None = Field(default=None, gt=0)
    max_abs_vega: float | None = Field(default=None, gt=0)
    min_theta: float | None = None
    max_margin_utilisation: float | None = Field(default=None, gt=0, le=1)


class ScopeLimits(_Strict):
    """Overrides of one account or group (``risk_matrix.yaml`` ``accounts`` / ``groups``).

    ``base_limits`` replace base limits BEFORE the regime scales them; ``regime_scales``
    replace a regime's ``limit_scale`` (keyed by regime name)."""

    base_limits: LimitOverrides = LimitOverrides()
    regime_scales: dict[str, Annotated[float, Field(gt=0)]] = Field(default_factory=dict)


class RegimeDef(_Strict):
    name: str = Field(min_length=1)
    vix_below: float | None = Field(
        default=None, gt=0, description="upper VIX bound (exclusive); None for the last regime"
    )
    limit_scale: float = Field(gt=0, description="multiplies every base limit in this regime")
    overrides: LimitOverrides = LimitOverrides()
    severity: str = "info"


class TermStructure(_Strict):
    backwardation_ratio: float = Field(
        gt=0, description="VIX/VIX3M at or above this escalates the regime by one step"
    )


class RiskMatrix(_Strict):
    """Schema of ``config/risk_matrix.yaml``."""

    regimes: list[RegimeDef] = Field(min_length=1)
    hysteresis_vix_points: float = Field(ge=0)
    term_structure: TermStructure
    base_limits: LimitSet
    accounts: dict[str, ScopeLimits] = Field(default_factory=dict)
    """Per account (its ``accounts.yaml`` name or account id)."""
    groups: dict[str, ScopeLimits] = Field(default_factory=dict)
    """Per account group (``accounts.yaml`` ``group``); an account's own entry wins."""
    structure_bans: dict[AccountType, list[StructureBan]] = Field(default_factory=dict)
    """Structures an account type may not hold (e.g. ``ira: [naked_short_call, naked_short_put]``)."""

    @model_validator(mode="after")
    def _ordered(self) -> RiskMatrix:
        bounds = [r.vix_below for r in self.regimes]
        if bounds[-1] is not None:
            raise ValueError("the last regime must have no vix_below (it is open-ended)")
        finite = [b for b in bounds[:-1]]
        if any(b is None for b in finite):
            raise ValueError("only the last regime may omit vix_below")
        if any(a >= b for a, b in itertools.pairwise(finite)):  # type: ignore[operator]
            raise ValueError("regimes must be listed with strictly increasing vix_below")
        names = [r.name for r in self.regimes]
        if len(set(names)) != len(names):
            raise ValueError("regime names must be unique")
        for section in ("accounts", "groups"):
            for key, scope in getattr(self, section).items():
                unknown = sorted(set(scope.regime_scales) - set(names))
                if unknown:
                    raise ValueError(f"{section}.{key}.regime_scales: unknown regime {', '.join(unknown)} "
                                     f"(regimes: {', '.join(names)})")
        return self


@dataclass(frozen=True, slots=True)
class RegimeState:
    """The regime and the market data that produced it."""

    name: str
    index: int
    vix: float
    vix3m: float | None
    term_ratio: float | None
    backwardation: bool
    limits: LimitSet


class RegimeService:
    """Classifies VIX (and VIX/VIX3M) into a regime and gives the limits in force."""

    def __init__(self, matrix: RiskMatrix) -> None:
        self._matrix = matrix

    @property
    def matrix(self) -> RiskMatrix:
        return self._matrix

    @property
    def regime_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._matrix.regimes)

    def _level_index(self, vix: float, previous: str | None) -> int:
        regimes = self._matrix.regimes
        idx = next(i for i, r in enumerate(regimes) if r.vix_below is None or vix < r.vix_below)
        if previous is None or previous not in self.regime_names:
            return idx
        prev = self.regime_names.index(previous)
        band = self._matrix.hysteresis_vix_points
        if idx < prev:
            # Step down only once VIX is clearly below the previous regime's floor.
            floor = regimes[prev - 1].vix_below
            if floor is not None and vix > floor - band:
                return prev
        elif idx > prev:
            # Step up only once VIX is clearly above the previous regime's ceiling.
            ceiling = regimes[prev].vix_below
            if ceiling is not None and vix < ceiling + band and idx == prev + 1:
                return prev
        return idx

    def classify(
        self, vix: float, vix3m: float | None = None, *, previous: str | None = None
    ) -> RegimeState:
        """Regime for the current VIX (required, live) and VIX3M (optional).

        ``previous`` is the regime currently in force, used only for hysteresis.
        """
        if vix is None or not math.isfinite(vix) or vix <= 0:
            raise InvalidDataError(f"regime: VIX must be a positive finite number, got {vix!r}")
        ratio: float | None = None
        if vix3m is not None:
            if not math.isfinite(vix3m) or vix3m <= 0:
                raise InvalidDataError(f"regime: VIX3M must be a positive finite number, got {vix3m!r}")
            ratio = vix / vix3m
        idx = self._level_index(vix, previous)
        backwardation = ratio is not None and ratio >= self._matrix.term_structure.backwardation_ratio
        if backwardation:
            idx = min(idx + 1, len(self._matrix.regimes) - 1)
        regime = self._matrix.regimes[idx]
        return RegimeState(
            name=regime.name,
            index=idx,
            vix=float(vix),
            vix3m=None if vix3m is None else float(vix3m),
            term_ratio=ratio,
            backwardation=backwardation,
            limits=self.limits_for(regime.name),
        )

    def stored(self, regime_name: str, vix: float, vix3m: float | None = None) -> RegimeState:
        """The :class:`RegimeState` of a regime classified earlier (e.g. the stored session
        regime), with its market data; nothing is re-classified."""
        names = self.regime_names
        if regime_name not in names:
            raise InvalidDataError(f"regime: unknown regime {regime_name!r}")
        ratio = None if vix3m is None or not vix3m > 0 else vix / vix3m
        return RegimeState(
            name=regime_name,
            index=names.index(regime_name),
            vix=float(vix),
            vix3m=None if vix3m is None else float(vix3m),
            term_ratio=ratio,
            backwardation=ratio is not None
            and ratio >= self._matrix.term_structure.backwardation_ratio,
            limits=self.limits_for(regime_name),
        )

    def limits_for(
        self,
        regime_name: str,
        account_overrides: LimitOverrides | None = None,
        *,
        account: str | tuple[str, ...] | None = None,
        group: str | None = None,
    ) -> LimitSet:
        """Base limits (with the group's then the account's ``base_limits``) scaled by the
        regime (or the account's / group's ``regime_scales`` entry), then the regime's
        overrides and ``account_overrides`` applied.  ``account``: the keys the account
        may be listed under in ``accounts`` (name, account id)."""
        try:
            regime = next(r for r in self._matrix.regimes if r.name == regime_name)
        except StopIteration:
            raise InvalidDataError(f"regime: unknown regime {regime_name!r}") from None
        keys = (account,) if isinstance(account, str) else account or ()
        scopes = [self._matrix.groups[group]] if group is not None and group in self._matrix.groups else []
        scopes += [self._matrix.accounts[k] for k in keys if k in self._matrix.accounts][:1]
        base_values = self._matrix.base_limits.model_dump()
        s = regime.limit_scale
        for scope in scopes:
            base_values.update(scope.base_limits.model_dump(exclude_none=True))
            s = scope.regime_scales.get(regime.name, s)
        base = LimitSet(**base_values)
        values = {
            "max_abs_beta_weighted_delta": base.max_abs_beta_weighted_delta * s,
            "max_short_gamma": base.max_short_gamma * s,
            "max_abs_vega": base.max_abs_vega * s,
            # A theta floor loosens with a larger scale only when it is a bleed (< 0).
            "min_theta": base.min_theta * s if base.min_theta < 0 else base.min_theta / s,
            "max_margin_utilisation": min(base.max_margin_utilisation * s, 1.0),
        }
        for overrides in (regime.overrides, account_overrides):
            if overrides is None:
                continue
            for key, value in overrides.model_dump(exclude_none=True).items():
                values[key] = value
        return LimitSet(**values)
