"""Pattern matching of strategy tagging: legs of one underlying -> recognised structures.

:func:`decompose` splits the legs of one underlying (opened together) into recognised
structures, greedily and deterministically (legs are sorted by a canonical key first, so
the input order never matters); :func:`classify` names a whole set of legs.  Pure rules,
no I/O.

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
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from datetime import date

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.strategies.legs import (
    QUANTITY_EPS,
    Classification,
    Leg,
    Piece,
    StrategyType,
    merge_legs,
    sorted_legs,
)

__all__ = ["classify", "decompose", "single_type"]


def _sign(q: float) -> int:
    return 1 if q > 0 else -1


# ------------------------------------------------------------------------------ matching

_Match = tuple[StrategyType, str, tuple[tuple[str, float], ...]]
"""(type, detail, ((position_key, signed units per 1 structure), ...)) and n below."""


class _Pool:
    """Remaining quantities of the legs being decomposed (canonically ordered)."""

    def __init__(self, legs: Iterable[Leg]) -> None:
        self.legs = merge_legs(legs)

    def options(self) -> list[Leg]:
        return sorted_legs(v for v in self.legs.values() if v.is_option)

    def others(self) -> list[Leg]:
        return sorted_legs(v for v in self.legs.values() if not v.is_option)

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
            if abs(rest) <= QUANTITY_EPS:
                del self.legs[key]
            else:
                self.legs[key] = leg.with_quantity(rest)
        return tuple(sorted_legs(taken))


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
                if _sign(b.quantity) == _sign(a.quantity) or abs(b.quantity) < 2 - QUANTITY_EPS:
                    continue
                for c in legs:
                    if _strike(c) <= _strike(b) or _sign(c.quantity) != _sign(a.quantity):
                        continue
                    n = float(math.floor(min(abs(a.quantity), abs(c.quantity), abs(b.quantity) / 2) + QUANTITY_EPS))
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
        if r < 2 - QUANTITY_EPS or abs(r - round(r)) > 1e-6:
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
            covered = math.floor(stock.quantity * stock.multiplier / call.multiplier + QUANTITY_EPS)
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
    material = [leg for leg in legs if abs(leg.quantity) > QUANTITY_EPS]
    if not material:
        return Classification("custom", "no legs")
    pieces = decompose(material, one_order=True)
    if len(pieces) == 1:
        return Classification(pieces[0].strategy_type, pieces[0].detail)
    return Classification("custom", " + ".join(p.strategy_type for p in pieces))
