"""The demo's market history through the one :class:`~portfolio_pipeline.marketdata.bars.
HistorySource` interface: the shipped ``arch`` data and its documented transforms.

=======  ===========================================  ==========================
symbol   bars                                         ``source``
=======  ===========================================  ==========================
SPX      S&P 500 open/close (``arch.data.sp500``)      ``demo:arch.sp500``
NDX      NDX PROXY open/close (Nasdaq Composite        ``demo:ndx-proxy``
         scaled to a published NDX close)
SPY      SPX / 10 (as the demo market prices it)       ``demo:spx/10``
QQQ      NDX proxy / 40                                ``demo:ndx-proxy/40``
VIX      Cboe VIX close (``arch.data.vix``)             ``demo:arch.vix``
VIX3M    MODEL ``LR + (VIX - LR) f``                   ``demo:model-vix3m``
=======  ===========================================  ==========================

Every bar is labelled, so the stored proxy/model series are never mistaken for
published data; no session is filled.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pandas as pd

from portfolio_pipeline.marketdata.bars import DailyBar, HistoryAnswer, HistoryUnavailableError
from portfolio_pipeline.marketdata.history import MarketHistory

SeriesPair = tuple[pd.Series, pd.Series | None, str]


class DemoHistorySource:
    """Daily bars of the demo universe from a :class:`MarketHistory` (loaded lazily)."""

    name = "demo"

    def __init__(self, history: MarketHistory | None = None) -> None:
        self._history = history

    def _h(self) -> MarketHistory:
        if self._history is None:
            self._history = MarketHistory()
        return self._history

    def max_years(self) -> float:
        return 30.0

    def _series(self) -> dict[str, Callable[[], SeriesPair]]:
        h = self._h
        return {
            "SPX": lambda: (h().spx_close(), h().spx_open(), "demo:arch.sp500"),
            "NDX": lambda: (h().ndx_proxy_close(), h().ndx_proxy_open(), "demo:ndx-proxy"),
            "SPY": lambda: (h().spx_close() / 10.0, h().spx_open() / 10.0, "demo:spx/10"),
            "QQQ": lambda: (h().ndx_proxy_close() / 40.0, h().ndx_proxy_open() / 40.0, "demo:ndx-proxy/40"),
            "VIX": lambda: (h().vix(), None, "demo:arch.vix"),
            "VIX3M": lambda: (h().vix3m_model(), None, "demo:model-vix3m"),
        }

    async def daily_bars(self, symbol: str, start: date, end: date) -> HistoryAnswer:
        builders = self._series()
        if symbol not in builders:
            raise HistoryUnavailableError(
                f"demo: no market history for {symbol} (the demo serves {', '.join(builders)})"
            )
        close, opening, source = builders[symbol]()
        close = close.loc[pd.Timestamp(start) : pd.Timestamp(end)]
        opens = opening.reindex(close.index) if opening is not None else None
        bars = tuple(
            DailyBar(symbol=symbol, session=ts.date(), close=float(c), source=source,
                     open=None if opens is None else float(opens.loc[ts]))
            for ts, c in close.items()
        )
        notes: tuple[str, ...] = ()
        if not bars:
            notes = (f"demo: no {symbol} data in {start}..{end} (shipped data ends "
                     f"{builders[symbol]()[0].index[-1].date()})",)
        return HistoryAnswer(symbol, start, end, bars, notes)
