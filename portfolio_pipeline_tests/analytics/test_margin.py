"""margin_rows on a hand-checked two-account book (every utilisation worked out below)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from portfolio_pipeline.analytics.margin import margin_rows, regime_label
from portfolio_pipeline.domain.accounts import AccountConfig
from portfolio_pipeline.domain.regime import (
    LimitOverrides,
    LimitSet,
    RegimeDef,
    RegimeService,
    RegimeState,
    RiskMatrix,
    ScopeLimits,
    TermStructure,
)
from portfolio_pipeline.storage.frames import AccountsFrame, PortfolioGreeksFrame

DAY = date(2018, 2, 5)
AS_OF = datetime(2018, 2, 5, 21, tzinfo=UTC)
LIMITS = LimitSet(max_abs_beta_weighted_delta=0.5, max_short_gamma=0.02, max_abs_vega=0.01,
                  min_theta=-0.001, max_margin_utilisation=0.5)
SERVICE = RegimeService(RiskMatrix(regimes=[RegimeDef(name="calm", limit_scale=1.0)], hysteresis_vix_points=1.0,
                                   term_structure=TermStructure(backwardation_ratio=1.0), base_limits=LIMITS))
STATE = RegimeState(name="calm", index=0, vix=14.0, vix3m=15.0, term_ratio=14.0 / 15.0, backwardation=False,
                    limits=SERVICE.limits_for("calm"))


def _account(account: str, nlv: float, maint: float) -> dict[str, object]:
    return {"session_date": DAY, "broker": "demo", "account_id": account, "currency": "USD", "nlv": nlv,
            "cash": 0.0, "init_margin": maint * 1.25, "maint_margin": maint, "excess_liquidity": nlv - maint,
            "buying_power": 0.0, "broker_daily_pnl": None, "as_of": AS_OF}


def _greeks(broker: str, account: str, bwd: float, gamma: float, vega: float, theta: float) -> dict[str, object]:
    zero = dict.fromkeys(("market_value", "share_delta", "dollar_delta", "gamma_shares", "vanna_per_point",
                          "volga_per_point", "rho_per_pct", "beta_weighted_delta"), 0.0)
    return {"session_date": DAY, "broker": broker, "account_id": account, "underlying": "*", "positions": 1,
            **zero, "beta_weighted_dollar_delta": bwd, "dollar_gamma_1pct": gamma, "vega_per_point": vega,
            "theta_per_day": theta}


def test_margin_rows_hand_checked() -> None:
    accounts = AccountsFrame.from_rows([
        _account("DU2", 50_000.0, 10_000.0), _account("DU1", 100_000.0, 20_000.0), _account("DU3", 0.0, 0.0)])
    greeks = PortfolioGreeksFrame.from_rows([
        _greeks("demo", "DU1", 30_000.0, -1_000.0, 500.0, -50.0),
        _greeks("*", "*", -90_000.0, -1_000.0, 500.0, -50.0),
    ])
    configured = {"DU2": AccountConfig(name="du2", broker="demo", account_id="DU2",
                                       limit_overrides=LimitOverrides(max_margin_utilisation=0.1))}

    margin, checks = margin_rows(DAY, accounts, greeks, SERVICE, STATE, configured)

    # DU3 (NLV 0) has no row; accounts sorted, then the book
    assert [(r["broker"], r["account_id"]) for r in margin] == [("demo", "DU1"), ("demo", "DU2"), ("*", "*")]
    du1, du2, book = margin
    assert du1["margin_utilisation"] == pytest.approx(0.2)  # 20k / 100k
    assert book["nlv"] == 150_000.0 and book["maint_margin"] == 30_000.0
    assert book["init_margin"] == pytest.approx(37_500.0)
    util = {(c["account_id"], c["metric"]): c["utilisation"] for c in checks}
    # DU1: |30k| / 100k / 0.5 = 0.6; short gamma 1k / 100k / 0.02 = 0.5; vega 500 / 100k / 0.01 = 0.5;
    # theta -50 / 100k = -0.0005 against -0.001 -> 0.5; margin 0.2 / 0.5 = 0.4
    assert util[("DU1", "beta_weighted_delta")] == pytest.approx(0.6)
    assert util[("DU1", "short_gamma")] == pytest.approx(0.5)
    assert util[("DU1", "vega")] == pytest.approx(0.5)
    assert util[("DU1", "theta")] == pytest.approx(0.5)
    assert util[("DU1", "margin_utilisation")] == pytest.approx(0.4)
    # DU2: no Greeks row -> 0 Greeks; its override caps margin at 0.1: 0.2 / 0.1 = 2 (breach)
    assert util[("DU2", "beta_weighted_delta")] == 0.0
    assert util[("DU2", "margin_utilisation")] == pytest.approx(2.0)
    assert du2["breaches"] == 1 and du2["breached_metrics"] == "margin_utilisation"
    # the book: |-90k| / 150k / 0.5 = 1.2 (breach), margin 30k / 150k / 0.5 = 0.4 (base limits)
    assert util[("*", "beta_weighted_delta")] == pytest.approx(1.2)
    assert util[("*", "margin_utilisation")] == pytest.approx(0.4)
    assert book["breached_metrics"] == "beta_weighted_delta"
    assert book["regime"] == "calm" and book["vix3m"] == 15.0
    assert len(checks) == 3 * 5


def test_no_account_no_rows() -> None:
    empty_accounts = AccountsFrame.from_rows([])
    assert margin_rows(DAY, empty_accounts, PortfolioGreeksFrame.from_rows([]), SERVICE, STATE, {}) == ([], [])


def test_regime_label() -> None:
    assert regime_label(("calm", "elevated", "crisis")) == "regime level (0=calm, 1=elevated, 2=crisis)"


def _matrix(**extra: object) -> RegimeService:
    return RegimeService(RiskMatrix(
        regimes=[RegimeDef(name="calm", vix_below=20, limit_scale=1.0), RegimeDef(name="crisis", limit_scale=0.5)],
        hysteresis_vix_points=1.0, term_structure=TermStructure(backwardation_ratio=1.0), base_limits=LIMITS,
        **extra))  # type: ignore[arg-type]


def _state(service: RegimeService, name: str) -> RegimeState:
    return RegimeState(name=name, index=service.regime_names.index(name), vix=14.0, vix3m=15.0,
                       term_ratio=14.0 / 15.0, backwardation=False, limits=service.limits_for(name))


def test_per_account_limits_trip_independently() -> None:
    """Two accounts with the SAME Greeks per NLV: the one whose group tightens vega breaches,
    the other does not; the book keeps the base limits; and in the crisis regime the group's
    own scale (not the regime's) applies to its base."""
    service = _matrix(
        groups={"retirement": ScopeLimits(base_limits=LimitOverrides(max_abs_vega=0.004),
                                          regime_scales={"crisis": 0.25})},
        accounts={"trader": ScopeLimits(base_limits=LimitOverrides(max_abs_beta_weighted_delta=0.2))})
    configured = {
        "IRA1": AccountConfig(name="ira", broker="ibkr", account_id="IRA1", group="retirement", account_type="ira"),
        "MRG1": AccountConfig(name="trader", broker="tastytrade", account_id="MRG1", group="trading"),
    }
    accounts = AccountsFrame.from_rows([_account("IRA1", 100_000.0, 0.0), _account("MRG1", 100_000.0, 0.0)])
    greeks = PortfolioGreeksFrame.from_rows([
        _greeks("demo", "IRA1", 10_000.0, 0.0, 500.0, 0.0),   # bwd 0.1 of NLV, vega 0.005 of NLV
        _greeks("demo", "MRG1", 30_000.0, 0.0, 500.0, 0.0),   # bwd 0.3 of NLV, vega 0.005 of NLV
        _greeks("*", "*", 40_000.0, 0.0, 1_000.0, 0.0),
    ])
    _, checks = margin_rows(DAY, accounts, greeks, service, _state(service, "calm"), configured)
    util = {(c["account_id"], c["metric"]): c for c in checks}
    # IRA: vega 0.005 / 0.004 = 1.25 (its group's base); delta 0.1 / 0.5 = 0.2 (base)
    assert util[("IRA1", "vega")]["utilisation"] == pytest.approx(1.25) and util[("IRA1", "vega")]["breached"]
    assert util[("IRA1", "beta_weighted_delta")]["utilisation"] == pytest.approx(0.2)
    # trader: vega 0.005 / 0.01 = 0.5 (base); delta 0.3 / 0.2 = 1.5 (its own base)
    assert util[("MRG1", "vega")]["utilisation"] == pytest.approx(0.5)
    assert util[("MRG1", "beta_weighted_delta")]["utilisation"] == pytest.approx(1.5)
    # book: 40k / 200k = 0.2 of 0.5 -> 0.4; vega 1k / 200k = 0.005 of 0.01 -> 0.5: no breach
    assert not util[("*", "beta_weighted_delta")]["breached"] and not util[("*", "vega")]["breached"]
    # crisis: IRA vega limit 0.004 x 0.25 = 0.001; trader's delta 0.2 x 0.5 (the regime's scale) = 0.1
    _, crisis = margin_rows(DAY, accounts, greeks, service, _state(service, "crisis"), configured)
    lim = {(c["account_id"], c["metric"]): c["limit_value"] for c in crisis}
    assert lim[("IRA1", "vega")] == pytest.approx(0.001)
    assert lim[("MRG1", "beta_weighted_delta")] == pytest.approx(0.1)
    assert lim[("*", "vega")] == pytest.approx(0.005)


def _leg(right: str | None, qty: float) -> dict[str, object]:
    return {"sec_type": "OPT" if right else "STK", "right": right, "quantity": qty}


def test_ira_naked_short_is_flagged_and_names_its_account() -> None:
    service = _matrix(structure_bans={"ira": ["naked_short_call", "naked_short_put"]})
    configured = {
        "IRA1": AccountConfig(name="ira", broker="ibkr", account_id="IRA1", account_type="ira"),
        "MRG1": AccountConfig(name="margin", broker="ibkr", account_id="MRG1", account_type="margin"),
    }
    accounts = AccountsFrame.from_rows([_account("IRA1", 100_000.0, 0.0), _account("MRG1", 100_000.0, 0.0)])

    def strat(account: str, sid: str, kind: str, legs: list[dict[str, object]], status: str = "open") -> dict[str, object]:
        return {"account_id": account, "strategy_id": sid, "strategy_type": kind, "underlying": "SPY",
                "status": status, "legs": legs}

    held = [
        strat("IRA1", "cc", "covered_call", [_leg(None, 100.0), _leg("C", -1.0)]),
        strat("IRA1", "csp", "cash_secured_put", [_leg("P", -2.0)]),
        strat("IRA1", "naked", "short_put", [_leg("P", -3.0)]),
        strat("IRA1", "old", "short_call", [_leg("C", -1.0)], status="closed"),
        strat("IRA1", "pcs", "vertical", [_leg("P", -1.0), _leg("P", 1.0)]),
        strat("MRG1", "sc", "short_call", [_leg("C", -5.0)]),  # allowed in a margin account
    ]
    margin, checks = margin_rows(DAY, accounts, PortfolioGreeksFrame.from_rows([]), service,
                                 _state(service, "calm"), configured, held)
    bans = {(c["account_id"], c["metric"]): c for c in checks if c["metric"].startswith("naked")}
    assert set(bans) == {("IRA1", "naked_short_call"), ("IRA1", "naked_short_put")}
    assert bans[("IRA1", "naked_short_put")]["value"] == 3.0 and bans[("IRA1", "naked_short_put")]["breached"]
    assert bans[("IRA1", "naked_short_call")]["value"] == 0.0 and not bans[("IRA1", "naked_short_call")]["breached"]
    rows = {r["account_id"]: r for r in margin}
    assert rows["IRA1"]["breached_metrics"] == "naked_short_put" and rows["IRA1"]["breaches"] == 1
    assert rows["MRG1"]["breaches"] == 0 and rows["*"]["breaches"] == 0


def test_breach_lines_name_the_account_and_count_banned_contracts() -> None:
    import pandas as pd

    from portfolio_pipeline.defs.risk.checks import breach_lines

    limits = pd.DataFrame([
        {"session_date": DAY, "broker": "demo", "account_id": "IRA1", "metric": "naked_short_put", "value": 3.0,
         "limit_value": 0.0, "utilisation": 1e9, "breached": True, "regime": "calm"},
        {"session_date": DAY, "broker": "demo", "account_id": "IRA1", "metric": "vega", "value": 0.02,
         "limit_value": 0.01, "utilisation": 2.0, "breached": True, "regime": "calm"},
    ])
    margin = pd.DataFrame([{"session_date": DAY, "broker": "demo", "account_id": "IRA1", "nlv": 100_000.0}])
    assert breach_lines(limits, margin) == [
        "2018-02-05 demo:IRA1 naked_short_put: 3 naked short contract(s) held, none allowed for this account type",
        "2018-02-05 demo:IRA1 vega: +2.00% of NLV, limit +1.00% ($2,000 vs $1,000), 200% used, calm",
    ]
