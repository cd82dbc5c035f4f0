"""The live monitor over several accounts: each account against its own limits (the
engine's limits hook), the book against the book's limits on the summed risk."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from portfolio_pipeline.config.streaming import BreachSettings
from portfolio_pipeline.domain.accounts import AccountConfig, account_limits
from portfolio_pipeline.domain.positions import AccountSnapshot
from portfolio_pipeline.domain.regime import LimitOverrides, RegimeService
from portfolio_pipeline_tests.streaming.helpers import T0, inputs
from portfolio_pipeline_tests.stubs import platform_config
from streaming_service.book import BOOK_SCOPE, BookEngine
from streaming_service.breach import LIMIT_BREACH, BreachDetector
from streaming_service.engine import Engine, Tick, UnknownContractError

NLV = 600_000.0


def _account_inputs(account_id: str, nlv: float = NLV):  # type: ignore[no-untyped-def]
    base = inputs(nlv)
    positions = [replace(p, account_id=account_id) for p in base.positions]
    snap = AccountSnapshot(
        "demo", account_id, T0, nlv, nlv, 100_000.0, 150_000.0, nlv - 150_000.0, nlv
    )
    return replace(base, account=snap, positions=positions)


def _setup() -> tuple[BookEngine, Engine, RegimeService]:
    cfg = platform_config()
    service = RegimeService(cfg.risk_matrix)
    # the IRA's vega limit is a tenth of the base: the same book breaches there only
    ira = AccountConfig(
        name="ira",
        broker="demo",
        account_id="IRA",
        account_type="ira",
        limit_overrides=LimitOverrides(max_abs_vega=0.001),
    )
    margin = AccountConfig(name="margin", broker="demo", account_id="MRG")
    engines = {
        a.account_id: Engine(
            _account_inputs(a.account_id),
            cfg.instruments,
            service,
            scope=a.account_id,
            limits=lambda regime, a=a: account_limits(service, a, regime),
        )  # type: ignore[misc]
        for a in (ira, margin)
    }
    # the reference: ONE engine over both accounts' positions and summed balances
    both = _account_inputs("BOOK", 2 * NLV)
    whole = Engine(
        replace(
            both,
            positions=[*_account_inputs("IRA").positions, *_account_inputs("MRG").positions],
            account=replace(both.account, maint_margin=300_000.0),
        ),
        cfg.instruments,
        service,
        scope=BOOK_SCOPE,
    )
    return BookEngine(engines, service), whole, service


def test_book_is_the_sum_and_each_account_has_its_own_limits() -> None:
    book, whole, service = _setup()
    ticks = [
        Tick("SPX", T0 + timedelta(minutes=1), 2700.0),
        Tick("VIX", T0 + timedelta(minutes=1), 19.0),
        Tick("NDX", T0 + timedelta(minutes=2), 6800.0),
    ]
    for t in ticks:
        book.apply(t)
        whole.apply(t)
    assert book.reprice_pending() == [] and whole.reprice_pending() == []
    state = book.evaluate()
    ref = whole.evaluate()
    # the book's risk: the sum of the accounts' = one engine over the whole book
    for name in (
        "nlv",
        "beta_weighted_dollar_delta",
        "dollar_gamma_1pct",
        "vega_per_point",
        "theta_per_day",
        "maint_margin",
    ):
        assert getattr(state.risk, name) == pytest.approx(
            getattr(ref.risk, name), rel=1e-9, abs=1e-6
        ), name
        total = sum(getattr(book.accounts[a].risk, name) for a in ("IRA", "MRG"))
        assert getattr(state.risk, name) == pytest.approx(total, rel=1e-12), name
    checks = {(c.scope, c.metric): c for c in state.checks}
    assert {s for s, _ in checks} == {BOOK_SCOPE, "IRA", "MRG"}
    # identical books, different limits: vega trips in the IRA only
    assert checks[("IRA", "vega")].limit == pytest.approx(0.001)
    assert checks[("MRG", "vega")].limit == pytest.approx(
        service.limits_for(state.regime.name).max_abs_vega
    )
    assert checks[("IRA", "vega")].breached and not checks[("MRG", "vega")].breached
    assert checks[("IRA", "vega")].value == pytest.approx(checks[("MRG", "vega")].value)
    # the book's checks: the regime's limits on the summed risk (= the one-engine reference)
    for metric in ("beta_weighted_delta", "short_gamma", "vega", "theta", "margin_utilisation"):
        ref_check = next(c for c in ref.checks if c.metric == metric)
        assert checks[(BOOK_SCOPE, metric)].utilisation == pytest.approx(
            ref_check.utilisation, rel=1e-9
        )
    # the detector keys breaches by account: the IRA's breach names it
    det = BreachDetector(
        BreachSettings(debounce_ticks=1, hysteresis=0.05, cooldown_seconds=60), service
    )
    signals = det.update(state.ts, state.checks)
    fired = {(s.check.scope, s.check.metric) for s in signals if s.kind == LIMIT_BREACH}
    assert ("IRA", "vega") in fired and ("MRG", "vega") not in fired
    assert all(s.payload()["scope"] == s.check.scope for s in signals)


def test_ticks_go_to_the_accounts_that_hold_them() -> None:
    cfg = platform_config()
    service = RegimeService(cfg.risk_matrix)
    spx_only = replace(
        _account_inputs("A"),
        positions=[p for p in _account_inputs("A").positions if p.contract.underlying == "SPX"],
    )
    ndx_only = replace(
        _account_inputs("B"),
        positions=[p for p in _account_inputs("B").positions if p.contract.underlying == "NDX"],
    )
    book = BookEngine(
        {
            "A": Engine(spx_only, cfg.instruments, service, scope="A"),
            "B": Engine(ndx_only, cfg.instruments, service, scope="B"),
        },
        service,
    )
    book.apply(Tick("NDX", T0 + timedelta(minutes=1), 6700.0))
    assert book.engines["B"].pending == {"NDX"} and book.engines["A"].pending == frozenset()
    assert book.spot("NDX") == 6700.0 and book.spot("SPX") == pytest.approx(2762.0)
    with pytest.raises(UnknownContractError):
        book.apply(Tick("RUT", T0, 1500.0))
