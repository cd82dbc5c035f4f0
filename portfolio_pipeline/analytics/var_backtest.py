"""VaR backtest rows: every stored 1-day VaR model against the next session's book P&L.

Models
------
* ``risk_metrics`` (book rows ``'*'/'*'``): ``var_<pct>_<method>`` of each window, as
  ``<method>_<window>`` (``historical_full``, ``garch_t_full``, ``parametric_rolling_63``...),
  in dollars (``value_usd``: the VaR fraction times the session's NLV).
* ``monte_carlo_var`` (portfolio row ``'*'/'*'/'*'``, 1-trading-day horizon):
  ``monte_carlo_1d``.

The book P&L of session ``t`` is ``portfolio_returns.pnl`` (NLV change net of external
flows).  A row of ``var_exceedances`` has ``session_date = t`` (the session whose loss is
tested), ``var_session_date`` = the previous session (whose close VaR is tested) and
``exceeded = -pnl_usd > var_usd``.  ``var_backtest`` summarises the trailing
:data:`WINDOW` rows per model and level with :mod:`portfolio_pipeline.quant.backtest`.
Reader: :func:`portfolio_pipeline.storage.var_backtest.read_var_exceedances` (e.g. to flag a
session in a report).
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import pandas as pd

from portfolio_pipeline.domain.numbers import finite_or_none
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.quant.backtest import backtest

__all__ = ["WINDOW", "exceedance_rows", "summary_rows", "var_forecasts"]

WINDOW = 250
"""Trailing exceedance rows per backtest (Basel's 250 trading days)."""

ALL = AGGREGATE
_VAR_METRIC = re.compile(r"^var_(\d+)_(.+)$")


def var_forecasts(risk: pd.DataFrame, monte_carlo: pd.DataFrame) -> list[tuple[str, float, float]]:
    """(model, level, VaR $) of one session from its ``risk_metrics`` book rows and its
    ``monte_carlo_var`` rows (other scopes and horizons are ignored)."""
    out: list[tuple[str, float, float]] = []
    if not risk.empty:
        book = risk[(risk["broker"] == ALL) & (risk["account_id"] == ALL)]
        for r in book.to_dict("records"):
            m = _VAR_METRIC.match(str(r["metric"]))
            usd = finite_or_none(r["value_usd"])
            if m is None or usd is None:
                continue
            out.append((f"{m.group(2)}_{r['window']}", int(m.group(1)) / 100.0, usd))
    if not monte_carlo.empty:
        total = monte_carlo[(monte_carlo["broker"] == ALL) & (monte_carlo["account_id"] == ALL)
                            & (monte_carlo["group_key"] == ALL) & (monte_carlo["horizon_days"] == 1)]
        for r in total.to_dict("records"):
            for pct in (95, 99):
                usd = finite_or_none(r[f"var_{pct}"])
                if usd is not None:
                    out.append(("monte_carlo_1d", pct / 100.0, usd))
    return sorted(out)


def exceedance_rows(
    session: date, var_session: date, risk: pd.DataFrame, monte_carlo: pd.DataFrame,
    returns: pd.DataFrame,
) -> list[dict[str, Any]]:
    """``var_exceedances`` rows of ``session``: the VaR forecasts of ``var_session`` (its
    ``risk_metrics`` and ``monte_carlo_var`` rows) against ``session``'s book P&L (its
    ``portfolio_returns`` rows).  None when the P&L is unknown (no previous NLV)."""
    book = returns[(returns["broker"] == ALL) & (returns["account_id"] == ALL)] if not returns.empty else returns
    if book.empty or finite_or_none(book.iloc[0]["prev_nlv"]) is None:
        return []
    pnl = finite_or_none(book.iloc[0]["pnl"])
    if pnl is None:
        return []
    return [{"session_date": session, "model": model, "level": level, "var_session_date": var_session,
             "var_usd": var, "pnl_usd": pnl, "exceeded": bool(-pnl > var)}
            for model, level, var in var_forecasts(risk, monte_carlo)]


def summary_rows(session: date, history: pd.DataFrame, window: int = WINDOW) -> list[dict[str, Any]]:
    """``var_backtest`` rows of ``session`` from ``var_exceedances`` rows up to it: per model
    and level, the trailing ``window`` rows (oldest first)."""
    if history.empty:
        return []
    upto = history[history["session_date"] <= session].sort_values("session_date")
    rows: list[dict[str, Any]] = []
    for (model, level), grp in upto.groupby(["model", "level"], sort=True):
        hits = grp["exceeded"].astype(bool).to_numpy()[-window:]
        res = backtest(hits, float(level))
        rows.append({
            "session_date": session, "model": str(model), "level": float(level),
            "observations": res.observations, "exceedances": res.exceedances, "expected": res.expected,
            "kupiec_lr": finite_or_none(res.kupiec_lr), "kupiec_p": finite_or_none(res.kupiec_p),
            "christoffersen_lr": finite_or_none(res.christoffersen_lr),
            "christoffersen_p": finite_or_none(res.christoffersen_p), "zone": res.zone,
        })
    return rows
