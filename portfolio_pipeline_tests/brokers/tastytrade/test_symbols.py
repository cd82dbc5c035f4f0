"""Tastytrade symbology -> domain contracts (pure)."""

from __future__ import annotations

from datetime import date

import pytest

from portfolio_pipeline.brokers.tastytrade.symbols import (
    SymbolError,
    equity_option_streamer_symbol,
    future_option_streamer_symbol,
    occ_symbol,
    parse_symbol,
    to_contract,
)
from portfolio_pipeline.domain.errors import MultiplierMismatchError, UnknownInstrumentError
from portfolio_pipeline_tests.stubs import instruments


@pytest.mark.parametrize(
    ("symbol", "underlying", "tc", "expiry", "right", "strike"),
    [
        ("SPXW  180216P02700000", "SPX", "SPXW", date(2018, 2, 16), "P", 2700.0),
        ("SPX   180316C02750000", "SPX", "SPX", date(2018, 3, 16), "C", 2750.0),
        ("XSP   180209P00265500", "XSP", "XSP", date(2018, 2, 9), "P", 265.5),
        ("SPY   180316C00270500", "SPY", "SPY", date(2018, 3, 16), "C", 270.5),
    ],
)
def test_occ_symbols(symbol: str, underlying: str, tc: str, expiry: date, right: str, strike: float) -> None:
    parsed = parse_symbol(symbol, "Equity Option")
    contract, sec_type = to_contract(parsed, instruments(), underlying_symbol=underlying)
    assert sec_type == "OPT"
    assert (contract.underlying, contract.trading_class) == (underlying, tc)
    assert (contract.expiry, contract.right, contract.strike) == (expiry, right, strike)
    assert occ_symbol(contract) == symbol  # round trip for orders


def test_futures_option_symbol_week_numbered_class() -> None:
    parsed = parse_symbol("./ESH8 EW1G8 180209P2700")
    assert parsed.kind == "Future Option"
    assert parsed.future_symbol == "/ESH8"
    assert parsed.option_code == "EW1G8"
    contract, sec_type = to_contract(parsed, instruments(), future_expiry=date(2018, 3, 16))
    assert sec_type == "FOP"
    assert contract.underlying == "ES"
    assert contract.trading_class == "EW"  # EW1 (week 1) belongs to the EW class
    assert contract.expiry == date(2018, 2, 9)
    assert contract.underlying_expiry == date(2018, 3, 16)
    assert future_option_streamer_symbol(parsed, "XCME") == "./EW1G18P2700:XCME"


def test_future_and_equity_symbols() -> None:
    fut = parse_symbol("/ESH8")
    assert (fut.kind, fut.product) == ("Future", "ES")
    contract, sec_type = to_contract(fut, instruments(), future_expiry=date(2018, 3, 16))
    assert (sec_type, contract.underlying, contract.expiry) == ("FUT", "ES", date(2018, 3, 16))
    nq = parse_symbol("/NQH18")
    assert (nq.product, nq.future_symbol) == ("NQ", "/NQH18")
    spy, sec_type = to_contract(parse_symbol("SPY", "Equity"), instruments())
    assert (spy.underlying, sec_type) == ("SPY", "STK")
    spx, sec_type = to_contract(parse_symbol("SPX", "Index"), instruments())
    assert (spx.underlying, sec_type) == ("SPX", "IND")


def test_streamer_symbol_for_equity_option() -> None:
    contract, _ = to_contract(parse_symbol("SPY   180316C00270500"), instruments())
    assert equity_option_streamer_symbol(contract) == ".SPY180316C270.5"


def test_unknown_root_and_bad_symbols_are_clear_errors() -> None:
    with pytest.raises(UnknownInstrumentError, match="ZZZW"):
        to_contract(parse_symbol("ZZZW  180216P02700000"), instruments())
    with pytest.raises(UnknownInstrumentError, match="'ZQ9'"):
        to_contract(parse_symbol("./ESH8 ZQ9G8 180209P2700"), instruments(),
                    future_expiry=date(2018, 3, 16))
    with pytest.raises(SymbolError, match="matches no known format"):
        parse_symbol("SPXW 1802 P 2700")
    with pytest.raises(SymbolError, match="bad expiry"):
        parse_symbol("SPXW  181316P02700000")


def test_multiplier_mismatch_is_an_error_not_a_guess() -> None:
    with pytest.raises(MultiplierMismatchError, match="tastytrade:X:SYM"):
        instruments().checked_multiplier("ES", "FOP", 5.0, trading_class="EW", source="tastytrade:X:SYM")
