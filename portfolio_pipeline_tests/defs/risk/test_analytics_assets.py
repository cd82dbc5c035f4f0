"""The EOD analytics assets end to end on a two-session stub book, SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from portfolio_pipeline_tests.defs.risk.book import (
    DAY1,
    DAY2,
    DEPOSIT,
    NLV1,
    PNL2,
    PUT1,
    PUT2,
    materialize,
    rows,
)


def _by(table: list[dict], **match: object) -> list[dict]:
    return [r for r in table if all(r[k] == v for k, v in match.items())]


@pytest.mark.usefixtures("dated_broker")
def test_eod_analytics_stored_checked_and_idempotent(
    db_url: str, instance: dg.DagsterInstance, portfolio_env: Path
) -> None:
    assert materialize(db_url, instance, DAY1).success
    second = materialize(db_url, instance, DAY2)
    assert second.success
    evaluations = {e.check_name: e.passed for e in second.get_asset_check_evaluations()}
    assert evaluations == {
        "positions_quality": True, "account_quality": True, "market_quality": True,
        "position_greeks_quality": True, "portfolio_greeks_quality": True,
        "returns_quality": True, "pnl_reconciliation": True,
        "attribution_identity": True, "attribution_unexplained": evaluations["attribution_unexplained"],
        "risk_metrics_quality": True, "margin_quality": True, "limit_breaches": False,
    }
    stored = rows(db_url)

    # position Greeks: broker IV used for the put, the new call's IV implied from its mark
    greeks = _by(stored["position_greeks"], session_date=DAY2)
    put = next(r for r in greeks if r["position_key"].endswith("2600|P"))
    call = next(r for r in greeks if r["position_key"].endswith("2800|C"))
    spy = next(r for r in greeks if r["position_key"] == "SPY|STK")
    assert (put["vol_source"], put["vol"], put["model"], put["exercise"]) == ("broker", 0.31, "bsm", "european")
    assert call["vol_source"] == "implied" and 0.05 < call["vol"] < 1.0
    assert call["model_price"] == pytest.approx(4.0, abs=1e-6)
    assert put["share_delta"] == pytest.approx(put["delta"] * -2 * 100)
    assert put["theta_per_day"] == pytest.approx(put["theta"] * -200)
    assert put["broker_share_delta"] == pytest.approx(-0.2 * -200)
    assert (spy["delta"], spy["share_delta"], spy["dollar_delta"]) == (1.0, 100.0, pytest.approx(26_489.4))
    assert put["beta"] == 1.0 and put["beta_weighted_delta"] == pytest.approx(put["share_delta"])
    assert put["rate"] == pytest.approx(0.0142) and put["dividend_yield"] == pytest.approx(0.019)

    book_greeks = _by(stored["portfolio_greeks"], session_date=DAY2, broker="*", account_id="*", underlying="*")[0]
    assert book_greeks["positions"] == 3
    assert book_greeks["dollar_delta"] == pytest.approx(sum(r["dollar_delta"] for r in greeks))

    # returns: the deposit (Saturday -> Monday's close) is a flow, the dividend is performance
    ret = _by(stored["portfolio_returns"], session_date=DAY2, account_id="A1")[0]
    assert (ret["external_flow"], ret["income"]) == (DEPOSIT, 12.0)
    assert ret["pnl"] == pytest.approx(PNL2)
    assert ret["twr"] == pytest.approx(PNL2 / NLV1)
    first = _by(stored["portfolio_returns"], session_date=DAY1, account_id="A1")[0]
    assert (first["prev_nlv"], first["twr"], first["growth_index"]) == (None, 0.0, 1.0)
    consolidated = _by(stored["portfolio_returns"], session_date=DAY2, account_id="*")[0]
    assert consolidated["twr"] == pytest.approx(ret["twr"])

    # attribution: identity, held put explained by prior Greeks, new call from fill to close
    att = _by(stored["pnl_attribution"], session_date=DAY2)
    for r in att:
        parts = sum(r[k] for k in ("delta_pnl", "gamma_pnl", "theta_pnl", "vega_pnl", "vanna_pnl", "volga_pnl"))
        assert r["actual"] == pytest.approx(parts + r["unexplained"], abs=1e-9)
    put_att = next(r for r in att if r["position_key"].endswith("2600|P"))
    assert put_att["bucket"] == "held" and put_att["dt_days"] == 3.0
    assert put_att["actual"] == pytest.approx((PUT2 - PUT1) * -200)
    assert put_att["dsigma_points"] == pytest.approx(14.0)
    assert put_att["dS"] == pytest.approx(2648.94 - 2762.13)
    assert abs(put_att["unexplained"]) < 0.35 * abs(put_att["actual"])  # a -4 % day, +14 vol points
    call_att = next(r for r in att if r["position_key"].endswith("2800|C"))
    assert call_att["bucket"] == "new"
    assert call_att["actual"] == pytest.approx((4.0 - 5.0) * 100 - 1.5)
    assert call_att["unexplained"] == call_att["actual"]
    total = _by(att, broker="*", position_key="*")[0]
    assert total["actual"] == pytest.approx(sum(r["actual"] for r in att if r["position_key"] != "*"))

    # margin history: regime from the session's live VIX (37.32: crisis), breaches recorded
    margin = _by(stored["margin_history"], session_date=DAY2, account_id="A1")[0]
    assert (margin["regime"], margin["vix"], margin["vix3m"]) == ("crisis", 37.32, 30.0)
    assert margin["margin_utilisation"] == pytest.approx(48_000.0 / (NLV1 + PNL2 + DEPOSIT))
    calm = _by(stored["margin_history"], session_date=DAY1, account_id="A1")[0]
    assert calm["regime"] == "normal" and calm["vix"] == 17.31
    limits = _by(stored["limit_checks"], session_date=DAY2, account_id="A1")
    assert {r["metric"] for r in limits} == {"beta_weighted_delta", "short_gamma", "vega", "theta",
                                             "margin_utilisation"}
    assert margin["breaches"] == sum(r["breached"] for r in limits) > 0
    # the breach check names session, account, metric, value and limit (% of NLV and $)
    [breach_eval] = [e for e in second.get_asset_check_evaluations() if e.check_name == "limit_breaches"]
    text = breach_eval.description or ""
    first = next(r for r in sorted(limits, key=lambda r: r["metric"]) if r["breached"])
    nlv = margin["nlv"]
    assert (f"{DAY2} demo:A1 {first['metric']}: {100 * first['value']:+.2f}% of NLV, limit "
            f"{100 * first['limit_value']:+.2f}% (${first['value'] * nlv:,.0f} vs "
            f"${first['limit_value'] * nlv:,.0f})") in text, text
    assert "unexpected" not in text

    # report written and linked
    mats = second.asset_materializations_for_node("daily_report")
    path = Path(str(mats[0].metadata["path"].value))
    assert path == portfolio_env / "reports" / "daily_2018-02-05.html"
    assert "<svg" in path.read_text() and "crisis" in path.read_text()
    nlv_meta = second.asset_materializations_for_node("portfolio_returns")[0].metadata["NLV ($)"].value
    assert nlv_meta == round(NLV1 + PNL2 + DEPOSIT)  # whole dollars

    # idempotent: a re-run of the session leaves identical rows
    assert materialize(db_url, instance, DAY2).success
    assert rows(db_url) == stored
