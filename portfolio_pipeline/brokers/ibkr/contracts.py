"""Contract resolution of an IBKR adapter: domain contracts -> qualified IBKR contracts.

:class:`IbkrContracts` qualifies contracts (conId filled, multiplier checked against the
instrument table, cached), remembers IBKR's trading class where it differs from the
table's (a held ES weekly: table EW, IBKR EW2), finds the future a futures option is
written on and the front future of a root.  Error 200 (no security definition) names the
contract.  Requests go through the adapter's
:class:`~portfolio_pipeline.brokers.ibkr.session.IbkrSession`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from datetime import date
from typing import Any, Final

from ib_async import Contract as IbContract
from ib_async.wrapper import RequestError

from portfolio_pipeline.brokers.base import BrokerDataError, BrokerError
from portfolio_pipeline.brokers.ibkr.parsing import (
    describe,
    ib_contract_for,
    normalise_contract,
    parse_ib_date,
)
from portfolio_pipeline.brokers.ibkr.session import IbkrSession
from portfolio_pipeline.domain.errors import UnknownInstrumentError
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.positions import Contract

logger = logging.getLogger(__name__)

__all__ = ["NO_SECURITY_DEFINITION", "IbkrContracts"]

NO_SECURITY_DEFINITION: Final = 200


class IbkrContracts:
    """Qualified IBKR contracts for domain contracts, cached per adapter."""

    def __init__(self, session: IbkrSession, instruments: InstrumentTable) -> None:
        self._session = session
        self._instruments = instruments
        self._qualified: dict[str, IbContract] = {}
        self._broker_class: dict[str, str] = {}  # key -> IBKR's class when the table's differs
        self._underlying_expiry: dict[int, date] = {}

    def remember_trading_class(self, key: str, trading_class: str) -> None:
        """IBKR's trading class of a held contract whose table class differs (used when
        qualifying it later)."""
        self._broker_class[key] = trading_class

    async def details(self, ib_contract: IbContract, what: str) -> list[Any]:
        """``reqContractDetails`` of one IBKR contract."""
        ib = await self._session.ready_ib()
        details: list[Any] = await self._session.request(what, lambda: ib.reqContractDetailsAsync(ib_contract))
        return details

    async def qualify(self, contract: Contract) -> IbContract:
        """The qualified IBKR contract (conId filled) for a domain contract, cached."""
        key = contract.key
        cached = self._qualified.get(key)
        if cached is not None:
            return cached
        ib = await self._session.ready_ib()
        request = ib_contract_for(contract, self._instruments)
        if key in self._broker_class:  # e.g. a held ES weekly: table EW, IBKR EW2
            request.tradingClass = self._broker_class[key]
        what = f"qualify {key} ({describe(request)})"
        try:
            result = await self._session.request(what, lambda: ib.qualifyContractsAsync(request))
        except BrokerError as exc:
            cause = exc.__cause__
            if isinstance(cause, RequestError) and cause.code == NO_SECURITY_DEFINITION:
                raise BrokerError(
                    f"ibkr: no security definition for {key} ({describe(request)}): "
                    f"IBKR error 200: {cause.message}"
                ) from exc
            raise
        qualified = result[0] if result else None
        if not isinstance(qualified, IbContract) or not qualified.conId:
            raise BrokerError(
                f"ibkr: no unique security definition for {key} ({describe(request)}): "
                "unknown or ambiguous contract"
            )
        # the broker's multiplier of the qualified contract is checked against the table
        normalise_contract(qualified, self._instruments, account="-")
        self._qualified[key] = qualified
        return qualified

    async def qualify_all(self, contracts: Iterable[Contract]) -> list[IbContract]:
        return list(await asyncio.gather(*(self.qualify(c) for c in contracts)))

    async def fop_underlying_expiry(self, contract: IbContract) -> date | None:
        """Expiry of the future a futures option is written on (None: same as the option)."""
        cached = self._underlying_expiry.get(contract.conId)
        if cached is not None:
            return cached
        where = describe(contract)
        try:
            details = await self.details(
                IbContract(conId=contract.conId, exchange=contract.exchange),
                f"contract details of {where}",
            )
            under_con_id = details[0].underConId if details else 0
            if not under_con_id:
                logger.info("ibkr: %s: no underlying conId; underlying expiry = option expiry", where)
                return None
            under = await self.details(
                IbContract(conId=under_con_id), f"underlying future of {where}"
            )
        except BrokerError as exc:
            logger.warning("ibkr: %s: underlying future unknown (%s); using the option expiry", where, exc)
            return None
        if not under or under[0].contract is None:
            logger.warning("ibkr: %s: underlying conId %d not found; using the option expiry", where, under_con_id)
            return None
        fut = under[0].contract
        expiry = parse_ib_date(
            fut.lastTradeDateOrContractMonth or under[0].realExpirationDate,
            where=f"underlying of {where}",
        )
        self._underlying_expiry[contract.conId] = expiry
        return expiry

    async def front_future(self, root: str) -> IbContract:
        """The unexpired future of ``root`` that expires first."""
        spec = self._instruments.spec(root)
        if spec.future is None:
            raise UnknownInstrumentError(f"ibkr: {root} has no future section in the instrument table")
        request = IbContract(secType="FUT", symbol=root, exchange=spec.future.exchange, currency=spec.currency)
        details = await self.details(request, f"futures of {root}")
        today = self._session.clock().date()
        dated: list[tuple[date, IbContract]] = []
        for d in details:
            c: IbContract | None = d.contract
            if c is None or c.secType != "FUT":
                continue
            expiry = parse_ib_date(c.lastTradeDateOrContractMonth, where=describe(c))
            if expiry >= today:
                dated.append((expiry, c))
        if not dated:
            raise BrokerDataError(f"ibkr: no unexpired {root} future listed on {spec.future.exchange}")
        return min(dated, key=lambda pair: pair[0])[1]
