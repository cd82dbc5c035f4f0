"""Alert texts a trader can act on: account and broker, units, rounding, New York time,
the order commands, and guidance when no hedge rule exists.  Expected strings are
hand-computed from the inputs (e.g. 0.6234 of NLV 500,000 = $311,700)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from portfolio_pipeline.notify.messages import (
    HEDGE_RULE_METRICS,
    METRICS,
    breach_message,
    exit_signal_message,
    fmt_money,
    fmt_number,
    fmt_pct,
    ny_time,
    order_commands,
)


def record(metric: str = "beta_weighted_delta", proposals: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "event_id": 7, "event_key": "limit_breach:DEMO-001:x", "ts": "2018-02-05T15:31:00+00:00",
        "account_id": "DEMO-001", "severity": "warning",
        "breach": {"metric": metric, "value": 0.6234, "limit": 0.5, "utilisation": 1.2468,
                   "regime": "elevated", "vix": 20.038447496635687, "vix3m": 18.4012, "nlv": 500_000.0},
        "risk": {"nlv": 500_000.4, "beta_weighted_dollar_delta": 311_700.2, "dollar_gamma_1pct": -1_234.5,
                 "vega_per_point": -2_000.49, "theta_per_day": 350.5},
        "proposals": proposals or [],
    }


def test_formatting_helpers() -> None:
    assert fmt_number(20.038447496635687) == "20.04"
    assert fmt_pct(0.6234, signed=True) == "+62.34%"
    assert fmt_money(-312_450.7) == "-$312,451"
    assert fmt_money(float("nan")) == "n/a"
    # 15:31 UTC on 2018-02-05 is 10:31 EST; in July, 14:00 UTC is 10:00 EDT
    assert ny_time("2018-02-05T15:31:00+00:00") == "2018-02-05 10:31 EST"
    assert ny_time(datetime(2025, 7, 3, 14, 0, tzinfo=UTC)) == "2025-07-03 10:00 EDT"
    with pytest.raises(ValueError, match="naive"):
        ny_time(datetime(2018, 2, 5, 15, 31))


def test_breach_with_a_proposal_names_account_units_and_the_commands() -> None:
    proposal = {"order_id": "H-1a2b", "status": "proposed", "quantity": 3, "limit_price": 4.35,
                "legs": ["SELL SPX 20180316 2630 P", "BUY SPX 20180316 2685 P"], "warnings": ["margin"]}
    msg = breach_message(record(proposals=[proposal]), broker="demo")
    assert msg.title == ("Limit breach: beta-weighted delta +62.3% of NLV (limit 50.0%), DEMO-001, "
                         "elevated, VIX 20.04")
    text = msg.text
    assert "account DEMO-001 (demo broker), 2018-02-05 10:31 EST" in text
    # 0.6234 x 500,000 = 311,700
    assert ("beta-weighted delta +62.34% of NLV (+$311,700 beta-weighted dollar delta) vs limit "
            "50.00% of NLV, 125% of the limit") in text
    assert "VIX 20.04, VIX3M 18.40" in text and "20.0384" not in text
    assert "NLV $500,000" in text and "vega -$2,000 per vol point" in text
    assert "to act: portfolio orders show H-1a2b, then portfolio orders confirm H-1a2b TOKEN" in text
    assert "broker warning: margin" in text


def test_breach_without_a_hedge_rule_says_so_and_what_to_consider() -> None:
    msg = breach_message(record("short_gamma"), broker=None)
    assert "account DEMO-001," in msg.text
    assert "short gamma +62.34% of NLV per 1% move (+$311,700 per 1% move)" in msg.text
    assert "No hedge rule for this metric (short gamma)" in msg.text
    assert "Consider: buying near-the-money options" in msg.text
    assert "portfolio orders" not in msg.text


def test_every_limit_metric_has_units_and_guidance() -> None:
    from typing import get_args

    from portfolio_pipeline.domain.limits import Metric

    assert set(get_args(Metric)) == set(METRICS)
    assert set(METRICS) >= HEDGE_RULE_METRICS
    for metric in set(METRICS) - HEDGE_RULE_METRICS:
        assert "No hedge rule for this metric" in breach_message(record(metric)).text


def test_order_commands_is_the_one_sequence() -> None:
    assert order_commands("X1") == (
        "portfolio orders show X1, then portfolio orders confirm X1 TOKEN (show stages it at the "
        "broker without transmitting and prints the token); or portfolio orders reject X1")


def test_exit_signal_has_pnl_and_days_to_expiry() -> None:
    payload = {"position": "iron_condor SPX (s-9)", "reason": "50% of max profit reached",
               "rule": "take_profit", "session": "2018-02-02", "broker": "tastytrade",
               "account_id": "5WX01", "pnl": 1234.56, "dte": 21}
    msg = exit_signal_message(payload, account_id="5WX01", ts=datetime(2018, 2, 2, 21, 0, tzinfo=UTC))
    assert msg.title == "Exit signal: iron_condor SPX (s-9) (take_profit), P&L +$1,235, 21 DTE"
    assert "P&L +$1,235, 21 days to expiry" in msg.text
    assert "account 5WX01 (tastytrade broker)" in msg.text
    assert "2018-02-02 16:00 EST" in msg.text


def test_breach_names_the_account_by_display_name_or_the_book() -> None:
    ira = {**record(), "account_id": "DEMO-IRA"}
    msg = breach_message(ira, broker="demo", display="IBKR IRA (demo)")
    assert msg.title.endswith("(limit 50.0%), IBKR IRA (demo) (DEMO-IRA), elevated, VIX 20.04")
    assert "account IBKR IRA (demo) (DEMO-IRA, demo broker), 2018-02-05 10:31 EST" in msg.text
    book = breach_message({**record(), "account_id": "*"}, broker=None)
    assert "consolidated book, elevated" in book.title
    assert "the consolidated book (every account), 2018-02-05" in book.text
