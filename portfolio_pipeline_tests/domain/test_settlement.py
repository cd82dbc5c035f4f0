"""THE settlement instant (issue 13.6): exchange calendar, AM/PM per class, DST, half days.

Oracle: NYSE regular hours 09:30-16:00 America/New_York (13:00 close on the published
half days, e.g. 2018-07-03; closed on Good Friday 2018-03-30), converted to UTC by hand:
EDT = UTC-4 (July), EST = UTC-5 (January).  The engine test's oracle is the closed-form
Black-Scholes gamma, phi(d1) / (S sigma sqrt(T)), computed here with ``math`` only.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime

import pytest

from portfolio_pipeline.domain.positions import AccountSnapshot, Quote
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.domain.settlement import (
    YEAR_SECONDS,
    settlement_instant,
    years_to_settlement,
)
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline_tests.stubs import option, platform_config, position
from streaming_service.engine import Engine, EngineInputs, _settle_epoch
from streaming_service.proposer import MarketView, _years

CAL = ExchangeCalendar()


@pytest.mark.parametrize(
    ("expiry", "when", "expected"),
    [
        (date(2018, 7, 20), "PM", datetime(2018, 7, 20, 20, 0, tzinfo=UTC)),  # EDT close
        (date(2018, 1, 19), "PM", datetime(2018, 1, 19, 21, 0, tzinfo=UTC)),  # EST close
        (date(2018, 7, 20), "AM", datetime(2018, 7, 20, 13, 30, tzinfo=UTC)),  # EDT open (SOQ)
        (date(2018, 1, 19), "AM", datetime(2018, 1, 19, 14, 30, tzinfo=UTC)),  # EST open
        (date(2018, 7, 3), "PM", datetime(2018, 7, 3, 17, 0, tzinfo=UTC)),  # half day: 13:00 EDT
        (date(2018, 3, 30), "PM", datetime(2018, 3, 29, 20, 0, tzinfo=UTC)),  # Good Friday -> Thursday
    ],
)
def test_settlement_instant_on_the_exchange_calendar(expiry: date, when: str, expected: datetime) -> None:
    assert settlement_instant(expiry, when, CAL) == expected
    assert _settle_epoch(expiry, when, CAL) == expected.timestamp()  # the streaming engine's


def test_outside_the_calendar_regular_new_york_hours_with_dst() -> None:
    assert settlement_instant(date(2045, 7, 21), "PM", CAL) == datetime(2045, 7, 21, 20, 0, tzinfo=UTC)
    assert settlement_instant(date(2045, 1, 20), "AM", CAL) == datetime(2045, 1, 20, 14, 30, tzinfo=UTC)
    with pytest.raises(ValueError, match="'AM' or 'PM'"):
        settlement_instant(date(2018, 7, 20), "noon", CAL)


def test_proposer_uses_the_same_instant() -> None:
    as_of = datetime(2018, 7, 18, 19, 0, tzinfo=UTC)  # 15:00 New York
    view = MarketView(root="SPX", trading_class="SPXW", spot=2800.0, vol=0.15, rate=0.0, dividend_yield=0.0,
                      beta=1.0, multiplier=100.0, strike_increment=5.0, tick_size=0.05, settlement_time="PM",
                      model="bsm", expiries=(date(2018, 7, 18),), as_of=as_of, calendar=CAL)
    assert _years(view, date(2018, 7, 18)) == pytest.approx(3600.0 / YEAR_SECONDS, rel=1e-12)
    assert years_to_settlement(as_of, date(2018, 7, 18), "PM", CAL) == _years(view, date(2018, 7, 18))


def test_engine_gamma_of_an_atm_0dte_put_at_3pm_new_york_in_july() -> None:
    """Issue 13.6: fixed 21:00 UTC made T two hours instead of one (gamma 29% low)."""
    as_of = datetime(2018, 7, 18, 19, 0, tzinfo=UTC)  # 15:00 EDT; SPXW settles 16:00 EDT = 20:00 UTC
    spot, strike, vol = 2800.0, 2800.0, 0.15
    put = option("SPX", strike, "P", date(2018, 7, 18), trading_class="SPXW")
    cfg = platform_config()
    account = AccountSnapshot("demo", "DEMO-001", as_of, 1e6, 1e6, 0.0, 0.0, 1e6, 1e6)
    quote = Quote("demo", put, as_of, 2.0, 2.2, 2.1, iv=vol, underlying_price=spot)
    engine = Engine(
        EngineInputs(account, [position(put, 1, mark=2.1, underlying_price=spot, as_of=as_of)], [quote],
                     vix=15.0, vix3m=16.0, rate=0.0, dividend_yields={"SPX": 0.0}),
        cfg.instruments, RegimeService(cfg.risk_matrix), calendar=CAL,
    )
    t = 3600.0 / YEAR_SECONDS
    d1 = (math.log(spot / strike) + 0.5 * vol * vol * t) / (vol * math.sqrt(t))
    gamma = math.exp(-0.5 * d1 * d1) / math.sqrt(2 * math.pi) / (spot * vol * math.sqrt(t))
    expected = gamma * 1 * 100 * spot * spot / 100  # dollar gamma per 1% move
    assert engine.risk_snapshot().dollar_gamma_1pct == pytest.approx(expected, rel=1e-6)
    old = expected / math.sqrt(2.0)  # T = 2 h under the fixed 21:00 UTC rule
    assert 1 - old / expected == pytest.approx(0.29, abs=0.01)
