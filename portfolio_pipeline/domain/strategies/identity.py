"""Strategy identity across sessions: carry yesterday's strategies to today's positions.

:func:`assign_strategies` carries yesterday's strategies of an account forward to
today's positions (identity, opened_on, parent links for rolls), applies manual claims
and overrides, and tags the new lots with
:func:`~portfolio_pipeline.domain.strategies.patterns.decompose`.  Pure rules, no I/O.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from typing import Literal

from portfolio_pipeline.domain.strategies.legs import (
    ASSIGNMENT_KINDS,
    QUANTITY_EPS,
    Leg,
    Piece,
    StrategyType,
    merge_legs,
    sorted_legs,
)
from portfolio_pipeline.domain.strategies.patterns import classify, decompose

__all__ = [
    "ExecutionFact",
    "ManualStrategy",
    "StrategyState",
    "apply_cash_secured",
    "assign_strategies",
    "strategy_id_for",
]


@dataclass(frozen=True, slots=True)
class ManualStrategy:
    """A manual override as the tagger uses it (from the config file or the CLI table)."""

    strategy_id: str
    name: str | None = None
    strategy_type: StrategyType | None = None
    legs: Mapping[str, float] | None = None



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
                     *(f"{x.position_key}={x.quantity:.9g}" for x in sorted_legs(legs))])
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
    remaining = _Remaining(current)
    cold_start = not previous
    prev_open = [s for s in previous if s.is_open]
    prev_by_id = {s.strategy_id: s for s in prev_open}

    # 1. manual claims (explicit legs) first.
    out, manual_ids = _claim_manual(session, manual, current, remaining, prev_by_id)
    # 2. carry yesterday's strategies forward, oldest first (the newest gives up first).
    carried, closed_legs = _carry_forward(prev_open, manual_ids, current, remaining)
    # 3. new lots: scale-ins and covered calls join, the rest is bucketed and decomposed.
    fresh = _new_pieces(session, current, remaining, executions, cold_start)
    carried_order = sorted(carried, key=lambda sid: (prev_by_id[sid].opened_on, sid))
    unjoined = _join_single_legs(fresh, carried, carried_order)
    out.extend(_carried_states(session, carried_order, carried, prev_by_id))
    new_lots = _NewLots(account_id, session, cold_start, {s.strategy_id for s in previous})
    out.extend(new_lots.states(unjoined, closed_legs, prev_by_id, executions))

    out = apply_cash_secured(out, cash)
    return _apply_overrides(out, manual)


class _Remaining:
    """Today's quantities per position key that no strategy has claimed yet."""

    def __init__(self, current: Mapping[str, Leg]) -> None:
        self.left = {k: p.quantity for k, p in current.items()}

    def claim(self, key: str, wanted: float) -> float:
        """Take up to ``wanted`` (same sign) of ``key``; the quantity taken."""
        have = self.left.get(key, 0.0)
        if have * wanted <= 0:
            return 0.0
        got = math.copysign(min(abs(have), abs(wanted)), have)
        self.left[key] = have - got
        return got


_Fresh = tuple[Piece, date, tuple[str, ...]]
"""A piece of today's new lots with its open date and opening order refs."""


def _claim_manual(
    session: date,
    manual: Sequence[ManualStrategy],
    current: Mapping[str, Leg],
    remaining: _Remaining,
    prev_by_id: Mapping[str, StrategyState],
) -> tuple[list[StrategyState], set[str]]:
    """The strategies of manual claims with explicit legs (and the claimed ids)."""
    out: list[StrategyState] = []
    manual_ids = set()
    for m in sorted(manual, key=lambda x: x.strategy_id):
        if not m.legs:
            continue
        manual_ids.add(m.strategy_id)
        legs = []
        for key, wanted in sorted(m.legs.items()):
            if key in current and (got := remaining.claim(key, wanted)) != 0:
                legs.append(current[key].with_quantity(got))
        prior = prev_by_id.get(m.strategy_id)
        if not legs:
            if prior is not None:
                out.append(replace(prior, legs=(), closed_on=session))
            continue
        cls = classify(legs)
        out.append(StrategyState(
            strategy_id=m.strategy_id, underlying=legs[0].contract.underlying.upper(),
            strategy_type=cls.strategy_type, detail=cls.detail, legs=tuple(sorted_legs(legs)),
            opened_on=prior.opened_on if prior else session, parent_id=prior.parent_id if prior else None,
            source="manual",
        ))
    return out, manual_ids


def _carry_forward(
    prev_open: Sequence[StrategyState],
    manual_ids: set[str],
    current: Mapping[str, Leg],
    remaining: _Remaining,
) -> tuple[dict[str, list[Leg]], dict[str, list[Leg]]]:
    """(legs each open strategy keeps today, legs it lost), oldest strategy first."""
    carried: dict[str, list[Leg]] = {}
    closed_legs: dict[str, list[Leg]] = defaultdict(list)
    for s in sorted(prev_open, key=lambda x: (x.opened_on, x.strategy_id)):
        if s.strategy_id in manual_ids:
            continue
        kept = []
        for leg in s.legs:
            got = remaining.claim(leg.position_key, leg.quantity)
            if got != 0:
                kept.append(current[leg.position_key].with_quantity(got))
            if abs(leg.quantity - got) > QUANTITY_EPS:
                closed_legs[s.strategy_id].append(leg.with_quantity(leg.quantity - got))
        carried[s.strategy_id] = kept
    return carried, closed_legs


def _new_pieces(
    session: date,
    current: Mapping[str, Leg],
    remaining: _Remaining,
    executions: Sequence[ExecutionFact],
    cold_start: bool,
) -> list[_Fresh]:
    """Today's unclaimed lots, bucketed by (underlying, open date, order ref) and decomposed."""
    new_legs = [current[k].with_quantity(q) for k, q in sorted(remaining.left.items()) if abs(q) > QUANTITY_EPS]
    new_refs: dict[str, tuple[str, ...]] = {}
    new_dates: dict[str, date] = {}
    for leg in new_legs:
        refs, day = _opening(leg, executions, session, cold_start)
        new_refs[leg.position_key], new_dates[leg.position_key] = refs, day
    buckets: dict[tuple[str, date, tuple[str, ...]], list[Leg]] = defaultdict(list)
    for leg in new_legs:
        buckets[(leg.contract.underlying.upper(), new_dates[leg.position_key],
                 new_refs[leg.position_key])].append(leg)
    fresh: list[_Fresh] = []
    for (_, day, refs), legs in sorted(buckets.items()):
        for piece in decompose(legs, one_order=bool(refs)):
            fresh.append((piece, day, refs))
    return fresh


def _join_single_legs(
    fresh: Sequence[_Fresh], carried: Mapping[str, list[Leg]], carried_order: Sequence[str]
) -> list[_Fresh]:
    """Add scale-ins and covering short calls to carried strategies; the pieces left."""
    unjoined: list[_Fresh] = []
    for piece, day, refs in fresh:
        target = _join_target(piece, carried, carried_order) if len(piece.legs) == 1 else None
        if target is None:
            unjoined.append((piece, day, refs))
        else:
            carried[target].append(piece.legs[0])
    return unjoined


def _carried_states(
    session: date,
    carried_order: Sequence[str],
    carried: Mapping[str, list[Leg]],
    prev_by_id: Mapping[str, StrategyState],
) -> list[StrategyState]:
    """Yesterday's strategies with today's legs, re-typed (closed today when none are left)."""
    out: list[StrategyState] = []
    for sid in carried_order:
        prior = prev_by_id[sid]
        legs = _merge(carried[sid])
        if not legs:
            out.append(replace(prior, legs=(), closed_on=session))
            continue
        cls = classify(legs)
        out.append(replace(prior, legs=tuple(legs), strategy_type=cls.strategy_type,
                           detail=cls.detail, source="auto"))
    return out


@dataclass(slots=True)
class _NewLots:
    """New strategies of one account and session: fresh ids, roll parents."""

    account_id: str
    session: date
    cold_start: bool
    taken_ids: set[str]

    def states(
        self,
        unjoined: Sequence[_Fresh],
        closed_legs: Mapping[str, list[Leg]],
        prev_by_id: Mapping[str, StrategyState],
        executions: Sequence[ExecutionFact],
    ) -> list[StrategyState]:
        today_execs = [e for e in executions if e.session == self.session]
        close_refs = _close_refs(today_execs)
        out: list[StrategyState] = []
        for piece, day, refs in unjoined:
            underlying = piece.legs[0].contract.underlying.upper()
            sid = strategy_id_for(self.account_id, underlying, day, piece.legs, self.taken_ids)
            self.taken_ids.add(sid)
            parent = None
            if day == self.session and not self.cold_start:
                parent = _parent(piece, refs, underlying, closed_legs, prev_by_id, close_refs, today_execs)
            out.append(StrategyState(
                strategy_id=sid, underlying=underlying, strategy_type=piece.strategy_type,
                detail=piece.detail, legs=piece.legs, opened_on=day, parent_id=parent, open_refs=refs,
            ))
        return out


def _apply_overrides(out: Sequence[StrategyState], manual: Sequence[ManualStrategy]) -> list[StrategyState]:
    """Manual names and types applied last (auto-tagging never overwrites them), by id."""
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
    return sorted_legs(merge_legs(legs).values())


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
        if shares - covered >= abs(leg.quantity) * leg.multiplier - QUANTITY_EPS:
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
            if need <= budget + QUANTITY_EPS:
                budget -= need
                s = replace(s, strategy_type="cash_secured_put")
            else:
                s = replace(s, strategy_type="short_put")
        out.append(s)
    return out
