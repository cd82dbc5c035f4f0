"""Inputs of the stress assets: today's book as a :class:`~quant.scenario_book.Book`, the
replay paths and the Monte Carlo factor model (I/O and pandas live here, not in quant).

Per-contract pricing inputs
---------------------------
Where the ``position_greeks`` table (defs/greeks) has a row for the position with
``vol``, ``time_to_expiry``, ``rate``, ``dividend_yield`` and ``spot``, those are used, so
stress and Greeks price the same contract identically.  Otherwise:

* implied vol: the quote's ``iv`` from ``market_snapshot`` (the broker's), else the
  vol implied from the mark by :func:`quant.pricing.implied_vol`;
* ``T``: ACT/365 from the session close to the expiry (``Contract.year_fraction``);
* ``r``: ``rate`` of ``config/stress_scenarios.yaml``; ``q``: the underlying's
  ``dividend_yield`` there (0 for Black-76);
* the price revalued is the kernel's model value, so "today" is exactly 0 P&L;
* exercise: options whose root has ``exercise: american`` in ``config/instruments.yaml``
  and the BSM model (equity/ETF options such as SPY, QQQ, IWM) are American
  (``ContractSet.american``) and revalued with ``quant.pricing.american_price`` (the
  tree in the grid and replay, Bjerksund-Stensland 2002 in Monte Carlo; see
  ``revalue_kwargs``); index options and futures options (Black-76) stay European.

Replay paths (the rule for every filled day is stated in ``vix_source``/``spx_source``)
-------------------------------------------------------------------------------------
* ``feb_2018``: 2018-01-26 .. 2018-02-09, S&P 500 and VIX closes from ``arch.data``.
* ``oct_2008``: 2008-09-19 .. 2008-10-27, S&P 500 closes from ``arch.data``; the VIX
  (``arch.data.vix`` starts in 2014) is the 21-day realised S&P 500 vol x 100, scaled
  by one factor so that it equals the published close 79.13 of 2008-10-24
  (``realised_vol_proxy``; the anchor day itself is ``published``).
* ``mar_2020``: XNYS sessions 2020-02-19 .. 2020-03-23; S&P 500 and VIX closes are
  published only on the anchor days of ``crisis_anchor_closes.csv``; the sessions
  between are filled by geometric interpolation (constant daily log return between
  anchors) and marked ``interpolated`` -- never presented as published data.
"""

from __future__ import annotations

import logging
import math
import threading
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

import numpy as np
import pandas as pd
from sqlalchemy import Connection, select

from portfolio_pipeline.config.loader import PlatformConfig
from portfolio_pipeline.defs.partitions import PARTITIONS_START
from portfolio_pipeline.domain.errors import InvalidDataError, UnknownInstrumentError
from portfolio_pipeline.domain.positions import contract_from_row
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.domain.settlement import SessionHours, years_to_settlement
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory, realised_vol
from portfolio_pipeline.marketdata.store import StoredHistory
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant.correlation import nearest_correlation
from portfolio_pipeline.quant.monte_carlo import FactorModel, factor_innovations, garch_paths
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_config import (
    GridConfig,
    MonteCarloConfig,
    StressScenariosFile,
    UnderlyingStress,
)
from portfolio_pipeline.quant.scenario_set import (
    GridScenarios,
    ScenarioSet,
    geometric_fill,
    shock_grid,
)
from portfolio_pipeline.quant.vol import MIN_GARCH_OBSERVATIONS, GarchDist, GarchFit, fit_garch
from portfolio_pipeline.storage import market_snapshot, positions_snapshot, read_partition

logger = logging.getLogger(__name__)

CONFIG_FILE = "stress_scenarios.yaml"
TRADING_DAYS = 252.0
ALL = AGGREGATE


# --------------------------------------------------------------------------- the book


@dataclass(frozen=True)
class StressBook:
    """Today's book for the scenario engine, with what labels its groups and factors."""

    session: date
    book: Book
    group_keys: tuple[tuple[str, str, str], ...]
    """(broker, account_id, underlying) of every group (column of ``book.units``)."""
    settings: tuple[UnderlyingStress, ...]
    """Per factor (``book.factors``)."""
    vix: float
    vix3m: float | None
    positions: int
    contract_keys: tuple[str, ...] = ()
    """Instrument (position) key of every contract of ``book.contracts``."""

    def per_factor(self, name: str) -> np.ndarray:
        return np.array([getattr(s, name) for s in self.settings], dtype=np.float64)

    @property
    def is_vol_factor(self) -> np.ndarray:
        return np.array([s.proxy == "vix" for s in self.settings])

    def accounts(self) -> list[tuple[str, str]]:
        return sorted({(b, a) for b, a, _ in self.group_keys})


_Rows = list[dict[str, Any]]


def _session_rows(conn: Connection, day: date) -> tuple[
    _Rows, dict[str, dict[str, Any]], dict[str, float], dict[tuple[str, str, str], dict[str, Any]]
]:
    """The session's positions, quotes by instrument key, index closes by root and position
    Greeks by (broker, account, position key); an error without positions or a VIX quote."""
    positions = read_partition(conn, positions_snapshot, {"session_date": day})
    quotes = read_partition(conn, market_snapshot, {"session_date": day})
    greeks_table = positions_snapshot.metadata.tables.get("position_greeks")
    greeks = {
        (str(g["broker"]), str(g["account_id"]), str(g["position_key"])): g
        for g in (read_partition(conn, greeks_table, {"session_date": day}) if greeks_table is not None else [])
    }
    if not positions:
        raise InvalidDataError(f"positions_snapshot has no rows for session {day}")
    by_key = {str(q["instrument_key"]): q for q in quotes}
    index_px = {
        str(q["underlying"]).upper(): float(q["mark"])
        for q in quotes
        if q["sec_type"] == "IND"
    }
    if "VIX" not in index_px:
        raise InvalidDataError(f"market_snapshot of {day} has no VIX index quote")
    return positions, by_key, index_px, greeks


def load_book(
    conn: Connection, day: date, as_of: datetime, config: PlatformConfig, cfg: StressScenariosFile,
    calendar: SessionHours | None = None,
) -> StressBook:
    """Read ``positions_snapshot`` and ``market_snapshot`` of ``day`` into a :class:`StressBook`.

    Raises
    ------
    InvalidDataError
        No positions, no VIX quote, or a position without an underlying price or an
        implied vol, naming the position.
    """
    positions, by_key, index_px, greeks = _session_rows(conn, day)
    factors = tuple(sorted({str(p["underlying"]).upper() for p in positions}))
    fidx = {f: i for i, f in enumerate(factors)}
    contract_ix: dict[str, int] = {}
    cols: dict[str, list[float | bool | int]] = {
        k: []
        for k in ("factor", "is_option", "is_call", "black76", "spot", "strike", "T", "r", "q",
                  "vol", "american")
    }
    group_ix: dict[tuple[str, str, str], int] = {}
    entries: list[tuple[int, int, float]] = []
    for p in positions:
        key = str(p["position_key"])
        root = str(p["underlying"]).upper()
        where = f"positions_snapshot {day} {p['broker']}:{p['account_id']}:{key}"
        gkey = (str(p["broker"]), str(p["account_id"]), root)
        g = group_ix.setdefault(gkey, len(group_ix))
        units = float(p["quantity"]) * float(p["multiplier"])
        if key not in contract_ix:
            contract_ix[key] = len(contract_ix)
            gk = greeks.get((str(p["broker"]), str(p["account_id"]), key))
            _append_contract(cols, p, by_key.get(key), gk, index_px, fidx[root], as_of, config, calendar,
                             cfg, where)
        entries.append((contract_ix[key], g, units))
    units_m = np.zeros((len(contract_ix), len(group_ix)))
    for c, g, u in entries:
        units_m[c, g] += u
    contracts = ContractSet.build(**cols)
    groups = tuple(group_ix)
    book = Book(contracts, units_m, tuple("|".join(k) for k in groups), factors)
    return StressBook(
        session=day,
        book=book,
        group_keys=groups,
        settings=tuple(cfg.underlying(f) for f in factors),
        vix=index_px["VIX"],
        vix3m=index_px.get("VIX3M"),
        positions=len(positions),
        contract_keys=tuple(contract_ix),
    )


def _read_only(sb: StressBook) -> StressBook:
    """``sb`` with its arrays made read-only: one book is shared by every stress step of a run."""
    c = sb.book.contracts
    for name in ("factor", "is_option", "is_call", "black76", "spot", "strike", "T", "r", "q",
                 "vol", "american"):
        getattr(c, name).setflags(write=False)
    sb.book.units.setflags(write=False)
    return sb


def session_book(memo: dict[Any, Any], conn: Connection, day: date, as_of: datetime,
                 config: PlatformConfig, cfg: StressScenariosFile,
                 calendar: SessionHours | None = None) -> StressBook | None:
    """:func:`load_book` of ``day`` (None when the session holds no positions), read once per
    run: ``memo`` is the run's (``PlatformResource.run_memo``), so the shock grid, historical
    replay, Monte Carlo, correlation and risk-profile steps of a run share one read of the
    stored session (written by upstream steps before any of them starts).  The shared book's
    arrays are read-only."""
    key = ("stress_book", day, as_of)
    if key not in memo:
        empty = not conn.execute(
            select(positions_snapshot.c.position_key)
            .where(positions_snapshot.c.session_date == day).limit(1)
        ).first()
        memo[key] = None if empty else _read_only(load_book(conn, day, as_of, config, cfg, calendar))
    found: StressBook | None = memo[key]
    return found


def _append_contract(
    cols: dict[str, list[float | bool | int]],
    p: dict[str, object],
    quote: dict[str, object] | None,
    greeks_row: dict[str, object] | None,
    index_px: dict[str, float],
    factor: int,
    as_of: datetime,
    config: PlatformConfig,
    calendar: SessionHours | None,
    cfg: StressScenariosFile,
    where: str,
) -> None:
    root = str(p["underlying"]).upper()
    sec_type = str(p["sec_type"])
    mark = float(p["mark"])  # type: ignore[arg-type]
    option = sec_type in ("OPT", "FOP")
    black76 = option and config.instruments.pricing_model(root) == "black76"
    # the rule of analytics.greeks: American exercise for BSM options only
    american = option and not black76 and config.instruments.exercise_style(root) == "american"
    cols["american"].append(american)
    settings = cfg.underlying(root)
    r = cfg.rate
    q = 0.0 if black76 else settings.dividend_yield
    g = greeks_row or {}
    if option and all(g.get(k) is not None for k in ("vol", "time_to_expiry", "rate", "spot")):
        gq = g.get("dividend_yield")
        for k, v in (
            ("factor", factor), ("is_option", True), ("black76", black76),
            ("r", float(g["rate"])),  # type: ignore[arg-type]
            ("q", 0.0 if black76 or gq is None else float(gq)),  # type: ignore[arg-type]
            ("is_call", p["right"] == "C"), ("spot", float(g["spot"])),  # type: ignore[arg-type]
            ("strike", float(p["strike"])),  # type: ignore[arg-type]
            ("T", float(g["time_to_expiry"])), ("vol", float(g["vol"])),  # type: ignore[arg-type]
        ):
            cols[k].append(v)
        return
    cols["factor"].append(factor)
    cols["is_option"].append(option)
    cols["black76"].append(black76)
    cols["r"].append(r)
    cols["q"].append(q)
    if not option:
        if not mark > 0:
            raise InvalidDataError(f"{where}: mark {mark!r} must be > 0 for a linear position")
        for k, v in (("is_call", False), ("spot", mark), ("strike", 1.0), ("T", 0.0), ("vol", 0.0)):
            cols[k].append(v)
        return
    spot = p.get("underlying_price") or (quote or {}).get("underlying_price") or index_px.get(root)
    if spot is None or not float(spot) > 0:  # type: ignore[arg-type]
        raise InvalidDataError(f"{where}: no underlying price in the snapshot")
    contract = contract_from_row(p, source=where)
    try:
        settlement = config.instruments.trading_class(root, contract.trading_class).settlement_time
    except UnknownInstrumentError:
        settlement = "PM"
    t = years_to_settlement(as_of, p["expiry"], settlement, calendar)  # type: ignore[arg-type]
    is_call = contract.right == "C"
    iv = (quote or {}).get("iv")
    vol = float(iv) if iv is not None and float(iv) > 0 else math.nan  # type: ignore[arg-type]
    if not math.isfinite(vol):
        vol = float(
            pricing.implied_vol(
                mark, is_call, float(spot), contract.strike, t, r, q,  # type: ignore[arg-type]
                model="black76" if black76 else "bsm",
            )
        )
    if not math.isfinite(vol) and t > 0:
        raise InvalidDataError(f"{where}: no implied vol (quote has none, mark {mark} gives none)")
    for k, v in (
        ("is_call", is_call),
        ("spot", float(spot)),  # type: ignore[arg-type]
        ("strike", float(contract.strike or 0.0)),
        ("T", t),
        ("vol", vol if math.isfinite(vol) else 0.0),
    ):
        cols[k].append(v)


def american_kwargs(section: GridConfig | MonteCarloConfig) -> dict[str, object]:
    """How :func:`~portfolio_pipeline.quant.revaluation.revalue` prices American contracts:
    ``cfg.grid`` for the shock grid and the historical replay (default: the Leisen-Reimer
    tree, a few hundred scenarios per session), ``cfg.monte_carlo`` for the simulations
    (default: Bjerksund-Stensland 2002, 10,000 scenarios per horizon)."""
    return {"american_method": section.american_method, "american_steps": section.american_steps}


# --------------------------------------------------------------------------- grid


def grid_scenarios(sb: StressBook, cfg: StressScenariosFile) -> GridScenarios:
    """The configured spot x vol x horizon grid for this book's factors."""
    g = cfg.grid
    volf = sb.is_vol_factor
    beta = np.where(volf, 0.0, sb.per_factor("beta"))
    vix_beta = np.where(volf, 0.0, sb.per_factor("vix_beta"))
    columns: list[tuple[str, np.ndarray, np.ndarray]] = []
    for pts in g.vol_shocks_points:
        target = max(sb.vix + pts, 1.0)
        columns.append(
            (f"{pts:+g}pt", np.where(volf, 0.0, pts / 100.0), np.where(volf, math.log(target / sb.vix), 0.0))
        )
    for target in g.vix_targets:
        columns.append(
            (
                f"VIX {target:g}",
                vix_beta * (target - sb.vix) / 100.0,
                np.where(volf, sb.per_factor("beta") * math.log(target / sb.vix), 0.0),
            )
        )
    return shock_grid(
        [s / 100.0 for s in g.spot_shocks_pct], columns, g.horizons_days, spot_beta=beta
    )


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayPath:
    """One replay window: the S&P 500 and VIX levels per session and where each came from."""

    name: str
    description: str
    dates: tuple[date, ...]
    spx: np.ndarray
    vix: np.ndarray
    spx_source: tuple[str, ...]
    vix_source: tuple[str, ...]

    def scenarios(self, sb: StressBook) -> ScenarioSet:
        """Returns and VIX changes from the window start applied to today's book."""
        volf = sb.is_vol_factor
        beta = sb.per_factor("beta")
        spx_x = np.log(self.spx / self.spx[0])
        vix_x = np.log(self.vix / self.vix[0])
        x = np.where(volf[None, :], vix_x[:, None], spx_x[:, None]) * beta[None, :]
        d_atm = np.where(volf, 0.0, sb.per_factor("vix_beta"))[None, :] * (
            (self.vix - self.vix[0]) / 100.0
        )[:, None]
        decay = np.array([(d - self.dates[0]).days for d in self.dates], dtype=np.float64) / 365.0
        return ScenarioSet.build(x, d_atm, decay)


BUILTIN_WINDOWS: dict[str, tuple[date, date, str]] = {
    "feb_2018": (date(2018, 1, 26), date(2018, 2, 9), "Feb 2018 volatility spike (XIV)"),
    "oct_2008": (date(2008, 9, 19), date(2008, 10, 27), "Oct 2008 crash after Lehman"),
    "mar_2020": (date(2020, 2, 19), date(2020, 3, 23), "March 2020 COVID crash"),
}


def _window(series: pd.Series, start: date, end: date, what: str, name: str) -> pd.Series:
    out = series.loc[pd.Timestamp(start) : pd.Timestamp(end)]
    if out.empty or out.index[0].date() != start or out.index[-1].date() != end:
        first, last = series.index[0].date(), series.index[-1].date()
        raise InvalidDataError(
            f"{CONFIG_FILE}: historical window {name}: {what} history ({first}..{last}) has no "
            f"close on both {start} and {end}"
        )
    return out


def _anchored(
    name: str, description: str, sessions: Sequence[date], anchors: pd.DataFrame
) -> ReplayPath:
    days = [d.date() for d in anchors.index]
    pos = [sessions.index(d) if d in sessions else -1 for d in days]
    if -1 in pos:
        bad = days[pos.index(-1)]
        raise InvalidDataError(f"historical window {name}: anchor {bad} is not an XNYS session")
    n = len(sessions)
    spx = geometric_fill(pos, anchors["spx_close"].to_numpy(dtype=np.float64), n)
    vix = geometric_fill(pos, anchors["vix_close"].to_numpy(dtype=np.float64), n)
    src = tuple("published" if i in pos else "interpolated" for i in range(n))
    return ReplayPath(name, description, tuple(sessions), spx, vix, src, src)


def _rv_proxy(
    history: MarketHistory, closes: pd.Series, window: int, crisis: pd.DataFrame
) -> tuple[np.ndarray, tuple[str, ...]]:
    rv = realised_vol(history.spx_close(), window).reindex(closes.index) * 100.0
    anchor = crisis.loc[crisis.index.isin(closes.index)]
    scale = 1.0
    sources = ["realised_vol_proxy"] * len(closes)
    vix = rv.to_numpy(dtype=np.float64)
    if not anchor.empty:
        day = anchor.index[0]
        scale = float(anchor["vix_close"].iloc[0]) / float(rv.loc[day])
        vix = vix * scale
        i = int(closes.index.get_loc(day))
        vix[i] = float(anchor["vix_close"].iloc[0])
        sources[i] = "published"
    if not np.all(np.isfinite(vix)):
        raise InvalidDataError("realised-vol proxy is undefined at the start of the window")
    logger.info("realised vol proxy scale=%s", scale)
    return vix, tuple(sources)


def replay_paths(
    history: MarketHistory, calendar: ExchangeCalendar, cfg: StressScenariosFile
) -> list[ReplayPath]:
    """The built-in and user windows of the configuration, in configuration order."""
    hc = cfg.historical
    spx_all = history.spx_close()
    vix_all = history.vix()
    crisis = history.crisis_anchor_closes()
    out: list[ReplayPath] = []
    for name in hc.builtin:
        start, end, desc = BUILTIN_WINDOWS[name]
        if name == "mar_2020":
            anchors = crisis.loc[pd.Timestamp(start) : pd.Timestamp(end), ["spx_close", "vix_close"]]
            out.append(_anchored(name, desc, calendar.sessions(start, end), anchors))
            continue
        spx = _window(spx_all, start, end, "S&P 500", name)
        n = len(spx)
        if name == "feb_2018":
            vix = _window(vix_all, start, end, "VIX", name).reindex(spx.index).to_numpy(np.float64)
            vsrc = ("published",) * n
        else:
            vix, vsrc = _rv_proxy(history, spx, hc.realised_vol_window, crisis)
        out.append(
            ReplayPath(name, desc, tuple(d.date() for d in spx.index), spx.to_numpy(np.float64),
                       vix, ("published",) * n, vsrc)
        )
    for w in hc.windows:
        if w.anchors:
            frame = pd.DataFrame(
                {"spx_close": [a.spx for a in w.anchors], "vix_close": [a.vix for a in w.anchors]},
                index=pd.DatetimeIndex([pd.Timestamp(a.date) for a in w.anchors]),
            )
            out.append(_anchored(w.name, w.description, calendar.sessions(w.start, w.end), frame))
            continue
        spx = _window(spx_all, w.start, w.end, "S&P 500", w.name)
        n = len(spx)
        if w.vix_fill == "history":
            vix_s = _window(vix_all, w.start, w.end, "VIX", w.name).reindex(spx.index)
            if vix_s.isna().any():
                raise InvalidDataError(f"historical window {w.name}: VIX missing on some sessions")
            vix, vsrc = vix_s.to_numpy(np.float64), ("published",) * n
        else:
            vix, vsrc = _rv_proxy(history, spx, hc.realised_vol_window, crisis)
        out.append(
            ReplayPath(w.name, w.description, tuple(d.date() for d in spx.index),
                       spx.to_numpy(np.float64), vix, ("published",) * n, vsrc)
        )
    return out


# --------------------------------------------------------------------------- Monte Carlo


MC_REFIT_SESSIONS: Final[int] = 21
"""GARCH(1,1) parameters and correlations are re-estimated every this many sessions."""
MC_FIT_ORIGIN: Final[date] = PARTITIONS_START
"""Session 1 of the first refit block (the first session partition)."""


@dataclass(frozen=True)
class McSetup:
    """Fitted factor marginals, their estimated correlation and the regime overlay."""

    model: FactorModel
    corr: np.ndarray
    regime: str
    multiplier: float
    notes: tuple[str, ...]
    fit_date: date | None = None
    """Session whose history the parameters and ``corr`` were estimated on."""


def _log_returns(series: pd.Series) -> pd.Series:
    return np.log(series.astype("float64")).diff().dropna()


class _Returns(dict[str, pd.Series]):
    """Daily log returns per proxy, loaded on first use (a stored history holds only the
    symbols its book needs, e.g. no NDX for an SPX-only book)."""

    def __init__(self, loaders: dict[str, Callable[[], pd.Series]]) -> None:
        super().__init__()
        self._loaders = loaders

    def __missing__(self, name: str) -> pd.Series:
        value = _log_returns(self._loaders[name]())
        self[name] = value
        return value


@dataclass(frozen=True)
class _ProxyFit:
    fit: GarchFit
    window: pd.Series
    """The returns fitted (their last date is where filtering forward starts)."""
    note: str | None


@dataclass(frozen=True)
class _FitBlock:
    fits: tuple[_ProxyFit, ...]
    corr: np.ndarray
    notes: tuple[str, ...]


class McFits:
    """The Monte Carlo fits of one run, reused by every session of the run.

    Refit schedule (as ``risk_metrics`` does for its GARCH VaR): the XNYS sessions from
    :data:`MC_FIT_ORIGIN` on are cut into blocks of :data:`MC_REFIT_SESSIONS`; a session
    uses the parameters and the correlation estimated at the *fit date*, the last session
    of the latest block that has ended on or before it (the session itself when it ends
    a block; the session itself before the first block ends).  The GARCH state is then
    filtered forward through the returns after the fit date up to the session with fixed
    parameters.  The fit date depends only on the session, so a session computes the same
    numbers alone or inside a backfill.

    The caches (GARCH fits by (proxy, fit date), correlations by (proxies, fit date),
    standardised shocks by fit date) live in this object, one per asset run -- never
    module state.  Simulated shocks depend only on the correlation, the ``nu`` of the
    fits and the seed, so they are drawn once per fit date; a session only runs the
    GARCH variance recursion from its own starting volatility (:func:`garch_paths`).
    """

    def __init__(
        self, history: MarketHistory | StoredHistory, calendar: ExchangeCalendar, cfg: StressScenariosFile
    ) -> None:
        self.calendar = calendar
        self.cfg = cfg.monte_carlo
        self.history = history
        self.returns = _Returns({
            "spx": history.spx_close,
            "ndx": history.ndx_proxy_close,
            "vix": history.vix,
        })
        self._sessions: list[date] = []
        self._fits: dict[tuple[str, date], _ProxyFit] = {}
        self._blocks: dict[tuple[tuple[str, ...], date], _FitBlock] = {}
        self._shocks_date: date | None = None
        self._shocks: dict[tuple[object, ...], np.ndarray] = {}
        self._lock = threading.Lock()  # paths() may run on several threads of one asset
        self.garch_fits = 0
        """Number of GARCH fits run so far (for logs and tests)."""

    def fit_date(self, day: date) -> date:
        """The session whose history ``day``'s model is estimated on (class docstring)."""
        if day < MC_FIT_ORIGIN:
            return day
        if not self._sessions:
            self._sessions = self.calendar.sessions(MC_FIT_ORIGIN, day)
        elif day > self._sessions[-1]:  # a backfill moves forward: list only the new sessions
            self._sessions = self._sessions + self.calendar.sessions(
                self._sessions[-1] + timedelta(days=1), day
            )
        m = (bisect_right(self._sessions, day) // MC_REFIT_SESSIONS) * MC_REFIT_SESSIONS
        return self._sessions[m - 1] if m else day

    def _proxy_fit(self, name: str, fit_date: date) -> _ProxyFit:
        key = (name, fit_date)
        if key not in self._fits:
            r = self.returns[name]
            end = pd.Timestamp(fit_date)
            start = end - pd.DateOffset(days=round(self.cfg.history_years * 365.25))
            window = r.loc[start:end]
            note = None
            if len(window) < MIN_GARCH_OBSERVATIONS and getattr(self.history, "strict_no_look_ahead", False):
                raise InvalidDataError(
                    f"monte carlo: only {len(window)} {name} returns up to {fit_date} in the stored "
                    f"market history (GARCH needs {MIN_GARCH_OBSERVATIONS}); deepen the market_history "
                    "backfill (depth_years) -- later returns are never borrowed"
                )
            if len(window) < MIN_GARCH_OBSERVATIONS:
                window = r.iloc[: max(MIN_GARCH_OBSERVATIONS, len(window))]
                note = (
                    f"{name}: fewer than {MIN_GARCH_OBSERVATIONS} returns before {fit_date}; "
                    f"fitted on {window.index[0].date()}..{window.index[-1].date()}"
                )
            dist: GarchDist = "t" if self.cfg.innovations == "t" else "normal"
            fit = fit_garch(window.to_numpy(np.float64), dist=dist)
            self._fits[key] = _ProxyFit(fit, window, note)
            self.garch_fits += 1
        return self._fits[key]

    def _block(self, names: tuple[str, ...], fit_date: date) -> _FitBlock:
        key = (names, fit_date)
        if key not in self._blocks:
            fits = tuple(self._proxy_fit(n, fit_date) for n in names)
            joint = pd.concat({n: f.window for n, f in zip(names, fits, strict=True)},
                              axis=1, join="inner").dropna()
            if len(joint) < 60:
                raise InvalidDataError(f"only {len(joint)} common return days to estimate correlations")
            corr = nearest_correlation(np.corrcoef(joint.to_numpy(np.float64), rowvar=False)).matrix
            notes = [f.note for f in fits if f.note is not None]
            notes += [f"{n} GARCH window {f.window.index[0].date()}..{f.window.index[-1].date()} "
                      f"({len(f.window)} returns)" for n, f in zip(names, fits, strict=True)]
            notes.append(
                f"correlation from {len(joint)} common days "
                f"{joint.index[0].date()}..{joint.index[-1].date()}"
            )
            self._blocks[key] = _FitBlock(fits, corr, tuple(notes))
        return self._blocks[key]

    def setup(self, sb: StressBook, config: PlatformConfig, regime: str | None = None) -> McSetup:
        """The session's :class:`McSetup` (see :func:`mc_setup`)."""
        proxies = tuple(sorted({s.proxy for s in sb.settings} | {"spx", "vix"},
                               key=["spx", "ndx", "vix"].index))
        fit_date = self.fit_date(sb.session)
        block = self._block(proxies, fit_date)
        end = pd.Timestamp(sb.session)
        rolled = []
        for name, pf in zip(proxies, block.fits, strict=True):
            r = self.returns[name]
            a = int(r.index.searchsorted(pf.window.index[-1], side="right"))
            b = int(r.index.searchsorted(end, side="right"))
            rolled.append(pf.fit.roll_forward(r.to_numpy(np.float64)[a:b]))
        model = FactorModel.from_fits(proxies, rolled)
        if regime is None:  # no stored session regime given: classify without hysteresis
            regime = RegimeService(config.risk_matrix).classify(sb.vix, sb.vix3m).name
        mult = self.cfg.regime_vol_multiplier[regime]
        notes = (*block.notes,
                 f"GARCH and correlation estimated at {fit_date} (refit every "
                 f"{MC_REFIT_SESSIONS} sessions from {MC_FIT_ORIGIN}), filtered to {sb.session}")
        return McSetup(model, block.corr, regime, mult, notes, fit_date)

    def paths(self, setup: McSetup, corr: np.ndarray, horizon: int) -> np.ndarray:
        """``simulate_factors(setup.model, corr, ...)`` with the configured paths, seed
        ``[seed, horizon]``, innovations and the regime multiplier -- the same numbers,
        with the standardised shocks drawn once per fit date, correlation and horizon."""
        mc = self.cfg
        key = (setup.model.names, setup.model.nu.tobytes(), np.asarray(corr).tobytes(), horizon)
        with self._lock:
            if setup.fit_date != self._shocks_date:  # sessions run in order: keep one block
                self._shocks.clear()
                self._shocks_date = setup.fit_date
            shocks = self._shocks.get(key)
        if shocks is None:
            shocks = factor_innovations(
                setup.model, corr, n_paths=mc.n_scenarios, horizon=horizon,
                rng=np.random.default_rng([mc.seed, horizon]), innovations=mc.innovations,
            )
            with self._lock:
                if setup.fit_date == self._shocks_date:
                    self._shocks[key] = shocks
        return garch_paths(setup.model, shocks, vol_scale=setup.multiplier)


def mc_setup(
    sb: StressBook,
    history: MarketHistory | StoredHistory,
    config: PlatformConfig,
    cfg: StressScenariosFile,
    fits: McFits | None = None,
    regime: str | None = None,
) -> McSetup:
    """Fit GARCH(1,1) (arch, via :func:`quant.vol.fit_garch`) on every proxy the book uses
    plus the VIX, on the ``history_years`` up to the session's fit date (no look-ahead;
    where the history has fewer than 250 observations, the first 250 are used and a note
    says so) and the correlation of their daily log returns; filter the GARCH state
    forward to the session (the refit schedule is that of :class:`McFits`).

    ``fits``: the run's cache (a run passes one for all its sessions; the numbers are the
    same without it).  ``regime``: the session's stored regime
    (:func:`portfolio_pipeline.storage.regimes.session_regime_state`, with hysteresis);
    None classifies the session's VIX/VIX3M alone.
    """
    if fits is None:
        fits = McFits(history, ExchangeCalendar(), cfg)
    return fits.setup(sb, config, regime)


def mc_scenarios(sb: StressBook, setup: McSetup, factor_paths: np.ndarray, horizon: int) -> ScenarioSet:
    """Map simulated proxy log returns to the book's factors.

    Underlying ``u`` with proxy ``p``: :math:`x_u = \\beta_u X_p`; ATM vol change
    :math:`\\Delta\\sigma_u = \\beta^{VIX}_u\\,\\mathrm{VIX}_0 (e^{X_{vix}} - 1) / 100`
    (0 for volatility-index underlyings, which move with :math:`X_{vix}`); decay is
    ``horizon`` trading days = ``horizon / 252`` years.
    """
    names = list(setup.model.names)
    proxy_ix = [names.index(s.proxy) for s in sb.settings]
    x = factor_paths[:, proxy_ix] * sb.per_factor("beta")[None, :]
    dvix = sb.vix * np.expm1(factor_paths[:, names.index("vix")]) / 100.0
    vb = np.where(sb.is_vol_factor, 0.0, sb.per_factor("vix_beta"))
    return ScenarioSet.build(x, dvix[:, None] * vb[None, :], horizon / TRADING_DAYS)
