"""Beta of each underlying to the reference index, from daily closes.

``beta = cov(r_u, r_ref) / var(r_ref)`` (OLS slope with intercept) over the last ``window``
sessions of daily log returns up to and including the session, on sessions where both
returns exist.  Closes come from ``market_snapshot`` (index/stock quotes the book
recorded), completed where missing by the shipped market history (SPX, the NDX proxy,
VIX).  Overrides in ``config/pricing.yaml`` win; too little history gives the fallback.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import numpy as np
import pandas as pd

from portfolio_pipeline.config.pricing import BetaSettings

HISTORY_ROOTS: dict[str, str] = {"SPX": "spx_close", "NDX": "ndx_proxy_close", "VIX": "vix"}
"""Underlying root -> MarketHistory accessor used to complete stored closes."""


def stored_closes(market: pd.DataFrame) -> pd.DataFrame:
    """Index/stock closes from ``market_snapshot`` rows: sessions x underlying roots."""
    if market.empty:
        return pd.DataFrame(dtype="float64")
    spot = market[market["sec_type"].isin(["IND", "STK"])]
    frame = spot.pivot_table(index="session_date", columns="underlying", values="mark", aggfunc="last")
    frame.index = pd.DatetimeIndex(pd.to_datetime(frame.index), name="session")
    return frame.astype("float64")


def history_closes(history: object | None) -> pd.DataFrame:
    """Closes of :data:`HISTORY_ROOTS` from a ``MarketHistory`` (empty without one)."""
    if history is None:
        return pd.DataFrame(dtype="float64")
    series = {root: getattr(history, accessor)() for root, accessor in HISTORY_ROOTS.items()}
    frame = pd.concat(series, axis=1)
    frame.index = pd.DatetimeIndex(frame.index, name="session")
    return frame.astype("float64")


def combine_closes(stored: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """Stored closes, completed by history where a (session, root) is missing."""
    if stored.empty:
        return history.sort_index()
    if history.empty:
        return stored.sort_index()
    stored = stored.copy()
    stored.index = stored.index.astype(history.index.dtype)
    return stored.combine_first(history).sort_index()


def beta_window(closes: pd.DataFrame, session: date, window: int, reference: str = "SPX") -> str:
    """The return window :func:`estimate_betas` uses for ``session`` (for metadata)."""
    ref = reference.upper()
    if closes.empty or ref not in closes.columns:
        return f"no {ref} closes"
    upto = closes.loc[closes.index <= pd.Timestamp(session), ref].dropna()
    if len(upto) < 2:
        return f"no {ref} returns up to {session}"
    days = upto.index[-(window + 1):]
    return f"{days[1].date()}..{days[-1].date()} ({len(days) - 1} {ref} returns)"


def estimate_betas(
    closes: pd.DataFrame, session: date, roots: Iterable[str], settings: BetaSettings
) -> dict[str, float]:
    """Beta per root for ``session`` (override > estimate > fallback).

    Parameters
    ----------
    closes
        Sessions x roots closes (see :func:`combine_closes`), any datetime unit.
    session
        Only closes up to and including this session are used.
    roots
        Underlying roots to estimate (upper case).
    settings
        Reference root, window, minimum observations, fallback and overrides.
    """
    out: dict[str, float] = {}
    ref = settings.reference.upper()
    upto = closes[closes.index <= pd.Timestamp(session)] if not closes.empty else closes
    have_ref = ref in upto.columns
    logret = np.log(upto).diff().iloc[1:].tail(settings.window) if have_ref else upto
    for root in sorted({r.upper() for r in roots}):
        override = settings.overrides.get(root)
        if override is not None:
            out[root] = float(override)
            continue
        if root == ref:
            out[root] = 1.0
            continue
        if not have_ref or root not in logret.columns:
            out[root] = settings.fallback
            continue
        pair = logret[[root, ref]].dropna().to_numpy(dtype=np.float64)
        if pair.shape[0] < settings.min_observations:
            out[root] = settings.fallback
            continue
        x = pair[:, 1] - pair[:, 1].mean()
        y = pair[:, 0] - pair[:, 0].mean()
        var = float(x @ x)
        out[root] = float(x @ y / var) if var > 0 else settings.fallback
    return out


def reference_close(closes: pd.DataFrame, reference: str, session: date) -> float:
    """The reference index's close on ``session`` (NaN when it has none): the price that
    converts beta-weighted share deltas into reference-index units."""
    root = reference.upper()
    if root not in closes.columns:
        return float("nan")
    return float(closes[root].get(pd.Timestamp(session), np.nan))
