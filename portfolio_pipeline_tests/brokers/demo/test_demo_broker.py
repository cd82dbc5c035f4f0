"""The demo broker: determinism, the Feb-2018 spike, assignment, expiries, accounting,
multipliers, quotes, chains and the order path."""

from __future__ import annotations

import asyncio
import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pytest

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerDataError, BrokerError
from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.brokers.demo.market import DemoMarket
from portfolio_pipeline.brokers.snapshot import VOLATILITY_INDICES
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.domain.errors import IllegalTransitionError, MultiplierMismatchError
from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.instruments import InstrumentsFile, InstrumentTable
from portfolio_pipeline.domain.limits import RiskSnapshot, breaches
from portfolio_pipeline.domain.orders import Order, OrderLeg, OrderStatus
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.marketdata import MarketHistory
from portfolio_pipeline_tests.brokers.demo.conftest import eod
from portfolio_pipeline_tests.stubs import instruments, platform_config

ACCOUNT = "DEMO-001"
SPIKE_BEFORE = date(2018, 2, 2)
SPIKE = date(2018, 2, 5)
SHORT_VOL = ("iron_condor", "put_vertical", "short_put", "covered_call")


def at(b: DemoBroker, clock: SettableClock, day: date) -> DemoBroker:
    clock.set(eod(day))
    return b


def cash_identity(b: DemoBroker, day: date) -> tuple[float, float]:
    execs = b.get_executions(ACCOUNT, date(2000, 1, 1))
    flows = b.get_cash_flows(ACCOUNT, date(2000, 1, 1))
    return b.get_account_snapshot(ACCOUNT).cash, sum(e.cash_effect for e in execs) + sum(f.amount for f in flows)


def test_is_a_broker_adapter(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, _ = broker
    assert isinstance(b, BrokerAdapter)
    assert asyncio.run(b.account_ids()) == [ACCOUNT]


def test_same_seed_same_book(history: MarketHistory) -> None:
    clock = SettableClock(eod(date(2018, 12, 31)))
    a = DemoBroker(instruments(), clock=clock, history=history, seed=7)
    pa = a.get_positions(ACCOUNT)
    b = DemoBroker(instruments(), clock=clock, history=history, seed=7)
    c = DemoBroker(instruments(), clock=clock, history=history, seed=8)
    assert pa == b.get_positions(ACCOUNT)
    ea, eb = a.get_executions(ACCOUNT, date(2017, 1, 1)), b.get_executions(ACCOUNT, date(2017, 1, 1))
    assert ea == eb and len(ea) > 200
    assert [e.price for e in ea] != [e.price for e in c.get_executions(ACCOUNT, date(2017, 1, 1))]


def test_feb_2018_spike_hurts_short_vol_and_trips_limits(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    regime = RegimeService(platform_config().risk_matrix)
    state = {}
    for day in (SPIKE_BEFORE, SPIKE):
        at(b, clock, day)
        positions = b.get_positions(ACCOUNT)
        acct = b.get_account_snapshot(ACCOUNT)
        quotes = {q.contract.key: q for q in b.get_quotes([p.contract for p in positions] + list(VOLATILITY_INDICES))}
        risk = {"delta": 0.0, "gamma": 0.0, "vega": 0.0, "theta": 0.0}
        for p in positions:
            q = quotes[p.contract.key]
            if p.contract.is_option:
                g = position_greeks(delta=q.delta, gamma=q.gamma, vega=q.vega, theta=q.theta,
                                    quantity=p.quantity, multiplier=p.multiplier, spot=q.underlying_price)
            else:
                g = position_greeks(delta=1.0, gamma=0.0, vega=0.0, theta=0.0, quantity=p.quantity,
                                    multiplier=p.multiplier, spot=q.mark)
            risk["delta"] += float(g.beta_weighted_dollar_delta)
            risk["gamma"] += float(g.dollar_gamma_1pct)
            risk["vega"] += float(g.vega_per_point)
            risk["theta"] += float(g.theta_per_day)
        snap = RiskSnapshot("demo", acct.nlv, risk["delta"], risk["gamma"], risk["vega"], risk["theta"], acct.maint_margin)
        rs = regime.classify(quotes["VIX|IND"].mark, quotes["VIX3M|IND"].mark)
        state[day] = (acct, positions, quotes, {c.metric for c in breaches(snap, rs)}, rs)
    acct0, pos0, q0, br0, rs0 = state[SPIKE_BEFORE]
    acct1, pos1, q1, br1, rs1 = state[SPIKE]
    assert q0["VIX|IND"].mark == pytest.approx(17.31) and q1["VIX|IND"].mark == pytest.approx(37.32)
    assert rs1.backwardation and rs1.name == "crisis" and not rs0.backwardation
    assert acct1.nlv < acct0.nlv * 0.99, (acct0.nlv, acct1.nlv)  # -1.2%: a book sized to its NLV
    # Short-premium options held through the spike lost money.
    day_pnl = 0.0
    groups = {g.group_id: g for g in b.book.day(b.market.index_of(SPIKE)).groups}  # type: ignore[union-attr]
    short_keys = {c.key for g in groups.values() if g.strategy in SHORT_VOL for c, q in g.legs if q < 0}
    assert short_keys
    before = {p.key: p for p in pos0}
    for p in pos1:
        if p.key in short_keys and p.key in before:
            day_pnl += (p.mark - before[p.key].mark) * p.quantity * p.multiplier
    assert day_pnl < -4_000, day_pnl
    assert not br0, br0  # within every limit on the Friday before
    assert "margin_utilisation" in br1, br1  # the crisis margin limit (12.5% of NLV) trips on the spike
    assert "beta_weighted_delta" not in br0 and "margin_utilisation" not in br0
    assert acct1.margin_utilisation > acct0.margin_utilisation


def test_assignment_folds_premium_into_basis_once(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    execs = b.get_executions(ACCOUNT, date(2017, 1, 1))
    stock = [e for e in execs if e.kind == "assignment" and e.contract.sec_type == "STK" and e.quantity > 0]
    assert stock, "the SPY wheel must be assigned at least once"
    first = stock[0]
    opt = next(e for e in execs if e.kind == "assignment" and e.contract.is_option and e.ts == first.ts)
    assert opt.contract.right == "P" and opt.contract.underlying == "SPY"
    strike = float(opt.contract.strike)  # type: ignore[arg-type]
    sold = [e for e in execs if e.contract == opt.contract and e.kind == "trade"]
    premium = sum(-e.quantity * e.price for e in sold) / sum(-e.quantity for e in sold)
    assert opt.price == pytest.approx(premium)
    assert first.price == pytest.approx(strike - premium)
    assert first.quantity == 100 * opt.quantity
    # Cash moves by exactly strike x shares on assignment (premium counted once, at the sale).
    assert opt.cash_effect + first.cash_effect == pytest.approx(-strike * first.quantity)
    day = first.ts.astimezone(UTC).date()
    at(b, clock, day)
    spy = next(p for p in b.get_positions(ACCOUNT) if p.contract.sec_type == "STK")
    assert spy.avg_price == pytest.approx(strike - premium)
    assert all(p.contract != opt.contract for p in b.get_positions(ACCOUNT))
    cash, rebuilt = cash_identity(b, day)
    assert cash == pytest.approx(rebuilt, abs=1e-6)


def test_nlv_change_is_pnl_plus_external_flows(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    d1, d2 = date(2017, 9, 29), date(2018, 10, 31)  # spans a deposit, a withdrawal and an assignment
    at(b, clock, d1)
    n1, mv1 = b.get_account_snapshot(ACCOUNT).nlv, sum(p.market_value for p in b.get_positions(ACCOUNT))
    at(b, clock, d2)
    n2, mv2 = b.get_account_snapshot(ACCOUNT).nlv, sum(p.market_value for p in b.get_positions(ACCOUNT))
    window = [e for e in b.get_executions(ACCOUNT, d1 + timedelta(days=1))]
    flows = b.get_cash_flows(ACCOUNT, d1 + timedelta(days=1))
    assert {f.kind for f in flows} == {"deposit", "withdrawal"}
    assert any(e.kind == "assignment" for e in window)
    trading_pnl = (mv2 - mv1) + sum(e.cash_effect for e in window)
    assert n2 - n1 == pytest.approx(trading_pnl + sum(f.amount for f in flows), abs=1e-6)


@pytest.mark.parametrize("day", [date(2017, 7, 3), date(2017, 12, 15), date(2018, 2, 16), date(2018, 12, 31)])
def test_cash_equals_executions_plus_cash_flows(broker: tuple[DemoBroker, SettableClock], day: date) -> None:
    b, clock = broker
    at(b, clock, day)
    cash, rebuilt = cash_identity(b, day)
    assert cash == pytest.approx(rebuilt, abs=1e-6)
    acct = b.get_account_snapshot(ACCOUNT)
    assert acct.nlv == pytest.approx(cash + sum(p.market_value for p in b.get_positions(ACCOUNT)))
    assert acct.excess_liquidity == pytest.approx(acct.nlv - acct.maint_margin)


def test_expiries_zero_positions_and_index_options_settle_to_intrinsic(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    m = b.market
    expiries = [e for e in b.get_executions(ACCOUNT, date(2017, 1, 1)) if e.kind == "expiry"]
    index = [e for e in expiries if e.contract.underlying in ("SPX", "NDX")]
    assert index and any(e.price > 0 for e in index), "at least one index option expires in the money"
    for e in index:
        c = e.contract
        i = m.index_of(c.expiry)  # type: ignore[arg-type]
        am = m.is_am_settled(c.underlying, c.trading_class)
        settle = m.opening(c.underlying, i) if am else float(m.spot(c.underlying, i))
        k = float(c.strike)  # type: ignore[arg-type]
        intrinsic = max(settle - k, 0.0) if c.right == "C" else max(k - settle, 0.0)
        assert e.price == pytest.approx(intrinsic, abs=1e-4)
        assert e.cash_effect == pytest.approx(-e.quantity * intrinsic * 100.0, abs=1e-2)
    for e in expiries[:10]:
        at(b, clock, e.contract.expiry)  # type: ignore[arg-type]
        assert all(p.contract != e.contract for p in b.get_positions(ACCOUNT))


def test_roll_links_close_and_open(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, _ = broker
    execs = b.get_executions(ACCOUNT, date(2017, 1, 1))
    rolls = {e.order_ref for e in execs if (e.order_ref or "").startswith("ROLL-")}
    assert rolls
    ref = sorted(rolls)[0]
    legs = [e for e in execs if e.order_ref == ref]
    assert len({e.contract.expiry for e in legs}) == 2  # closes one expiry, opens the next


def test_wrong_instrument_table_is_an_error(history: MarketHistory) -> None:
    raw = platform_config().instruments
    data = {k: v.model_dump() for k, v in raw.items()}
    data["SPX"]["options"]["multiplier"] = 10.0
    bad = InstrumentTable.from_file_model(InstrumentsFile.model_validate({"instruments": data}), source="bad.yaml")
    b = DemoBroker(bad, clock=SettableClock(eod(date(2018, 2, 5))), history=history)
    with pytest.raises(MultiplierMismatchError, match=r"bad\.yaml"):
        b.get_positions(ACCOUNT)


def test_positions_use_table_multipliers(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    at(b, clock, SPIKE)
    table = instruments()
    for p in b.get_positions(ACCOUNT):
        sec = "OPT" if p.contract.is_option else p.contract.sec_type
        assert p.multiplier == table.multiplier(p.contract.underlying, sec, p.contract.trading_class)  # type: ignore[arg-type]
        assert p.as_of.tzinfo is not None


def test_quotes_sane_and_spreads_widen_with_vix(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    put = Contract("SPX", "OPT", date(2018, 3, 16), 2600.0, "P", "SPXW")
    spy_put = Contract("SPY", "OPT", date(2018, 3, 16), 260.0, "P", "SPY")
    contracts = [put, spy_put, Contract("SPY", "STK"), Contract("SPX", "IND"), *VOLATILITY_INDICES,
                 Contract("RUT", "IND")]
    width = {}
    for day in (date(2018, 1, 3), SPIKE):  # VIX 9.15 vs 37.32
        at(b, clock, day)
        quotes = {q.contract.key: q for q in b.get_quotes(contracts)}
        assert "RUT|IND" not in quotes
        for q in quotes.values():
            assert q.bid <= q.mark <= q.ask and q.as_of.tzinfo is not None
        for c in (put, spy_put):
            q = quotes[c.key]
            assert all(math.isfinite(x) for x in (q.delta, q.gamma, q.vega, q.theta, q.iv))  # type: ignore[arg-type]
            assert -1.0 < q.delta < 0.0 and q.gamma > 0 and q.vega > 0 and q.theta < 0  # type: ignore[operator]
            tick = instruments()[c.underlying].options.tick_size  # type: ignore[union-attr]
            assert np.isclose(q.bid / tick, round(q.bid / tick)) and np.isclose(q.ask / tick, round(q.ask / tick))
        width[day] = quotes[put.key].ask - quotes[put.key].bid
        assert quotes["VIX3M|IND"].mark > 0
    assert width[SPIKE] > width[date(2018, 1, 3)]


def test_option_chain_on_grid_and_sessions(broker: tuple[DemoBroker, SettableClock]) -> None:
    b, clock = broker
    at(b, clock, date(2018, 3, 1))
    cal = b.market.calendar
    for root, tc, inc in (("SPX", "SPXW", 5.0), ("NDX", "NDX", 25.0), ("SPY", None, 1.0), ("QQQ", None, 1.0)):
        chain = asyncio.run(b.option_chain(root, tc))
        assert chain.multiplier == 100.0
        assert all(k % inc == 0 for k in chain.strikes)
        assert all(cal.is_session(e) and e >= date(2018, 3, 1) for e in chain.expiries)
    weekly = b.get_option_chain("SPX", "SPXW").expiries
    assert date(2018, 3, 29) in weekly and date(2018, 3, 30) not in weekly  # Good Friday -> Thursday
    assert date(2018, 3, 16) in b.get_option_chain("SPX", "SPX").expiries
    assert date(2018, 3, 9) not in b.get_option_chain("SPX", "SPX").expiries  # AM class: monthlies only
    with pytest.raises(BrokerDataError):
        b.get_option_chain("RUT")


def test_clock_semantics(history: MarketHistory) -> None:
    clock = SettableClock(datetime(2018, 2, 5, 15, 0, tzinfo=UTC))  # 10:00 New York, during the session
    b = DemoBroker(instruments(), clock=clock, history=history)
    assert b.session() == date(2018, 2, 2)
    clock.set(datetime(2018, 2, 5, 21, 5, tzinfo=UTC))  # 16:05 New York
    assert b.session() == date(2018, 2, 5)
    clock.set(eod(date(2017, 6, 1)))  # before the book starts: empty account
    assert b.get_positions(ACCOUNT) == [] and b.get_account_snapshot(ACCOUNT).nlv == 0.0
    clock.set(eod(date(2014, 6, 2)))
    assert b.session() == date(2014, 6, 2)
    for bad in (eod(date(2019, 3, 1)), eod(date(2014, 5, 1))):
        clock.set(bad)
        with pytest.raises(BrokerError, match="outside the demo history"):
            b.get_positions(ACCOUNT)
    with pytest.raises(BrokerError, match="unknown account"):
        b.get_positions("OTHER")


def test_early_start_is_valid(history: MarketHistory) -> None:
    clock = SettableClock(eod(date(2014, 12, 31)))
    b = DemoBroker(instruments(), clock=clock, history=history, start=date(2014, 6, 2))
    assert b.get_positions(ACCOUNT)
    cash, rebuilt = cash_identity(b, date(2014, 12, 31))
    assert cash == pytest.approx(rebuilt, abs=1e-6)


def _order(contract: Contract, action: str, qty: int, now: datetime) -> Order:
    return Order(order_id=f"o-{contract.key}-{qty}", broker="demo", account_id=ACCOUNT,
                 legs=(OrderLeg(contract, action),), quantity=qty, limit_price=1.0, created_at=now)  # type: ignore[arg-type]


def test_order_path(history: MarketHistory) -> None:
    now = eod(SPIKE_BEFORE)
    clock = SettableClock(now)
    b = DemoBroker(instruments(), clock=clock, history=history)
    put = Contract("SPX", "OPT", date(2018, 3, 16), 2500.0, "P", "SPXW")
    order = _order(put, "SELL", 40, now)
    whatif = asyncio.run(b.what_if(order))
    assert whatif.init_margin_change > 0 and whatif.commission == pytest.approx(40 * 1.65)
    assert any("margin utilisation would exceed 50%" in w for w in whatif.warnings)
    small = _order(put, "SELL", 1, now)
    staged = asyncio.run(b.stage(small))
    assert staged.whatif.commission == pytest.approx(1.65)
    with pytest.raises(IllegalTransitionError):
        asyncio.run(b.transmit(small))
    asyncio.run(b.cancel(small))
    confirmed = (
        small.transition(OrderStatus.STAGED, actor="t", at=now, whatif=staged.whatif)
        .show(token="abcdef", actor="t", at=now)
        .confirm(token="abcdef", actor="t", at=now)
    )
    before = b.get_account_snapshot(ACCOUNT)
    broker_id = asyncio.run(b.transmit(confirmed))
    held = [p for p in b.get_positions(ACCOUNT) if p.contract == put]
    assert held and held[0].quantity == -1.0
    fill = [e for e in b.get_executions(ACCOUNT, SPIKE_BEFORE) if e.order_ref == broker_id]
    assert len(fill) == 1 and fill[0].quantity == -1.0
    after = b.get_account_snapshot(ACCOUNT)
    assert after.cash == pytest.approx(before.cash + fill[0].cash_effect)
    cash, rebuilt = cash_identity(b, SPIKE_BEFORE)
    assert cash == pytest.approx(rebuilt, abs=1e-6)
    with pytest.raises(BrokerError, match="filled on transmit"):
        asyncio.run(b.cancel(confirmed))
    clock.set(eod(SPIKE))
    assert any(p.contract == put for p in b.get_positions(ACCOUNT))
    with pytest.raises(BrokerDataError):
        asyncio.run(b.what_if(_order(Contract("SPX", "OPT", date(2018, 3, 16), 2502.0, "P", "SPXW"), "BUY", 1, now)))


def test_market_model_shape(history: MarketHistory) -> None:
    m = DemoMarket(history, instruments(), DemoBroker(instruments(), clock=lambda: eod(SPIKE), history=history).market.calendar)
    calm, spike = m.index_of(date(2017, 11, 1)), m.index_of(SPIKE)
    T = np.array([7.0, 30.0, 93.0, 365.0]) / 365.0
    calm_atm, spike_atm = m.atm_vol("SPX", calm, T), m.atm_vol("SPX", spike, T)
    assert np.all(np.diff(calm_atm) > 0) and np.all(np.diff(spike_atm) < 0)  # contango vs backwardation
    assert spike_atm[1] == pytest.approx(0.87 * 0.3732, rel=1e-6)
    assert (spike_atm - calm_atm)[0] > (spike_atm - calm_atm)[-1]  # short end moves more
    assert float(m.spot("SPY", spike)) == pytest.approx(float(m.spot("SPX", spike)) / 10.0)
    assert float(m.spot("QQQ", spike)) == pytest.approx(float(m.spot("NDX", spike)) / 40.0)
    K = np.array([2400.0, 2650.0, 2900.0])
    iv = m.implied_vol("SPX", spike, K, np.full(3, 40 / 365))
    assert iv[0] > iv[1] > iv[2]  # put skew
    assert 1.0 <= m.atm_vol("NDX", spike, T[1:2])[0] / spike_atm[1] <= 1.6
