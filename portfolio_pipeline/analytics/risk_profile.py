"""Risk profiles of a book: per underlying, per strategy and beta-weighted to SPX (pure).

The inputs are the scenario engine's book (``defs/stress`` loads it as it does for the
shock grid) plus the labels the rows need; the numbers are
:func:`portfolio_pipeline.quant.risk_profile.risk_profile` (full revaluation, the shock
grid's own scenario builder and pricer settings), the rows are those of the
``risk_profile`` and ``risk_profile_summary`` tables.

Profiles of one session:

* one per underlying (``profile`` = the underlying): only that underlying moves, by the
  simple return on the axis; groups: all its positions (``strategy_id`` '*') and each
  open strategy on it (T+0 and the strategy's front expiry: a condor's tent, a calendar's
  hump);
* the book beta-weighted to SPX (``profile`` '*'): every underlying moves by its beta x
  the SPX return (volatility-index underlyings stay, as on the shock grid's spot axis).

Horizons: T+0, T+n exchange sessions (the caller turns sessions into years with the
exchange calendar) and the nearest expiries of the profile's options (each at its
settlement: the curve there is the payoff plus what the later expiries are still worth).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from portfolio_pipeline.domain.symbols import AGGREGATE as ALL
from portfolio_pipeline.quant._typing import Float64Array, IntArray
from portfolio_pipeline.quant.revaluation import today_values
from portfolio_pipeline.quant.risk_profile import (
    Curves,
    CurveSummary,
    Horizon,
    atm_vol,
    expected_move,
    expiry_decays,
    pnl_at_pairs,
    risk_profile,
    spot_moves,
    sub_book,
    summarize_curves,
)
from portfolio_pipeline.quant.scenario_book import Book

logger = logging.getLogger(__name__)

__all__ = [
    "BOOK_PROFILE",
    "ProfileInputs",
    "ProfileSet",
    "StrategyLegs",
    "build_profiles",
    "profile_markdown",
    "profile_rows",
    "summary_rows",
]

BOOK_PROFILE = ALL
"""``profile`` of the whole book beta-weighted to SPX."""
SPX = "SPX"


@dataclass(frozen=True)
class StrategyLegs:
    """An open strategy: who holds it, its type and its units (qty x multiplier) per
    instrument key."""

    broker: str
    account_id: str
    strategy_id: str
    strategy_type: str
    underlying: str
    units: Mapping[str, float]


@dataclass(frozen=True)
class ProfileInputs:
    """The book and how it moves (per factor of ``book.factors``)."""

    book: Book
    contract_keys: Sequence[str]
    beta: Float64Array
    """Simple-return beta to SPX per factor (0 for volatility-index underlyings)."""
    is_vol_factor: Float64Array | Sequence[bool]
    spx: float
    """SPX level today (the beta-weighted axis)."""
    vix: float
    """VIX today: the SPX ATM vol of the beta-weighted book's expected move."""
    session_horizons: Sequence[Horizon]
    """T+0 and the T+n session horizons."""
    expiry_label: Callable[[float], str]
    """Label of an expiry horizon from its decay in years ("exp 2018-03-16")."""
    moves: Float64Array
    revalue_kw: Mapping[str, Any]
    """``skew_slope`` (per factor), ``skew_rule``, ``min_vol``, American pricer: the grid's."""
    vol_shift_points: float = 0.0
    max_expiries: int = 4
    strategies: Sequence[StrategyLegs] = ()


@dataclass(frozen=True)
class ProfileCurves:
    """One profile: its driver, the curves and a summary per stored (group, horizon)."""

    profile: str
    driver: str
    spot: float
    curves: Curves
    group_keys: tuple[tuple[str, str, str, str | None], ...]
    """(broker, account_id, strategy_id, strategy_type) per group of ``curves``."""
    stored: tuple[tuple[int, int], ...]
    """(group, horizon) pairs stored (every horizon for the totals, two for a strategy)."""
    summaries: dict[tuple[int, int], CurveSummary]
    atm_vol: float | None
    vol_shift_points: float


@dataclass(frozen=True)
class ProfileSet:
    profiles: list[ProfileCurves] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def book(self) -> ProfileCurves | None:
        return next((p for p in self.profiles if p.profile == BOOK_PROFILE), None)


def default_moves(range_pct: float, points: int, grid_shocks_pct: Sequence[float]) -> Float64Array:
    """The price axis: ``points`` from -range to +range % plus the shock grid's spot shocks."""
    r = range_pct / 100.0
    return spot_moves(-r, r, points, include=[s / 100.0 for s in grid_shocks_pct])


def _horizons(
    inputs: ProfileInputs, decays: Sequence[float], extra: Sequence[float] = ()
) -> list[Horizon]:
    out = list(inputs.session_horizons)
    seen = {h.decay for h in out}
    chosen = sorted(set(list(decays)[: inputs.max_expiries]) | set(extra))
    for d in chosen:
        if d not in seen:
            out.append(Horizon(inputs.expiry_label(d), d))
            seen.add(d)
    return out


def _summaries(
    book: Book, curves: Curves, stored: Sequence[tuple[int, int]], kw: dict[str, Any]
) -> dict[tuple[int, int], CurveSummary]:
    """Summaries of the stored curves, every breakeven of the profile refined together (one
    revaluation of ``book`` per Brent iteration for all its groups and horizons)."""
    groups = np.array([g for g, _ in stored], dtype=np.intp)
    horizons = [curves.horizons[h] for _, h in stored]

    def refine(moves: Float64Array, which: IntArray) -> Float64Array:
        pnl = pnl_at_pairs(book, moves, [horizons[int(k)] for k in which], **kw)
        out: Float64Array = pnl[np.arange(which.size), groups[which]]
        return out

    pnl = (
        np.stack([curves.curve(h, g) for g, h in stored])
        if stored
        else np.zeros((0, len(curves.moves)))
    )
    return dict(zip(stored, summarize_curves(curves.moves, pnl, refine), strict=True))


def _underlying_profile(inputs: ProfileInputs, f: int, kw_base: dict[str, Any]) -> ProfileCurves:
    book = inputs.book
    c = book.contracts
    idx = np.flatnonzero(c.factor == f)
    name = book.factors[f]
    keys = [inputs.contract_keys[int(i)] for i in idx]
    total = book.units[idx].sum(axis=1)
    cols = [total]
    gkeys: list[tuple[str, str, str, str | None]] = [(ALL, ALL, ALL, None)]
    fronts: list[float] = []
    decays = expiry_decays(c, f)
    for s in inputs.strategies:
        if s.underlying.upper() != name.upper():
            continue
        missing = [k for k in s.units if k not in keys]
        if missing:
            logger.warning(
                "strategy=%s legs=%s not in the session's book: skipped", s.strategy_id, missing
            )
            continue
        cols.append(np.array([s.units.get(k, 0.0) for k in keys]))
        gkeys.append((s.broker, s.account_id, s.strategy_id, s.strategy_type))
        t = [
            float(c.T[i])
            for i, k in zip(idx, keys, strict=True)
            if k in s.units and c.is_option[i] and c.T[i] > 0
        ]
        front = min(t) if t else None
        fronts.append(next((d for d in decays if front is not None and d >= front), math.nan))
    sb = sub_book(
        book, idx, np.stack(cols, axis=1), tuple("|".join(str(x) for x in k[:3]) for k in gkeys)
    )
    volf = bool(np.asarray(inputs.is_vol_factor)[f])
    d_atm = 0.0 if volf else inputs.vol_shift_points / 100.0
    priced = {**kw_base, "skew_slope": [float(np.asarray(kw_base["skew_slope"])[f])]}
    # today's values priced once for the curves and every Brent iteration of the summaries
    kw = {**priced, "today": today_values(sb, **priced), "spot_beta": [1.0], "d_atm": d_atm}
    horizons = _horizons(inputs, decays, [d for d in fronts if math.isfinite(d)])
    curves = risk_profile(sb, inputs.moves, horizons, **kw)
    stored = [(0, h) for h in range(len(horizons))]
    for g, d in enumerate(fronts, start=1):
        stored.append((g, 0))
        if math.isfinite(d):
            stored.append((g, next(i for i, h in enumerate(horizons) if h.decay == d)))
    front_spot = float(c.spot[idx[np.argmin(np.where(c.is_option[idx], c.T[idx], np.inf))]])
    return ProfileCurves(
        name,
        name,
        front_spot,
        curves,
        tuple(gkeys),
        tuple(stored),
        _summaries(sb, curves, stored, kw),
        atm_vol(c, f),
        inputs.vol_shift_points,
    )


def book_profile(inputs: ProfileInputs, kw_base: dict[str, Any]) -> ProfileCurves:
    """The whole book beta-weighted to SPX (one group)."""
    book = inputs.book
    volf = np.asarray(inputs.is_vol_factor, dtype=bool)
    units = book.units.sum(axis=1, keepdims=True)
    whole = Book(book.contracts, units, (ALL,), book.factors)
    pts = inputs.vol_shift_points
    # the vol column as the shock grid builds it: a volatility-index underlying moves to
    # VIX + points, the others take the points as their ATM vol change
    extra = np.where(volf, math.log(max(inputs.vix + pts, 1.0) / inputs.vix), 0.0)
    kw = {
        **kw_base,
        "today": today_values(whole, **kw_base),
        "spot_beta": np.where(volf, 0.0, inputs.beta),
        "d_atm": np.where(volf, 0.0, pts / 100.0),
        "extra_log_ret": extra,
    }
    horizons = _horizons(inputs, expiry_decays(book.contracts))
    curves = risk_profile(whole, inputs.moves, horizons, **kw)
    stored = [(0, h) for h in range(len(horizons))]
    return ProfileCurves(
        BOOK_PROFILE,
        SPX,
        inputs.spx,
        curves,
        ((ALL, ALL, ALL, None),),
        tuple(stored),
        _summaries(whole, curves, stored, kw),
        inputs.vix / 100.0,
        pts,
    )


def build_profiles(inputs: ProfileInputs) -> ProfileSet:
    """Every profile of the book: each underlying (with its strategies), then the book
    beta-weighted to SPX."""
    kw_base = dict(inputs.revalue_kw)
    out = ProfileSet()
    for f in range(inputs.book.n_factors):
        out.profiles.append(_underlying_profile(inputs, f, kw_base))
    out.profiles.append(book_profile(inputs, kw_base))
    return out


# ------------------------------------------------------------------------ rows


def profile_rows(day: date, profiles: ProfileSet) -> list[dict[str, Any]]:
    """Rows of ``risk_profile``: every stored curve, point by point."""
    rows: list[dict[str, Any]] = []
    for p in profiles.profiles:
        prices = p.spot * (1.0 + p.curves.moves)
        for g, h in p.stored:
            broker, account, sid, _ = p.group_keys[g]
            hz = p.curves.horizons[h]
            y = p.curves.curve(h, g)
            rows.extend(
                {
                    "session_date": day,
                    "profile": p.profile,
                    "broker": broker,
                    "account_id": account,
                    "strategy_id": sid,
                    "horizon": hz.label,
                    "point": i,
                    "horizon_days": hz.days,
                    "spot_move": float(m),
                    "price": float(px),
                    "pnl": float(v),
                }
                for i, (m, px, v) in enumerate(zip(p.curves.moves, prices, y, strict=True))
            )
    return rows


def summary_rows(day: date, profiles: ProfileSet) -> list[dict[str, Any]]:
    """Rows of ``risk_profile_summary``: breakevens, max profit/loss and expected move."""
    rows = []
    for p in profiles.profiles:
        for (g, h), s in p.summaries.items():
            broker, account, sid, stype = p.group_keys[g]
            hz = p.curves.horizons[h]
            em = expected_move(p.spot, p.atm_vol, hz.decay) if p.atm_vol and hz.decay > 0 else None
            rows.append(
                {
                    "session_date": day,
                    "profile": p.profile,
                    "broker": broker,
                    "account_id": account,
                    "strategy_id": sid,
                    "horizon": hz.label,
                    "strategy_type": stype,
                    "driver": p.driver,
                    "spot": p.spot,
                    "horizon_days": hz.days,
                    "vol_shift_points": p.vol_shift_points,
                    "atm_vol": p.atm_vol,
                    "expected_move": em,
                    "max_profit": s.max_profit,
                    "max_profit_price": p.spot * (1 + s.max_profit_move),
                    "max_loss": s.max_loss,
                    "max_loss_price": p.spot * (1 + s.max_loss_move),
                    "breakevens": [round(p.spot * (1 + b), 6) for b in s.breakevens],
                }
            )
    return rows


def _money(x: float) -> str:
    return f"{x:,.0f}"


def profile_markdown(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The totals (strategy '*') of every profile as a markdown table."""
    lines = [
        "| profile | horizon | driver | max loss ($) | at | max profit ($) | at | breakevens | "
        "expected move (±) |",
        "|---|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in summaries:
        if r["strategy_id"] != ALL:
            continue
        be = ", ".join(f"{b:,.2f}" for b in r["breakevens"]) or "none"
        em = "" if r["expected_move"] is None else f"{r['expected_move']:,.2f}"
        lines.append(
            f"| {'book (beta-weighted)' if r['profile'] == ALL else r['profile']} | {r['horizon']} | "
            f"{r['driver']} {r['spot']:,.2f} | {_money(r['max_loss'])} | {r['max_loss_price']:,.2f} | "
            f"{_money(r['max_profit'])} | {r['max_profit_price']:,.2f} | {be} | {em} |"
        )
    return "\n".join(lines)
