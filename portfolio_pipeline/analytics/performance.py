"""Returns rows from account snapshots and cash flows; risk-metric rows from return series.

Returns (see :mod:`portfolio_pipeline.quant.returns` for the formula)
---------------------------------------------------------------------
* A cash flow belongs to the first session whose close is at or after its timestamp
  (a Saturday deposit, or one booked after the close, counts at the next close).
* External flows are ``deposit``, ``withdrawal`` and ``transfer``; every other kind
  (dividend, interest, fee, tax, other) is performance and stays in P&L (``income``
  only reports it).
* Inception day of an account (no NLV at the previous session): P&L and return 0.
* Consolidated (``'*'``): accounts that appear (disappear) count as an external flow of
  their NLV (minus their previous NLV), so the consolidated return is the NLV-weighted
  return of the accounts present on both days.

Risk metrics
------------
For every scope, metrics use the daily returns after inception, up to and including
the session: the full history (``window="full"``) and the trailing
``rolling_window`` sessions (``"rolling_63"``).  VaR/CVaR at each level by the
historical, parametric (Gaussian) and Cornish-Fisher methods, plus GARCH(1,1)-t on the
full history (>= 250 returns).  ``value_usd = value * NLV`` for VaR, CVaR and drawdown.

GARCH in backfills: parameters are refitted only when the number of returns is a
multiple of ``garch_refit_sessions`` (on the returns to that point, no look-ahead); on
other days the last fit filters the conditional variance forward through the newer
returns with fixed parameters (:func:`garch_state_at`).  The numbers therefore do not
depend on whether a session is computed alone or inside a backfill, and a year of
backfill costs ~12 fits instead of ~250.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

from portfolio_pipeline.config.pricing import RiskSettings
from portfolio_pipeline.domain.activity import CashFlow
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.quant import returns as qret
from portfolio_pipeline.quant import risk_metrics as rm
from portfolio_pipeline.quant.vol import MIN_GARCH_OBSERVATIONS, GarchFit, GarchFitError, fit_garch
from portfolio_pipeline.storage.frames import AccountsFrame, ReturnsFrame

ALL = AGGREGATE


def flow_sessions(
    flows: Sequence[CashFlow], session_after: Callable[[datetime], date]
) -> pd.DataFrame:
    """Cash flows as a frame (broker, account_id, session_date, external, amount)."""
    rows = [
        {
            "broker": f.broker,
            "account_id": f.account_id,
            "session_date": session_after(f.ts),
            "external": f.is_external,
            "amount": float(f.amount),
        }
        for f in flows
    ]
    return pd.DataFrame(rows, columns=["broker", "account_id", "session_date", "external", "amount"])


def return_rows(
    session: date,
    accounts: AccountsFrame,
    previous: AccountsFrame,
    flows: pd.DataFrame,
    previous_returns: ReturnsFrame,
) -> list[dict[str, Any]]:
    """``portfolio_returns`` rows of one session.

    Parameters
    ----------
    accounts, previous
        ``account_snapshot`` rows of the session and of the previous session.
    flows
        :func:`flow_sessions` of the session (other sessions are ignored).
    previous_returns
        ``portfolio_returns`` rows of the previous session (growth index carry-over).
    """
    today = flows[flows["session_date"] == session] if not flows.empty else flows
    prev_by = {(str(b), str(a)): float(n) for b, a, n in zip(previous.broker, previous.account_id, previous.nlv,
                                                               strict=True)}
    carry = {(str(b), str(a)): (float(g), float(h)) for b, a, g, h in zip(
        previous_returns.broker, previous_returns.account_id, previous_returns.growth_index,
        previous_returns.high_water_mark, strict=True)}
    rows: list[dict[str, Any]] = []
    tot = {"nlv": 0.0, "prev": 0.0, "flow": 0.0, "income": 0.0, "broker": 0.0}
    broker_complete = True
    for i in sorted(range(len(accounts)), key=lambda j: (accounts.broker[j], accounts.account_id[j])):
        key = (str(accounts.broker[i]), str(accounts.account_id[i]))
        mine = today[(today["broker"] == key[0]) & (today["account_id"] == key[1])] if not today.empty else today
        external = float(mine.loc[mine["external"], "amount"].sum()) if not mine.empty else 0.0
        income = float(mine.loc[~mine["external"], "amount"].sum()) if not mine.empty else 0.0
        nlv = float(accounts.nlv[i])
        prev_nlv = prev_by.get(key)
        bpnl = float(accounts.broker_daily_pnl[i])  # NaN: the broker reported none
        rows.append(_row(session, key, nlv, prev_nlv, external, income, carry.get(key), bpnl))
        tot["nlv"] += nlv
        tot["income"] += income
        if prev_nlv is None:
            tot["flow"] += nlv  # a new account's NLV is money in
        else:
            tot["prev"] += prev_nlv
            tot["flow"] += external
        if math.isnan(bpnl):
            broker_complete = False
        else:
            tot["broker"] += bpnl
    if rows:
        # an account that disappeared: its previous NLV counts in the base and left as a flow
        gone = sum(v for k, v in prev_by.items() if not any((r["broker"], r["account_id"]) == k for r in rows))
        tot["flow"] -= gone
        tot["prev"] += gone
        prev_total = tot["prev"] if tot["prev"] > 0 else None
        rows.append(_row(session, (ALL, ALL), tot["nlv"], prev_total, tot["flow"] if prev_total else 0.0,
                         tot["income"], carry.get((ALL, ALL)),
                         tot["broker"] if broker_complete else None))
    return rows


def _row(
    session: date,
    key: tuple[str, str],
    nlv: float,
    prev_nlv: float | None,
    external: float,
    income: float,
    carry: tuple[float, float] | None,
    broker_daily_pnl: float | None,
) -> dict[str, Any]:
    """One portfolio_returns row; ``carry`` is the previous (growth index, high-water mark)."""
    if prev_nlv is None:
        pnl, twr = 0.0, 0.0
    else:
        pnl = float(qret.daily_pnl([nlv], [external], prev_nlv=prev_nlv)[0])
        twr = float(qret.time_weighted_returns([nlv], [external], prev_nlv=prev_nlv)[0])
    growth_prev, hwm_prev = carry if carry is not None else (1.0, 1.0)
    growth = float(qret.growth_index([twr], start=growth_prev)[0])
    hwm = max(hwm_prev, growth)
    bpnl = broker_daily_pnl
    return {
        "session_date": session,
        "broker": key[0],
        "account_id": key[1],
        "nlv": nlv,
        "prev_nlv": prev_nlv,
        "external_flow": external,
        "income": income,
        "pnl": pnl,
        "twr": twr,
        "growth_index": growth,
        "high_water_mark": hwm,
        "drawdown": growth / hwm - 1.0,
        "broker_daily_pnl": None if bpnl is None or math.isnan(bpnl) else float(bpnl),
    }


# --------------------------------------------------------------------------- risk metrics


def garch_state_at(
    returns: np.ndarray, n: int, refit_every: int, cache: dict[int, GarchFit | None]
) -> GarchFit | None:
    """The GARCH(1,1)-t state after the first ``n`` returns (None: too few, or no fit).

    Fitted on ``returns[:m]`` with ``m`` the largest multiple of ``refit_every`` <= n
    (at least :data:`MIN_GARCH_OBSERVATIONS`), then filtered through ``returns[m:n]``.
    ``cache`` holds fits by ``m`` across the sessions of one run.
    """
    if n < MIN_GARCH_OBSERVATIONS:
        return None
    m = max((n // refit_every) * refit_every, MIN_GARCH_OBSERVATIONS)
    if m > n:
        m = n
    if m not in cache:
        try:
            cache[m] = fit_garch(returns[:m], dist="t")
        except (GarchFitError, ValueError):
            cache[m] = None
    fit = cache[m]
    if fit is None:
        return None
    return fit.roll_forward(returns[m:n])


_USD_PREFIXES = ("var_", "cvar_")
_USD_METRICS = frozenset({"max_drawdown", "current_drawdown"})


def is_money_metric(metric: str) -> bool:
    """True for return-like metrics (a fraction of NLV: VaR, CVaR, drawdown depth) whose
    ``value_usd`` is ``value * NLV``; durations, counts, flags and ratios get none."""
    return metric.startswith(_USD_PREFIXES) or metric in _USD_METRICS


def _metrics(x: np.ndarray, settings: RiskSettings) -> dict[str, float]:
    out: dict[str, float] = {}
    for level in settings.levels:
        pct = round(level * 100)
        for method in ("historical", "parametric", "cornish_fisher"):
            out[f"var_{pct}_{method}"] = rm.var(x, level, method)
            out[f"cvar_{pct}_{method}"] = rm.cvar(x, level, method)
    periods = settings.periods_per_year
    out["sharpe"] = rm.sharpe(x, periods=periods)
    out["sortino"] = rm.sortino(x, periods=periods)
    out["omega"] = rm.omega(x, periods=periods)
    out["calmar"] = rm.calmar(x, periods=periods)
    dd = rm.max_drawdown(x)
    out["max_drawdown"] = dd.max_drawdown
    out["max_drawdown_duration"] = float(dd.duration)
    out["max_drawdown_recovery_sessions"] = (
        float(dd.recovery - dd.trough) if dd.recovery is not None and dd.trough is not None else math.nan
    )
    out["max_drawdown_recovered"] = float(dd.recovery is not None) if dd.trough is not None else math.nan
    out["longest_drawdown_duration"] = float(dd.longest_duration)
    growth = qret.growth_index(x)
    out["current_drawdown"] = float(qret.drawdown(np.concatenate(([1.0], growth)))[-1])
    return out


def risk_metric_rows(
    sessions: Iterable[date],
    series: pd.DataFrame,
    settings: RiskSettings,
    key: tuple[str, str],
) -> list[dict[str, Any]]:
    """``risk_metrics`` rows of one scope for each of ``sessions``.

    Parameters
    ----------
    series
        ``portfolio_returns`` rows of the scope (session_date, twr, nlv, prev_nlv) up to
        the last session, any order.
    """
    frame = series.sort_values("session_date")
    frame = frame[frame["prev_nlv"].notna()]  # returns after inception only
    dates = list(frame["session_date"])
    r = frame["twr"].to_numpy(dtype=np.float64)
    nlv_by = dict(zip(series["session_date"], series["nlv"].astype("float64"), strict=True))
    window = settings.rolling_window
    wname = f"rolling_{window}"
    fits: dict[int, GarchFit | None] = {}
    rows: list[dict[str, Any]] = []
    for session in sessions:
        n = bisect_right(dates, session)
        nlv = float(nlv_by.get(session, math.nan))
        blocks: list[tuple[str, np.ndarray]] = [("full", r[:n])]
        if n >= window:
            blocks.append((wname, r[n - window:n]))
        for wn, x in blocks:
            if x.size < settings.min_observations:
                continue
            values = _metrics(x, settings)
            if wn == "full":
                fit = garch_state_at(r, n, settings.garch_refit_sessions, fits)
                for level in settings.levels:
                    pct = round(level * 100)
                    values[f"var_{pct}_garch_t"] = rm.garch_var(None, level, fit=fit) if fit else math.nan
                    values[f"cvar_{pct}_garch_t"] = rm.garch_cvar(None, level, fit=fit) if fit else math.nan
            for metric, value in sorted(values.items()):
                usd = value * nlv if is_money_metric(metric) and math.isfinite(value) else math.nan
                rows.append({
                    "session_date": session, "broker": key[0], "account_id": key[1],
                    "window": wn, "metric": metric,
                    "value": value if math.isfinite(value) else math.nan,
                    "value_usd": usd, "observations": int(x.size),
                })
    return rows


def risk_metrics_by_session(
    sessions: Sequence[date], history: ReturnsFrame, settings: RiskSettings
) -> dict[date, list[dict[str, Any]]]:
    """``risk_metrics`` rows of every scope (broker, account) for each of ``sessions``.

    ``history`` holds the ``portfolio_returns`` rows up to the last session; a scope
    gets rows on the sessions it has a return for."""
    out: dict[date, list[dict[str, Any]]] = {day: [] for day in sessions}
    if history.empty:
        return out
    for (broker, account), series in history.frame.groupby(["broker", "account_id"], sort=True):
        have = set(series["session_date"])
        for row in risk_metric_rows([d for d in sessions if d in have], series, settings,
                                    (str(broker), str(account))):
            out[row["session_date"]].append(row)
    return out
