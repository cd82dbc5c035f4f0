"""Strategy tagging: every rule on a hand-built book, ambiguity, identity, P&L split."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.domain.strategies.identity import (
    ExecutionFact,
    ManualStrategy,
    StrategyState,
    assign_strategies,
)
from portfolio_pipeline.domain.strategies.legs import Leg
from portfolio_pipeline.domain.strategies.patterns import classify, decompose
from portfolio_pipeline.domain.strategies.pnl import Trade, allocate_pnl

MAR = date(2018, 3, 16)
APR = date(2018, 4, 20)
D0 = date(2018, 2, 1)
D1 = date(2018, 2, 2)


def opt(strike: float, right: str, qty: float, expiry: date = MAR, root: str = "SPX") -> Leg:
    c = Contract(root, "OPT", expiry=expiry, strike=strike, right=right, trading_class=root)  # type: ignore[arg-type]
    return Leg(c.key, c, qty, 100.0)


def stock(qty: float, root: str = "SPY") -> Leg:
    c = Contract(root, "STK")
    return Leg(c.key, c, qty, 1.0)


def future(qty: float) -> Leg:
    c = Contract("ES", "FUT", expiry=MAR)
    return Leg(c.key, c, qty, 50.0)


def types(legs: list[Leg], **kw: bool) -> list[tuple[str, str, float]]:
    return sorted((p.strategy_type, p.detail, min(abs(x.quantity) for x in p.legs))
                  for p in decompose(legs, **kw))


CONDOR = [opt(2500, "P", 2), opt(2550, "P", -2), opt(2850, "C", -2), opt(2900, "C", 2)]


@pytest.mark.parametrize(("legs", "expected"), [
    ([opt(2700, "C", 1)], "long_call"),
    ([opt(2700, "P", 1)], "long_put"),
    ([opt(2700, "C", -1)], "short_call"),
    ([opt(2700, "P", -1)], "short_put"),
    ([opt(2500, "P", 1), opt(2550, "P", -1)], "vertical"),
    (CONDOR, "iron_condor"),
    ([opt(2500, "P", 1), opt(2700, "P", -1), opt(2700, "C", -1), opt(2900, "C", 1)], "iron_butterfly"),
    ([opt(2600, "P", -1), opt(2800, "C", -1)], "strangle"),
    ([opt(2700, "P", -1), opt(2700, "C", -1)], "straddle"),
    ([opt(2600, "C", 1), opt(2650, "C", -2), opt(2700, "C", 1)], "butterfly"),
    ([opt(2600, "P", 1), opt(2650, "P", -2), opt(2750, "P", 1)], "broken_wing_butterfly"),
    ([opt(2700, "P", -1), opt(2700, "P", 1, APR)], "calendar"),
    ([opt(2700, "C", -1), opt(2750, "C", 1, APR)], "diagonal"),
    ([opt(2700, "P", 1), opt(2650, "P", -2)], "ratio_spread"),
    ([opt(2600, "P", -1), opt(2800, "C", -1), opt(2850, "C", 1)], "jade_lizard"),
    ([stock(100), opt(280, "C", -1, root="SPY")], "covered_call"),
    ([stock(-50)], "stock_hedge"),
    ([future(-1)], "futures_hedge"),
])
def test_every_rule(legs: list[Leg], expected: str) -> None:
    assert classify(legs).strategy_type == expected


def test_vertical_details() -> None:
    assert classify([opt(2500, "P", 1), opt(2550, "P", -1)]).detail == "put credit"
    assert classify([opt(2500, "P", -1), opt(2550, "P", 1)]).detail == "put debit"
    assert classify([opt(2800, "C", -1), opt(2850, "C", 1)]).detail == "call credit"
    assert classify([opt(2800, "C", 1), opt(2850, "C", -1)]).detail == "call debit"


def test_custom_lists_legs_opened_in_one_order() -> None:
    legs = [opt(2700, "C", 1), opt(2600, "P", -1, APR)]
    assert types(legs) == [("long_call", "", 1.0), ("short_put", "", 1.0)]
    [piece] = decompose(legs, one_order=True)
    assert piece.strategy_type == "custom" and len(piece.legs) == 2


def test_partial_quantities_condor_plus_extra_put() -> None:
    legs = [*CONDOR[:1], opt(2550, "P", -3), *CONDOR[2:]]
    assert types(legs) == [("iron_condor", "short", 2.0), ("short_put", "", 1.0)]


def test_two_condors_separated_by_expiry() -> None:
    april = [opt(x.contract.strike or 0, x.contract.right or "P", x.quantity, APR) for x in CONDOR]
    result = decompose([*CONDOR, *april])
    assert [p.strategy_type for p in result] == ["iron_condor", "iron_condor"]
    assert {len({x.contract.expiry for x in p.legs}) for p in result} == {1}


def test_ratio_needs_integer_ratio_else_vertical_plus_single() -> None:
    assert types([opt(2700, "P", 2), opt(2650, "P", -3)]) == [
        ("short_put", "", 1.0), ("vertical", "put debit", 2.0)]


def test_covered_call_leaves_uncovered_shares_as_stock() -> None:
    assert types([stock(250), opt(280, "C", -2, root="SPY")]) == [
        ("covered_call", "", 2.0), ("stock_hedge", "long", 50.0)]


@settings(max_examples=40, deadline=None)
@given(st.permutations([*CONDOR, opt(2700, "P", -1, APR), opt(2700, "P", 1, date(2018, 5, 18)),
                        opt(2600, "C", 1), stock(100, "SPX")]))
def test_order_independent(legs: list[Leg]) -> None:
    base = decompose(sorted(legs, key=lambda x: x.position_key))
    assert decompose(legs) == base


# ------------------------------------------------------------------ identity over days


def test_two_condors_on_one_underlying_separated_by_open_dates() -> None:
    first = assign_strategies(D0, "A", CONDOR, [])
    assert [s.strategy_type for s in first] == ["iron_condor"]
    second_legs = [opt(2400, "P", 1), opt(2450, "P", -1), opt(2950, "C", -1), opt(3000, "C", 1)]
    merged = _merge_legs(CONDOR, second_legs)
    day2 = assign_strategies(D1, "A", merged, first)
    assert sorted(s.strategy_type for s in day2) == ["iron_condor", "iron_condor"]
    old = next(s for s in day2 if s.strategy_id == first[0].strategy_id)
    assert old.opened_on == D0 and {x.position_key: x.quantity for x in old.legs} == {
        x.position_key: x.quantity for x in CONDOR}
    new = next(s for s in day2 if s.strategy_id != first[0].strategy_id)
    assert new.opened_on == D1 and new.parent_id is None


def _merge_legs(*books: list[Leg]) -> list[Leg]:
    out: dict[str, Leg] = {}
    for legs in books:
        for x in legs:
            q = out[x.position_key].quantity + x.quantity if x.position_key in out else x.quantity
            out[x.position_key] = x.with_quantity(q)
    return [x for x in out.values() if x.quantity != 0]


def test_condor_with_one_side_rolled() -> None:
    [ic] = assign_strategies(D0, "A", CONDOR, [])
    rolled = [opt(2450, "P", 2, APR), opt(2500, "P", -2, APR)]
    book = [*CONDOR[2:], *rolled]  # put side closed, new April put vertical opened
    day2 = assign_strategies(D1, "A", book, [ic])
    parent = next(s for s in day2 if s.strategy_id == ic.strategy_id)
    child = next(s for s in day2 if s.strategy_id != ic.strategy_id)
    assert (parent.strategy_type, parent.detail) == ("vertical", "call credit")
    assert (child.strategy_type, child.detail) == ("vertical", "put credit")
    assert child.parent_id == ic.strategy_id


def test_full_roll_linked_by_order_ref() -> None:
    [ic] = assign_strategies(D0, "A", CONDOR, [])
    new = [opt(x.contract.strike or 0, x.contract.right or "P", x.quantity, APR) for x in CONDOR]
    execs = [ExecutionFact(x.position_key, -x.quantity, D1, "ROLL-0001") for x in CONDOR]
    execs += [ExecutionFact(x.position_key, x.quantity, D1, "ROLL-0001") for x in new]
    day2 = assign_strategies(D1, "A", new, [ic], executions=execs)
    closed = next(s for s in day2 if s.strategy_id == ic.strategy_id)
    assert closed.closed_on == D1 and not closed.is_open
    child = next(s for s in day2 if s.is_open)
    assert child.parent_id == ic.strategy_id and child.open_refs == ("ROLL-0001",)


def test_assignment_links_stock_and_covered_call_joins_it() -> None:
    put = opt(270, "P", -2, root="SPY")
    [csp] = assign_strategies(D0, "A", [put], [], cash=1e6)
    assert csp.strategy_type == "cash_secured_put"
    execs = [ExecutionFact(put.position_key, 2, D1, None, "assignment"),
             ExecutionFact(stock(1).position_key, 200, D1, "ASSIGNMENT-x", "assignment")]
    day2 = assign_strategies(D1, "A", [stock(200)], [csp], executions=execs)
    shares = next(s for s in day2 if s.is_open)
    assert shares.strategy_type == "stock_hedge" and shares.parent_id == csp.strategy_id
    day3 = assign_strategies(date(2018, 2, 5), "A", [stock(200), opt(280, "C", -2, root="SPY")], day2)
    [cc] = [s for s in day3 if s.is_open]
    assert cc.strategy_id == shares.strategy_id and cc.strategy_type == "covered_call"


def test_cash_secured_put_rule_uses_cash() -> None:
    put = opt(270, "P", -2, root="SPY")  # needs 270 * 100 * 2 = 54,000
    assert assign_strategies(D0, "A", [put], [], cash=53_999.0)[0].strategy_type == "short_put"
    assert assign_strategies(D0, "A", [put], [], cash=54_000.0)[0].strategy_type == "cash_secured_put"


def test_partial_close_lifo_and_ids_stable() -> None:
    first = assign_strategies(D0, "A", [*CONDOR[:1], opt(2550, "P", -3), *CONDOR[2:]], [])
    assert sorted(s.strategy_type for s in first) == ["iron_condor", "short_put"]
    again = assign_strategies(D0, "A", list(reversed([*CONDOR[:1], opt(2550, "P", -3), *CONDOR[2:]])), [])
    assert [s.strategy_id for s in again] == [s.strategy_id for s in first]
    day2 = assign_strategies(D1, "A", CONDOR, first)  # one short put bought back
    ic = next(s for s in day2 if s.strategy_type == "iron_condor")
    assert ic.is_open and sum(1 for s in day2 if not s.is_open) == 1


def test_manual_override_is_never_overwritten() -> None:
    [ic] = assign_strategies(D0, "A", CONDOR, [])
    manual = [ManualStrategy(ic.strategy_id, name="Jan condor", strategy_type="custom")]
    [s] = assign_strategies(D1, "A", CONDOR, [ic], manual=manual)
    assert (s.name, s.strategy_type, s.source) == ("Jan condor", "custom", "manual")
    claim = [ManualStrategy("my-hedge", strategy_type="long_put", legs={CONDOR[0].position_key: 1})]
    day = assign_strategies(D1, "A", CONDOR, [ic], manual=claim)
    mine = next(s for s in day if s.strategy_id == "my-hedge")
    assert [x.quantity for x in mine.legs] == [1.0] and mine.source == "manual"
    rest = next(s for s in day if s.strategy_id == ic.strategy_id)
    assert rest.quantity(CONDOR[0].position_key) == 1.0


def test_unknown_state_type_round_trip() -> None:
    s = StrategyState("x", "SPX", "vertical", "put credit", (), D0)
    assert not s.is_open


# ------------------------------------------------------------------ P&L split


def test_allocate_pnl_sums_exactly_and_realizes_closes() -> None:
    k1, k2 = "K1", "K2"
    before = {"s1": {k1: -2.0}, "s2": {k1: -1.0, k2: 1.0}}
    after = {"s1": {k1: -2.0}, "s2": {k2: 1.0}}  # s2 buys back its short put
    prev_marks, marks = {k1: 5.0, k2: 2.0}, {k1: 4.0, k2: 2.5}
    trades = {k1: [Trade(1.0, 4.2, 1.3)]}
    entries = {"s1": {k1: 6.0}, "s2": {k1: 6.0, k2: 3.0}}
    shares = allocate_pnl(before, after, prev_marks, marks, {k1: 100.0, k2: 100.0}, trades, entries)
    total = 100 * (-2 * 4.0 - (-3 * 5.0)) - (100 * 1.0 * 4.2 + 1.3) + 100 * (2.5 - 2.0)
    assert sum(s.pnl for s in shares.values()) == pytest.approx(total, abs=1e-9)
    assert shares["s1"].pnl == pytest.approx(-2 * 100 * (4.0 - 5.0))
    assert shares["s2"].realized == pytest.approx(1.0 * 100 * (6.0 - 4.2) - 1.3)
    assert shares["s2"].costs == pytest.approx(1.3)
