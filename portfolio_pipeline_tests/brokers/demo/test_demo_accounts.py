"""The demo broker's three accounts: the index book unchanged, the IRA's wheel always
cash-secured / covered, and the transfer between two of them P&L-neutral in each
account's time-weighted return and in the consolidated book."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from portfolio_pipeline.analytics.performance import flow_sessions, return_rows
from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.brokers.demo.book import PROFILES, TRANSFER, DemoBook
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.defs.risk.assets import session_after
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline.storage.frames import AccountsFrame, ReturnsFrame
from portfolio_pipeline.storage.records import account_row
from portfolio_pipeline_tests.brokers.demo.conftest import eod
from portfolio_pipeline_tests.stubs import instruments

BOOKS = {"DEMO-001": ("index", 7), "DEMO-IRA": ("wheel", 11), "DEMO-TT": ("verticals", 13)}
TRANSFER_DAY = date(2017, 11, 30)  # 150 days after 2017-07-03: a Thursday session


@pytest.fixture(scope="module")
def three(history: MarketHistory) -> tuple[DemoBroker, SettableClock]:
    clock = SettableClock(eod(date(2018, 6, 29)))
    return DemoBroker(instruments(), clock=clock, history=history, books=BOOKS), clock


def test_index_account_is_the_single_account_book(
    three: tuple[DemoBroker, SettableClock], history: MarketHistory
) -> None:
    b, clock = three
    single = DemoBroker(instruments(), clock=clock, history=history)
    assert np.array_equal(single.nlv_series().to_numpy(), b.nlv_series("DEMO-001").to_numpy())
    assert [e for _, e in single.book.executions] == [
        e for _, e in b.book_of("DEMO-001").executions
    ]
    assert b.book is b.book_of("DEMO-001")


def test_accounts_are_served_separately(three: tuple[DemoBroker, SettableClock]) -> None:
    import asyncio

    b, _ = three
    assert asyncio.run(b.account_ids()) == list(BOOKS)
    roots = {a: {p.contract.underlying for p in b.get_positions(a)} for a in BOOKS}
    assert roots["DEMO-IRA"] <= {"SPY"} and roots["DEMO-TT"] == {"NDX"}
    exec_ids = [e.exec_id for a in BOOKS for _, e in b.book_of(a).executions]
    assert len(exec_ids) == len(set(exec_ids))  # no id collides across accounts
    with pytest.raises(Exception, match="unknown account 'NOPE'"):
        b.get_positions("NOPE")
    with pytest.raises(ValueError, match="unknown book 'futures'"):
        DemoBroker(instruments(), clock=lambda: eod(date(2018, 1, 2)), books={"X": ("futures", 1)})


def test_ira_wheel_is_always_cash_secured_and_covered(
    three: tuple[DemoBroker, SettableClock],
) -> None:
    b, _ = three
    book = b.book_of("DEMO-IRA")
    puts = calls = 0
    for day in book.days:
        shares = sum(lot.quantity for lot in day.lots if lot.contract.sec_type == "STK")
        for lot in day.lots:
            c = lot.contract
            if not c.is_option:
                continue
            assert lot.quantity < 0, "the wheel only sells options"
            if c.right == "P":
                puts += 1
                assert c.strike is not None and c.strike * 100.0 * -lot.quantity <= day.cash, (
                    book.market.sessions[day.session]
                )
            else:
                calls += 1
                assert -lot.quantity * 100.0 <= shares, book.market.sessions[day.session]
    assert puts > 100  # it did trade puts on most sessions


def _snapshot(b: DemoBroker, clock: SettableClock, day: date) -> AccountsFrame:
    clock.set(eod(day))
    return AccountsFrame.from_rows([account_row(day, b.get_account_snapshot(a)) for a in BOOKS])


def test_transfer_is_pnl_neutral_in_each_account_and_the_book(
    three: tuple[DemoBroker, SettableClock], history: MarketHistory
) -> None:
    b, clock = three
    calendar = ExchangeCalendar()
    prev_day = calendar.previous_session(TRANSFER_DAY)
    clock.set(eod(TRANSFER_DAY))
    flows = [f for a in BOOKS for f in b.get_cash_flows(a, TRANSFER_DAY)]
    transfers = [(f.account_id, f.kind, f.amount) for f in flows]
    assert transfers == [
        ("DEMO-IRA", "transfer", TRANSFER[1]),
        ("DEMO-TT", "transfer", -TRANSFER[1]),
    ]
    rows = return_rows(
        TRANSFER_DAY,
        _snapshot(b, clock, TRANSFER_DAY),
        _snapshot(b, clock, prev_day),
        flow_sessions(flows, session_after(calendar)),
        ReturnsFrame.from_rows([]),
    )
    by = {r["account_id"]: r for r in rows}

    # the reference: each book simulated WITHOUT the transfer (same sizes were decided the
    # session before, so the session's P&L must be the same to the cent)
    market = b.book_of("DEMO-IRA").market
    i = market.index_of(TRANSFER_DAY)
    for account, kind in (("DEMO-IRA", "wheel"), ("DEMO-TT", "verticals")):
        seed = BOOKS[account][1]
        plain = DemoBook(
            market,
            start=date(2017, 7, 3),
            seed=seed,
            account_id=account,
            profile=replace(PROFILES[kind], flows=()),
        )
        nlv, prev = plain.nlv(plain.day(i)), plain.nlv(plain.day(i - 1))  # type: ignore[arg-type]
        row = by[account]
        assert row["external_flow"] == pytest.approx(
            TRANSFER[1] if kind == "wheel" else -TRANSFER[1]
        )
        assert row["nlv"] - row["prev_nlv"] - row["external_flow"] == pytest.approx(
            nlv - prev, abs=1e-6
        )
        assert row["pnl"] == pytest.approx(nlv - prev, abs=1e-6)
        assert row["twr"] == pytest.approx((nlv - prev) / prev, abs=1e-12)
    book = by[AGGREGATE]
    assert book["external_flow"] == pytest.approx(0.0, abs=1e-9)  # the two legs cancel
    assert book["pnl"] == pytest.approx(sum(by[a]["pnl"] for a in BOOKS), abs=1e-6)
    assert book["nlv"] == pytest.approx(sum(by[a]["nlv"] for a in BOOKS), abs=1e-6)
    # the consolidated return is the NLV-weighted return of the accounts
    weighted = sum(by[a]["twr"] * by[a]["prev_nlv"] for a in BOOKS) / sum(
        by[a]["prev_nlv"] for a in BOOKS
    )
    assert book["twr"] == pytest.approx(weighted, abs=1e-12)
