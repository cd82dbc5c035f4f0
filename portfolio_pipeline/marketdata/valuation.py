"""Valuation at the mark, and the model vs market comparison (pure; no I/O).

Rule (one place, used by the live engine and the EOD checks):

* a **good quote** is two-sided and not crossed (``0 < bid <= ask``, finite): the option
  is valued at the **mid** ``(bid + ask) / 2``;
* else, a finite ``last`` inside the quoted spread (``bid <= last <= ask`` with
  ``ask > 0``; a one-sided market with ``bid = 0``) is used;
* else the option is valued at the **model price** and flagged (``source = "model"``).

:func:`mark_problems` compares each option's model price with its market: a flag when
``|model - mark| > max(price_tolerance * mark, min_price_gap)`` or when the model vol
differs from the vol implied from the mark by more than ``iv_points``; and a flag for
each crossed quote or quote older than ``stale_minutes`` before the session close.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np

from portfolio_pipeline.domain.numbers import finite_or_none
from portfolio_pipeline.quant import pricing

MarkSource = Literal["mid", "last", "model"]


def market_mark(bid: Any, ask: Any, last: Any = None) -> tuple[float | None, MarkSource]:
    """The market value per share of a quote, and where it came from (module docstring).

    Returns ``(None, "model")`` when the quote is not good enough: value at model.
    """
    b, a, la = finite_or_none(bid), finite_or_none(ask), finite_or_none(last)
    if b is not None and a is not None and 0.0 < b <= a:
        return (b + a) / 2.0, "mid"
    if la is not None and la > 0 and a is not None and a > 0 and (b or 0.0) <= la <= a:
        return la, "last"
    return None, "model"


@dataclass(frozen=True, slots=True)
class MarkTolerance:
    price_tolerance: float = 0.10
    min_price_gap: float = 0.05
    iv_points: float = 5.0
    stale_minutes: float = 30.0


def mark_problems(
    greeks: Sequence[Mapping[str, Any]],
    quotes: Sequence[Mapping[str, Any]],
    close_at: datetime,
    tol: MarkTolerance,
) -> list[str]:
    """Problems of one session: model vs mark gaps, stale and crossed quotes.

    ``greeks``: ``position_greeks`` rows (``position_key``, ``sec_type``, ``mark``,
    ``model_price``, ``vol``, ``spot``, ``time_to_expiry``, ``rate``, ``dividend_yield``,
    ``model``, ``broker``); ``quotes``: ``market_snapshot`` rows of the session
    (``source``, ``instrument_key``, ``bid``, ``ask``, ``last``, ``strike``, ``right``,
    ``as_of``).
    """
    by_key = {(q["source"], q["instrument_key"]): q for q in quotes}
    out: list[str] = []
    stale_before = close_at - timedelta(minutes=tol.stale_minutes)
    for g in greeks:
        if g.get("sec_type") not in ("OPT", "FOP"):
            continue
        key = g["position_key"]
        q = by_key.get((g.get("broker"), key))
        mark = finite_or_none(g.get("mark"))
        if q is not None:
            b, a = finite_or_none(q.get("bid")), finite_or_none(q.get("ask"))
            if b is not None and a is not None and b > a:
                out.append(f"{key}: crossed quote bid {b:g} > ask {a:g}")
            as_of = q.get("as_of")
            if isinstance(as_of, datetime) and as_of < stale_before:
                out.append(f"{key}: stale quote from {as_of.isoformat()} "
                           f"(> {tol.stale_minutes:g} min before the close)")
            market, _src = market_mark(q.get("bid"), q.get("ask"), q.get("last"))
            if market is not None:
                mark = market
        model_price = finite_or_none(g.get("model_price"))
        if mark is None or model_price is None or mark <= 0:
            continue
        gap = abs(model_price - mark)
        if gap > max(tol.price_tolerance * mark, tol.min_price_gap):
            out.append(f"{key}: model {model_price:.4g} vs mark {mark:.4g} ({gap / mark:+.0%} gap)")
        vol = finite_or_none(g.get("vol"))
        strike = finite_or_none(q.get("strike")) if q is not None else None
        right = q.get("right") if q is not None else None
        inputs = [finite_or_none(g.get(k)) for k in ("spot", "time_to_expiry", "rate", "dividend_yield")]
        if vol is None or strike is None or right not in ("C", "P") or any(x is None for x in inputs):
            continue
        s, t, r, dq = (float(x) for x in inputs)  # type: ignore[arg-type]
        implied = float(np.asarray(pricing.implied_vol(
            mark, right, s, strike, t, r, dq, g.get("model") or "bsm")).reshape(-1)[0])
        if math.isfinite(implied) and abs(implied - vol) * 100.0 > tol.iv_points:
            out.append(f"{key}: model vol {vol * 100:.1f} vs {implied * 100:.1f} implied from the mark "
                       f"({(vol - implied) * 100:+.1f} pts)")
    return out
