"""Build broker adapters from ``config/accounts.yaml`` (the one place a broker is chosen)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.clock import Clock
from portfolio_pipeline.domain.accounts import AccountConfig, BrokerName
from portfolio_pipeline.domain.instruments import InstrumentTable

#: Brokers that can report the book as of a past session (others only "now").
AS_OF_CAPABLE: frozenset[str] = frozenset({"demo"})


def make_adapter(
    broker: BrokerName,
    accounts: Sequence[AccountConfig],
    instruments: InstrumentTable,
    clock: Clock,
    environ: Mapping[str, str] | None = None,
) -> BrokerAdapter:
    """One adapter serving ``accounts`` (all of the same broker and connection)."""
    if not accounts:
        raise ValueError(f"broker {broker!r}: no accounts configured")
    first = accounts[0]
    if broker == "demo":
        from portfolio_pipeline.brokers.demo import DemoBroker

        books = {a.account_id: (a.demo.book, a.demo.seed) if a.demo is not None else ("index", 7) for a in accounts}
        return DemoBroker(instruments, clock=clock, books=books)
    if broker == "ibkr":
        from portfolio_pipeline.brokers.ibkr import IbkrBroker
        from portfolio_pipeline.brokers.ibkr.flex_web import FlexWebConfig
        from portfolio_pipeline.domain.accounts import IbkrConnection

        return IbkrBroker(first.ibkr or IbkrConnection(), instruments, accounts=accounts, clock=clock,
                          flex=FlexWebConfig.from_env())
    if broker == "tastytrade":
        from portfolio_pipeline.brokers.tastytrade import TastytradeAdapter
        from portfolio_pipeline.domain.accounts import TastytradeConnection

        return TastytradeAdapter(
            first.tastytrade or TastytradeConnection(),
            instruments,
            [a.account_id for a in accounts],
            clock=clock,
            environ=environ,
        )
    raise ValueError(f"broker {broker!r} is not available in this build")


def adapters_for(
    accounts: Sequence[AccountConfig],
    instruments: InstrumentTable,
    clock: Clock,
    environ: Mapping[str, str] | None = None,
) -> list[tuple[BrokerAdapter, list[str]]]:
    """Group configured accounts by broker and build one adapter per group."""
    by_broker: dict[BrokerName, list[AccountConfig]] = {}
    for account in accounts:
        by_broker.setdefault(account.broker, []).append(account)
    return [
        (make_adapter(broker, group, instruments, clock, environ), [a.account_id for a in group])
        for broker, group in by_broker.items()
    ]
