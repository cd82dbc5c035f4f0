"""Market data of an IBKR adapter: streaming quotes with model Greeks, option chains.

:class:`IbkrMarketData` keeps streaming lines open (they live in the session's
:attr:`~portfolio_pipeline.brokers.ibkr.session.IbkrSession.lines`, which re-requests them
after every reconnect), waits for late Greeks up to the connection timeout, turns IBKR's
sentinel values into NaN with a warning (once per episode), and reads option chains
(futures options: on the front future).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from ib_async import Ticker

from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError, OptionChain
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.brokers.ibkr.contracts import IbkrContracts
from portfolio_pipeline.brokers.ibkr.parsing import (
    BROKER,
    clean_price,
    describe,
    parse_ib_date,
    sanitise,
)
from portfolio_pipeline.brokers.ibkr.session import IbkrSession, Subscription
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable, SecType
from portfolio_pipeline.domain.positions import Contract, Quote
from portfolio_pipeline.domain.settlement import years_to_settlement

logger = logging.getLogger(__name__)

__all__ = ["CHAIN_GENERIC_TICKS", "CHAIN_LINES", "OPTION_GENERIC_TICKS", "IbkrMarketData"]

#: Generic ticks requested for options (106 = implied volatility); model Greeks
#: (tick 13/83) arrive with every option subscription.
OPTION_GENERIC_TICKS: Final = "106"

#: Generic ticks of a chain snapshot: option volume (100: ticks 29/30), open interest
#: (101: ticks 27/28, call or put) and implied volatility (106); volume is tick 8.
CHAIN_GENERIC_TICKS: Final = "100,101,106"
CHAIN_LINES: Final = 50
"""Market data lines a chain snapshot holds at once (an IBKR account starts with 100)."""

_Greeks = tuple[float | None, float | None, float | None, float | None, float | None, float | None]
"""(iv, delta, gamma, vega, theta, underlying price) of a quote."""


class IbkrMarketData:
    """Streaming quotes and option chains over an :class:`IbkrSession`."""

    def __init__(self, session: IbkrSession, contracts: IbkrContracts, instruments: InstrumentTable) -> None:
        self._session = session
        self._contracts = contracts
        self._instruments = instruments
        self._sentinel_warned: set[tuple[str, str]] = set()  # sentinel warnings: once per episode

    async def subscribe(self, contracts: Sequence[Contract]) -> list[Contract]:
        """Start streaming market data (kept across reconnects until ``unsubscribe``)."""
        ib = await self._session.ready_ib()
        lines = self._session.lines
        unique = list({c.key: c for c in contracts}.values())
        new = [c for c in unique if c.key not in lines]
        qualified = await self._contracts.qualify_all(new)
        for contract, ib_contract in zip(new, qualified, strict=True):
            ticks = OPTION_GENERIC_TICKS if contract.is_option else ""
            await self._session.limiter.acquire()
            ticker = ib.reqMktData(ib_contract, ticks)
            lines[contract.key] = Subscription(contract, ib_contract, ticks, ticker)
        return unique

    async def unsubscribe(self, contracts: Sequence[Contract]) -> None:
        for contract in contracts:
            sub = self._session.lines.pop(contract.key, None)
            ib = self._session.ib_if_connected
            if sub is not None and ib is not None:
                await self._session.limiter.acquire()
                ib.cancelMktData(sub.ib_contract)

    @property
    def subscriptions(self) -> list[Contract]:
        return [s.contract for s in self._session.lines.values()]

    @staticmethod
    def _ready(sub: Subscription) -> bool:
        ticker = sub.ticker
        if ticker is None:
            return False
        has_book = not math.isnan(ticker.bid) and not math.isnan(ticker.ask)
        has_price = has_book or clean_price(ticker.last) is not None or clean_price(ticker.close) is not None
        if not has_price:
            return False
        return not sub.contract.is_option or ticker.modelGreeks is not None

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes plus model Greeks (per share), waiting for late Greeks up to the timeout.

        Subscriptions stay open (streaming) and are restored after a reconnect.  A
        contract without any price within the timeout is an error; missing or sentinel
        Greeks become NaN with a logged warning.
        """
        unique = await self.subscribe(contracts)
        subs = [self._session.lines[c.key] for c in unique]
        await self._session.wait_for(lambda: all(self._ready(s) for s in subs), self._session.timeout)
        by_key = {s.contract.key: self._quote(s) for s in subs}
        return [by_key[c.key] for c in contracts]

    def _quote(self, sub: Subscription) -> Quote:
        where = f"{sub.contract.key} [{describe(sub.ib_contract)}]"
        ticker = sub.ticker
        if ticker is None:
            raise BrokerError(f"ibkr: {where}: no market data (connection lost)")
        bid = clean_price(ticker.bid)
        ask = clean_price(ticker.ask)
        last = clean_price(ticker.last)
        fallback = last if last is not None else clean_price(ticker.close)
        if bid is not None and ask is not None:
            mark = (bid + ask) / 2
        elif ask is not None and sub.contract.is_option:
            bid, mark = 0.0, ask / 2  # no bid for the option: the bid is zero
        elif fallback is not None:
            bid = ask = mark = fallback
        else:
            raise BrokerError(
                f"ibkr: {where}: no price within {self._session.timeout:g}s "
                f"(market data type {self._session.conn.market_data_type})"
            )
        iv, delta, gamma, vega, theta, underlying = (
            self._option_greeks(ticker, where) if sub.contract.is_option else (None,) * 6
        )
        return Quote(
            source=BROKER,
            contract=sub.contract,
            as_of=self._session.clock(),
            bid=bid,
            ask=ask,
            mark=mark,
            last=last,
            underlying_price=underlying,
            iv=iv,
            delta=delta,
            gamma=gamma,
            vega=vega,
            theta=theta,
        )

    def _option_greeks(self, ticker: Ticker, where: str) -> _Greeks:
        """An option's model Greeks; NaN (with a warning once per episode) when missing."""
        greeks = ticker.modelGreeks
        if greeks is None:
            if (where, "modelGreeks") not in self._sentinel_warned:
                self._sentinel_warned.add((where, "modelGreeks"))
                logger.warning(
                    "ibkr: %s: model Greeks not received within %gs -> NaN", where, self._session.timeout
                )
            return (math.nan,) * 6
        self._sentinel_warned.discard((where, "modelGreeks"))
        seen = self._sentinel_warned
        return (
            sanitise(greeks.impliedVol, "impliedVol", where, kind="price", warned=seen),
            sanitise(greeks.delta, "delta", where, kind="greek", warned=seen),
            sanitise(greeks.gamma, "gamma", where, kind="greek", warned=seen),
            sanitise(greeks.vega, "vega", where, kind="greek", warned=seen),
            sanitise(greeks.theta, "theta", where, kind="greek", warned=seen),
            sanitise(greeks.undPrice, "undPrice", where, kind="price", warned=seen),
        )

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        """Expiries/strikes of one trading class (futures options: on the front future)."""
        root = underlying.upper()
        spec = self._instruments.spec(root)
        if spec.options is None:
            raise UnknownInstrumentError(f"ibkr: {root} has no options section in the instrument table")
        tc = self._instruments.trading_class(root, trading_class).name.upper()
        ib = await self._session.ready_ib()
        option_sec: SecType
        sec: SecType
        if spec.underlying_type == "future":
            und = await self._contracts.front_future(root)
            fut_fop_exchange, option_sec = (spec.future.exchange if spec.future else ""), "FOP"
        else:
            sec = "IND" if spec.underlying_type in ("index", "volatility_index") else "STK"
            und = await self._contracts.qualify(Contract(underlying=root, sec_type=sec, currency=spec.currency))
            fut_fop_exchange, option_sec = "", "OPT"
        chains: list[Any] = await self._session.request(
            f"reqSecDefOptParams({root})",
            lambda: ib.reqSecDefOptParamsAsync(und.symbol, fut_fop_exchange, und.secType, und.conId),
        )
        matching = [c for c in chains if (c.tradingClass or "").upper() == tc]
        if not matching:
            listed = sorted({c.tradingClass for c in chains})
            raise BrokerDataError(f"ibkr: no option chain for {root} trading class {tc}; IBKR lists {listed}")
        preferred = "SMART" if option_sec == "OPT" else fut_fop_exchange
        chain = next((c for c in matching if c.exchange == preferred), matching[0])
        where = f"{root} {tc} chain on {chain.exchange}"
        multiplier = self._instruments.checked_multiplier(
            root,
            option_sec,
            float(chain.multiplier) if chain.multiplier else None,
            trading_class=tc,
            source=f"{BROKER}:-:{where}",
        )
        expiries = sorted({parse_ib_date(e, where=where, field="expiration") for e in chain.expirations})
        strikes = sorted({float(s) for s in chain.strikes})
        return OptionChain(root, tc, multiplier, tuple(expiries), tuple(strikes), exchange=chain.exchange)

    async def chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        """Every listed contract of every trading class of ``underlying`` in ``window``: the
        chain parameters (``reqSecDefOptParams``), then market data with open interest,
        volume and implied vol (generic ticks 100/101/106) in batches of :data:`CHAIN_LINES`
        lines, each cancelled once read. Combinations IBKR does not list (the chain's strikes
        are the union over expiries) are skipped. ``rate``/``dividend_yield`` are NaN: the
        broker does not say (the caller takes them from ``pricing.yaml``)."""
        root = underlying.upper()
        spec = self._instruments.spec(root)
        if spec.options is None:
            raise UnknownInstrumentError(f"ibkr: {root} has no options section in the instrument table")
        if spec.underlying_type == "future":
            raise BrokerDataError(f"ibkr: chain snapshots of futures options ({root}) are not supported")
        sec: SecType = "IND" if spec.underlying_type in ("index", "volatility_index") else "STK"
        (und,) = await self.quotes([Contract(underlying=root, sec_type=sec, currency=spec.currency)])
        spot = und.mark
        now = self._session.clock()
        wanted: list[tuple[Contract, float]] = []
        for tc in spec.options.trading_classes:
            try:
                chain = await self.option_chain(root, tc.name)
            except BrokerDataError as exc:
                logger.warning("ibkr: chain snapshot of %s: %s", root, exc)
                continue
            strikes = [k for k in chain.strikes if abs(k / spot - 1.0) <= window.moneyness]
            for expiry in chain.expiries:
                T = years_to_settlement(now, expiry, tc.settlement_time)
                if T <= 0 or (expiry - now.date()).days > window.max_days:
                    continue
                wanted += [(Contract(root, "OPT", expiry, k, right, chain.trading_class), T)
                           for k in strikes for right in ("C", "P")]
        rows: list[tuple[Contract, float, Any]] = []
        for start in range(0, len(wanted), CHAIN_LINES):
            rows += await self._chain_batch(wanted[start:start + CHAIN_LINES])
        return self._chain_snapshot(root, spot, float(spec.options.multiplier), rows)

    async def _chain_batch(self, batch: list[tuple[Contract, float]]) -> list[tuple[Contract, float, Any]]:
        ib = await self._session.ready_ib()
        found = await asyncio.gather(*(self._contracts.qualify(c) for c, _ in batch), return_exceptions=True)
        listed = [(c, T, q) for (c, T), q in zip(batch, found, strict=True) if not isinstance(q, BaseException)]
        for (c, _), q in zip(batch, found, strict=True):
            if isinstance(q, BaseException):
                if not isinstance(q, BrokerError):
                    raise q
                logger.debug("ibkr: chain snapshot skips %s: %s", c.key, q)
        tickers = []
        for _, _, q in listed:
            await self._session.limiter.acquire()
            tickers.append(ib.reqMktData(q, CHAIN_GENERIC_TICKS))

        def ready() -> bool:
            return all(
                not math.isnan(t.callOpenInterest if c.right == "C" else t.putOpenInterest)
                and t.modelGreeks is not None
                for (c, _, _), t in zip(listed, tickers, strict=True)
            )

        await self._session.wait_for(ready, self._session.timeout)
        for _, _, q in listed:
            await self._session.limiter.acquire()
            ib.cancelMktData(q)
        return [(c, T, t) for (c, T, _), t in zip(listed, tickers, strict=True)]

    def _chain_snapshot(self, root: str, spot: float, multiplier: float,
                        rows: list[tuple[Contract, float, Any]]) -> ChainSnapshot:
        def col(values: list[float | None]) -> npt.NDArray[np.float64]:
            return np.array([math.nan if v is None else v for v in values], dtype=np.float64)

        greeks = [self._option_greeks(t, c.key) for c, _, t in rows]
        oi = [clean_size(t.callOpenInterest if c.right == "C" else t.putOpenInterest) for c, _, t in rows]
        times = [t.time.timestamp() if t.time is not None else math.nan for _, _, t in rows]
        return ChainSnapshot(
            underlying=root, as_of=self._session.clock(), spot=spot, multiplier=multiplier,
            rate=math.nan, dividend_yield=math.nan, source=BROKER, simulated=False,
            trading_class=np.array([c.trading_class or "" for c, _, _ in rows], dtype=np.str_),
            expiry=np.array([c.expiry for c, _, _ in rows], dtype="datetime64[D]"),
            is_call=np.array([c.right == "C" for c, _, _ in rows], dtype=bool),
            strike=col([c.strike for c, _, _ in rows]),
            T=col([T for _, T, _ in rows]),
            bid=col([clean_price(t.bid) for _, _, t in rows]),
            ask=col([clean_price(t.ask) for _, _, t in rows]),
            last=col([clean_price(t.last) for _, _, t in rows]),
            volume=col([clean_size(t.volume) for _, _, t in rows]),
            open_interest=col(oi),
            iv=col([g[0] for g in greeks]), delta=col([g[1] for g in greeks]), gamma=col([g[2] for g in greeks]),
            vega=col([g[3] for g in greeks]), theta=col([g[4] for g in greeks]),
            quote_epoch=np.array(times, dtype=np.float64),
        )


def clean_size(value: float | None) -> float | None:
    """A size/count tick as a number of contracts (None when IBKR sent none)."""
    if value is None or math.isnan(value) or value < 0:
        return None
    return float(value)
