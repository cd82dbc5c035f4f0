"""Trade text: the accepted forms and an error naming the leg for everything else."""

from __future__ import annotations

from datetime import date

import pytest

from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.domain.trade_legs import TradeParseError, parse_leg, parse_legs
from portfolio_pipeline_tests.stubs import CONFIG_DIR

INSTRUMENTS = load_platform_config(CONFIG_DIR).instruments


def test_text_occ_and_shares() -> None:
    leg = parse_leg("sell 1 SPX 2018-03-16 2600P", INSTRUMENTS)
    c = leg.contract
    assert (c.underlying, c.sec_type, c.expiry, c.strike, c.right, c.trading_class) == (
        "SPX",
        "OPT",
        date(2018, 3, 16),
        2600.0,
        "P",
        "SPX",
    )
    assert (leg.quantity, leg.multiplier, leg.units, leg.price) == (-1.0, 100.0, -100.0, None)
    occ = parse_leg("BUY 2 SPXW  180316C02712500 @ 3.45", INSTRUMENTS)
    assert (
        occ.contract.underlying,
        occ.contract.trading_class,
        occ.contract.strike,
        occ.contract.right,
    ) == ("SPX", "SPXW", 2712.5, "C")
    assert (occ.quantity, occ.price) == (2.0, 3.45)
    assert (
        parse_leg("buy 3 spy180316p00270000", INSTRUMENTS).contract.key
        == "SPY|OPT|SPY|2018-03-16|270|P"
    )
    shares = parse_leg("buy 100 SPY", INSTRUMENTS)
    assert (shares.contract.sec_type, shares.units) == ("STK", 100.0)
    assert parse_leg("sell 1 SPX 2018-03-16 2600P", INSTRUMENTS).opposite().quantity == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "sell SPX 2018-03-16 2600P",
            "leg 3 'sell SPX 2018-03-16 2600P': the quantity must be a whole number > 0, got 'SPX'",
        ),
        ("short 1 SPX 2018-03-16 2600P", "the action must be 'buy' or 'sell', got 'short'"),
        ("sell 0 SPX 2018-03-16 2600P", "the quantity must be a whole number > 0, got '0'"),
        ("sell 1.5 SPX 2018-03-16 2600P", "the quantity must be a whole number > 0, got '1.5'"),
        ("sell 1 SPX 2018-03-16 2600", "the strike must end in C or P (e.g. 2600P), got '2600'"),
        ("sell 1 SPX 2018-03-16 2600X", "the strike must end in C or P (e.g. 2600P), got '2600X'"),
        ("sell 1 SPX 16/03/2018 2600P", "expiry must be a date YYYY-MM-DD, got '16/03/2018'"),
        ("sell 1 SPX 2018-02-30 2600P", "expiry must be a date YYYY-MM-DD, got '2018-02-30'"),
        ("sell 1 SPX 2018-03-16 abcP", "strike must be a number, got 'ABC'"),
        ("sell 1 XYZ 2018-03-16 2600P", "unknown root or trading class 'XYZ'"),
        ("sell 1 SPXW  181332P02600000", "OCC symbol has an impossible date '181332'"),
        ("sell 1 SPX", "SPX is an index, not shares"),
        (
            "sell 1 SPX 2018-03-16 2600P @ cheap",
            "the price after '@' must be a number >= 0, got 'cheap'",
        ),
        ("sell 1 ES 2018-03-16 2600P", "ES options are futures options"),
        ("sell 1", "expected 'buy|sell QUANTITY INSTRUMENT [@ PRICE]'"),
        ("sell 1 SPX March 2600P extra", "instrument not understood"),
    ],
)
def test_errors_name_the_leg_and_the_problem(text: str, message: str) -> None:
    with pytest.raises(TradeParseError) as err:
        parse_legs(["buy 1 SPY", "buy 1 SPY", text], INSTRUMENTS)
    assert str(err.value).startswith(f"leg 3 {text!r}: ")
    assert message in str(err.value)


def test_a_trade_needs_a_leg() -> None:
    with pytest.raises(TradeParseError, match="at least one leg"):
        parse_legs([], INSTRUMENTS)
