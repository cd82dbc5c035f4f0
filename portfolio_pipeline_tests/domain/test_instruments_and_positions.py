from __future__ import annotations

import math
from datetime import UTC, date, datetime

import numpy as np
import pytest

from portfolio_pipeline.domain.errors import (
    InvalidDataError,
    MultiplierMismatchError,
    UnknownInstrumentError,
)
from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline_tests.stubs import T0, instruments, option, position


@pytest.mark.parametrize(
    ("root", "sec_type", "trading_class", "expected"),
    [
        ("SPX", "OPT", "SPX", 100.0),
        ("SPX", "OPT", "SPXW", 100.0),
        ("XSP", "OPT", None, 100.0),
        ("ES", "FUT", None, 50.0),
        ("ES", "FOP", "EW", 50.0),
        ("MES", "FOP", None, 5.0),
        ("NQ", "FUT", None, 20.0),
        ("CL", "FOP", "LO", 1000.0),
        ("GC", "FOP", "OG", 100.0),
        ("VIX", "OPT", "VIXW", 100.0),
        ("VIX", "FUT", None, 1000.0),
        ("SPY", "STK", None, 1.0),
    ],
)
def test_multiplier_table(root: str, sec_type: str, trading_class: str | None, expected: float) -> None:
    assert instruments().multiplier(root, sec_type, trading_class) == expected  # type: ignore[arg-type]


def test_trading_class_maps_to_root_and_settlement() -> None:
    table = instruments()
    assert table.root_for_trading_class("SPXW") == "SPX"
    assert table.trading_class("SPX", "SPX").settlement_time == "AM"
    assert table.trading_class("SPX", "SPXW").settlement_time == "PM"
    assert table.exercise_style("SPX") == "european"
    assert table.exercise_style("SPY") == "american"
    assert table.pricing_model("ES") == "black76"
    assert table.spec("SPX").options is not None
    assert table.spec("SPX").options.settlement == "cash"  # type: ignore[union-attr]
    assert table.spec("SPY").options.settlement == "physical"  # type: ignore[union-attr]


def test_broker_multiplier_mismatch_is_an_error_naming_the_item() -> None:
    with pytest.raises(MultiplierMismatchError, match=r"ibkr:U1:SPY mini.*multiplier 10"):
        instruments().checked_multiplier("SPY", "OPT", 10, source="ibkr:U1:SPY mini")
    assert instruments().checked_multiplier("ES", "FOP", 50.0, trading_class="EW", source="x") == 50.0
    assert instruments().checked_multiplier("ES", "FOP", None, source="x") == 50.0


def test_unknown_instrument_and_trading_class() -> None:
    with pytest.raises(UnknownInstrumentError, match="'TSLA'"):
        instruments().multiplier("TSLA", "OPT")
    with pytest.raises(UnknownInstrumentError, match="'SPY7'"):
        instruments().root_for_trading_class("SPY7")
    assert 50.0 in instruments().known_multipliers()


def test_contract_key_and_validation() -> None:
    assert option().key == "SPX|OPT|SPX|2018-03-16|2700|P"
    fop = Contract("ES", "FOP", date(2018, 3, 16), 2650.0, "P", "ES")
    assert fop.underlying_expiry == date(2018, 3, 16)
    with pytest.raises(InvalidDataError, match="needs expiry, strike and right"):
        Contract("SPX", "OPT", None, 2700.0, "P")
    with pytest.raises(InvalidDataError, match="strike must be > 0"):
        Contract("SPX", "OPT", date(2018, 3, 16), -5.0, "P")


def test_year_fraction_is_act_365() -> None:
    c = option(expiry=date(2018, 3, 2))
    at = datetime(2018, 2, 2, 21, 0, tzinfo=UTC)
    assert c.year_fraction(at) == pytest.approx(28 / 365, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("quantity", 0.0, "quantity is zero"),
        ("quantity", math.nan, "quantity is not finite"),
        ("mark", math.inf, "mark is not finite"),
        ("multiplier", 0.0, "multiplier must be > 0"),
        ("as_of", datetime(2018, 2, 2, 21, 0), "timezone-aware"),
    ],
)
def test_position_rejects_bad_input(field: str, value: object, message: str) -> None:
    kwargs: dict[str, object] = {
        "broker": "demo", "account_id": "A1", "contract": option(), "quantity": -1.0,
        "multiplier": 100.0, "avg_price": 10.0, "mark": 12.0, "as_of": T0,
    }
    kwargs[field] = value
    with pytest.raises(InvalidDataError, match=message) as err:
        Position(**kwargs)  # type: ignore[arg-type]
    assert "SPX|OPT" in str(err.value) or "demo:A1" in str(err.value)


def test_position_values() -> None:
    p = position(option(), -2, mark=12.5, avg_price=10.0)
    assert p.market_value == -2500.0
    assert p.unrealized_pnl == -500.0


def test_quote_and_account_validation() -> None:
    with pytest.raises(InvalidDataError, match=r"bid 2\.0 > ask 1\.0"):
        Quote("demo", option(), T0, bid=2.0, ask=1.0, mark=1.5)
    with pytest.raises(InvalidDataError, match="nlv is not finite"):
        AccountSnapshot("demo", "A1", T0, math.nan, 0, 0, 0, 0, 0)
    acct = AccountSnapshot("demo", "A1", T0, 200_000, 50_000, 60_000, 40_000, 160_000, 300_000)
    assert acct.margin_utilisation == pytest.approx(0.2)


def test_position_greeks_hand_computed() -> None:
    """Short 1 SPX put and long 10 ES puts, hand-computed with the docs/ARCHITECTURE.md units."""
    spx = 2700.0
    es = 2695.0
    g = position_greeks(
        delta=[-0.30, -0.25],
        gamma=[0.002, 0.0021],
        vega=[3.0, 2.9],
        theta=[-0.8, -0.75],
        quantity=[-1, 10],
        multiplier=[100, 50],
        spot=[spx, es],
        beta=[1.0, 1.0],
        reference_price=[spx, spx],
    )
    np.testing.assert_allclose(g.share_delta, [30.0, -125.0])
    np.testing.assert_allclose(g.dollar_delta, [30.0 * 2700.0, -125.0 * 2695.0])
    np.testing.assert_allclose(g.dollar_gamma_1pct, [-0.002 * 100 * 2700.0**2 / 100, 0.0021 * 500 * 2695.0**2 / 100])
    np.testing.assert_allclose(g.theta_per_day, [80.0, -375.0])
    np.testing.assert_allclose(g.vega_per_point, [-300.0, 1450.0])
    np.testing.assert_allclose(g.beta_weighted_delta, [30.0, -125.0 * 2695.0 / 2700.0])
    np.testing.assert_allclose(g.gamma_shares, [-0.2, 1.05])
    assert not g.vanna_per_point.any() and not g.volga_per_point.any()  # not given: zero


def test_second_order_greeks_scale_once() -> None:
    g = position_greeks(delta=0.5, gamma=0.01, vega=0.2, theta=-0.05, vanna=-0.004, volga=0.03,
                        quantity=-3, multiplier=50, spot=2700.0)
    assert float(g.vanna_per_point) == pytest.approx(-0.004 * -150)
    assert float(g.volga_per_point) == pytest.approx(0.03 * -150)
    assert float(g.gamma_shares) == pytest.approx(0.01 * -150)


def test_stock_position_greeks() -> None:
    """Short 100 SPY shares: delta 1 per share, nothing else, beta-weighted to SPX."""
    g = position_greeks(delta=1.0, gamma=0.0, vega=0.0, theta=0.0, quantity=-100, multiplier=1.0,
                        spot=270.0, beta=1.0, reference_price=2700.0)
    assert float(g.share_delta) == -100.0
    assert float(g.dollar_delta) == -27_000.0
    assert float(g.beta_weighted_delta) == pytest.approx(-10.0)
