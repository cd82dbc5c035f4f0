"""Margin and commission model of the demo broker (a simplified strategy-based Reg-T model).

Margin is computed per *strategy group* (the legs opened together by one order):

* **Defined risk** -- for each right, the short options are covered by at least as
  many long options of the same right expiring no earlier: requirement = the
  group's maximum loss at the earliest expiry, ``max(0, -min payoff)``, with every
  leg valued at its intrinsic value there (a later long is worth at least that, so
  this bounds the loss; credit received is not netted).  A vertical or iron condor
  requires its widest wing x multiplier x quantity; a same-strike calendar or any
  debit spread requires nothing beyond the premium paid.
* **Naked short options** (everything else) -- per short contract,
  ``multiplier * (mark + max(A * S - OTM, B * X))`` with ``X = S`` for calls and the
  strike for puts: Cboe-style ``A, B = 15 %, 10 %`` for broad-based indices (SPX, NDX)
  and ``20 %, 10 %`` for equities/ETFs.  Long options require nothing.
* **Covered calls** -- short ETF calls covered by long shares of the same account
  (100 shares per contract) require nothing beyond the stock margin.
* **Stock/ETF** -- long: 50 % initial, 25 % maintenance of market value; short:
  150 % / 30 %.

Options requirements are the same for initial and maintenance margin (as at most
retail brokers).  Commissions: $0.65 per option contract plus a $1.00 per-contract
index-option fee (SPX, NDX: exchange/regulatory fees) booked as ``fees``; stock
$0.005 per share; expiries, assignments and exercises are free.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final

from portfolio_pipeline.domain.positions import Contract

OPTION_COMMISSION: Final[float] = 0.65
INDEX_OPTION_FEE: Final[float] = 1.00
STOCK_COMMISSION_PER_SHARE: Final[float] = 0.005
INDEX_NAKED: Final[tuple[float, float]] = (0.15, 0.10)
EQUITY_NAKED: Final[tuple[float, float]] = (0.20, 0.10)
STOCK_LONG: Final[tuple[float, float]] = (0.50, 0.25)
STOCK_SHORT: Final[tuple[float, float]] = (1.50, 0.30)
BROAD_INDICES: Final[frozenset[str]] = frozenset({"SPX", "NDX", "XSP", "RUT"})


@dataclass(frozen=True, slots=True)
class MarginLeg:
    """One leg for the margin model: contract, signed quantity, multiplier, mark, spot."""

    contract: Contract
    quantity: float
    multiplier: float
    mark: float
    spot: float


@dataclass(frozen=True, slots=True)
class Margin:
    initial: float
    maintenance: float

    def __add__(self, other: Margin) -> Margin:
        return Margin(self.initial + other.initial, self.maintenance + other.maintenance)


ZERO: Final[Margin] = Margin(0.0, 0.0)


def commission(contract: Contract, quantity: float) -> tuple[float, float]:
    """(commission, fees) in dollars for trading ``quantity`` units of ``contract``."""
    n = abs(quantity)
    if contract.is_option:
        fee = INDEX_OPTION_FEE * n if contract.underlying.upper() in BROAD_INDICES else 0.0
        return round(OPTION_COMMISSION * n, 2), round(fee, 2)
    return round(STOCK_COMMISSION_PER_SHARE * n, 2), 0.0


def _naked_requirement(leg: MarginLeg) -> float:
    c = leg.contract
    assert c.strike is not None
    a, b = INDEX_NAKED if c.underlying.upper() in BROAD_INDICES else EQUITY_NAKED
    otm = max(c.strike - leg.spot, 0.0) if c.right == "C" else max(leg.spot - c.strike, 0.0)
    floor = b * (leg.spot if c.right == "C" else c.strike)
    return leg.multiplier * abs(leg.quantity) * (leg.mark + max(a * leg.spot - otm, floor))


def _is_defined_risk(options: Sequence[MarginLeg]) -> bool:
    for right in ("C", "P"):
        shorts = [leg for leg in options if leg.contract.right == right and leg.quantity < 0]
        if not shorts:
            continue
        last_short = max(leg.contract.expiry for leg in shorts if leg.contract.expiry is not None)
        covering = sum(
            leg.quantity * leg.multiplier
            for leg in options
            if leg.contract.right == right
            and leg.quantity > 0
            and leg.contract.expiry is not None
            and leg.contract.expiry >= last_short
        )
        if covering < -sum(leg.quantity * leg.multiplier for leg in shorts) - 1e-9:
            return False
    return True


def _max_loss(options: Sequence[MarginLeg]) -> float:
    strikes = sorted({float(leg.contract.strike) for leg in options if leg.contract.strike is not None})
    grid = [0.0, *strikes, 2.0 * strikes[-1] + 1.0]
    worst = 0.0
    for s in grid:
        payoff = 0.0
        for leg in options:
            k = float(leg.contract.strike or 0.0)
            intrinsic = max(s - k, 0.0) if leg.contract.right == "C" else max(k - s, 0.0)
            payoff += leg.quantity * leg.multiplier * intrinsic
        worst = min(worst, payoff)
    return -worst


def group_margin(legs: Sequence[MarginLeg], *, covered_call_capacity: float = 0.0) -> tuple[Margin, float]:
    """Requirement of one strategy group, and the covered-call capacity it used up.

    ``covered_call_capacity`` is the number of ETF call contracts (per underlying of
    this group) still coverable by long shares.
    """
    options = [leg for leg in legs if leg.contract.is_option and leg.quantity != 0]
    stock = [leg for leg in legs if not leg.contract.is_option and leg.quantity != 0]
    total = ZERO
    for leg in stock:
        value = abs(leg.quantity) * leg.multiplier * leg.mark
        init, maint = STOCK_LONG if leg.quantity > 0 else STOCK_SHORT
        total = total + Margin(init * value, maint * value)
    used = 0.0
    if not options:
        return total, used
    shorts = [leg for leg in options if leg.quantity < 0]
    if not shorts:
        return total, used
    if all(leg.contract.right == "C" for leg in shorts) and all(leg.quantity < 0 for leg in options):
        n = -sum(leg.quantity for leg in options)
        if covered_call_capacity >= n - 1e-9:
            return total, n
    if _is_defined_risk(options):
        req = _max_loss(options)
    else:
        req = sum(_naked_requirement(leg) for leg in shorts)
    return total + Margin(req, req), used


def account_margin(groups: Iterable[Sequence[MarginLeg]]) -> Margin:
    """Sum of group requirements, covering ETF short calls with long shares first."""
    groups = [list(g) for g in groups]
    capacity: dict[str, float] = {}
    for g in groups:
        for leg in g:
            if leg.contract.sec_type == "STK" and leg.quantity > 0:
                key = leg.contract.underlying.upper()
                capacity[key] = capacity.get(key, 0.0) + leg.quantity / 100.0
    total = ZERO
    for g in groups:
        roots = {leg.contract.underlying.upper() for leg in g}
        root = next(iter(roots)) if len(roots) == 1 else ""
        margin, used = group_margin(g, covered_call_capacity=capacity.get(root, 0.0))
        if used:
            capacity[root] = capacity.get(root, 0.0) - used
        total = total + margin
    return total
