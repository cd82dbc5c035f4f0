"""Strategy tagging: legs -> strategies, persistent identity across sessions, P&L split.

Pure rules, no I/O.  Three layers:

1. :func:`decompose` splits the legs of one underlying (opened together) into
   recognised structures, greedily and deterministically (legs are sorted by a
   canonical key first, so the input order never matters).
2. :func:`assign_strategies` carries yesterday's strategies of an account forward to
   today's positions (identity, opened_on, parent links for rolls), applies manual
   claims and overrides, and tags the new lots with :func:`decompose`.
3. :func:`allocate_pnl` splits each position's daily P&L between the strategies that
   held it, exactly (the strategy P&L of an account sums to the account's P&L).

Tagging rules (the order is the matching priority)
--------------------------------------------------
All multi-leg structures need one underlying; quantities are matched as equal "units"
(``n = min |q|`` over the legs, 1:2:1 for butterflies), the rest of a leg stays for the
next pattern.

=========================  =========================================================
type                       legs (same expiry unless stated)
=========================  =========================================================
iron_condor                +P K1 < -P K2 < -C K3 < +C K4 (or all signs reversed)
iron_butterfly             as iron_condor with K2 == K3
jade_lizard                -P K1 < -C K2 < +C K3
butterfly                  one right, +K1 -2xK2 +K3 equally spaced (or reversed)
broken_wing_butterfly      as butterfly with unequal wings
ratio_spread               one right, two strikes, opposite signs, |q| ratio an
                           integer >= 2, no other leg of that right and expiry
vertical                   one right, two strikes, opposite signs
straddle                   a put and a call of one strike, same sign
strangle                   a put and a call of different strikes, same sign
calendar                   one right and strike, two expiries, opposite signs
diagonal                   one right, two strikes, two expiries, opposite signs
covered_call               long stock (multiplier x n shares) + n short calls
long_call / long_put /     a single option leg; a short put is a
short_call / short_put /   ``cash_secured_put`` when the account's cash covers
cash_secured_put           strike x multiplier x |q| (see :func:`apply_cash_secured`)
stock_hedge/futures_hedge  stock/futures not covering calls
custom                     two or more legs opened in one order (same ``open_ref``)
                           that no pattern matches, listed as they are
=========================  =========================================================

Ambiguity
---------
* Legs are bucketed by (underlying, open date, opening order ref) before matching, so
  two condors on one underlying opened on different days (or in different orders)
  stay apart; within a bucket, different expiries never mix in a same-expiry pattern.
* Partial quantities: a 2-lot condor plus a 1-lot extra put gives a 2-lot
  ``iron_condor`` and a 1-lot ``short_put``.
* Persisted strategies keep their id; a persisted strategy whose legs change is
  re-typed from its remaining legs (a condor whose put side was closed is a
  ``vertical``).  When a position shrinks and several strategies hold it, the most
  recently opened strategy gives up quantity first (LIFO).
* A strategy opened today gets a ``parent_id`` (a roll) when a strategy of the same
  account and underlying lost legs today and (in this order of preference) shares an
  order ref with it, lost an option to assignment/exercise (for a new stock/futures
  lot), or its closed legs form the same strategy type as the new one.
* A new single leg that adds to a contract a strategy already holds (same sign) scales
  into that strategy; a new short call on an underlying where a stock strategy has
  uncovered shares joins it (it becomes a ``covered_call``).
* Manual claims (explicit legs) are taken before anything automatic, and manual types
  and names are applied last: auto-tagging never overwrites them.
"""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Literal, get_args

from pydantic import Field, model_validator

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.domain.schema import StrictModel

__all__ = [
    "OPTION_SEC_TYPES",
    "STRATEGY_TYPES",
    "Classification",
    "ExecutionFact",
    "KellySettings",
    "Leg",
    "LiquiditySettings",
    "ManualStrategy",
    "Piece",
    "PnlShare",
    "StrategiesFile",
    "StrategyOverride",
    "StrategyState",
    "StrategyType",
    "ThetaVegaSettings",
    "Trade",
    "allocate_pnl",
    "apply_cash_secured",
    "assign_strategies",
    "classify",
    "decompose",
    "strategy_id_for",
]

StrategyType = Literal[
    "long_call",
    "long_put",
    "short_call",
    "short_put",
    "cash_secured_put",
    "covered_call",
    "vertical",
    "iron_condor",
    "iron_butterfly",
    "strangle",
    "straddle",
    "butterfly",
    "broken_wing_butterfly",
    "calendar",
    "diagonal",
    "ratio_spread",
    "jade_lizard",
    "stock_hedge",
    "futures_hedge",
    "custom",
]
STRATEGY_TYPES: tuple[str, ...] = get_args(StrategyType)
OPTION_SEC_TYPES: tuple[str, ...] = ("OPT", "FOP")
ASSIGNMENT_KINDS: tuple[str, ...] = ("assignment", "exercise")
_EPS = 1e-9


# ------------------------------------------------------------------------------ legs


@dataclass(frozen=True, slots=True)
class Leg:
    """A signed quantity of one contract (a position, or the part a strategy holds)."""

    position_key: str
    contract: Contract
    quantity: float
    multiplier: float

    @property
    def is_option(self) -> bool:
        return self.contract.sec_type in OPTION_SEC_TYPES

    def sort_key(self) -> tuple[str, str, str, float, str, str]:
        c = self.contract
        return (
            c.underlying.upper(),
            c.sec_type,
            c.expiry.isoformat() if c.expiry else "",
            float(c.strike or 0.0),
            c.right or "",
            self.position_key,
        )

    def with_quantity(self, quantity: float) -> Leg:
        return replace(self, quantity=quantity)


@dataclass(frozen=True, slots=True)
class Classification:
    strategy_type: StrategyType
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Piece:
    """One recognised structure: its type, a detail ("put credit") and its legs."""

    strategy_type: StrategyType
    detail: str
    legs: tuple[Leg, ...]


def _sorted(legs: Iterable[Leg]) -> list[Leg]:
    return sorted(legs, key=Leg.sort_key)


def _sign(q: float) -> int:
    return 1 if q > 0 else -1


# ------------------------------------------------------------------------------ matching

_Match = tuple[StrategyType, str, tuple[tuple[str, float], ...]]
"""(type, detail, ((position_key, signed units per 1 structure), ...)) and n below."""


class _Pool:
    """Remaining quantities of the legs being decomposed (canonically ordered)."""

    def __init__(self, legs: Iterable[Leg]) -> None:
        merged: dict[str, Leg] = {}
        for leg in legs:
            if leg.position_key in merged:
                prev = merged[leg.position_key]
                merged[leg.position_key] = prev.with_quantity(prev.quantity + leg.quantity)
            else:
                merged[leg.position_key] = leg
        self.legs = {k: v for k, v in merged.items() if abs(v.quantity) > _EPS}

    def options(self) -> list[Leg]:
        return _sorted(v for v in self.legs.values() if v.is_option)

    def others(self) -> list[Leg]:
        return _sorted(v for v in self.legs.values() if not v.is_option)

    def by_expiry_right(self) -> dict[tuple[date, str], list[Leg]]:
        out: dict[tuple[date, str], list[Leg]] = defaultdict(list)
        for leg in self.options():
            assert leg.contract.expiry is not None and leg.contract.right is not None
            out[(leg.contract.expiry, leg.contract.right)].append(leg)
        return out

    def take(self, ratios: Sequence[tuple[str, float]], n: float) -> tuple[Leg, ...]:
        taken = []
        for key, ratio in ratios:
            leg = self.legs[key]
            qty = ratio * n
            taken.append(leg.with_quantity(qty))
            rest = leg.quantity - qty
            if abs(rest) <= _EPS:
                del self.legs[key]
            else:
                self.legs[key] = leg.with_quantity(rest)
        return tuple(_sorted(taken))


def _strike(leg: Leg) -> float:
    return float(leg.contract.strike or 0.0)


def _iron(pool: _Pool) -> tuple[_Match, float] | None:
    groups = pool.by_expiry_right()
    for expiry in sorted({e for e, _ in groups}):
        puts, calls = groups.get((expiry, "P"), []), groups.get((expiry, "C"), [])
        for p1 in puts:
            for p2 in puts:
                if not (_strike(p1) < _strike(p2) and _sign(p1.quantity) == -_sign(p2.quantity)):
                    continue
                body = _sign(p2.quantity)
                for c3 in calls:
                    if _sign(c3.quantity) != body or _strike(c3) < _strike(p2):
                        continue
                    for c4 in calls:
                        if _sign(c4.quantity) != -body or _strike(c4) <= _strike(c3):
                            continue
                        n = min(abs(x.quantity) for x in (p1, p2, c3, c4))
                        kind: StrategyType = (
                            "iron_butterfly" if _strike(p2) == _strike(c3) else "iron_condor"
                        )
                        detail = "short" if body < 0 else "long"
                        ratios = tuple(
                            (x.position_key, float(_sign(x.quantity))) for x in (p1, p2, c3, c4)
                        )
                        return (kind, detail, ratios), n
    return None


def _jade_lizard(pool: _Pool) -> tuple[_Match, float] | None:
    groups = pool.by_expiry_right()
    for expiry in sorted({e for e, _ in groups}):
        puts, calls = groups.get((expiry, "P"), []), groups.get((expiry, "C"), [])
        for sp in (p for p in puts if p.quantity < 0):
            for sc in (c for c in calls if c.quantity < 0 and _strike(c) > _strike(sp)):
                for lc in (c for c in calls if c.quantity > 0 and _strike(c) > _strike(sc)):
                    n = min(abs(x.quantity) for x in (sp, sc, lc))
                    ratios = ((sp.position_key, -1.0), (sc.position_key, -1.0), (lc.position_key, 1.0))
                    return ("jade_lizard", "short", ratios), n
    return None


def _butterfly(pool: _Pool) -> tuple[_Match, float] | None:
    for (_, right), legs in sorted(pool.by_expiry_right().items()):
        for i, a in enumerate(legs):
            for b in legs[i + 1 :]:
                if _sign(b.quantity) == _sign(a.quantity) or abs(b.quantity) < 2 - _EPS:
                    continue
                for c in legs:
                    if _strike(c) <= _strike(b) or _sign(c.quantity) != _sign(a.quantity):
                        continue
                    n = float(math.floor(min(abs(a.quantity), abs(c.quantity), abs(b.quantity) / 2) + _EPS))
                    if n < 1:
                        continue
                    s = float(_sign(a.quantity))
                    wings_equal = math.isclose(_strike(b) - _strike(a), _strike(c) - _strike(b))
                    kind: StrategyType = "butterfly" if wings_equal else "broken_wing_butterfly"
                    side = "long" if s > 0 else "short"
                    ratios = ((a.position_key, s), (b.position_key, -2 * s), (c.position_key, s))
                    return (kind, f"{'put' if right == 'P' else 'call'} {side}", ratios), n
    return None


def _vertical_detail(right: str, short: Leg, long: Leg) -> str:
    name = "put" if right == "P" else "call"
    credit = _strike(short) > _strike(long) if right == "P" else _strike(short) < _strike(long)
    return f"{name} {'credit' if credit else 'debit'}"


def _ratio(pool: _Pool) -> tuple[_Match, float] | None:
    for (_, right), legs in sorted(pool.by_expiry_right().items()):
        if len(legs) != 2 or _sign(legs[0].quantity) == _sign(legs[1].quantity):
            continue
        small, big = sorted(legs, key=lambda x: (abs(x.quantity), x.sort_key()))
        r = abs(big.quantity) / abs(small.quantity)
        if r < 2 - _EPS or abs(r - round(r)) > 1e-6:
            continue
        short, long = (small, big) if small.quantity < 0 else (big, small)
        n = abs(small.quantity)
        ratios = ((small.position_key, float(_sign(small.quantity))),
                  (big.position_key, float(_sign(big.quantity) * round(r))))
        detail = f"{_vertical_detail(right, short, long)} 1x{round(r)}"
        return ("ratio_spread", detail, ratios), n
    return None


def _vertical(pool: _Pool) -> tuple[_Match, float] | None:
    for (_, right), legs in sorted(pool.by_expiry_right().items()):
        for i, a in enumerate(legs):
            for b in legs[i + 1 :]:
                if _sign(a.quantity) == _sign(b.quantity) or _strike(a) == _strike(b):
                    continue
                short, long = (a, b) if a.quantity < 0 else (b, a)
                n = min(abs(a.quantity), abs(b.quantity))
                ratios = ((a.position_key, float(_sign(a.quantity))),
                          (b.position_key, float(_sign(b.quantity))))
                return ("vertical", _vertical_detail(right, short, long), ratios), n
    return None


def _put_call(pool: _Pool, *, same_strike: bool) -> tuple[_Match, float] | None:
    groups = pool.by_expiry_right()
    for expiry in sorted({e for e, _ in groups}):
        for p in groups.get((expiry, "P"), []):
            for c in groups.get((expiry, "C"), []):
                if _sign(p.quantity) != _sign(c.quantity):
                    continue
                if same_strike != (_strike(p) == _strike(c)):
                    continue
                n = min(abs(p.quantity), abs(c.quantity))
                s = float(_sign(p.quantity))
                kind: StrategyType = "straddle" if same_strike else "strangle"
                return (kind, "short" if s < 0 else "long",
                        ((p.position_key, s), (c.position_key, s))), n
    return None


def _straddle(pool: _Pool) -> tuple[_Match, float] | None:
    return _put_call(pool, same_strike=True)


def _strangle(pool: _Pool) -> tuple[_Match, float] | None:
    return _put_call(pool, same_strike=False)


def _time_spread(pool: _Pool, *, same_strike: bool) -> tuple[_Match, float] | None:
    legs = pool.options()
    for right in ("C", "P"):
        same = [x for x in legs if x.contract.right == right]
        for a in same:
            for b in same:
                assert a.contract.expiry is not None and b.contract.expiry is not None
                if not a.contract.expiry < b.contract.expiry:
                    continue
                if _sign(a.quantity) == _sign(b.quantity):
                    continue
                if same_strike != (_strike(a) == _strike(b)):
                    continue
                n = min(abs(a.quantity), abs(b.quantity))
                kind: StrategyType = "calendar" if same_strike else "diagonal"
                side = "long" if b.quantity > 0 else "short"  # long = long the back month
                detail = f"{'put' if right == 'P' else 'call'} {side}"
                return (kind, detail, ((a.position_key, float(_sign(a.quantity))),
                                       (b.position_key, float(_sign(b.quantity))))), n
    return None


def _calendar(pool: _Pool) -> tuple[_Match, float] | None:
    return _time_spread(pool, same_strike=True)


def _diagonal(pool: _Pool) -> tuple[_Match, float] | None:
    return _time_spread(pool, same_strike=False)


def _covered_call(pool: _Pool) -> tuple[_Match, float] | None:
    stocks = [x for x in pool.others() if x.contract.sec_type == "STK" and x.quantity > 0]
    calls = [x for x in pool.options() if x.contract.right == "C" and x.quantity < 0]
    for stock in stocks:
        for call in calls:
            covered = math.floor(stock.quantity * stock.multiplier / call.multiplier + _EPS)
            n = float(min(abs(call.quantity), covered))
            if n < 1:
                continue
            per_share = call.multiplier / stock.multiplier
            return ("covered_call", "", ((stock.position_key, per_share), (call.position_key, -1.0))), n
    return None


_PATTERNS: tuple[Callable[[_Pool], tuple[_Match, float] | None], ...] = (
    _iron, _jade_lizard, _butterfly, _ratio, _vertical, _straddle, _strangle,
    _calendar, _diagonal, _covered_call,
)


def single_type(leg: Leg) -> Classification:
    """Type of a lone leg (a short put is ``short_put`` until cash secures it)."""
    if leg.contract.sec_type == "FUT":
        return Classification("futures_hedge", "long" if leg.quantity > 0 else "short")
    if not leg.is_option:
        return Classification("stock_hedge", "long" if leg.quantity > 0 else "short")
    side = "long" if leg.quantity > 0 else "short"
    right = "call" if leg.contract.right == "C" else "put"
    return Classification(f"{side}_{right}", "")  # type: ignore[arg-type]


def decompose(legs: Iterable[Leg], *, one_order: bool = False) -> list[Piece]:
    """Split legs of ONE underlying into recognised structures (see the module docstring).

    Parameters
    ----------
    legs
        Signed legs; the same position key may appear more than once (quantities add).
    one_order
        True when the legs were opened in one order: two or more leftover option legs
        then form one ``custom`` piece instead of separate singles.

    Returns
    -------
    list of Piece
        Deterministic and independent of the order of ``legs``.
    """
    pool = _Pool(legs)
    underlyings = {leg.contract.underlying.upper() for leg in pool.legs.values()}
    if len(underlyings) > 1:
        raise InvalidDataError(f"decompose: legs of several underlyings {sorted(underlyings)}")
    pieces: list[Piece] = []
    for pattern in _PATTERNS:
        while (found := pattern(pool)) is not None:
            (kind, detail, ratios), n = found
            pieces.append(Piece(kind, detail, pool.take(ratios, n)))
    rest = pool.options()
    if one_order and len(rest) >= 2:
        pieces.append(Piece("custom", f"{len(rest)} legs", tuple(rest)))
    else:
        for leg in rest:
            cls = single_type(leg)
            pieces.append(Piece(cls.strategy_type, cls.detail, (leg,)))
    for leg in pool.others():
        cls = single_type(leg)
        pieces.append(Piece(cls.strategy_type, cls.detail, (leg,)))
    return sorted(pieces, key=_piece_key)


def _piece_key(p: Piece) -> tuple[str, ...]:
    return tuple(f"{leg.position_key}={leg.quantity:.9g}" for leg in p.legs)


def classify(legs: Iterable[Leg]) -> Classification:
    """The type of a whole set of legs: the single structure they form, else ``custom``."""
    material = [leg for leg in legs if abs(leg.quantity) > _EPS]
    if not material:
        return Classification("custom", "no legs")
    pieces = decompose(material, one_order=True)
    if len(pieces) == 1:
        return Classification(pieces[0].strategy_type, pieces[0].detail)
    return Classification("custom", " + ".join(p.strategy_type for p in pieces))


# ------------------------------------------------------------------------------ config


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


@dataclass(frozen=True, slots=True)
class ManualStrategy:
    """A manual override as the tagger uses it (from the config file or the CLI table)."""

    strategy_id: str
    name: str | None = None
    strategy_type: StrategyType | None = None
    legs: Mapping[str, float] | None = None


# ------------------------------------------------------------------------------ identity


@dataclass(frozen=True, slots=True)
class StrategyState:
    """A strategy of one account at one session close."""

    strategy_id: str
    underlying: str
    strategy_type: StrategyType
    detail: str
    legs: tuple[Leg, ...]
    opened_on: date
    parent_id: str | None = None
    name: str | None = None
    source: Literal["auto", "manual"] = "auto"
    closed_on: date | None = None
    open_refs: tuple[str, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.closed_on is None and bool(self.legs)

    def quantity(self, key: str) -> float:
        return sum(leg.quantity for leg in self.legs if leg.position_key == key)


@dataclass(frozen=True, slots=True)
class ExecutionFact:
    """What tagging needs to know of one execution: key, signed quantity, ref, kind, day."""

    position_key: str
    quantity: float
    session: date
    order_ref: str | None = None
    kind: str = "trade"


def strategy_id_for(account_id: str, underlying: str, opened_on: date, legs: Sequence[Leg],
                    taken: set[str]) -> str:
    """A readable id stable across re-runs: ``SPX-20180105-<hash of account and legs>``."""
    text = "|".join([account_id, underlying, opened_on.isoformat(),
                     *(f"{x.position_key}={x.quantity:.9g}" for x in _sorted(legs))])
    digest = hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()
    base = f"{underlying.upper()}-{opened_on:%Y%m%d}-{digest[:8]}"
    sid, n = base, 1
    while sid in taken:
        n += 1
        sid = f"{base}-{n}"
    return sid


def _by_key(legs: Iterable[Leg]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for leg in legs:
        out[leg.position_key] += leg.quantity
    return out


def assign_strategies(
    session: date,
    account_id: str,
    positions: Sequence[Leg],
    previous: Sequence[StrategyState],
    *,
    executions: Sequence[ExecutionFact] = (),
    manual: Sequence[ManualStrategy] = (),
    cash: float | None = None,
) -> list[StrategyState]:
    """Today's strategies of one account (open ones, plus those closed today).

    Parameters
    ----------
    session
        The session being tagged.
    positions
        Today's positions of the account (one leg per position key).
    previous
        The account's strategies at the previous stored session (open ones matter).
    executions
        The account's executions up to ``session`` (opening refs, open dates on a cold
        start, roll links by order ref, assignments).
    manual
        Manual claims and overrides; applied before (claims) and after (names, types)
        the automatic rules.
    cash
        The account's cash, for the cash-secured-put rule (None: never cash-secured).
    """
    current = {p.position_key: p for p in positions}
    remaining = {k: p.quantity for k, p in current.items()}
    today_execs = [e for e in executions if e.session == session]
    cold_start = not previous
    taken_ids = {s.strategy_id for s in previous}
    out: list[StrategyState] = []
    prev_open = [s for s in previous if s.is_open]
    prev_by_id = {s.strategy_id: s for s in prev_open}

    def claim(key: str, wanted: float) -> float:
        have = remaining.get(key, 0.0)
        if have * wanted <= 0:
            return 0.0
        got = math.copysign(min(abs(have), abs(wanted)), have)
        remaining[key] = have - got
        return got

    # 1. manual claims (explicit legs) first.
    manual_ids = set()
    for m in sorted(manual, key=lambda x: x.strategy_id):
        if not m.legs:
            continue
        manual_ids.add(m.strategy_id)
        legs = []
        for key, wanted in sorted(m.legs.items()):
            if key in current and (got := claim(key, wanted)) != 0:
                legs.append(current[key].with_quantity(got))
        prior = prev_by_id.get(m.strategy_id)
        if not legs:
            if prior is not None:
                out.append(replace(prior, legs=(), closed_on=session))
            continue
        cls = classify(legs)
        out.append(StrategyState(
            strategy_id=m.strategy_id, underlying=legs[0].contract.underlying.upper(),
            strategy_type=cls.strategy_type, detail=cls.detail, legs=tuple(_sorted(legs)),
            opened_on=prior.opened_on if prior else session, parent_id=prior.parent_id if prior else None,
            source="manual",
        ))

    # 2. carry yesterday's strategies forward, oldest first (the newest gives up first).
    carried: dict[str, list[Leg]] = {}
    closed_legs: dict[str, list[Leg]] = defaultdict(list)
    for s in sorted(prev_open, key=lambda x: (x.opened_on, x.strategy_id)):
        if s.strategy_id in manual_ids:
            continue
        kept = []
        for leg in s.legs:
            got = claim(leg.position_key, leg.quantity)
            if got != 0:
                kept.append(current[leg.position_key].with_quantity(got))
            if abs(leg.quantity - got) > _EPS:
                closed_legs[s.strategy_id].append(leg.with_quantity(leg.quantity - got))
        carried[s.strategy_id] = kept

    # 3. new lots: scale-ins and covered calls join, the rest is bucketed and decomposed.
    new_legs = [current[k].with_quantity(q) for k, q in sorted(remaining.items()) if abs(q) > _EPS]
    new_refs: dict[str, tuple[str, ...]] = {}
    new_dates: dict[str, date] = {}
    for leg in new_legs:
        refs, day = _opening(leg, executions, session, cold_start)
        new_refs[leg.position_key], new_dates[leg.position_key] = refs, day
    buckets: dict[tuple[str, date, tuple[str, ...]], list[Leg]] = defaultdict(list)
    for leg in new_legs:
        buckets[(leg.contract.underlying.upper(), new_dates[leg.position_key],
                 new_refs[leg.position_key])].append(leg)
    fresh: list[tuple[Piece, date, tuple[str, ...]]] = []
    for (_, day, refs), legs in sorted(buckets.items()):
        for piece in decompose(legs, one_order=bool(refs)):
            fresh.append((piece, day, refs))

    carried_order = sorted(carried, key=lambda sid: (prev_by_id[sid].opened_on, sid))
    unjoined: list[tuple[Piece, date, tuple[str, ...]]] = []
    for piece, day, refs in fresh:
        target = _join_target(piece, carried, carried_order) if len(piece.legs) == 1 else None
        if target is None:
            unjoined.append((piece, day, refs))
        else:
            carried[target].append(piece.legs[0])

    for sid in carried_order:
        prior = prev_by_id[sid]
        legs = _merge(carried[sid])
        if not legs:
            out.append(replace(prior, legs=(), closed_on=session))
            continue
        cls = classify(legs)
        out.append(replace(prior, legs=tuple(legs), strategy_type=cls.strategy_type,
                           detail=cls.detail, source="auto"))

    close_refs = _close_refs(today_execs)
    for piece, day, refs in unjoined:
        underlying = piece.legs[0].contract.underlying.upper()
        sid = strategy_id_for(account_id, underlying, day, piece.legs, taken_ids)
        taken_ids.add(sid)
        parent = None
        if day == session and not cold_start:
            parent = _parent(piece, refs, underlying, closed_legs, prev_by_id, close_refs, today_execs)
        out.append(StrategyState(
            strategy_id=sid, underlying=underlying, strategy_type=piece.strategy_type,
            detail=piece.detail, legs=piece.legs, opened_on=day, parent_id=parent, open_refs=refs,
        ))

    out = apply_cash_secured(out, cash)
    by_manual = {m.strategy_id: m for m in manual}
    final = []
    for s in out:
        override = by_manual.get(s.strategy_id)
        if override is not None:
            s = replace(s, name=override.name or s.name, source="manual",
                        strategy_type=override.strategy_type or s.strategy_type)
        final.append(s)
    return sorted(final, key=lambda s: s.strategy_id)


def _merge(legs: Iterable[Leg]) -> list[Leg]:
    merged: dict[str, Leg] = {}
    for leg in legs:
        if leg.position_key in merged:
            prev = merged[leg.position_key]
            merged[leg.position_key] = prev.with_quantity(prev.quantity + leg.quantity)
        else:
            merged[leg.position_key] = leg
    return _sorted(v for v in merged.values() if abs(v.quantity) > _EPS)


def _opening(leg: Leg, executions: Sequence[ExecutionFact], session: date,
             cold_start: bool) -> tuple[tuple[str, ...], date]:
    """(order refs, open date) of a new lot from its opening executions."""
    same_side = [e for e in executions if e.position_key == leg.position_key
                 and e.quantity * leg.quantity > 0 and e.session <= session and e.kind == "trade"]
    if cold_start:
        if not same_side:
            return (), session
        day = max(e.session for e in same_side)
        same_side = [e for e in same_side if e.session == day]
    else:
        day = session
        same_side = [e for e in same_side if e.session == session]
    refs = tuple(sorted({e.order_ref for e in same_side if e.order_ref}))
    return refs[:1], day


def _join_target(piece: Piece, carried: Mapping[str, list[Leg]], order: Sequence[str]) -> str | None:
    leg = piece.legs[0]
    for sid in order:  # scale into a strategy holding the contract on the same side
        if any(x.position_key == leg.position_key and x.quantity * leg.quantity > 0 for x in carried[sid]):
            return sid
    if piece.strategy_type != "short_call":
        return None
    for sid in order:  # a short call on uncovered shares makes a covered call
        legs = carried[sid]
        if not legs:
            continue
        shares = sum(x.quantity * x.multiplier for x in legs
                     if x.contract.sec_type == "STK" and x.contract.underlying.upper()
                     == leg.contract.underlying.upper())
        covered = sum(-x.quantity * x.multiplier for x in legs if x.is_option
                      and x.contract.right == "C" and x.quantity < 0)
        if shares - covered >= abs(leg.quantity) * leg.multiplier - _EPS:
            return sid
    return None


def _close_refs(today: Sequence[ExecutionFact]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for e in today:
        if e.order_ref:
            out[e.position_key].add(e.order_ref)
    return out


def _parent(
    piece: Piece,
    refs: tuple[str, ...],
    underlying: str,
    closed: Mapping[str, list[Leg]],
    prev: Mapping[str, StrategyState],
    close_refs: Mapping[str, set[str]],
    today: Sequence[ExecutionFact],
) -> str | None:
    assigned = {e.position_key for e in today if e.kind in ASSIGNMENT_KINDS}
    scored: list[tuple[int, float, str]] = []
    for sid, legs in closed.items():
        if prev[sid].underlying != underlying or not legs:
            continue
        strength = 0
        if refs and any(set(refs) & close_refs.get(leg.position_key, set()) for leg in legs):
            strength = 3
        elif (not piece.legs[0].is_option and any(leg.position_key in assigned for leg in legs)):
            strength = 2
        elif classify(legs).strategy_type == piece.strategy_type:
            strength = 1
        if strength:
            scored.append((-strength, -sum(abs(x.quantity) for x in legs), sid))
    return min(scored)[2] if scored else None


def apply_cash_secured(strategies: Sequence[StrategyState], cash: float | None) -> list[StrategyState]:
    """Re-type short puts covered by cash as ``cash_secured_put``.

    Rule: lone short puts of the account, taken in strategy-id order, each reserve
    ``strike x multiplier x |quantity|`` of the account's cash; a put whose reserve still
    fits in the cash is cash-secured, otherwise it stays a (naked) ``short_put``.  Cash
    already reserved by earlier puts is not available to later ones.
    """
    budget = cash if cash is not None and cash > 0 else 0.0
    out = []
    for s in sorted(strategies, key=lambda x: x.strategy_id):
        if s.is_open and s.strategy_type in ("short_put", "cash_secured_put") and len(s.legs) == 1:
            leg = s.legs[0]
            need = float(leg.contract.strike or 0.0) * leg.multiplier * abs(leg.quantity)
            if need <= budget + _EPS:
                budget -= need
                s = replace(s, strategy_type="cash_secured_put")
            else:
                s = replace(s, strategy_type="short_put")
        out.append(s)
    return out


# ------------------------------------------------------------------------------ P&L split


@dataclass(frozen=True, slots=True)
class PnlShare:
    """One strategy's part of one day's P&L (account currency)."""

    pnl: float = 0.0
    realized: float = 0.0
    costs: float = 0.0
    entry_prices: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Trade:
    quantity: float
    price: float
    costs: float


def allocate_pnl(
    before: Mapping[str, Mapping[str, float]],
    after: Mapping[str, Mapping[str, float]],
    prev_marks: Mapping[str, float],
    marks: Mapping[str, float],
    multipliers: Mapping[str, float],
    trades: Mapping[str, Sequence[Trade]],
    entry_prices: Mapping[str, Mapping[str, float]],
    *,
    fallback_prices: Mapping[str, float] | None = None,
    unallocated: str = "_unallocated",
) -> dict[str, PnlShare]:
    r"""Split each position's daily P&L between the strategies that held it.

    Parameters
    ----------
    before, after
        strategy id -> position key -> signed quantity at the previous and this close.
    prev_marks, marks
        position key -> mark per unit at the previous and this close.
    multipliers
        position key -> contract multiplier.
    trades
        position key -> today's executions (signed quantity, price, commission+fees).
    entry_prices
        strategy id -> position key -> average entry price so far.
    fallback_prices
        position key -> price assumed for a quantity change without executions (the
        caller passes the broker's average cost for opens, the mark for closes).

    Notes
    -----
    The position's P&L is exact:

    .. math:: \Delta P_k = m_k (Q_k^{t} M_k^{t} - Q_k^{t-1} M_k^{t-1})
              - \sum_{trades} (m_k q p + c)

    Each strategy gets its held part at the marks and its quantity change at the VWAP
    of the trades on its side, plus commissions pro rata to ``|dq|``; any residual (e.g.
    executions that do not match the quantity changes) goes to the largest holder, so
    the strategies of an account sum to the account's position P&L exactly.
    """
    fallback = fallback_prices or {}
    keys = sorted({k for h in (*before.values(), *after.values()) for k in h} | set(trades))
    pnl: dict[str, float] = defaultdict(float)
    realized: dict[str, float] = defaultdict(float)
    costs: dict[str, float] = defaultdict(float)
    entries: dict[str, dict[str, float]] = {sid: dict(v) for sid, v in entry_prices.items()}
    sids = sorted(set(before) | set(after))
    for k in keys:
        m = multipliers[k]
        m_prev, m_now = prev_marks.get(k, 0.0), marks.get(k, 0.0)
        k_trades = trades.get(k, ())
        q_prev = {s: before.get(s, {}).get(k, 0.0) for s in sids}
        q_now = {s: after.get(s, {}).get(k, 0.0) for s in sids}
        total = (m * (sum(q_now.values()) * m_now - sum(q_prev.values()) * m_prev)
                 - sum(m * t.quantity * t.price + t.costs for t in k_trades))
        buys = [t for t in k_trades if t.quantity > 0]
        sells = [t for t in k_trades if t.quantity < 0]
        k_costs = sum(t.costs for t in k_trades)
        gross = sum(abs(q_now[s] - q_prev[s]) for s in sids)
        allocated = 0.0
        for s in sids:
            dq = q_now[s] - q_prev[s]
            if abs(dq) <= _EPS and abs(q_prev[s]) <= _EPS:
                continue
            side = buys if dq > 0 else sells
            price = _vwap(side) if side else _vwap(k_trades) if k_trades else fallback.get(
                k, m_now if abs(q_now[s]) > _EPS else m_prev)
            c = k_costs * abs(dq) / gross if gross > _EPS else 0.0
            share = m * (q_now[s] * m_now - q_prev[s] * m_prev) - m * dq * price - c
            entry = entries.setdefault(s, {})
            old = entry.get(k, price)
            if q_prev[s] * dq < 0:  # a reduction (possibly through zero)
                closed = -dq if abs(dq) <= abs(q_prev[s]) else q_prev[s]
                realized[s] += closed * m * (price - old)
                if abs(q_now[s]) <= _EPS:
                    entry.pop(k, None)
                elif q_now[s] * q_prev[s] < 0:
                    entry[k] = price
            elif abs(dq) > _EPS:
                w = abs(q_prev[s])
                entry[k] = (old * w + price * abs(dq)) / (w + abs(dq))
            realized[s] -= c
            pnl[s] += share
            costs[s] += c
            allocated += share
        residual = total - allocated
        if abs(residual) > 1e-9:
            holders = [(max(abs(q_now[s]), abs(q_prev[s])), s) for s in sids]
            holders = [h for h in holders if h[0] > _EPS]
            target = min(holders, key=lambda h: (-h[0], h[1]))[1] if holders else unallocated
            pnl[target] += residual
            realized[target] += residual if abs(q_now.get(target, 0.0)) <= _EPS else 0.0
    return {
        s: PnlShare(pnl=pnl[s], realized=realized[s], costs=costs[s], entry_prices=entries.get(s, {}))
        for s in sorted(set(sids) | set(pnl))
    }


def _vwap(trades: Sequence[Trade]) -> float:
    qty = sum(abs(t.quantity) for t in trades)
    return sum(abs(t.quantity) * t.price for t in trades) / qty if qty > 0 else 0.0
