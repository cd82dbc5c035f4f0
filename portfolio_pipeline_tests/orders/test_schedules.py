"""Scheduled rolls on the exchange calendar, the roll's price and the trail's stop (hand-computed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.orders.schedules import build_roll, roll_run_at, trail_stop

CAL = ExchangeCalendar()
OLD = Contract("SPY", "OPT", date(2018, 3, 16), 279.0, "C", "SPY")
NEW = Contract("SPY", "OPT", date(2018, 4, 20), 279.0, "C", "SPY")
NOW = datetime(2018, 3, 16, 19, 45, tzinfo=UTC)


def test_run_time_on_the_calendar() -> None:
    # expiration Friday after the DST change: 15:45 EDT = 19:45 UTC
    assert roll_run_at(CAL, date(2018, 3, 16), time(15, 45)) == datetime(
        2018, 3, 16, 19, 45, tzinfo=UTC
    )
    # in winter: 15:45 EST = 20:45 UTC
    assert roll_run_at(CAL, date(2018, 1, 19), time(15, 45)) == datetime(
        2018, 1, 19, 20, 45, tzinfo=UTC
    )
    # half day (day after Thanksgiving, 13:00 close): the same 15 minutes before the close, 12:45 EST
    assert roll_run_at(CAL, date(2018, 11, 23), time(15, 45)) == datetime(
        2018, 11, 23, 17, 45, tzinfo=UTC
    )
    # Good Friday 2018-03-30 is a holiday: the Thursday session, 15:45 EDT
    assert roll_run_at(CAL, date(2018, 3, 30), time(15, 45)) == datetime(
        2018, 3, 29, 19, 45, tzinfo=UTC
    )
    with pytest.raises(InvalidDataError, match="not before the 16:00 close"):
        roll_run_at(CAL, date(2018, 3, 16), time(16, 30))


def _quote(c: Contract, bid: float, ask: float, as_of: datetime = NOW) -> Quote:
    return Quote(source="test", contract=c, as_of=as_of, bid=bid, ask=ask, mark=(bid + ask) / 2)


def test_roll_of_a_short_call_buys_it_back_and_sells_the_later_one_at_the_net_mid() -> None:
    quotes = {OLD.key: _quote(OLD, 1.10, 1.20), NEW.key: _quote(NEW, 4.00, 4.20)}
    order = build_roll(
        order_id="R",
        broker="demo",
        account_id="A",
        held=OLD,
        held_quantity=-6,
        new=NEW,
        quantity=6,
        quotes=quotes,
        now=NOW,
        proposal_id="schedule:R",
    )
    assert [(leg.action, leg.contract) for leg in order.legs] == [("BUY", OLD), ("SELL", NEW)]
    assert order.limit_price == pytest.approx(
        1.15 - 4.10
    )  # a net credit of 2.95 (negative = credit)
    with pytest.raises(InvalidDataError, match="rolls 7 but 6 are held"):
        build_roll(
            order_id="R",
            broker="demo",
            account_id="A",
            held=OLD,
            held_quantity=-6,
            new=NEW,
            quantity=7,
            quotes=quotes,
            now=NOW,
            proposal_id="schedule:R",
        )
    stale = {**quotes, NEW.key: _quote(NEW, 4.0, 4.2, as_of=NOW - timedelta(minutes=6))}
    with pytest.raises(InvalidDataError, match="stale"):
        build_roll(
            order_id="R",
            broker="demo",
            account_id="A",
            held=OLD,
            held_quantity=-6,
            new=NEW,
            quantity=6,
            quotes=stale,
            now=NOW,
            proposal_id="schedule:R",
        )


def test_trail_stop_levels() -> None:
    assert trail_stop("SELL", 10.0, percent=20.0, amount=None) == 8.0
    assert trail_stop("BUY", 10.0, percent=None, amount=1.5) == 11.5
