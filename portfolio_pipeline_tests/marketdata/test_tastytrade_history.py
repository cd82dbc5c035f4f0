"""Tastytrade daily candles over DXLink: the real SDK against the fake DXLink server."""

from __future__ import annotations

import asyncio
from datetime import date

import pytest

from portfolio_pipeline.brokers.tastytrade.history_source import (
    TastytradeHistorySource,
    candle_session,
    candle_symbol,
)
from portfolio_pipeline.marketdata.bars import HistoryAnswer, HistoryUnavailableError
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import FakeTasty
from portfolio_pipeline_tests.brokers.tastytrade.test_adapter import adapter
from portfolio_pipeline_tests.marketdata.fake_dxlink_candles import CandleDXLink
from portfolio_pipeline_tests.stubs import instruments

SPX = MarketHistory().spx_close().loc["2018-01-29":"2018-02-09"]
CANDLES = [(ts.date(), v - 5, v + 10, v - 10, v, 1e6) for ts, v in SPX.items()]


def _fetch(dx_kwargs: dict[str, object], symbol: str, start: date, end: date,
           **source_kwargs: float) -> tuple[HistoryAnswer, CandleDXLink]:
    async def main() -> tuple[HistoryAnswer, CandleDXLink]:
        async with CandleDXLink(period=0.005, **dx_kwargs) as dx:  # type: ignore[arg-type]
            fake = FakeTasty(dxlink_url=dx.url)
            async with adapter(fake) as broker:
                source = TastytradeHistorySource(broker._require_session(), instruments(), **source_kwargs)
                return await source.daily_bars(symbol, start, end), dx

    return asyncio.run(main())


def test_candle_symbol_and_session_date() -> None:
    assert candle_symbol("SPX") == "SPX{=1d,tho=true}"
    # 2018-02-05 00:00 New York = 05:00 UTC, and 2018-02-05 00:00 UTC: both session 2018-02-05
    assert candle_session(1517806800000) == date(2018, 2, 5)
    assert candle_session(1517788800000) == date(2018, 2, 5)


def test_daily_candles_until_the_snapshot_end() -> None:
    answer, dx = _fetch({"candles": {"SPX": CANDLES}}, "SPX", date(2018, 1, 29), date(2018, 2, 9))
    assert [b.session for b in answer.bars] == [d for d, *_ in CANDLES]
    assert [b.close for b in answer.bars] == pytest.approx(list(SPX.to_numpy()))
    assert answer.bars[5].close == pytest.approx(2648.94, abs=0.01)  # 2018-02-05 published close
    assert {b.source for b in answer.bars} == {"tastytrade:candle"}
    assert answer.notes == ()
    assert dx.subscribed("Candle") == {"SPX{=1d,tho=true}"}
    [sub] = [m for m in dx.received if m.get("type") == "FEED_SUBSCRIPTION" and m.get("add")
             and m["add"][0]["type"] == "Candle"]
    assert sub["add"][0]["fromTime"] == 1517202000000  # 2018-01-29 00:00 New York


def test_snapshot_that_never_ends_is_a_partial_answer() -> None:
    answer, _ = _fetch({"candles": {"SPX": CANDLES}, "end_flag": False}, "SPX",
                       date(2018, 1, 29), date(2018, 2, 9), timeout=0.5, first_event_timeout=2.0)
    assert len(answer.bars) == len(CANDLES)  # what arrived is kept, nothing filled
    assert answer.notes[0].startswith("tastytrade: partial answer for SPX: the candle snapshot did not end")


def test_no_candles_means_no_entitlement_or_unknown_symbol() -> None:
    with pytest.raises(HistoryUnavailableError, match=r"no daily candles for VIX3M within 0\.3s"):
        _fetch({"candles": {"SPX": CANDLES}}, "VIX3M", date(2018, 1, 29), date(2018, 2, 9),
               first_event_timeout=0.3)
    with pytest.raises(HistoryUnavailableError, match="futures root ES"):
        _fetch({}, "ES", date(2018, 1, 29), date(2018, 2, 9))
