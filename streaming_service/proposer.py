"""Hedge candidates for a breach, sized to bring the metric back inside its limit.

* Beta-weighted delta too long -> a put vertical: the short (far) strike at
  ``spot * (1 - wing_otm_pct)``, the long strike ``wing_width_pct * spot`` above it
  (closer to the money); too short -> the mirror call vertical.  Distances are
  FRACTIONS of spot (0.02 = 2 %), and strikes are snapped to the instrument's real
  strike grid (``strike_increment``; the broker's listed strikes when known).
* Vega too short -> long options (puts at the wing distance) or a long calendar
  (short the near, long the far expiry at the money); vega too long -> a short calendar.
* Other metrics get no automatic hedge (the breach event still alerts).

The candidate is priced with ``quant.pricing`` at the engine's live vol and sized with
the ONE scaling (``domain.greeks.position_greeks``): ``n = ceil(excess / per-unit
effect)`` where excess is what must go to reach ``target_utilisation`` of the limit.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np

from portfolio_pipeline.config.streaming import HedgeSettings
from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot
from portfolio_pipeline.domain.orders import Action, Order, OrderLeg
from portfolio_pipeline.domain.positions import Contract, Right
from portfolio_pipeline.domain.settlement import SessionHours, years_to_settlement
from portfolio_pipeline.domain.whatif import RiskChange
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant._typing import Model

__all__ = ["HedgeCandidate", "MarketView", "proposal_order_id", "propose_hedge", "snap_strike"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MarketView:
    """The live market of the hedge underlying, as the engine and broker chain see it."""

    root: str
    trading_class: str
    spot: float
    vol: float
    rate: float
    dividend_yield: float
    beta: float
    multiplier: float
    strike_increment: float
    tick_size: float
    settlement_time: str
    model: Model
    expiries: tuple[date, ...]
    strikes: tuple[float, ...] = ()
    as_of: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    calendar: SessionHours | None = None
    """Exchange calendar of the settlement instant (None: regular New York hours)."""

    @classmethod
    def build(
        cls,
        instruments: InstrumentTable,
        root: str,
        *,
        trading_class: str | None,
        spot: float,
        vol: float,
        rate: float,
        dividend_yield: float,
        beta: float,
        expiries: Sequence[date],
        strikes: Sequence[float] = (),
        as_of: datetime,
        calendar: SessionHours | None = None,
    ) -> MarketView:
        spec = instruments.spec(root)
        if spec.options is None:
            raise ValueError(f"hedge underlying {root} has no options in the instrument table")
        tc = instruments.trading_class(root, trading_class)
        return cls(
            root=root.upper(), trading_class=tc.name, spot=spot, vol=vol, rate=rate,
            dividend_yield=dividend_yield, beta=beta,
            multiplier=instruments.multiplier(root, "OPT", tc.name),
            strike_increment=spec.options.strike_increment, tick_size=spec.options.tick_size,
            settlement_time=tc.settlement_time, model=spec.options.model,
            expiries=tuple(sorted(expiries)), strikes=tuple(sorted(strikes)), as_of=as_of, calendar=calendar,
        )


@dataclass(frozen=True, slots=True)
class HedgeCandidate:
    metric: str
    structure: str
    legs: tuple[OrderLeg, ...]
    quantity: int
    limit_price: float
    """Per combo unit, per share: > 0 debit, < 0 credit."""
    unit_effect: float
    """Change of the breached metric (in $) per combo unit."""
    metric_before: float
    metric_after: float
    """Expected metric (fraction of NLV) after the hedge."""
    rationale: str
    change: RiskChange = field(default_factory=RiskChange)
    """What the whole hedge (``quantity`` units) does to the book's dollar Greeks (the
    what-if of ``domain.whatif``; the margin change comes from the broker's WhatIf)."""

    def to_order(self, *, order_id: str, broker: str, account_id: str, created_at: datetime,
                 proposal_id: str) -> Order:
        return Order(
            order_id=order_id, broker=broker, account_id=account_id, legs=self.legs,
            quantity=self.quantity, limit_price=self.limit_price, created_at=created_at,
            proposal_id=proposal_id,
        )


def snap_strike(target: float, increment: float, listed: Sequence[float] = ()) -> float:
    """The strike nearest ``target`` on the instrument grid (or among the listed strikes)."""
    if listed:
        arr = np.asarray(listed, dtype=np.float64)
        return float(arr[int(np.argmin(np.abs(arr - target)))])
    return float(round(target / increment) * increment)


def _expiry(view: MarketView, dte: int, min_dte: int) -> date | None:
    today = view.as_of.date()
    ok = [e for e in view.expiries if (e - today).days >= min_dte]
    if not ok:
        return None
    return min(ok, key=lambda e: (abs((e - today).days - dte), e))


def _years(view: MarketView, expiry: date) -> float:
    """Years to settlement: THE settlement instant (exchange calendar, AM/PM per class)."""
    return years_to_settlement(view.as_of, expiry, view.settlement_time, view.calendar)


def _leg_greeks(view: MarketView, rights: Sequence[Right], strikes: Sequence[float],
                expiries: Sequence[date]) -> pricing.Greeks:
    t = np.array([_years(view, e) for e in expiries])
    return pricing.greeks(
        np.array([r == "C" for r in rights]), view.spot, np.asarray(strikes, dtype=np.float64), t,
        view.rate, view.dividend_yield, view.vol, view.model,
    )


def _contract(view: MarketView, expiry: date, strike: float, right: Right) -> Contract:
    return Contract(view.root, "OPT", expiry, strike, right, view.trading_class)


def _round_price(value: float, tick: float) -> float:
    return float(round(value / tick) * tick)


def _change(pg: Any, n: int) -> RiskChange:
    """The dollar Greeks of ``n`` units of a structure (its legs' position Greeks summed)."""
    return RiskChange(
        beta_weighted_dollar_delta=float(pg.beta_weighted_dollar_delta.sum()),
        dollar_gamma_1pct=float(pg.dollar_gamma_1pct.sum()),
        vega_per_point=float(pg.vega_per_point.sum()),
        theta_per_day=float(pg.theta_per_day.sum()),
    ).scaled(n)


def _size(excess: float, unit: float, cap: int) -> int:
    if unit <= 0 or not math.isfinite(unit):
        return 0
    return int(min(max(math.ceil(excess / unit), 1), cap))


def propose_hedge(check: LimitCheck, risk: RiskSnapshot, view: MarketView,
                  settings: HedgeSettings) -> HedgeCandidate | None:
    """A hedge for ``check`` (a breached limit), or None when no rule applies."""
    if check.metric == "beta_weighted_delta":
        return _delta_hedge(check, risk, view, settings)
    if check.metric == "vega":
        return _vega_hedge(check, risk, view, settings)
    logger.info("no automatic hedge rule for metric=%s", check.metric)
    return None


def _delta_hedge(check: LimitCheck, risk: RiskSnapshot, view: MarketView, s: HedgeSettings) -> HedgeCandidate | None:
    expiry = _expiry(view, s.target_dte, s.min_dte)
    if expiry is None:
        logger.warning("no listed %s expiry >= %s days for a delta hedge", view.root, s.min_dte)
        return None
    long_book = risk.beta_weighted_dollar_delta > 0
    right: Right = "P" if long_book else "C"
    sign = -1.0 if long_book else 1.0
    short_k = snap_strike(view.spot * (1.0 + sign * s.wing_otm_pct), view.strike_increment, view.strikes)
    long_k = snap_strike(short_k - sign * view.spot * s.wing_width_pct, view.strike_increment, view.strikes)
    if long_k == short_k:
        long_k = short_k - sign * view.strike_increment
    g = _leg_greeks(view, [right, right], [long_k, short_k], [expiry, expiry])
    pg = position_greeks(
        delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta, quantity=[1.0, -1.0],
        multiplier=view.multiplier, spot=view.spot, beta=view.beta,
    )
    unit = float(pg.beta_weighted_dollar_delta.sum())  # < 0 for the put vertical
    target = s.target_utilisation * check.limit * risk.nlv
    excess = abs(risk.beta_weighted_dollar_delta) - target
    n = _size(excess, abs(unit), s.max_contracts)
    if n == 0:
        return None
    debit = _round_price(float(g.price[0] - g.price[1]), view.tick_size)
    after = (risk.beta_weighted_dollar_delta + n * unit) / risk.nlv
    legs = (OrderLeg(_contract(view, expiry, long_k, right), "BUY"),
            OrderLeg(_contract(view, expiry, short_k, right), "SELL"))
    kind = "put" if right == "P" else "call"
    return HedgeCandidate(
        metric=check.metric, structure=f"{kind}_vertical", legs=legs, quantity=n, limit_price=debit,
        unit_effect=unit, metric_before=check.value, metric_after=after, change=_change(pg, n),
        rationale=(
            f"beta-weighted delta {check.value:+.1%} of NLV vs limit {check.limit:.1%} ({check.regime}, "
            f"VIX {check.vix:.2f}): buy {n} {view.root} {expiry} {long_k:g}/{short_k:g} {kind} vertical "
            f"(short strike {s.wing_otm_pct:.1%} OTM of spot {view.spot:.2f}, width {s.wing_width_pct:.1%}) "
            f"-> {after:+.1%}"
        ),
    )


def _vega_hedge(check: LimitCheck, risk: RiskSnapshot, view: MarketView, s: HedgeSettings) -> HedgeCandidate | None:
    near = _expiry(view, s.target_dte, s.min_dte)
    if near is None:
        return None
    short_vega = risk.vega_per_point < 0
    target = s.target_utilisation * check.limit * risk.nlv
    excess = abs(risk.vega_per_point) - target
    legs: tuple[OrderLeg, ...]
    atm = snap_strike(view.spot, view.strike_increment, view.strikes)
    if short_vega and s.vega_structure == "long_options":
        k = snap_strike(view.spot * (1.0 - s.wing_otm_pct), view.strike_increment, view.strikes)
        g = _leg_greeks(view, ["P"], [k], [near])
        pg = position_greeks(delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta, quantity=[1.0],
                             multiplier=view.multiplier, spot=view.spot, beta=view.beta)
        unit = float(pg.vega_per_point.sum())
        legs = (OrderLeg(_contract(view, near, k, "P"), "BUY"),)
        price = float(g.price[0])
        structure = "long_put"
    else:
        far = _expiry(view, s.target_dte + s.calendar_far_dte, s.min_dte + s.calendar_far_dte)
        if far is None or far <= near:
            return None
        g = _leg_greeks(view, ["P", "P"], [atm, atm], [far, near])
        qty = [1.0, -1.0] if short_vega else [-1.0, 1.0]
        pg = position_greeks(delta=g.delta, gamma=g.gamma, vega=g.vega, theta=g.theta, quantity=qty,
                             multiplier=view.multiplier, spot=view.spot, beta=view.beta)
        unit = float(pg.vega_per_point.sum())
        far_action: Action = "BUY" if short_vega else "SELL"
        near_action: Action = "SELL" if short_vega else "BUY"
        legs = (OrderLeg(_contract(view, far, atm, "P"), far_action),
                OrderLeg(_contract(view, near, atm, "P"), near_action))
        price = float(g.price[0] - g.price[1]) * (1.0 if short_vega else -1.0)
        structure = "long_calendar" if short_vega else "short_calendar"
    n = _size(excess, abs(unit), s.max_contracts)
    if n == 0:
        return None
    after = (risk.vega_per_point + n * unit) / risk.nlv
    return HedgeCandidate(
        metric=check.metric, structure=structure, legs=legs, quantity=n,
        limit_price=_round_price(price, view.tick_size), unit_effect=unit,
        metric_before=check.value, metric_after=after, change=_change(pg, n),
        rationale=(
            f"vega {check.value:+.2%} of NLV per vol point vs limit {check.limit:.2%} ({check.regime}, "
            f"VIX {check.vix:.2f}): {structure} x{n} on {view.root} -> {after:+.2%}"
        ),
    )


def proposal_order_id(event_key: str, index: int = 0) -> str:
    """Deterministic order id for the ``index``-th proposal of a breach event."""
    digest = hashlib.sha256(event_key.encode()).hexdigest()[:16]
    return f"H-{digest}-{index}"

