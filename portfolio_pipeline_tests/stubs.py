"""Test stub kit: builds contracts, positions and the instrument table once for all tests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path

from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.config.loader import PlatformConfig
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import Contract, Position

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "config"
T0 = datetime(2018, 2, 2, 21, 0, tzinfo=UTC)


@cache
def platform_config() -> PlatformConfig:
    return load_platform_config(CONFIG_DIR)


def instruments() -> InstrumentTable:
    return platform_config().instruments


def option(
    underlying: str = "SPX",
    strike: float = 2700.0,
    right: str = "P",
    expiry: date = date(2018, 3, 16),
    trading_class: str | None = None,
    sec_type: str = "OPT",
) -> Contract:
    return Contract(
        underlying=underlying,
        sec_type=sec_type,  # type: ignore[arg-type]
        expiry=expiry,
        strike=strike,
        right=right,  # type: ignore[arg-type]
        trading_class=trading_class or underlying,
    )


def position(
    contract: Contract,
    quantity: float,
    *,
    mark: float = 10.0,
    avg_price: float = 10.0,
    broker: str = "demo",
    account_id: str = "DEMO-001",
    underlying_price: float | None = 2762.13,
    as_of: datetime = T0,
) -> Position:
    mult = instruments().multiplier(contract.underlying, contract.sec_type, contract.trading_class)
    return Position(
        broker=broker,
        account_id=account_id,
        contract=contract,
        quantity=quantity,
        multiplier=mult,
        avg_price=avg_price,
        mark=mark,
        as_of=as_of,
        underlying_price=underlying_price,
    )
