"""Collect one consistent snapshot of the book (positions, balances, quotes) from brokers."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerDataError, BrokerError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import AccountSnapshot, Contract, Position, Quote
from portfolio_pipeline.domain.symbols import VOLATILITY_INDEX_SYMBOLS

logger = logging.getLogger(__name__)

#: Index quotes every snapshot carries: the regime needs the live VIX and VIX3M.
VOLATILITY_INDICES: tuple[Contract, ...] = tuple(
    Contract(underlying=symbol, sec_type="IND") for symbol in VOLATILITY_INDEX_SYMBOLS
)


@dataclass(frozen=True, slots=True)
class BookSnapshot:
    """Everything the daily record stores for one as-of time, across accounts."""

    as_of: datetime
    positions: tuple[Position, ...]
    accounts: tuple[AccountSnapshot, ...]
    quotes: tuple[Quote, ...]
    data_quality: tuple[str, ...] = ()
    """Warnings about data the snapshot lacks (e.g. no VIX: no CBOE index subscription)."""

    def quote_for(self, contract: Contract) -> Quote | None:
        key = contract.key
        return next((q for q in self.quotes if q.contract.key == key), None)


def underlying_contracts(positions: Sequence[Position], instruments: InstrumentTable) -> list[Contract]:
    """The contracts the options of ``positions`` are written on (for spot quotes):
    the index, the ETF/stock, or for futures options the future of the right expiry."""
    seen: dict[str, Contract] = {}
    for p in positions:
        c = p.contract
        if not c.is_option:
            continue
        if c.sec_type == "FOP":
            und = Contract(underlying=c.underlying, sec_type="FUT", expiry=c.underlying_expiry)
        elif instruments.spec(c.underlying).underlying_type in ("etf", "equity"):
            und = Contract(underlying=c.underlying, sec_type="STK")
        else:
            und = Contract(underlying=c.underlying, sec_type="IND")
        seen.setdefault(und.key, und)
    return list(seen.values())


async def collect_snapshot(
    adapters: Sequence[tuple[BrokerAdapter, Sequence[str]]],
    as_of: datetime,
    instruments: InstrumentTable,
) -> BookSnapshot:
    """Positions and balances of every (adapter, account ids) pair plus quotes for them.

    Each adapter is connected for the duration (``async with``).  Quotes are requested
    from the adapter that holds the positions, for the position contracts, their
    underlyings and the volatility indices.  A failure propagates (no partial book),
    except for the volatility indices: a broker without the index subscription (IBKR: no
    CBOE market data) gives a snapshot without them and a data-quality warning; the regime
    then falls back as ``margin_history`` states.
    """
    positions: list[Position] = []
    accounts: list[AccountSnapshot] = []
    quotes: dict[tuple[str, str], Quote] = {}
    problems: list[tuple[str, str]] = []
    for adapter, account_ids in adapters:
        adapter_positions: list[Position] = []
        async with adapter:
            for account_id in account_ids:
                accounts.append(await adapter.account_snapshot(account_id))
                adapter_positions.extend(await adapter.positions(account_id))
            contracts = {p.contract.key: p.contract for p in adapter_positions}
            for c in underlying_contracts(adapter_positions, instruments):
                contracts.setdefault(c.key, c)
            for quote in await adapter.quotes(list(contracts.values())) if contracts else []:
                quotes[(quote.source, quote.contract.key)] = quote
            for index in VOLATILITY_INDICES:
                if index.key in contracts:
                    continue
                try:
                    for quote in await adapter.quotes([index]):
                        quotes[(quote.source, quote.contract.key)] = quote
                except (BrokerError, BrokerDataError) as exc:
                    problems.append((index.key, f"{adapter.name}: no {index.underlying} quote ({exc}); check "
                                     "the CBOE index market data subscription"))
        positions.extend(adapter_positions)
        logger.info(
            "snapshot broker=%s accounts=%d positions=%d quotes=%d",
            adapter.name, len(account_ids), len(adapter_positions), len(contracts),
        )
    return BookSnapshot(
        as_of=as_of,
        positions=tuple(positions),
        accounts=tuple(accounts),
        quotes=tuple(quotes.values()),
        data_quality=tuple(_missing_indices(problems, quotes)),
    )


def _missing_indices(problems: Sequence[tuple[str, str]], quotes: dict[tuple[str, str], Quote]) -> list[str]:
    """The index problems left once every broker was asked (one broker's VIX is enough)."""
    have = {key for _, key in quotes}
    out = [text for key, text in problems if key not in have]
    for text in out:
        logger.warning("snapshot data quality: %s", text)
    return out
