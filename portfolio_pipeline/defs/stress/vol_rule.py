"""Historical replay's vol rule and its replay-vs-actual comparison (I/O and pandas here;
the rule itself is :mod:`portfolio_pipeline.quant.vol_beta`).

* :func:`fit_rule`: the vol-beta rule fitted on the stored surface history to a session:
  every held option's implied vol (``position_greeks.vol``) at consecutive stored closes,
  its strike (``positions_snapshot``), the spot and time to expiry of the first close, and
  the VIX close of both (``market_snapshot``).  ``historical.vol_rule: full_vix`` gives
  beta 1 everywhere (every option takes the whole VIX change).
* :func:`contract_betas`: the rule's beta of each contract of a session's book.
* :func:`step_scenario`: one replayed day (close ``t`` to close ``t+1`` of a window)
  applied to today's book, to compare with the P&L the book actually had that day.
"""

from __future__ import annotations

import itertools
from datetime import date

import numpy as np
import pandas as pd
from sqlalchemy import Connection, and_, select

from portfolio_pipeline.defs.stress.book import ReplayPath, StressBook
from portfolio_pipeline.domain.symbols import VIX
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline.quant.scenario_set import ScenarioSet
from portfolio_pipeline.quant.vol_beta import VolBetaRule, fit_vol_beta
from portfolio_pipeline.storage.tables import market_snapshot, position_greeks, positions_snapshot

__all__ = ["SurfaceHistory", "contract_betas", "fit_rule", "step_scenario", "surface_changes"]


class SurfaceHistory:
    """The surface changes (:func:`surface_changes`) of every session up to ``last``, read and
    paired once: a run's sessions each take the pairs whose later close is on or before
    them, instead of reading and pairing the whole history again per session (a cost that
    grows with the history, quadratic over a backfill).  Rows are in a fixed order (session,
    position), so a session's changes are the same alone or within a run."""

    def __init__(self, conn: Connection, last: date, cfg: StressScenariosFile) -> None:
        self.last = last
        self._pairs = _surface_pairs(conn, last, cfg)

    def changes(self, end: date) -> pd.DataFrame:
        """``d_vol``, ``d_index``, ``dte``, ``log_moneyness`` of the pairs of closes up to ``end``."""
        if end > self.last:
            raise ValueError(f"surface history read up to {self.last}, not up to {end}")
        pairs = self._pairs
        if not pairs.empty:
            pairs = pairs[pairs["next"] <= end]
        return pairs[_CHANGE_COLUMNS].reset_index(drop=True)


_CHANGE_COLUMNS = ["d_vol", "d_index", "dte", "log_moneyness"]


def _surface_pairs(conn: Connection, end: date, cfg: StressScenariosFile) -> pd.DataFrame:
    """Every held option's consecutive stored closes up to ``end``: the change columns and
    the later close's session (``next``), ordered by session and position."""
    g, p, m = position_greeks, positions_snapshot, market_snapshot
    rows = conn.execute(
        select(g.c.session_date, g.c.position_key, g.c.underlying, g.c.spot, g.c.time_to_expiry,
               g.c.vol, p.c.strike)
        .join(p, and_(p.c.session_date == g.c.session_date, p.c.broker == g.c.broker,
                      p.c.account_id == g.c.account_id, p.c.position_key == g.c.position_key))
        .where(g.c.session_date <= end, g.c.vol.is_not(None), g.c.time_to_expiry.is_not(None),
               p.c.strike.is_not(None))
        .order_by(g.c.session_date, g.c.position_key, g.c.broker, g.c.account_id)
    ).all()
    cols = ["session_date", "position_key", "underlying", "spot", "T", "vol", "strike"]
    frame = pd.DataFrame([tuple(r) for r in rows], columns=cols).drop_duplicates(
        ["session_date", "position_key"])
    vix = pd.DataFrame(
        [tuple(r) for r in conn.execute(
            select(m.c.session_date, m.c.mark).where(m.c.underlying == VIX, m.c.sec_type == "IND",
                                                     m.c.session_date <= end)
            .order_by(m.c.session_date))],
        columns=["session_date", "vix"]).drop_duplicates("session_date")
    out_cols = [*_CHANGE_COLUMNS, "next"]
    if frame.empty or vix.empty:
        return pd.DataFrame(columns=out_cols)
    days = sorted(vix["session_date"])
    nxt = dict(itertools.pairwise(days))
    vix_by = dict(zip(vix["session_date"], vix["vix"].astype("float64"), strict=True))
    frame["next"] = frame["session_date"].map(nxt)
    later = frame[["session_date", "position_key", "vol"]].rename(
        columns={"session_date": "next", "vol": "vol_next"})
    pairs = frame.merge(later, on=["next", "position_key"], how="inner")
    if pairs.empty:
        return pd.DataFrame(columns=out_cols)
    beta_u = pairs["underlying"].map(lambda u: cfg.underlying(str(u)).vix_beta).astype("float64")
    d_vix = pairs["next"].map(vix_by).astype("float64") - pairs["session_date"].map(vix_by).astype("float64")
    return pd.DataFrame({
        "d_vol": pairs["vol_next"].astype("float64") - pairs["vol"].astype("float64"),
        "d_index": beta_u * d_vix / 100.0,
        "dte": pairs["T"].astype("float64") * 365.0,
        "log_moneyness": np.log(pairs["strike"].astype("float64") / pairs["spot"].astype("float64")),
        "next": pairs["next"],
    })


def surface_changes(conn: Connection, end: date, cfg: StressScenariosFile) -> pd.DataFrame:
    """One row per held option and pair of consecutive stored closes up to ``end``:
    ``d_vol``, ``d_index`` (``vix_beta x dVIX / 100``), ``dte`` and ``log_moneyness``."""
    return SurfaceHistory(conn, end, cfg).changes(end)


def fit_rule(conn: Connection, end: date, cfg: StressScenariosFile,
             history: SurfaceHistory | None = None) -> VolBetaRule:
    """The configured rule, fitted on the surface history to ``end`` (no look-ahead);
    ``history`` (read up to ``end`` or later) instead of reading it again."""
    if cfg.historical.vol_rule == "full_vix":
        return VolBetaRule.unit()
    ch = surface_changes(conn, end, cfg) if history is None else history.changes(end)
    return fit_vol_beta(ch["d_vol"], ch["d_index"], ch["dte"], ch["log_moneyness"],
                        min_observations=cfg.historical.vol_beta_min_observations)


def contract_betas(sb: StressBook, rule: VolBetaRule) -> np.ndarray:
    """beta(expiry, moneyness) of every contract of the book (1 for linear contracts)."""
    c = sb.book.contracts
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(c.is_option, np.log(np.where(c.is_option, c.strike, 1.0) / c.spot), 0.0)
    beta = rule.beta(c.T * 365.0, m)
    return np.where(c.is_option, beta, 1.0)


def step_scenario(path: ReplayPath, sb: StressBook, t: int) -> ScenarioSet:
    """The replayed day from close ``t`` to close ``t + 1`` of ``path`` on today's book."""
    one = ReplayPath(path.name, path.description, path.dates[t:t + 2], path.spx[t:t + 2],
                     path.vix[t:t + 2], path.spx_source[t:t + 2], path.vix_source[t:t + 2])
    sc = one.scenarios(sb)
    return sc.take(1, 2)
