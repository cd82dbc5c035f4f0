"""Position lifecycle: max profit/loss of a strategy, aging, and the exit rules.

Pure functions on
:class:`~portfolio_pipeline.domain.strategies.identity.StrategyState` legs; the rules come from ``config/exit_rules.yaml`` (:class:`ExitRulesFile`).

Max profit and max loss
-----------------------
* All option legs in one expiry (plus stock/futures): exact, from the payoff at expiry
  ``credit + sum q m intrinsic(S) + sum q_stk m (S - entry)`` evaluated at S = 0, every
  strike, and its slope beyond the highest strike (a positive slope = unlimited profit,
  negative = unlimited loss).  ``credit = -sum q m entry`` over the option legs.
* Several expiries (calendars, diagonals): max loss = the net debit (the bound of a long
  calendar; for diagonals an approximation), max profit undefined.
* Undefined-risk strategies (a short call, a short strangle) have no max loss; their
  loss is measured against the credit received ("loss = 2x credit").

Exit rules (each gives green / yellow / red; the strategy takes the worst)
--------------------------------------------------------------------------
``stop_loss``   credit strategies: loss >= ``stop_loss_credit_multiple`` x credit;
                debit strategies: loss >= ``stop_loss_debit_fraction`` x debit.
``take_profit`` P&L >= ``take_profit_pct`` x max profit (x debit when max profit is
                undefined, e.g. calendars).
``dte``         days to the nearest option expiry <= ``close_dte``.
``delta``       |share delta| / (lot x multiplier) > ``max_abs_delta_per_lot`` (per-share
                delta of one lot of the structure).
Yellow is the ``warn_*`` level of each.  A ``null`` in the file switches a rule off.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel
from portfolio_pipeline.domain.strategies.legs import Leg, StrategyType

__all__ = [
    "RULES",
    "ExitRules",
    "ExitRulesFile",
    "ExitRulesOverride",
    "LifecycleMetrics",
    "RuleOutcome",
    "Status",
    "Verdict",
    "evaluate_exit_rules",
    "lifecycle_metrics",
    "max_profit_loss",
]

Status = Literal["green", "yellow", "red"]
RULES: tuple[str, ...] = ("stop_loss", "take_profit", "dte", "delta")
_RANK = {"green": 0, "yellow": 1, "red": 2}


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class ExitRules(_Strict):
    """The thresholds of every rule (``None`` switches that level off)."""

    take_profit_pct: float | None = Field(gt=0)
    warn_profit_pct: float | None = Field(gt=0)
    close_dte: int | None = Field(ge=0)
    warn_dte: int | None = Field(ge=0)
    stop_loss_credit_multiple: float | None = Field(gt=0)
    warn_loss_credit_multiple: float | None = Field(gt=0)
    stop_loss_debit_fraction: float | None = Field(gt=0)
    warn_loss_debit_fraction: float | None = Field(gt=0)
    max_abs_delta_per_lot: float | None = Field(gt=0)
    warn_delta_per_lot: float | None = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> ExitRules:
        pairs = (
            ("warn_profit_pct", "take_profit_pct", False),
            ("warn_dte", "close_dte", True),
            ("warn_loss_credit_multiple", "stop_loss_credit_multiple", False),
            ("warn_loss_debit_fraction", "stop_loss_debit_fraction", False),
            ("warn_delta_per_lot", "max_abs_delta_per_lot", False),
        )
        for warn, red, reverse in pairs:
            w, r = getattr(self, warn), getattr(self, red)
            if w is not None and r is not None and (w < r if reverse else w > r):
                raise ValueError(f"{warn} ({w}) must come before {red} ({r})")
        return self


class ExitRulesOverride(_Strict):
    """Per strategy type: only the keys given replace the defaults."""

    take_profit_pct: float | None = Field(default=None, gt=0)
    warn_profit_pct: float | None = Field(default=None, gt=0)
    close_dte: int | None = Field(default=None, ge=0)
    warn_dte: int | None = Field(default=None, ge=0)
    stop_loss_credit_multiple: float | None = Field(default=None, gt=0)
    warn_loss_credit_multiple: float | None = Field(default=None, gt=0)
    stop_loss_debit_fraction: float | None = Field(default=None, gt=0)
    warn_loss_debit_fraction: float | None = Field(default=None, gt=0)
    max_abs_delta_per_lot: float | None = Field(default=None, gt=0)
    warn_delta_per_lot: float | None = Field(default=None, gt=0)


class ExitRulesFile(_Strict):
    """Schema of ``config/exit_rules.yaml``."""

    defaults: ExitRules
    strategy_types: dict[StrategyType, ExitRulesOverride] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _merged_valid(self) -> ExitRulesFile:
        for name in self.strategy_types:
            self.rules_for(name)
        return self

    def rules_for(self, strategy_type: str) -> ExitRules:
        """The defaults with the type's overrides applied (validated)."""
        override = self.strategy_types.get(strategy_type)  # type: ignore[call-overload]
        if override is None:
            return self.defaults
        update = {k: getattr(override, k) for k in override.model_fields_set}
        return ExitRules.model_validate({**self.defaults.model_dump(), **update})


# ------------------------------------------------------------------------------ metrics


def _intrinsic(right: str | None, strike: float, spot: float) -> float:
    return max(spot - strike, 0.0) if right == "C" else max(strike - spot, 0.0)


def max_profit_loss(legs: Sequence[Leg], entry: dict[str, float]) -> tuple[float, float, float]:
    """(credit, max profit, max loss) of a strategy; ``inf`` = unlimited, ``nan`` = undefined.

    ``entry`` maps position key -> average entry price per unit.  ``credit`` > 0 is
    premium received, < 0 a debit paid.  Max loss is a positive number.
    """
    options = [x for x in legs if x.is_option]
    credit = -sum(x.quantity * x.multiplier * entry.get(x.position_key, 0.0) for x in options)
    expiries = {x.contract.expiry for x in options}
    if len(expiries) > 1:
        return credit, math.nan, (-credit if credit < 0 else math.nan)
    linear = [x for x in legs if not x.is_option]
    strikes = sorted({float(x.contract.strike or 0.0) for x in options})
    top = strikes[-1] if strikes else max((entry.get(x.position_key, 0.0) for x in linear), default=0.0)
    points = [0.0, *strikes, top + 1.0]

    def payoff(s: float) -> float:
        value = credit
        for x in options:
            value += x.quantity * x.multiplier * _intrinsic(x.contract.right, float(x.contract.strike or 0.0), s)
        for x in linear:
            value += x.quantity * x.multiplier * (s - entry.get(x.position_key, 0.0))
        return value

    values = [payoff(s) for s in points]
    slope = sum(x.quantity * x.multiplier for x in options if x.contract.right == "C")
    slope += sum(x.quantity * x.multiplier for x in linear)
    best, worst = max(values), min(values)
    max_profit = math.inf if slope > 1e-9 else best
    max_loss = math.inf if slope < -1e-9 else -worst
    return credit, max_profit, max_loss


@dataclass(frozen=True, slots=True)
class LifecycleMetrics:
    days_in_trade: int
    dte: int | None
    credit: float
    max_profit: float
    max_loss: float
    pct_max_profit: float | None
    pct_max_loss: float | None
    loss_credit_multiple: float | None
    pnl_per_day: float
    delta_per_lot: float | None

    @property
    def defined_risk(self) -> bool:
        return math.isfinite(self.max_loss)


def lifecycle_metrics(
    session: date,
    opened_on: date,
    legs: Sequence[Leg],
    entry: dict[str, float],
    pnl: float,
    share_delta: float | None,
) -> LifecycleMetrics:
    """Aging, DTE, % of max profit/loss and P&L per day of one open strategy.

    ``pnl`` is the strategy's cumulative P&L (commissions included); ``days_in_trade``
    counts calendar days from ``opened_on`` (the opening session is day 0; P&L per day
    divides by at least 1).
    """
    days = (session - opened_on).days
    expiries = [x.contract.expiry for x in legs if x.is_option and x.contract.expiry is not None]
    dte = (min(expiries) - session).days if expiries else None
    credit, max_profit, max_loss = max_profit_loss(legs, entry)
    pct_profit = pnl / max_profit if math.isfinite(max_profit) and max_profit > 0 else None
    if pct_profit is None and credit < 0:
        pct_profit = pnl / -credit  # % of the debit paid
    if math.isfinite(max_loss) and max_loss > 0:
        pct_loss: float | None = -pnl / max_loss
    elif credit > 0:
        pct_loss = -pnl / credit
    else:
        pct_loss = None
    options = [x for x in legs if x.is_option]
    delta_per_lot = None
    if options and share_delta is not None and math.isfinite(share_delta):
        lot = min(abs(x.quantity) for x in options)
        delta_per_lot = share_delta / (lot * options[0].multiplier)
    return LifecycleMetrics(
        days_in_trade=days,
        dte=dte,
        credit=credit,
        max_profit=max_profit,
        max_loss=max_loss,
        pct_max_profit=pct_profit,
        pct_max_loss=pct_loss,
        loss_credit_multiple=(-pnl / credit) if credit > 0 else None,
        pnl_per_day=pnl / max(days, 1),
        delta_per_lot=delta_per_lot,
    )


# ------------------------------------------------------------------------------ rules


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    rule: str
    status: Status
    value: float
    threshold: float
    message: str


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    rule: str | None
    outcomes: tuple[RuleOutcome, ...]

    @property
    def red_rules(self) -> tuple[str, ...]:
        return tuple(o.rule for o in self.outcomes if o.status == "red")


def _level(value: float | None, red: float | None, warn: float | None, *, below: bool = False
           ) -> tuple[Status, float] | None:
    if value is None or not math.isfinite(value):
        return None
    hit_red = red is not None and (value <= red if below else value >= red)
    hit_warn = warn is not None and (value <= warn if below else value >= warn)
    if hit_red:
        assert red is not None
        return "red", red
    if hit_warn:
        assert warn is not None
        return "yellow", warn
    return None


def evaluate_exit_rules(m: LifecycleMetrics, rules: ExitRules) -> Verdict:
    """Green / yellow / red from :data:`RULES` in order; the first worst rule is named."""
    outcomes: list[RuleOutcome] = []
    loss_value: float | None
    if m.credit > 0:
        loss_value = m.loss_credit_multiple
        red, warn, unit = rules.stop_loss_credit_multiple, rules.warn_loss_credit_multiple, "x credit"
    else:
        loss_value = m.pct_max_loss if m.credit < 0 else None
        red, warn, unit = rules.stop_loss_debit_fraction, rules.warn_loss_debit_fraction, "of debit"
    hit = _level(loss_value, red, warn)
    if hit is not None and loss_value is not None:
        outcomes.append(RuleOutcome("stop_loss", hit[0], loss_value, hit[1],
                                    f"loss {loss_value:.2f} {unit} >= {hit[1]:g}"))
    hit = _level(m.pct_max_profit, rules.take_profit_pct, rules.warn_profit_pct)
    if hit is not None and m.pct_max_profit is not None:
        outcomes.append(RuleOutcome("take_profit", hit[0], m.pct_max_profit, hit[1],
                                    f"{m.pct_max_profit:.0%} of max profit >= {hit[1]:.0%}"))
    dte = float(m.dte) if m.dte is not None else None
    red_dte = float(rules.close_dte) if rules.close_dte is not None else None
    warn_dte = float(rules.warn_dte) if rules.warn_dte is not None else None
    hit = _level(dte, red_dte, warn_dte, below=True)
    if hit is not None and dte is not None:
        outcomes.append(RuleOutcome("dte", hit[0], dte, hit[1], f"{dte:.0f} DTE <= {hit[1]:.0f}"))
    delta = abs(m.delta_per_lot) if m.delta_per_lot is not None else None
    hit = _level(delta, rules.max_abs_delta_per_lot, rules.warn_delta_per_lot)
    if hit is not None and delta is not None:
        outcomes.append(RuleOutcome("delta", hit[0], delta, hit[1],
                                    f"|delta| {delta:.2f} per lot >= {hit[1]:.2f}"))
    if not outcomes:
        return Verdict("green", None, ())
    worst = max(outcomes, key=lambda o: (_RANK[o.status], -RULES.index(o.rule)))
    return Verdict(worst.status, worst.rule, tuple(outcomes))
