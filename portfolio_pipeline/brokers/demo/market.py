"""The demo market: underlying closes, a VIX-driven implied-vol surface, quotes and chains.

Everything here is a deterministic function of :class:`~portfolio_pipeline.marketdata.
MarketHistory` and the session; nothing is random.

Underlyings (all closes are published data or documented transforms of it)
--------------------------------------------------------------------------
=======  =====================================================================
SPX      S&P 500 close (``arch.data.sp500``); AM settlement = the day's opening print
         (a proxy for the special opening quotation, SOQ)
NDX      NDX PROXY: Nasdaq Composite returns scaled to a published NDX close
         (see :mod:`portfolio_pipeline.marketdata.history`); never real NDX data
SPY      SPX / 10 (price only: SPY's tracking error and dividends are ignored)
QQQ      NDX proxy / 40 (price only)
VIX      published VIX close; VIX3M: MODEL value ``LR + (VIX - LR) f``
=======  =====================================================================

Implied volatility (sticky moneyness)
-------------------------------------
* ATM level: the VIX is a 30-day variance-swap rate, which sits above 30-day ATM vol
  because of the put skew, so 30-day SPX ATM vol = ``VIX/100 * ATM_VOL_FACTOR``
  (0.87).
* Term structure: the VIX deviation from the long run ``LR`` decays with horizon,
  ``level(d) = LR + (VIX - LR) h(d)`` in VIX points with ``h(30) = 1`` and
  ``h(93) = f`` (so the 93-day level IS the model VIX3M), ``h(d) = (30/d)^b_long``
  beyond 30 days (``b_long = ln f / ln(30/93)``) and the milder
  ``h(d) = (30/d)^b_short`` (``b_short = 0.137``: a 7-day point moves 1.22x the
  30-day one) below 30 days.  ATM vol = ``ATM_VOL_FACTOR * level / 100``, floored at
  ``VOL_FLOOR``.  Short expiries therefore move more than long ones, and a VIX spike
  inverts the curve (backwardation) exactly when the model VIX3M < VIX.
* Skew: with standardised log-moneyness ``z = ln(K/F) / (atm sqrt(T))``,
  ``vol = atm * (1 - PUT_SKEW z)`` for ``z < 0`` and ``atm * (1 - CALL_SKEW z)`` for
  ``z >= 0``, clipped to ``[0.5, 3.0] * atm``: puts are steeper than calls (``PUT_SKEW`` 0.25,
  ``CALL_SKEW`` 0.20 per unit of ``z``).
* NDX/QQQ: the SPX surface times the ratio of 21-day realised vols
  (Nasdaq Composite / S&P 500), clipped to ``[1.0, 1.6]``.
* Rates: a flat-by-period schedule close to the 3-month T-bill (:data:`RATE_SCHEDULE`);
  dividend yields continuous: SPX/SPY 1.9 %, NDX/QQQ 1.0 %.

Quotes
------
Mid = model value.  Width (price units) =
``max(0.75, VIX/15) * (SPREAD_PCT * mid + SPREAD_TICKS * tick)`` rounded up to the
tick of ``config/instruments.yaml``: wider when the VIX is high and, relatively, for
cheap options.  ``bid = floor_tick(mid - w/2)`` (>= 0), ``ask = ceil_tick(mid + w/2)``.
ETFs: width ``max(tick, scale * 4e-5 * S)``; indices are not traded (bid = ask = level).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.domain.instruments import InstrumentTable, OptionSpec
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.quant import pricing

FloatArray = npt.NDArray[np.float64]

DEMO_ROOTS: Final[tuple[str, ...]] = ("SPX", "NDX", "SPY", "QQQ")
INDEX_ROOTS: Final[tuple[str, ...]] = ("SPX", "NDX")
ETF_SCALE: Final[dict[str, tuple[str, float]]] = {
    "SPX": ("SPX", 1.0),
    "NDX": ("NDX", 1.0),
    "SPY": ("SPX", 0.1),
    "QQQ": ("NDX", 1.0 / 40.0),
}
"""Each demo underlying as (base index, scale): SPY = SPX/10, QQQ = NDX proxy/40."""
DIVIDEND_YIELD: Final[dict[str, float]] = {"SPX": 0.019, "SPY": 0.019, "NDX": 0.010, "QQQ": 0.010}
RATE_SCHEDULE: Final[tuple[tuple[date, float], ...]] = (
    (date(2014, 1, 1), 0.0005),
    (date(2015, 12, 17), 0.0030),
    (date(2016, 12, 15), 0.0055),
    (date(2017, 3, 16), 0.0080),
    (date(2017, 6, 15), 0.0100),
    (date(2017, 12, 14), 0.0130),
    (date(2018, 3, 22), 0.0170),
    (date(2018, 6, 14), 0.0190),
    (date(2018, 9, 27), 0.0220),
    (date(2018, 12, 20), 0.0240),
)
"""(effective from, continuously compounded rate): steps after each FOMC move, ~3M T-bill."""

ATM_VOL_FACTOR: Final[float] = 0.87
VOL_FLOOR: Final[float] = 0.04
SHORT_TERM_BETA: Final[float] = 0.137
PUT_SKEW: Final[float] = 0.25
CALL_SKEW: Final[float] = 0.20
NDX_RATIO_BOUNDS: Final[tuple[float, float]] = (1.0, 1.6)
SPREAD_PCT: Final[float] = 0.012
SPREAD_TICKS: Final[float] = 2.0
ETF_SPREAD_FRACTION: Final[float] = 4e-5
EXPIRY_HORIZON_DAYS: Final[int] = 400
WEEKLY_HORIZON_DAYS: Final[int] = 56
FIRST_CLOCK_SESSION: Final[date] = date(2014, 6, 2)
_YEAR_SECONDS: Final[float] = 365.0 * 86400.0

ExpiryKind = Literal["monthly", "weekly"]
SessionIndex = int | npt.NDArray[np.intp]


def round_to_tick(value: FloatArray | float, tick: float, mode: Literal["nearest", "down", "up"]) -> FloatArray:
    """Round prices to a tick grid (``1e-9`` guard against binary noise)."""
    x = np.asarray(value, dtype=np.float64) / tick
    if mode == "down":
        out = np.floor(x + 1e-9)
    elif mode == "up":
        out = np.ceil(x - 1e-9)
    else:
        out = np.round(x)
    result: FloatArray = np.round(out * tick, 10)
    return result


def third_friday(year: int, month: int) -> date:
    """The third Friday of a month (the standard monthly expiry day)."""
    first = date(year, month, 1)
    offset = (4 - first.weekday()) % 7
    return first + timedelta(days=offset + 14)


@dataclass(frozen=True, slots=True)
class SurfacePoint:
    """Inputs the pricing kernel needs for options of one underlying at one session."""

    spot: float
    rate: float
    dividend_yield: float


class DemoMarket:
    """Session-indexed market state of the demo underlyings and its option model.

    Parameters
    ----------
    history : MarketHistory
        Loaded history (published closes plus the labelled model series).
    instruments : InstrumentTable
        Tick sizes, strike increments, exercise style and pricing model per root.
    calendar : ExchangeCalendar
        XNYS sessions, opens and closes (America/New_York hours, DST, half days).
    """

    def __init__(self, history: MarketHistory, instruments: InstrumentTable, calendar: ExchangeCalendar) -> None:
        self._instruments = instruments
        self._calendar = calendar
        frame = history.daily_frame()
        first = frame.index[0].date()
        last = frame.index[-1].date()
        sessions = calendar.sessions(first, last)
        got = [ts.date() for ts in frame.index]
        if got != sessions:
            missing = sorted(set(sessions) - set(got))[:5]
            raise ValueError(f"demo market: history does not cover XNYS sessions, e.g. {missing}")
        self.sessions: tuple[date, ...] = tuple(sessions)
        self._index = {d: i for i, d in enumerate(self.sessions)}
        self._close = {
            "SPX": frame["spx_close"].to_numpy(np.float64),
            "NDX": frame["ndx_close"].to_numpy(np.float64),
        }
        self._open = {
            "SPX": frame["spx_open"].to_numpy(np.float64),
            "NDX": frame["ndx_open"].to_numpy(np.float64),
        }
        self.vix: FloatArray = frame["vix"].to_numpy(np.float64)
        self.vix3m: FloatArray = frame["vix3m"].to_numpy(np.float64)
        ratio = (frame["ndx_rv"] / frame["spx_rv"]).to_numpy(np.float64)
        self.ndx_vol_ratio: FloatArray = np.clip(ratio, *NDX_RATIO_BOUNDS)
        self._lr = history.vix3m_long_run
        self._beta_long = math.log(history.vix3m_reversion) / math.log(30.0 / 93.0)
        # Session open/close instants (epoch seconds) for year fractions; extended past
        # the data so listed expiries up to a year ahead have settlement times.
        self._listing_end = min(last + timedelta(days=EXPIRY_HORIZON_DAYS + 40), calendar.end)
        all_sessions = calendar.sessions(first, self._listing_end)
        self._epoch_close = {d: calendar.session_close(d).timestamp() for d in all_sessions}
        self._epoch_open = {d: calendar.session_open(d).timestamp() for d in all_sessions}
        self._all_sessions = tuple(all_sessions)
        self._rates = np.array([self._rate_on(d) for d in self.sessions])
        self.first_clock_session = max(FIRST_CLOCK_SESSION, first)

    # ------------------------------------------------------------------ sessions

    @property
    def instruments(self) -> InstrumentTable:
        return self._instruments

    @property
    def calendar(self) -> ExchangeCalendar:
        return self._calendar

    @property
    def last_session(self) -> date:
        return self.sessions[-1]

    def index_of(self, day: date) -> int:
        """Position of session ``day`` in :attr:`sessions` (raises for a non-session)."""
        try:
            return self._index[day]
        except KeyError:
            raise ValueError(
                f"demo market: {day} is not an XNYS session inside the history "
                f"{self.sessions[0]}..{self.sessions[-1]}"
            ) from None

    def close_time(self, day: date) -> datetime:
        """Session close of ``day`` as aware UTC."""
        return datetime.fromtimestamp(self._epoch_close[day], tz=UTC)

    def open_time(self, day: date) -> datetime:
        return datetime.fromtimestamp(self._epoch_open[day], tz=UTC)

    # ------------------------------------------------------------------ levels

    @staticmethod
    def _rate_on(day: date) -> float:
        rate = RATE_SCHEDULE[0][1]
        for since, value in RATE_SCHEDULE:
            if day >= since:
                rate = value
        return rate

    def rate(self, i: SessionIndex) -> FloatArray:
        out: FloatArray = np.asarray(self._rates[i], dtype=np.float64)
        return out

    @staticmethod
    def dividend_yield(root: str) -> float:
        return DIVIDEND_YIELD[_check_root(root)]

    def spot(self, root: str, i: SessionIndex) -> FloatArray:
        """Close of ``root`` at session index/indices ``i`` (SPY/QQQ scaled from the index)."""
        base, scale = ETF_SCALE[_check_root(root)]
        out: FloatArray = np.asarray(self._close[base][i] * scale, dtype=np.float64)
        return out

    def opening(self, root: str, i: int) -> float:
        """Opening print of ``root`` at session ``i`` (AM settlement proxy)."""
        base, scale = ETF_SCALE[_check_root(root)]
        return float(self._open[base][i] * scale)

    # ------------------------------------------------------------------ expiries

    def settlement_epoch(self, root: str, trading_class: str | None, expiry: date) -> float:
        """Settlement instant (epoch s) of an expiry: the open (AM class) or close (PM)."""
        tc = self._instruments.trading_class(root, trading_class)
        table = self._epoch_open if tc.settlement_time == "AM" else self._epoch_close
        try:
            return table[expiry]
        except KeyError:
            raise ValueError(f"demo market: expiry {expiry} of {root} is not a listed session") from None

    def is_am_settled(self, root: str, trading_class: str | None) -> bool:
        return self._instruments.trading_class(root, trading_class).settlement_time == "AM"

    def year_fraction(self, root: str, trading_class: str | None, expiry: date, i: SessionIndex) -> FloatArray:
        """ACT/365 years from the close of session(s) ``i`` to the settlement (>= 0)."""
        settle = self.settlement_epoch(root, trading_class, expiry)
        idx = np.atleast_1d(np.asarray(i, dtype=np.intp))
        closes = np.array([self._epoch_close[self.sessions[k]] for k in idx], dtype=np.float64)
        out: FloatArray = np.maximum(settle - closes, 0.0) / _YEAR_SECONDS
        return out if np.ndim(i) else out.reshape(())

    def expiries(self, root: str, trading_class: str | None, after: date, *, kind: ExpiryKind | None = None) -> list[date]:
        """Listed expiries on or after ``after``.

        Monthlies are third Fridays; weeklies every other Friday (PM classes only,
        ``WEEKLY_HORIZON_DAYS`` ahead).  A Friday that is an XNYS holiday moves to the
        previous session (Thursday), as the exchanges do (e.g. Good Friday 2018-03-30).
        AM-settled classes list monthlies only.
        """
        tc = self._instruments.trading_class(root, trading_class)
        horizon = min(after + timedelta(days=EXPIRY_HORIZON_DAYS), self._listing_end)
        out: list[date] = []
        day = after + timedelta(days=(4 - after.weekday()) % 7)
        while day <= horizon:
            monthly = day == third_friday(day.year, day.month)
            wanted = monthly if kind == "monthly" else (not monthly) if kind == "weekly" else True
            listed = monthly or (
                tc.settlement_time == "PM" and (day - after).days <= WEEKLY_HORIZON_DAYS
            )
            if wanted and listed:
                expiry = day if day in self._epoch_close else self._calendar.previous_session(day)
                if expiry >= after:
                    out.append(expiry)
            day += timedelta(days=7)
        return out

    def strike_grid(self, root: str, center: float, *, width: float = 0.35) -> FloatArray:
        """Strikes on the ``strike_increment`` grid within ``center * (1 -/+ width)``."""
        inc = self._option_spec(root).strike_increment
        lo = math.ceil(center * (1.0 - width) / inc) * inc
        hi = math.floor(center * (1.0 + width) / inc) * inc
        grid: FloatArray = np.round(np.arange(lo, hi + inc / 2, inc, dtype=np.float64), 10)
        return grid

    def _option_spec(self, root: str) -> OptionSpec:
        spec = self._instruments.spec(_check_root(root)).options
        if spec is None:
            raise ValueError(f"demo market: {root} has no options in the instrument table")
        return spec

    def tick(self, root: str) -> float:
        return self._option_spec(root).tick_size

    # ------------------------------------------------------------------ vol surface

    def atm_vol(self, root: str, i: SessionIndex, T: FloatArray) -> FloatArray:
        """ATM implied vol at session(s) ``i`` for year fractions ``T`` (broadcast together)."""
        days = np.maximum(np.asarray(T, dtype=np.float64) * 365.0, 1.0)
        beta = np.where(days < 30.0, SHORT_TERM_BETA, self._beta_long)
        h = (30.0 / days) ** beta
        level = self._lr + (self.vix[i] - self._lr) * h
        atm = np.maximum(ATM_VOL_FACTOR * level / 100.0, VOL_FLOOR)
        if ETF_SCALE[_check_root(root)][0] == "NDX":
            atm = atm * self.ndx_vol_ratio[i]
        out: FloatArray = np.asarray(atm, dtype=np.float64)
        return out

    def implied_vol(self, root: str, i: SessionIndex, strike: FloatArray, T: FloatArray) -> FloatArray:
        """Model implied vol for strikes and year fractions at session(s) ``i`` (broadcast)."""
        k = np.asarray(strike, dtype=np.float64)
        t = np.asarray(T, dtype=np.float64)
        atm = self.atm_vol(root, i, t)
        fwd = self.spot(root, i) * np.exp((self.rate(i) - self.dividend_yield(root)) * t)
        z = np.log(k / fwd) / (atm * np.sqrt(np.maximum(t, 1.0 / 365.0)))
        mult = np.where(z < 0.0, 1.0 - PUT_SKEW * z, 1.0 - CALL_SKEW * z)
        out: FloatArray = atm * np.clip(mult, 0.5, 3.0)
        return out

    def surface_point(self, root: str, i: int) -> SurfacePoint:
        return SurfacePoint(float(self.spot(root, i)), float(self.rate(i)), self.dividend_yield(root))

    # ------------------------------------------------------------------ values

    def fair_values(
        self,
        root: str,
        rights: Sequence[str] | npt.NDArray[np.str_],
        strikes: FloatArray,
        T: FloatArray,
        spot: FloatArray,
        vol: FloatArray,
        rate: FloatArray,
    ) -> FloatArray:
        """Model premium per share: BSM European, or the kernel's American tree for ETFs."""
        q = self.dividend_yield(root)
        kind = np.asarray(rights)
        model = self._instruments.pricing_model(root)
        if self._instruments.exercise_style(root) == "american":
            out = pricing.american_price(kind, spot, strikes, T, rate, q, vol)
        else:
            out = pricing.price(kind, spot, strikes, T, rate, q, vol, model=model)
        return np.asarray(out, dtype=np.float64)

    def option_values_at(self, root: str, i: int, rights: Sequence[str], strikes: FloatArray, T: FloatArray) -> FloatArray:
        """Fair values of options of ``root`` at the close of session ``i``."""
        k = np.asarray(strikes, dtype=np.float64)
        t = np.asarray(T, dtype=np.float64)
        vol = self.implied_vol(root, i, k, t)
        return self.fair_values(root, rights, k, t, self.spot(root, i), vol, self.rate(i))

    def option_path(self, root: str, trading_class: str | None, expiry: date, strike: float, right: str, i0: int, i1: int) -> FloatArray:
        """Fair values of one option at the closes of sessions ``i0..i1`` (one kernel call)."""
        idx = np.arange(i0, i1 + 1, dtype=np.intp)
        T = self.year_fraction(root, trading_class, expiry, idx)
        K = np.full(idx.size, strike)
        vol = self.implied_vol(root, idx, K, T)
        return self.fair_values(root, np.full(idx.size, right), K, T, self.spot(root, idx), vol, self.rate(idx))

    def greeks_at(self, root: str, i: int, rights: Sequence[str], strikes: FloatArray, T: FloatArray) -> pricing.Greeks:
        """Kernel Greeks per share (vega per vol point, theta per calendar day)."""
        k = np.asarray(strikes, dtype=np.float64)
        t = np.asarray(T, dtype=np.float64)
        vol = self.implied_vol(root, i, k, t)
        return pricing.greeks(
            np.asarray(rights), self.spot(root, i), k, t, self.rate(i), self.dividend_yield(root), vol,
            model=self._instruments.pricing_model(root), exercise=self._instruments.exercise_style(root),
        )

    def european_delta(self, root: str, i: int, rights: Sequence[str], strikes: FloatArray, T: FloatArray) -> FloatArray:
        """Fast European delta (strike selection; for ETFs the early-exercise effect is ignored)."""
        k = np.asarray(strikes, dtype=np.float64)
        t = np.asarray(T, dtype=np.float64)
        vol = self.implied_vol(root, i, k, t)
        g = pricing.greeks(np.asarray(rights), self.spot(root, i), k, t, self.rate(i), self.dividend_yield(root), vol)
        return np.asarray(g.delta, dtype=np.float64)

    # ------------------------------------------------------------------ quotes

    def spread_scale(self, i: int) -> float:
        return max(0.75, float(self.vix[i]) / 15.0)

    def option_bid_ask(self, root: str, i: int, mid: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Bid and ask around the model mid, on the instrument's tick (bid >= 0, ask > bid)."""
        tick = self.tick(root)
        m = np.asarray(mid, dtype=np.float64)
        width = np.maximum(self.spread_scale(i) * (SPREAD_PCT * m + SPREAD_TICKS * tick), tick)
        width = round_to_tick(width, tick, "up")
        bid = np.maximum(round_to_tick(m - width / 2.0, tick, "down"), 0.0)
        ask = np.maximum(round_to_tick(m + width / 2.0, tick, "up"), bid + tick)
        return bid, ask

    def stock_bid_ask(self, root: str, i: int) -> tuple[float, float, float]:
        tick = self.tick(root)
        mid = float(self.spot(root, i))
        width = max(tick, float(round_to_tick(self.spread_scale(i) * ETF_SPREAD_FRACTION * mid, tick, "up")))
        bid = float(round_to_tick(mid - width / 2.0, tick, "down"))
        ask = float(round_to_tick(mid + width / 2.0, tick, "up"))
        return bid, ask, mid


def _check_root(root: str) -> str:
    key = root.upper()
    if key not in ETF_SCALE:
        raise ValueError(f"demo market: no history for underlying {root!r} (demo underlyings: {', '.join(DEMO_ROOTS)})")
    return key
