"""Daily market history shipped with the platform (demo broker, stress tests, scenarios).

Sources
-------
* S&P 500 index (SPX) open/close, 1999-01-04 .. 2018-12-31: ``arch.data.sp500``
  (Yahoo Finance history bundled with the ``arch`` package).
* Nasdaq Composite open/close, same span: ``arch.data.nasdaq``.
* Cboe VIX close, 2014-01-03 .. 2019-01-03: ``arch.data.vix`` (rows on exchange
  holidays carry no value and are dropped).
* Crisis anchors (2008, 2020): ``portfolio_pipeline/data/crisis_anchor_closes.csv``,
  published S&P 500 and VIX closes on a few key days (see the README beside it).

Derived, NOT published series (labelled as such everywhere they are used)
-------------------------------------------------------------------------
* **NDX proxy** (:meth:`MarketHistory.ndx_proxy_close`): the daily returns of the
  Nasdaq *Composite* compounded from a published Nasdaq-100 (NDX) close on one
  anchor day (:data:`NDX_ANCHOR_DATE`, :data:`NDX_ANCHOR_CLOSE`), so the level looks
  like NDX around the demo window.  It is a proxy: the Composite and the Nasdaq-100
  differ (the Composite has ~3,000 members and a lower beta), and the proxy drifts
  away from the real NDX the further a day is from the anchor.  It is never NDX data.
* **Model VIX3M** (:meth:`MarketHistory.vix3m_model`): a mean-reverting term structure
  ``VIX3M = LR + (VIX - LR) * f`` with long-run level ``LR`` (default 19) and
  reversion factor ``f`` (default 0.6, the share of today's VIX deviation that is
  still expected three months out).  It gives contango in calm markets
  (VIX 11 -> VIX3M 14.2) and backwardation in spikes (2018-02-05: VIX 37.32 -> 30.0).
  It is model-derived, not the published Cboe VIX3M.

Index convention
----------------
Every Series/DataFrame returned here is indexed by **tz-naive session dates at
midnight** (a ``pandas.DatetimeIndex`` named ``"session"``; the datetime unit is
whatever pandas gives, e.g. ``datetime64[us]`` under pandas 3 -- do not assume ns).
A session date is the America/New_York trading date of the XNYS calendar.  Values
are floats (index points).  Data is loaded once per :class:`MarketHistory` object;
there is no module-level cache.
"""

from __future__ import annotations

import logging
import math
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

NDX_ANCHOR_DATE: Final[date] = date(2017, 12, 29)
"""Anchor session of the NDX proxy (last session of 2017)."""
NDX_ANCHOR_CLOSE: Final[float] = 6396.42
"""Published Nasdaq-100 close on :data:`NDX_ANCHOR_DATE` (used only to set the level)."""
VIX3M_LONG_RUN: Final[float] = 19.0
"""Long-run VIX level of the model term structure (roughly the 1990-2018 VIX mean)."""
VIX3M_REVERSION: Final[float] = 0.6
"""Share of today's VIX deviation from the long run still present at three months."""
TRADING_DAYS: Final[int] = 252

CRISIS_CSV: Final[str] = "crisis_anchor_closes.csv"


def _session_index(frame: pd.DataFrame | pd.Series) -> pd.DatetimeIndex:
    idx = pd.DatetimeIndex(frame.index)
    if idx.tz is not None:
        idx = idx.tz_localize(None)
    out = idx.normalize()
    out.name = "session"
    return out


def _as_sessions(obj: pd.Series) -> pd.Series:
    out = obj.astype("float64").copy()
    out.index = _session_index(out)
    out = out[~out.index.duplicated(keep="last")].sort_index()
    return out


def realised_vol(close: pd.Series, window: int = 21) -> pd.Series:
    """Annualised close-to-close realised volatility over a rolling ``window`` of sessions.

    Parameters
    ----------
    close : pandas.Series
        Closes indexed by session.
    window : int, default 21
        Number of daily log returns in each estimate (21 ~ one month).

    Returns
    -------
    pandas.Series
        ``std(log returns, ddof=1) * sqrt(252)``; NaN until ``window`` returns exist.
    """
    rets = np.log(close.astype("float64")).diff()
    out: pd.Series = rets.rolling(window).std(ddof=1) * math.sqrt(TRADING_DAYS)
    return out


class MarketHistory:
    """The daily history frames the demo broker and the scenario code share.

    Parameters
    ----------
    vix3m_long_run, vix3m_reversion : float
        Parameters of the model VIX3M (see the module docstring).
    crisis_csv : pathlib.Path, optional
        Override of the packaged crisis-anchor CSV (tests).

    Notes
    -----
    All loading happens in the constructor (a few tens of milliseconds); accessors
    return copies, so callers may modify what they get.
    """

    def __init__(
        self,
        *,
        vix3m_long_run: float = VIX3M_LONG_RUN,
        vix3m_reversion: float = VIX3M_REVERSION,
        crisis_csv: Path | None = None,
    ) -> None:
        if not 0.0 < vix3m_reversion <= 1.0:
            raise ValueError(f"MarketHistory: vix3m_reversion must be in (0, 1], got {vix3m_reversion}")
        if not vix3m_long_run > 0:
            raise ValueError(f"MarketHistory: vix3m_long_run must be > 0, got {vix3m_long_run}")
        from arch.data import nasdaq, sp500, vix

        self._vix3m_long_run = float(vix3m_long_run)
        self._vix3m_reversion = float(vix3m_reversion)
        sp = sp500.load()
        nq = nasdaq.load()
        vx = vix.load()
        self._spx_close = _as_sessions(sp["Close"]).rename("spx_close")
        self._spx_open = _as_sessions(sp["Open"]).rename("spx_open")
        self._nasdaq_close = _as_sessions(nq["Close"]).rename("nasdaq_close")
        self._nasdaq_open = _as_sessions(nq["Open"]).rename("nasdaq_open")
        self._vix = _as_sessions(vx["vix"]).dropna().rename("vix")
        if (self._vix <= 0).any():
            raise ValueError("arch.data.vix: non-positive VIX values")
        self._crisis = self._load_crisis(crisis_csv)
        logger.info(
            "market history loaded spx=%s..%s vix=%s..%s",
            self._spx_close.index[0].date(), self._spx_close.index[-1].date(),
            self._vix.index[0].date(), self._vix.index[-1].date(),
        )

    @staticmethod
    def _load_crisis(path: Path | None) -> pd.DataFrame:
        if path is None:
            ref = resources.files("portfolio_pipeline") / "data" / CRISIS_CSV
            with ref.open("r", encoding="utf-8") as fh:
                frame = pd.read_csv(fh, comment="#")
        else:
            frame = pd.read_csv(path, comment="#")
        expected = {"date", "spx_close", "vix_close", "note"}
        if set(frame.columns) != expected:
            raise ValueError(f"{path or CRISIS_CSV}: expected columns {sorted(expected)}, got {list(frame.columns)}")
        frame.index = pd.DatetimeIndex(pd.to_datetime(frame.pop("date")), name="session")
        return frame.astype({"spx_close": "float64", "vix_close": "float64", "note": "str"})

    @property
    def vix3m_long_run(self) -> float:
        """Long-run level ``LR`` of the model VIX3M (VIX points)."""
        return self._vix3m_long_run

    @property
    def vix3m_reversion(self) -> float:
        """Reversion factor ``f`` of the model VIX3M (share of the deviation left at 3 months)."""
        return self._vix3m_reversion

    # ------------------------------------------------------------------ published

    def spx_close(self) -> pd.Series:
        """S&P 500 index closes (published; 1999-01-04 .. 2018-12-31)."""
        return self._spx_close.copy()

    def spx_open(self) -> pd.Series:
        """S&P 500 index opening prints (published; used as the AM settlement proxy)."""
        return self._spx_open.copy()

    def nasdaq_close(self) -> pd.Series:
        """Nasdaq Composite closes (published; NOT the Nasdaq-100)."""
        return self._nasdaq_close.copy()

    def vix(self) -> pd.Series:
        """Cboe VIX closes (published; 2014-01-03 .. 2019-01-03, holidays dropped)."""
        return self._vix.copy()

    def crisis_anchor_closes(self) -> pd.DataFrame:
        """Published S&P 500 / VIX closes on key 2008 and 2020 crisis days.

        Columns ``spx_close``, ``vix_close``, ``note``; only the listed days are
        published -- nothing between them is filled here.
        """
        return self._crisis.copy()

    # ------------------------------------------------------------------ derived

    def _ndx_scale(self) -> float:
        anchor = pd.Timestamp(NDX_ANCHOR_DATE)
        return NDX_ANCHOR_CLOSE / float(self._nasdaq_close.loc[anchor])

    def ndx_proxy_close(self) -> pd.Series:
        """Model NDX level: Nasdaq Composite closes scaled to the published NDX anchor close.

        A PROXY (see the module docstring), equal to the published NDX close only on
        :data:`NDX_ANCHOR_DATE`.
        """
        return (self._nasdaq_close * self._ndx_scale()).rename("ndx_proxy_close")

    def ndx_proxy_open(self) -> pd.Series:
        """Nasdaq Composite opens on the same scale as :meth:`ndx_proxy_close` (a proxy)."""
        return (self._nasdaq_open * self._ndx_scale()).rename("ndx_proxy_open")

    def vix3m_model(self) -> pd.Series:
        """MODEL VIX3M, ``LR + (VIX - LR) * f`` on every VIX session (not published data)."""
        lr, f = self._vix3m_long_run, self._vix3m_reversion
        return (lr + (self._vix - lr) * f).rename("vix3m_model")

    def daily_frame(self, *, rv_window: int = 21) -> pd.DataFrame:
        """One frame on the sessions where SPX, Nasdaq and VIX all exist (2014-01-03 ..).

        Columns: ``spx_open``, ``spx_close``, ``ndx_open``, ``ndx_close`` (NDX PROXY),
        ``vix``, ``vix3m`` (MODEL), ``spx_rv``, ``ndx_rv`` (annualised realised vol
        of the last ``rv_window`` log returns, computed on the full history so the first
        rows are already defined).
        """
        spx_rv = realised_vol(self._spx_close, rv_window)
        ndx_rv = realised_vol(self._nasdaq_close, rv_window)
        frame = pd.concat(
            {
                "spx_open": self._spx_open,
                "spx_close": self._spx_close,
                "ndx_open": self.ndx_proxy_open(),
                "ndx_close": self.ndx_proxy_close(),
                "spx_rv": spx_rv,
                "ndx_rv": ndx_rv,
            },
            axis=1,
            join="inner",
        )
        frame = frame.join(pd.concat({"vix": self._vix, "vix3m": self.vix3m_model()}, axis=1), how="inner")
        frame.index.name = "session"
        if frame.isna().any().any():
            bad = frame.columns[frame.isna().any()].tolist()
            raise ValueError(f"market history: missing values in {bad}")
        return frame
