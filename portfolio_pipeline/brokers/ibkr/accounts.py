"""Accounts and activity of an IBKR adapter: account summary, positions, executions, cash flows.

:class:`IbkrAccounts` reads the managed accounts, the account summary in the base
currency (and model code) with the broker's DailyPnL, signed positions with their marks
from the portfolio updates, executions with their commission reports, and cash flows.
Cash flows are not available from the live API: they come from the Flex Web Service when
it is configured, else ``[]`` with a warning (the Flex-report importer covers deposits,
dividends, interest and fees).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from ib_async import IB, ExecutionFilter

from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError
from portfolio_pipeline.brokers.history.errors import ImportFormatError
from portfolio_pipeline.brokers.history.ibkr_flex import parse_ibkr_flex
from portfolio_pipeline.brokers.history.model import ImportBatch
from portfolio_pipeline.brokers.ibkr.contracts import IbkrContracts
from portfolio_pipeline.brokers.ibkr.flex_web import FlexWebConfig, fetch_flex_statement
from portfolio_pipeline.brokers.ibkr.parsing import (
    BROKER,
    UNSET_DOUBLE,
    account_values,
    avg_price_from_avg_cost,
    clean_price,
    contract_source,
    describe,
    execution_from_fill,
    normalise_contract,
)
from portfolio_pipeline.brokers.ibkr.session import IbkrSession
from portfolio_pipeline.domain.accounts import AccountConfig
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import AccountSnapshot, Position

logger = logging.getLogger(__name__)

__all__ = ["IbkrAccounts"]


class IbkrAccounts:
    """What the accounts hold and did, over an :class:`IbkrSession`.

    ``accounts`` give each account's base currency and model code (default USD, no
    model); ``pnl_wait_seconds`` bounds the wait for DailyPnL; ``flex`` enables cash
    flows from the Flex Web Service (fetched once per adapter).
    """

    def __init__(
        self,
        session: IbkrSession,
        contracts: IbkrContracts,
        instruments: InstrumentTable,
        *,
        accounts: Mapping[str, AccountConfig],
        pnl_wait_seconds: float,
        flex: FlexWebConfig | None,
    ) -> None:
        self._session = session
        self._contracts = contracts
        self._instruments = instruments
        self._accounts = accounts
        self._pnl_wait = pnl_wait_seconds
        self._flex = flex
        self._flex_batch: ImportBatch | None = None
        self._account_lock = asyncio.Lock()

    async def account_ids(self) -> list[str]:
        ib = await self._session.ready_ib()
        return list(ib.managedAccounts())

    def _account(self, account_id: str) -> tuple[str, str | None]:
        cfg = self._accounts.get(account_id)
        if cfg is None:
            return "USD", None
        return cfg.base_currency, cfg.model_code

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        """Summary tags in the base currency (and model code) plus DailyPnL via reqPnL."""
        session = self._session
        ib = await session.ready_ib()
        self._check_managed(ib, account_id)
        currency, model_code = self._account(account_id)
        if model_code:
            await session.request(
                f"reqAccountUpdatesMulti({account_id}, {model_code})",
                lambda: ib.reqAccountUpdatesMultiAsync(account_id, model_code),
            )
            values: list[Any] = ib.accountValues(account_id)
        else:
            values = await session.request(
                f"accountSummary({account_id})", lambda: ib.accountSummaryAsync(account_id)
            )
        tags = account_values(values, account=account_id, currency=currency, model_code=model_code)
        daily = await self._daily_pnl(ib, account_id, model_code or "")
        return AccountSnapshot(
            broker=BROKER,
            account_id=account_id,
            as_of=session.clock(),
            nlv=tags["NetLiquidation"],
            cash=tags["TotalCashValue"],
            init_margin=tags["InitMarginReq"],
            maint_margin=tags["MaintMarginReq"],
            excess_liquidity=tags["ExcessLiquidity"],
            buying_power=tags["BuyingPower"],
            currency=currency,
            broker_daily_pnl=daily,
        )

    async def _daily_pnl(self, ib: IB, account_id: str, model_code: str) -> float | None:
        subscribed = ib.pnl(account_id, model_code)
        if subscribed:
            pnl = subscribed[0]
        else:
            await self._session.limiter.acquire()
            pnl = ib.reqPnL(account_id, model_code)

        def usable() -> bool:
            value = pnl.dailyPnL
            return value is not None and math.isfinite(value) and abs(value) < UNSET_DOUBLE

        if await self._session.wait_for(usable, min(self._pnl_wait, self._session.timeout)):
            return float(pnl.dailyPnL)
        logger.info("ibkr: no DailyPnL for %s from reqPnL; broker_daily_pnl=None", account_id)
        return None

    def _check_managed(self, ib: IB, account_id: str) -> None:
        """A clear error when the Gateway's login does not manage ``account_id``."""
        managed = list(ib.managedAccounts())
        if managed and account_id not in managed:
            conn = self._session.conn
            raise BrokerError(
                f"ibkr: account {account_id!r} (accounts.yaml) is not managed by the login of the Gateway at "
                f"{conn.host}:{conn.port}; it manages: {', '.join(managed)}"
            )

    async def positions(self, account_id: str) -> list[Position]:
        """Signed positions from reqPositions, marks from the account's portfolio updates."""
        session = self._session
        ib = await session.ready_ib()
        self._check_managed(ib, account_id)
        async with self._account_lock:
            raw = await session.request("reqPositions", ib.reqPositionsAsync)
            await session.request(
                f"reqAccountUpdates({account_id})", lambda: ib.reqAccountUpdatesAsync(account_id)
            )
            portfolio = {item.contract.conId: item for item in ib.portfolio(account_id)}
        as_of = session.clock()
        result: list[Position] = []
        for pos in raw:
            if pos.account != account_id or not pos.position:
                continue
            result.append(await self._position(account_id, pos, portfolio.get(pos.contract.conId), as_of))
        return result

    async def _position(self, account_id: str, pos: Any, item: Any, as_of: datetime) -> Position:
        """One reqPositions row with its portfolio item (the mark) as a :class:`Position`."""
        contract = pos.contract
        where = f"{account_id} {describe(contract)}"
        und_expiry = await self._contracts.fop_underlying_expiry(contract) if contract.secType == "FOP" else None
        norm = normalise_contract(
            contract, self._instruments, account=account_id, underlying_expiry=und_expiry
        )
        tc = (contract.tradingClass or "").upper()
        if norm.contract.is_option and tc and tc != norm.contract.trading_class:
            self._contracts.remember_trading_class(norm.contract.key, tc)
        mark = clean_price(item.marketPrice) if item is not None else None
        if mark is None:
            raise BrokerDataError(
                f"ibkr: {where}: no market price in the portfolio update "
                f"({item.marketPrice if item is not None else 'no portfolio item'!r})"
            )
        return Position(
            broker=BROKER,
            account_id=account_id,
            contract=norm.contract,
            quantity=float(pos.position),
            multiplier=norm.multiplier,
            avg_price=avg_price_from_avg_cost(
                pos.avgCost, contract.secType, norm.multiplier, where=where
            ),
            mark=mark,
            as_of=as_of,
            source=contract_source(account_id, contract),
        )

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        """Executions since ``since`` (00:00 UTC) with commissions from the commission reports."""
        session = self._session
        ib = await session.ready_ib()
        flt = ExecutionFilter(acctCode=account_id, time=f"{since:%Y%m%d}-00:00:00")
        fills: list[Any] = await session.request(
            f"reqExecutions({account_id} since {since})", lambda: ib.reqExecutionsAsync(flt)
        )
        fills = [f for f in fills if f.execution.acctNumber == account_id and f.contract.secType != "BAG"]

        def reported() -> bool:
            return all(f.commissionReport.execId for f in fills)

        if not await session.wait_for(reported, session.timeout):
            missing = [f.execution.execId for f in fills if not f.commissionReport.execId]
            raise BrokerError(
                f"ibkr: reqExecutions({account_id}): no commission report for {', '.join(missing)} "
                f"within {session.timeout:g}s"
            )
        result: list[Execution] = []
        for fill in fills:
            contract = fill.contract
            und_expiry = (
                await self._contracts.fop_underlying_expiry(contract) if contract.secType == "FOP" else None
            )
            norm = normalise_contract(
                contract, self._instruments, account=account_id, underlying_expiry=und_expiry
            )
            result.append(execution_from_fill(fill, norm, account=account_id))
        return sorted(result, key=lambda e: (e.ts, e.exec_id))

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        """Deposits, withdrawals, dividends, interest and fees from the Flex Web Service.

        The live API has no cash-flow history: with ``IBKR_FLEX_TOKEN`` and
        ``IBKR_FLEX_QUERY_ID`` set (:class:`~portfolio_pipeline.brokers.ibkr.flex_web.
        FlexWebConfig`) the Flex statement is fetched once per adapter and its cash
        transactions of ``account_id`` dated ``since`` or later are returned; without
        them, ``[]`` and a warning (``portfolio import ibkr-flex`` files still reach
        every asset through the merged activity reader)."""
        if self._flex is None:
            logger.warning(
                "ibkr: cash flows of %s since %s need the Flex Web Service (set IBKR_FLEX_TOKEN "
                "and IBKR_FLEX_QUERY_ID) or an imported Flex file",
                account_id,
                since,
            )
            return []
        if self._flex_batch is None:
            content = await fetch_flex_statement(self._flex)
            try:
                self._flex_batch = parse_ibkr_flex(content, self._instruments,
                                                   source_name="ibkr-flex-web-service")
            except ImportFormatError as exc:
                raise BrokerError(f"ibkr flex web service: {exc}") from exc
        flows = [f for f in self._flex_batch.cash_flows
                 if f.account_id == account_id and f.ts.date() >= since]
        return sorted(flows, key=lambda f: (f.ts, f.flow_id))
