"""Shared builders for streaming tests: a small engine on stub positions."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portfolio_pipeline.domain.positions import AccountSnapshot
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline_tests.stubs import option, platform_config, position
from streaming_service.engine import Engine, EngineInputs

T0 = datetime(2018, 2, 5, 14, 30, tzinfo=UTC)


def inputs(nlv: float = 600_000.0) -> EngineInputs:
    positions = [
        position(option("SPX", 2600.0, "P", date(2018, 3, 16)), -10, mark=20.0, underlying_price=2762.0),
        position(option("SPX", 2500.0, "P", date(2018, 3, 16)), 10, mark=9.0, underlying_price=2762.0),
        position(option("SPX", 2900.0, "C", date(2018, 3, 16)), -10, mark=8.0, underlying_price=2762.0),
        position(option("NDX", 6500.0, "P", date(2018, 3, 16), trading_class="NDX"), -2, mark=60.0,
                 underlying_price=6900.0),
    ]
    account = AccountSnapshot("demo", "DEMO-001", T0, nlv, nlv, 100_000.0, 150_000.0, nlv - 150_000.0, nlv)
    return EngineInputs(account, positions, [], vix=17.3, vix3m=18.1, rate=0.014,
                        dividend_yields={"SPX": 0.019, "NDX": 0.009})


def engine(incremental: bool = True) -> Engine:
    cfg = platform_config()
    return Engine(inputs(), cfg.instruments, RegimeService(cfg.risk_matrix), incremental=incremental)
