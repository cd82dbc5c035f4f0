"""Orders of an IBKR adapter: WhatIf, stage, transmit, cancel, reconcile.

Safety contracts implemented by :class:`IbkrOrders`:

- ``what_if`` never transmits; ``stage`` places with ``transmit=False``.
- ``transmit`` calls :func:`~portfolio_pipeline.domain.orders.require_confirmed` first,
  finds the very staged order among this client id's open orders (same
  clientId/orderId/orderRef, same permId once known) and re-places it with
  ``transmit=True``; a staged order the Gateway no longer has is
  :class:`~portfolio_pipeline.brokers.base.StaleOrderError`, never re-placed from local
  terms; sent but not acknowledged is
  :class:`~portfolio_pipeline.brokers.base.SentUnknownError`.
- Only the owning client id changes an order (IBKR would place a second order from
  another id); ``cancel`` waits for the Gateway's confirmation and fails on error 10147
  (not this client's order).
- Broker warnings are returned, never answered.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import replace
from typing import Any, Final

from ib_async import IB, ComboLeg, ExecutionFilter
from ib_async import Contract as IbContract
from ib_async import Order as IbOrder
from ib_async import OrderStatus as IbOrderStatus
from ib_async import Trade as IbTrade

from portfolio_pipeline.brokers.base import (
    BrokerError,
    BrokerOrderState,
    SentUnknownError,
    StagedOrder,
    StaleOrderError,
    TransmittedGroup,
)
from portfolio_pipeline.brokers.ibkr.contracts import IbkrContracts
from portfolio_pipeline.brokers.ibkr.parsing import whatif_result
from portfolio_pipeline.brokers.ibkr.session import IbkrSession
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.order_groups import OrderGroup, require_transmittable
from portfolio_pipeline.domain.orders import (
    Order,
    OrderStatus,
    WhatIfResult,
    check_transition,
    require_confirmed,
)

logger = logging.getLogger(__name__)

__all__ = ["ORDER_NOT_FOUND_FOR_CANCEL", "IbkrOrders"]

ORDER_NOT_FOUND_FOR_CANCEL: Final = 10147
_REJECTED_STATES: Final = frozenset({IbOrderStatus.Cancelled, IbOrderStatus.ApiCancelled})
#: Open-order states that do not prove an order was transmitted (see ``order_state``).
_NOT_YET_WORKING: Final = frozenset(
    {IbOrderStatus.PreSubmitted, IbOrderStatus.PendingSubmit, IbOrderStatus.ApiPending}
)
_ACKED_STATES: Final = frozenset(
    {
        IbOrderStatus.PreSubmitted,
        IbOrderStatus.Submitted,
        IbOrderStatus.Filled,
        IbOrderStatus.Inactive,
        *_REJECTED_STATES,
    }
)


class IbkrOrders:
    """The order operations of one client id, over an :class:`IbkrSession`.

    ``stage_settle_seconds`` is how long ``stage`` waits for an immediate rejection.
    """

    def __init__(
        self,
        session: IbkrSession,
        contracts: IbkrContracts,
        instruments: InstrumentTable,
        *,
        stage_settle_seconds: float,
    ) -> None:
        self._session = session
        self._contracts = contracts
        self._instruments = instruments
        self._stage_settle = stage_settle_seconds

    async def _build_order(self, order: Order) -> tuple[IbContract, IbOrder]:
        legs = order.legs
        qualified = await self._contracts.qualify_all(leg.contract for leg in legs)
        if len(legs) == 1:
            leg = legs[0]
            contract = qualified[0]
            action, quantity = leg.action, order.quantity * leg.ratio
        else:
            roots = {leg.contract.underlying for leg in legs}
            if len(roots) != 1:
                raise BrokerError(
                    f"ibkr: order {order.order_id}: combo legs must share one underlying, got {sorted(roots)}"
                )
            root = roots.pop()
            exchange = "SMART"
            if any(leg.contract.sec_type in ("FOP", "FUT") for leg in legs):
                spec = self._instruments.spec(root)
                exchange = spec.future.exchange if spec.future else "SMART"
            contract = IbContract(
                secType="BAG",
                symbol=root,
                exchange=exchange,
                currency=legs[0].contract.currency,
                comboLegs=[
                    ComboLeg(conId=q.conId, ratio=leg.ratio, action=leg.action, exchange=exchange)
                    for leg, q in zip(legs, qualified, strict=True)
                ],
            )
            action, quantity = "BUY", order.quantity
        price: dict[str, Any] = {"orderType": "LMT", "lmtPrice": order.limit_price}
        if order.order_type == "STP":
            price = {"orderType": "STP", "auxPrice": order.aux_price}
        elif order.order_type == "TRAIL":
            price = {"orderType": "TRAIL"} | (
                {"trailingPercent": order.trailing_percent} if order.trailing_percent is not None
                else {"auxPrice": order.aux_price}
            )
        ib_order = IbOrder(
            **price,
            action=action,
            totalQuantity=float(quantity),
            tif=order.time_in_force,
            account=order.account_id,
            orderRef=order.order_id,
            transmit=False,
        )
        return contract, ib_order

    async def what_if(self, order: Order) -> WhatIfResult:
        """Margin/commission impact and every broker warning (``warningText``, API warnings)."""
        ib = await self._session.ready_ib()
        contract, ib_order = await self._build_order(order)
        probe = copy.copy(contract)  # identity marks this request's messages
        messages: list[str] = []

        def collect(req_id: int, code: int, message: str, about: object) -> None:
            if about is probe:
                messages.append(f"IBKR {code}: {message}")

        ib.errorEvent += collect
        try:
            state = await self._session.request(
                f"whatIfOrder {order.order_id}", lambda: ib.whatIfOrderAsync(probe, ib_order)
            )
        finally:
            ib.errorEvent -= collect
        return whatif_result(state, where=f"order {order.order_id}", extra_warnings=messages)

    @staticmethod
    def _trade_messages(trade: IbTrade) -> list[str]:
        return [
            f"IBKR {entry.errorCode}: {entry.message}" if entry.errorCode else entry.message
            for entry in trade.log
            if entry.message and entry.message != "Modify"
        ]

    async def stage(self, order: Order) -> StagedOrder:
        """WhatIf (unless the order has one), then ``placeOrder`` with ``transmit=False``."""
        check_transition(order.status, OrderStatus.STAGED, order_id=order.order_id)
        whatif = order.whatif or await self.what_if(order)
        ib = await self._session.ready_ib()
        contract, ib_order = await self._build_order(order)
        ib_order.transmit = False
        await self._session.limiter.acquire()
        trade = ib.placeOrder(contract, ib_order)
        await self._session.wait_for(lambda: trade.orderStatus.status in _REJECTED_STATES, self._stage_settle)
        messages = self._trade_messages(trade)
        if trade.orderStatus.status in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: staging order {order.order_id} was rejected: {'; '.join(messages) or 'no reason given'}"
            )
        broker_id = str(trade.order.orderId)
        logger.info(
            "ibkr: staged order %s as IBKR order %s (transmit=False)", order.order_id, broker_id
        )
        warnings = tuple(dict.fromkeys((*whatif.warnings, *messages)))
        return StagedOrder(
            order_id=order.order_id,
            broker_order_id=broker_id,
            whatif=replace(whatif, warnings=warnings),
            staged_at=self._session.clock(),
            client_id=self._session.client_id,
            perm_id=trade.order.permId or None,
        )

    def _check_owner(self, order: Order, what: str) -> None:
        owner = order.broker_client_id
        client_id = self._session.client_id
        if owner is not None and owner != client_id:
            raise BrokerError(
                f"ibkr: order {order.order_id} (IBKR {order.broker_order_id}) belongs to client id {owner}; "
                f"this connection is client id {client_id}: {what} refused (IBKR lets only the owning "
                "client id change an order; another id would place a second order)"
            )

    async def _open_trade(self, order: Order) -> IbTrade | None:
        """The order among this client id's open orders at the Gateway, or None if it is gone."""
        return (await self._open_trades([order]))[0]

    async def _open_trades(self, orders: list[Order]) -> list[IbTrade | None]:
        """Each order among this client id's open orders (one reqOpenOrders), None where gone."""
        ib = await self._session.ready_ib()
        for order in orders:
            if order.broker_order_id is None:
                raise BrokerError(f"ibkr: order {order.order_id} has no IBKR order id; stage it first")
        trades: list[IbTrade] = await self._session.request(
            f"reqOpenOrders (client id {self._session.client_id})", ib.reqOpenOrdersAsync
        )
        return [self._find(order, trades) for order in orders]

    def _find(self, order: Order, trades: list[IbTrade]) -> IbTrade | None:
        assert order.broker_order_id is not None
        client_id = self._session.client_id
        wanted = int(order.broker_order_id)
        for trade in trades:
            o = trade.order
            if o.orderId != wanted or o.clientId != client_id or trade.isDone():
                continue
            if o.orderRef != order.order_id:
                raise BrokerError(
                    f"ibkr: IBKR order {wanted} of client id {client_id} is {o.orderRef!r}, "
                    f"not order {order.order_id}; refusing to touch it"
                )
            if order.broker_perm_id is not None and o.permId and o.permId != order.broker_perm_id:
                return None  # same ids, a different order (the Gateway restarted and reused them)
            return trade
        return None

    async def transmit(self, order: Order) -> str:
        """Send the very staged order: found at the Gateway, re-placed with transmit=True.

        Raises :class:`StaleOrderError` when the Gateway no longer has it (never re-placed
        from local terms) and :class:`SentUnknownError` when it was sent but not acknowledged.
        """
        require_confirmed(order)
        self._check_owner(order, "transmit")
        ib = await self._session.ready_ib()
        found = await self._open_trade(order)
        if found is None:
            raise StaleOrderError(
                f"ibkr: staged order {order.order_id} (client id {self._session.client_id}, IBKR order "
                f"{order.broker_order_id}) no longer exists at the Gateway (restart or cancelled in TWS); "
                "not transmitted: re-stage it with a fresh WhatIf"
            )
        contract, ib_order = found.contract, copy.copy(found.order)
        broker_id = str(ib_order.orderId)
        ib_order.transmit = True
        trade, acked = await self._place_transmitted(ib, contract, ib_order, order)
        if trade.orderStatus.status in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: order {order.order_id} (IBKR {broker_id}) was rejected: "
                f"{'; '.join(self._trade_messages(trade)) or 'no reason given'}"
            )
        if acked and trade.orderStatus.status == IbOrderStatus.PreSubmitted:
            logger.warning(
                "ibkr: order %s (IBKR %s) acknowledged and held PreSubmitted (e.g. outside regular "
                "trading hours): it works when its session opens", order.order_id, broker_id,
            )
        if not acked:
            raise SentUnknownError(
                f"ibkr: order {order.order_id} (IBKR {broker_id}) was sent but not acknowledged "
                f"within {self._session.timeout:g}s; its state is unknown: `portfolio orders reconcile` settles it"
            )
        return broker_id

    async def _place_transmitted(
        self, ib: IB, contract: IbContract, ib_order: IbOrder, order: Order
    ) -> tuple[IbTrade, bool]:
        """Place ``ib_order`` (transmit=True) and wait for the Gateway's answer: (trade, acked)."""
        session = self._session
        # The acknowledgement is the Gateway's answer to THIS placement (openOrder/orderStatus
        # for this order id after the send), not the status it reports: a transmitted order
        # held outside regular hours stays PreSubmitted, exactly like a staged one, and
        # openOrder does not carry the transmit flag.
        answered: list[str] = []

        def on_answer(t: IbTrade) -> None:
            if t.order.orderId == ib_order.orderId and t.order.clientId == session.client_id:
                answered.append(str(t.orderStatus.status))

        ib.openOrderEvent += on_answer
        ib.orderStatusEvent += on_answer
        try:
            await self._session.limiter.acquire()
            trade = ib.placeOrder(contract, ib_order)
            logger.warning(
                "ibkr: transmitted confirmed order %s (client id %d, IBKR order %s, permId %s)",
                order.order_id, session.client_id, str(ib_order.orderId), ib_order.permId,
            )
            acked = await self._session.wait_for(
                lambda: bool(answered) or trade.orderStatus.status in _ACKED_STATES - {IbOrderStatus.PreSubmitted}
                or bool(trade.fills), self._session.timeout,
            )
        finally:
            ib.openOrderEvent -= on_answer
            ib.orderStatusEvent -= on_answer
        return trade, acked

    async def cancel(self, order: Order) -> None:
        """Cancel a staged or live order at IBKR and wait for the Gateway's confirmation.

        :class:`StaleOrderError` when the Gateway has no such open order of this client id;
        :class:`BrokerError` on error 10147 or when the cancellation is not confirmed in time.
        """
        self._check_owner(order, "cancel")
        ib = await self._session.ready_ib()
        trade = await self._open_trade(order)
        if trade is None:
            raise StaleOrderError(
                f"ibkr: order {order.order_id} (client id {self._session.client_id}, "
                f"IBKR order {order.broker_order_id}) is not open at the Gateway: nothing to cancel"
            )
        order_id = trade.order.orderId
        refused: list[str] = []

        def collect(req_id: int, code: int, message: str, about: object) -> None:
            if req_id == order_id and code == ORDER_NOT_FOUND_FOR_CANCEL:
                refused.append(f"IBKR {code}: {message}")

        ib.errorEvent += collect
        try:
            await self._session.limiter.acquire()
            ib.cancelOrder(trade.order)
            done = await self._session.wait_for(lambda: bool(refused) or trade.isDone(), self._session.timeout)
        finally:
            ib.errorEvent -= collect
        if refused:
            raise BrokerError(
                f"ibkr: cancel of order {order.order_id} (IBKR {order_id}) refused: {refused[0]} "
                f"(the order belongs to another client id than {self._session.client_id})"
            )
        if not done or trade.orderStatus.status not in _REJECTED_STATES:
            raise BrokerError(
                f"ibkr: cancel of order {order.order_id} (IBKR {order_id}) not confirmed "
                f"within {self._session.timeout:g}s (status {trade.orderStatus.status})"
            )
        logger.info("ibkr: cancelled order %s (IBKR %s)", order.order_id, order_id)

    async def order_state(self, order: Order) -> BrokerOrderState:
        """The Gateway's view of one of our orders: open orders of this client id + executions."""
        self._check_owner(order, "reconcile")
        ib = await self._session.ready_ib()
        combo = len(order.legs) > 1
        total = float(order.quantity if combo else order.quantity * order.legs[0].ratio)
        trade = await self._open_trade(order) if order.broker_order_id is not None else None
        if trade is not None:
            status = str(trade.orderStatus.status)
            return BrokerOrderState(
                exists=True, status=status, filled=float(trade.orderStatus.filled),
                total=total, perm_id=trade.order.permId or None,
                # an open order PreSubmitted (or not yet submitted) may be a transmitted order
                # held until its session or one that was never transmitted: openOrder and
                # orderStatus carry no transmit flag, so this is no evidence of a transmission
                working=status not in _NOT_YET_WORKING or float(trade.orderStatus.filled) > 0,
            )
        since = order.created_at.date()
        flt = ExecutionFilter(acctCode=order.account_id, time=f"{since:%Y%m%d}-00:00:00")
        fills: list[Any] = await self._session.request(
            f"reqExecutions({order.account_id} since {since})", lambda: ib.reqExecutionsAsync(flt)
        )
        filled = sum(
            float(f.execution.shares) for f in fills
            if f.execution.orderRef == order.order_id and (f.contract.secType == "BAG") == combo
        )
        status = IbOrderStatus.Filled if filled >= total else IbOrderStatus.Cancelled
        return BrokerOrderState(exists=False, status=status, filled=filled, total=total)

    # ------------------------------------------------------------------ order groups

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        """Each leg's own WhatIf (a bracket child's is that of the order on its own)."""
        return [await self.what_if(leg.order) for leg in group.legs]

    @staticmethod
    def _link(group: OrderGroup, role: str, ib_order: IbOrder, parent_id: int) -> None:
        """Bracket children point at the entry (``parentId``); OCO legs share an OCA group."""
        if group.kind == "bracket" and role != "entry":
            ib_order.parentId = parent_id
        elif group.kind == "oco":
            ib_order.ocaGroup = group.group_id
            ib_order.ocaType = 1  # cancel the rest with block

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        """Place every leg with ``transmit=False`` (children linked to their parent / OCA group).

        A leg the Gateway rejects cancels the legs already placed: a group is staged whole
        or not at all.
        """
        for leg in group.legs:
            check_transition(leg.order.status, OrderStatus.STAGED, order_id=leg.order.order_id)
        whatifs = [leg.order.whatif or await self.what_if(leg.order) for leg in group.legs]
        ib = await self._session.ready_ib()
        placed: list[IbTrade] = []
        try:
            for leg in group.legs:
                contract, ib_order = await self._build_order(leg.order)
                ib_order.transmit = False
                self._link(group, leg.role, ib_order, placed[0].order.orderId if placed else 0)
                await self._session.limiter.acquire()
                placed.append(ib.placeOrder(contract, ib_order))
            await self._session.wait_for(
                lambda: any(t.orderStatus.status in _REJECTED_STATES for t in placed), self._stage_settle
            )
            rejected = [(leg, t) for leg, t in zip(group.legs, placed, strict=True)
                        if t.orderStatus.status in _REJECTED_STATES]
            if rejected:
                leg, trade = rejected[0]
                raise BrokerError(
                    f"ibkr: staging group {group.group_id}: leg {leg.role} ({leg.order.order_id}) was rejected: "
                    f"{'; '.join(self._trade_messages(trade)) or 'no reason given'}"
                )
        except BaseException:
            for trade in placed:  # never leave part of a group at the Gateway
                if not trade.isDone():
                    ib.cancelOrder(trade.order)
            raise
        now = self._session.clock()
        logger.info(
            "ibkr: staged %s %s as IBKR orders %s (transmit=False)", group.kind, group.group_id,
            [t.order.orderId for t in placed],
        )
        return [
            StagedOrder(
                order_id=leg.order.order_id, broker_order_id=str(trade.order.orderId),
                whatif=replace(whatif, warnings=tuple(dict.fromkeys((*whatif.warnings, *self._trade_messages(trade))))),
                staged_at=now, client_id=self._session.client_id, perm_id=trade.order.permId or None,
            )
            for leg, whatif, trade in zip(group.legs, whatifs, placed, strict=True)
        ]

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        """Transmit the very staged legs, as a whole.

        Every leg must be CONFIRMED within its bounds (:func:`require_transmittable`) and
        still open at the Gateway (else :class:`StaleOrderError`, nothing sent).  Bracket:
        only the last child is re-placed with ``transmit=True``, which transmits the
        parent and its other children with it (IBKR), so the bracket never works half
        built.  OCO: each leg in turn; a leg not acknowledged makes the outcome
        :class:`SentUnknownError` (the reconciler settles every leg).
        """
        require_transmittable(group, at=self._session.clock())
        for leg in group.legs:
            self._check_owner(leg.order, "transmit")
        ib = await self._session.ready_ib()
        found = await self._open_trades([leg.order for leg in group.legs])
        missing = [leg.order.order_id for leg, t in zip(group.legs, found, strict=True) if t is None]
        if missing:
            raise StaleOrderError(
                f"ibkr: group {group.group_id}: staged legs {missing} no longer exist at the Gateway "
                "(restart or cancelled in TWS); nothing transmitted: re-stage the group with a fresh WhatIf"
            )
        trades = [t for t in found if t is not None]
        parent_id = trades[0].order.orderId
        to_send = [trades[-1]] if group.kind == "bracket" else trades
        for i, trade in enumerate(to_send):
            leg = group.legs[len(group.legs) - 1] if group.kind == "bracket" else group.legs[i]
            ib_order = copy.copy(trade.order)
            self._link(group, leg.role, ib_order, parent_id)
            ib_order.totalQuantity = float(leg.quantity)
            ib_order.transmit = True
            sent, acked = await self._place_transmitted(ib, trade.contract, ib_order, leg.order)
            if sent.orderStatus.status in _REJECTED_STATES:
                error: BrokerError = BrokerError(
                    f"ibkr: group {group.group_id}: leg {leg.role} (IBKR {ib_order.orderId}) was rejected: "
                    f"{'; '.join(self._trade_messages(sent)) or 'no reason given'}"
                )
                if i > 0:  # legs already live: their outcome is for the reconciler
                    raise SentUnknownError(f"{error}; {i} leg(s) were transmitted before it") from None
                raise error
            if not acked:
                raise SentUnknownError(
                    f"ibkr: group {group.group_id}: leg {leg.role} (IBKR {ib_order.orderId}) was sent but not "
                    f"acknowledged within {self._session.timeout:g}s: `portfolio orders reconcile` settles it"
                )
        return TransmittedGroup(tuple(str(t.order.orderId) for t in trades))

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        """Cancel every staged or live leg, children before their parent; failures by order id."""
        failures: dict[str, BrokerError] = {}
        for leg in reversed(group.legs):
            status = leg.order.status
            if not (status.is_live_at_broker or status.is_staged_at_broker or status == OrderStatus.CONFIRMED):
                continue
            try:
                await self.cancel(leg.order)
            except BrokerError as exc:
                failures[leg.order.order_id] = exc
        return failures

    async def resize(self, order: Order, quantity: int) -> None:
        """Change the quantity of a live order (the very order at the Gateway, same ids)."""
        self._check_owner(order, "resize")
        ib = await self._session.ready_ib()
        trade = await self._open_trade(order)
        if trade is None:
            raise StaleOrderError(f"ibkr: order {order.order_id} is not open at the Gateway: not resized")
        ib_order = copy.copy(trade.order)
        ib_order.totalQuantity = float(quantity)
        ib_order.transmit = True
        sent, acked = await self._place_transmitted(ib, trade.contract, ib_order, order)
        if sent.orderStatus.status in _REJECTED_STATES or not acked:
            raise BrokerError(
                f"ibkr: resize of order {order.order_id} (IBKR {ib_order.orderId}) to {quantity} not acknowledged "
                f"(status {sent.orderStatus.status})"
            )
        logger.info("ibkr: order %s (IBKR %s) resized to %d", order.order_id, ib_order.orderId, quantity)
