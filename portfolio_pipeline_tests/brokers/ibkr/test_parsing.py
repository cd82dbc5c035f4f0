"""Pure normalisation of IBKR payloads (no event loop)."""

from __future__ import annotations

import logging
import math
from datetime import date

import pytest
from ib_async import AccountValue, OrderState
from ib_async.util import UNSET_DOUBLE

from portfolio_pipeline.brokers.base import BrokerDataError
from portfolio_pipeline.brokers.ibkr.parsing import (
    account_values,
    avg_price_from_avg_cost,
    ib_contract_for,
    normalise_contract,
    parse_ib_date,
    sanitise,
    whatif_result,
)
from portfolio_pipeline.domain.errors import MultiplierMismatchError, UnknownInstrumentError
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import ib_future, ib_option, ib_stock
from portfolio_pipeline_tests.stubs import instruments


def test_spxw_root_is_the_symbol_and_class_is_kept() -> None:
    norm = normalise_contract(ib_option(1, "SPX", "20180316", 2650, "P", "SPXW"), instruments(), account="U1")
    assert norm.contract.key == "SPX|OPT|SPXW|2018-03-16|2650|P" and norm.multiplier == 100.0


def test_right_spelled_out_and_future_month_rejected() -> None:
    norm = normalise_contract(ib_option(1, "SPY", "20180316", 270, "CALL", "SPY"), instruments())
    assert norm.contract.right == "C"
    with pytest.raises(BrokerDataError, match="YYYYMMDD"):
        normalise_contract(ib_future(2, "ES", "201803"), instruments(), account="U1")


def test_futures_option_underlying_expiry_defaults_to_its_expiry() -> None:
    fop = ib_option(1, "ES", "20180316", 2600, "P", "ES", multiplier="50", sec_type="FOP")
    assert normalise_contract(fop, instruments()).contract.underlying_expiry == date(2018, 3, 16)


def test_multiplier_mismatch_and_unknown_root_name_the_contract() -> None:
    with pytest.raises(MultiplierMismatchError, match="ibkr:U9:XSP1"):
        normalise_contract(
            ib_option(1, "XSP", "20180316", 270, "P", "XSP", multiplier="10", local_symbol="XSP1"),
            instruments(),
            account="U9",
        )
    with pytest.raises(UnknownInstrumentError, match="AAPL"):
        normalise_contract(ib_stock(3, "AAPL"), instruments(), account="U9")
    with pytest.raises(BrokerDataError, match="CASH"):
        normalise_contract(ib_stock(3, "EUR").__class__(secType="CASH", symbol="EUR"), instruments())


def test_avg_cost_pitfall() -> None:
    assert avg_price_from_avg_cost(1523.5, "OPT", 100.0, where="x") == pytest.approx(15.235)
    assert avg_price_from_avg_cost(2250.0, "FOP", 50.0, where="x") == pytest.approx(45.0)
    assert avg_price_from_avg_cost(270.5, "STK", 1.0, where="x") == 270.5
    with pytest.raises(BrokerDataError, match="avgCost"):
        avg_price_from_avg_cost(UNSET_DOUBLE, "OPT", 100.0, where="x")


@pytest.mark.parametrize(
    ("value", "kind"),
    [(None, "greek"), (-2.0, "greek"), (-999.0, "greek"), (UNSET_DOUBLE, "greek"), (math.nan, "greek"),
     (math.inf, "price"), (-1.0, "price"), ("abc", "price")],
)
def test_sentinels_become_nan_with_a_warning(value: object, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert math.isnan(sanitise(value, "delta", "SPX|OPT|SPX|2018-03-16|2700|P", kind=kind))  # type: ignore[arg-type]
    assert "SPX|OPT|SPX|2018-03-16|2700|P" in caplog.text and "delta" in caplog.text


def test_real_values_pass_untouched(caplog: pytest.LogCaptureFixture) -> None:
    assert sanitise(-0.5, "delta", "x", kind="greek") == -0.5
    assert sanitise(-2.0, "theta", "x", kind="price") == -2.0  # -2 is a sentinel only for Greeks
    assert caplog.text == ""


def test_parse_ib_date() -> None:
    assert parse_ib_date("20180316 15:00 US/Central", where="x") == date(2018, 3, 16)
    with pytest.raises(BrokerDataError, match="not a valid date"):
        parse_ib_date("20180231", where="x")


def test_account_values_filter_currency_and_model() -> None:
    tags = ("NetLiquidation", "TotalCashValue", "InitMarginReq", "MaintMarginReq", "ExcessLiquidity", "BuyingPower")
    rows = [AccountValue("U1", t, "1", "USD", "") for t in tags]
    rows += [AccountValue("U1", t, "2", "EUR", "") for t in tags]
    rows += [AccountValue("U1", t, "3", "USD", "M1") for t in tags]
    assert set(account_values(rows, account="U1", currency="USD", model_code=None).values()) == {1.0}
    assert set(account_values(rows, account="U1", currency="EUR", model_code=None).values()) == {2.0}
    assert set(account_values(rows, account="U1", currency="USD", model_code="M1").values()) == {3.0}
    with pytest.raises(BrokerDataError, match="lacks NetLiquidation"):
        account_values(rows[1:], account="U1", currency="USD", model_code=None)


def test_whatif_result_keeps_warnings_and_flags_missing_commission() -> None:
    state = OrderState(initMarginChange="100", maintMarginChange="80", warningText="held until open",
                       commission=UNSET_DOUBLE, minCommission=1.0, maxCommission=2.5)
    result = whatif_result(state, where="order o1", extra_warnings=["IBKR 2109: x"])
    assert (result.init_margin_change, result.commission) == (100.0, 2.5)
    assert result.warnings[:2] == ("held until open", "IBKR 2109: x")
    assert "estimate range" in result.warnings[2]
    with pytest.raises(BrokerDataError, match="no margin change"):
        whatif_result(OrderState(initMarginChange=str(UNSET_DOUBLE), maintMarginChange="1"), where="o")


def test_ib_contract_for_builds_routable_contracts() -> None:
    table = instruments()
    spxw = ib_contract_for(Contract("SPX", "OPT", date(2018, 3, 16), 2650.0, "P", "SPXW"), table)
    assert (spxw.secType, spxw.exchange, spxw.tradingClass, spxw.multiplier) == ("OPT", "SMART", "SPXW", "100")
    es = ib_contract_for(Contract("ES", "FOP", date(2018, 3, 16), 2600.0, "P", "EW"), table)
    assert (es.secType, es.exchange, es.multiplier, es.lastTradeDateOrContractMonth) == ("FOP", "CME", "50", "20180316")
    assert ib_contract_for(Contract("NDX", "IND"), table).exchange == "NASDAQ"
