"""``DemoBroker``: the embedded :class:`~portfolio_pipeline.brokers.base.BrokerAdapter`.

The clock decides "now".  Everything the broker reports is the state at the close of
the **last completed XNYS session** at the clock time (``ExchangeCalendar.
last_completed_session``): after 16:00 America/New_York (13:00 on half days) that
day's end-of-day marks, before the close the previous session's.  There are no
intraday prices (no Brownian bridge): quotes during a session are the last close's.

Valid clock times lie between the close of 2014-06-02 and the last session of the
bundled history (2018-12-31); outside, calls raise :class:`BrokerError` naming the
range.  Before ``start`` the account exists but is empty (zero balances).

Orders: ``what_if`` prices an order against the margin model (:mod:`.margin`),
``stage`` keeps it locally, ``transmit`` (only after
``domain.orders.require_confirmed``) fills every leg at the model mid of the
clock's session, tick-rounded, with the documented commissions, and books it into
the simulated account, which is then re-simulated so positions, balances and
executions show it.  Demo orders fill immediately, so only staged orders can be
cancelled.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import Final

import numpy as np
import pandas as pd

from portfolio_pipeline.brokers.base import (
    BrokerDataError,
    BrokerError,
    ConnectionLifecycle,
    OptionChain,
    StagedOrder,
    StaleOrderError,
    TransmittedGroup,
)
from portfolio_pipeline.brokers.chain import ChainSnapshot, ChainWindow
from portfolio_pipeline.brokers.demo.book import (
    BROKER,
    PROFILES,
    DemoBook,
    ManualTrade,
    exchange_multiplier,
)
from portfolio_pipeline.brokers.demo.chain import simulated_chain
from portfolio_pipeline.brokers.demo.margin import Margin, MarginLeg, account_margin, commission
from portfolio_pipeline.brokers.demo.market import DEMO_ROOTS, DemoMarket, round_to_tick
from portfolio_pipeline.domain.activity import CashFlow, Execution
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.order_groups import OrderGroup, require_transmittable
from portfolio_pipeline.domain.orders import Order, OrderStatus, WhatIfResult, require_confirmed
from portfolio_pipeline.domain.positions import (
    AccountSnapshot,
    Contract,
    Position,
    Quote,
    require_aware,
)
from portfolio_pipeline.domain.symbols import VIX, VOLATILITY_INDEX_SYMBOLS
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.marketdata.history import MarketHistory

logger = logging.getLogger(__name__)

DEFAULT_START: Final[date] = date(2017, 7, 3)
MARGIN_WARNING_UTILISATION: Final[float] = 0.50
"""The demo venue's own warning threshold (not the platform's regime limit)."""
VOLATILITY_INDICES: Final[frozenset[str]] = frozenset(VOLATILITY_INDEX_SYMBOLS)


class DemoBroker(ConnectionLifecycle):
    """Deterministic simulated broker replaying a rule-based options book on history.

    Parameters
    ----------
    instruments : InstrumentTable
        THE multiplier table; the demo venue's multipliers are checked against it.
    account_id : str
        The account of this broker when ``books`` is not given (the ``index`` book).
    books : mapping, optional
        account id -> (book kind of :data:`~.book.PROFILES`, seed): several simulated
        accounts on one broker (the first one is the primary, whose book ``book`` is);
        overrides ``account_id`` and ``seed``.
    clock : callable
        Returns aware datetimes; decides the session reported (see module docstring).
    seed : int
        Seeds the fill slippage of the simulated book (same seed, same book).
    start : datetime.date
        First session of the book (initial deposit); any session 2014-06-02 ..
        2018-12-28.
    history : MarketHistory, optional
        Shared loaded history; loaded on first use when omitted.

    Notes
    -----
    The market model and the simulated book are built lazily on first use and cached
    on this instance (a whole 18-month window takes well under a second); a
    transmitted order invalidates the book, which is re-simulated on the next call.
    """

    name = BROKER

    def __init__(
        self,
        instruments: InstrumentTable,
        *,
        account_id: str = "DEMO-001",
        clock: Callable[[], datetime],
        seed: int = 7,
        start: date = DEFAULT_START,
        history: MarketHistory | None = None,
        books: Mapping[str, tuple[str, int]] | None = None,
    ) -> None:
        specs = dict(books) if books else {account_id: ("index", int(seed))}
        for account, (kind, _) in specs.items():
            if not account:
                raise ValueError("demo broker: account_id is empty")
            if kind not in PROFILES:
                raise ValueError(f"demo broker: account {account}: unknown book {kind!r} ({', '.join(PROFILES)})")
        self._instruments = instruments
        self._specs = specs
        self._account_id = next(iter(specs))
        self._clock = clock
        self._seed = int(specs[self._account_id][1])
        self._start = start
        self._history = history
        self._market: DemoMarket | None = None
        self._books: dict[str, DemoBook] = {}
        self._manual: dict[str, list[ManualTrade]] = {a: [] for a in specs}
        self._staged: dict[str, StagedOrder] = {}
        self._resting: dict[str, Order] = {}  # transmitted group legs that do not fill at once
        self._connected = False

    # ------------------------------------------------------------------ plumbing

    @property
    def market(self) -> DemoMarket:
        """The market model (built on first use)."""
        if self._market is None:
            history = self._history if self._history is not None else MarketHistory()
            self._history = history
            market = DemoMarket(history, self._instruments, ExchangeCalendar())
            if not market.first_clock_session <= self._start < market.last_session:
                raise ValueError(
                    f"demo broker: start {self._start} must be a session in "
                    f"{market.first_clock_session}..{market.last_session}"
                )
            market.index_of(self._start)
            self._market = market
        return self._market

    @property
    def book(self) -> DemoBook:
        """The primary account's simulated book (see :meth:`book_of`)."""
        return self.book_of(self._account_id)

    def book_of(self, account_id: str) -> DemoBook:
        """The simulated book of ``account_id`` (built on first use, rebuilt after a transmit)."""
        self._check_account(account_id)
        book = self._books.get(account_id)
        if book is None:
            kind, seed = self._specs[account_id]
            book = self._books[account_id] = DemoBook(
                self.market, start=self._start, seed=seed, account_id=account_id,
                manual=self._manual[account_id], profile=PROFILES[kind],
            )
        return book

    def session_index(self) -> int:
        """Index of the session the clock's "now" reports (last completed session)."""
        now = self._clock()
        require_aware(now, "clock()", "demo broker")
        m = self.market
        try:
            session = m.calendar.last_completed_session(now)
        except ValueError as exc:
            raise BrokerError(f"demo broker: clock time {now.isoformat()} is unusable: {exc}") from None
        if not m.first_clock_session <= session <= m.last_session:
            raise BrokerError(
                f"demo broker: clock time {now.isoformat()} reports session {session}, outside the "
                f"demo history {m.first_clock_session}..{m.last_session}; set the clock inside it"
            )
        return m.index_of(session)

    def session(self) -> date:
        """The session the clock's "now" reports."""
        return self.market.sessions[self.session_index()]

    def _check_account(self, account_id: str) -> None:
        if account_id not in self._specs:
            raise BrokerError(f"demo broker: unknown account {account_id!r} "
                              f"(this broker serves {', '.join(repr(a) for a in self._specs)})")

    def _multiplier(self, contract: Contract, source: str) -> float:
        sec = "OPT" if contract.is_option else contract.sec_type
        return self._instruments.checked_multiplier(
            contract.underlying, sec, exchange_multiplier(contract),
            trading_class=contract.trading_class if contract.is_option else None, source=source,
        )

    async def connect(self) -> None:
        """Nothing to connect to; builds the market model (loads the history) once."""
        _ = self.market
        self._connected = True

    async def close(self) -> None:
        self._connected = False

    # ------------------------------------------------------------------ sync API

    def get_positions(self, account_id: str) -> list[Position]:
        """Normalised positions at the clock's session (multipliers from the table)."""
        book = self.book_of(account_id)
        i = self.session_index()
        day = book.day(i)
        if day is None:
            return []
        m = self.market
        as_of = m.close_time(m.sessions[i])
        out: list[Position] = []
        for lot in day.lots:
            c = lot.contract
            source = f"demo:{account_id}:{c.key}"
            mult = self._multiplier(c, source)
            out.append(Position(
                broker=BROKER, account_id=account_id, contract=c, quantity=lot.quantity,
                multiplier=mult, avg_price=lot.avg_price, mark=book.mark(c, i), as_of=as_of,
                underlying_price=float(m.spot(c.underlying, i)), source=source,
            ))
        return out

    def _margin(self, i: int, extra: Sequence[MarginLeg] = (), account_id: str | None = None) -> Margin:
        book = self.book_of(account_id or self._account_id)
        day = book.day(i)
        m = self.market
        groups: list[list[MarginLeg]] = []
        if day is not None:
            for g in day.groups:
                groups.append([
                    MarginLeg(c, q, exchange_multiplier(c), book.mark(c, i), float(m.spot(c.underlying, i)))
                    for c, q in g.legs
                ])
        if extra:
            groups.append(list(extra))
        return account_margin(groups)

    def nlv_at(self, i: int, account_id: str | None = None) -> float:
        """Net liquidation value of ``account_id`` (default: the primary) at the close of
        session index ``i`` (0 before start)."""
        book = self.book_of(account_id or self._account_id)
        day = book.day(i)
        return 0.0 if day is None else book.nlv(day)

    def get_account_snapshot(self, account_id: str) -> AccountSnapshot:
        """Balances at the clock's session.

        NLV = cash + market value at model marks; margins from :mod:`.margin`;
        excess liquidity = NLV - maintenance; buying power = max(NLV - initial, 0)
        (option buying power); daily P&L = change in NLV less external cash flows.
        """
        book = self.book_of(account_id)
        i = self.session_index()
        m = self.market
        as_of = m.close_time(m.sessions[i])
        day = book.day(i)
        if day is None:
            return AccountSnapshot(BROKER, account_id, as_of, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        nlv = book.nlv(day)
        margin = self._margin(i, account_id=account_id)
        daily: float | None = None
        if book.day(i - 1) is not None:
            flows = sum(cf.amount for k, cf in book.cash_flows if k == i)
            daily = nlv - self.nlv_at(i - 1, account_id) - flows
        return AccountSnapshot(
            broker=BROKER, account_id=account_id, as_of=as_of, nlv=nlv, cash=day.cash,
            init_margin=margin.initial, maint_margin=margin.maintenance,
            excess_liquidity=nlv - margin.maintenance, buying_power=max(nlv - margin.initial, 0.0),
            broker_daily_pnl=daily,
        )

    def get_quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        """Quotes at the clock's session; contracts the demo cannot price are skipped
        with a warning (the Quote record does not admit NaN prices)."""
        i = self.session_index()
        m = self.market
        d = m.sessions[i]
        as_of = m.close_time(d)
        out: list[Quote] = []
        options: dict[str, list[Contract]] = {}
        for c in contracts:
            root = c.underlying.upper()
            if c.sec_type == "IND" and root in VOLATILITY_INDICES:
                level = float(m.vix[i] if root == VIX else m.vix3m[i])
                out.append(Quote(BROKER, c, as_of, bid=level, ask=level, mark=level, last=level))
            elif c.sec_type == "IND" and root in ("SPX", "NDX"):
                level = float(m.spot(root, i))
                out.append(Quote(BROKER, c, as_of, bid=level, ask=level, mark=level, last=level))
            elif c.sec_type == "STK" and root in ("SPY", "QQQ"):
                bid, ask, mid = m.stock_bid_ask(root, i)
                out.append(Quote(BROKER, c, as_of, bid=bid, ask=ask, mark=mid, last=mid, underlying_price=mid))
            elif c.sec_type == "OPT" and root in DEMO_ROOTS and c.expiry is not None and c.expiry >= d:
                options.setdefault(root, []).append(c)
            else:
                logger.warning("demo broker: no quote for %s at %s (not a demo contract or expired)", c.key, d)
        for root, group in options.items():
            strikes = np.array([float(c.strike or 0.0) for c in group])
            rights = [str(c.right) for c in group]
            T = np.array([float(m.year_fraction(root, c.trading_class, c.expiry, i)) for c in group if c.expiry])
            marks = np.array([self.book.mark(c, i) for c in group])
            bids, asks = m.option_bid_ask(root, i, marks)
            g = m.greeks_at(root, i, rights, strikes, T)
            iv = m.implied_vol(root, i, strikes, T)
            spot = float(m.spot(root, i))
            for n, c in enumerate(group):
                out.append(Quote(
                    BROKER, c, as_of, bid=float(bids[n]), ask=float(asks[n]), mark=float(marks[n]),
                    underlying_price=spot, iv=float(iv[n]), delta=float(g.delta[n]), gamma=float(g.gamma[n]),
                    vega=float(g.vega[n]), theta=float(g.theta[n]),
                ))
        return out

    def get_option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        """Listed expiries (XNYS sessions) and strikes (instrument grid, +/-35 % of spot)."""
        root = underlying.upper()
        if root not in DEMO_ROOTS:
            raise BrokerDataError(f"demo broker: no option chain for {underlying!r} (demo underlyings: {', '.join(DEMO_ROOTS)})")
        tc = self._instruments.trading_class(root, trading_class)
        i = self.session_index()
        m = self.market
        expiries = [e for e in m.expiries(root, tc.name, m.sessions[i]) if e >= m.sessions[i]]
        strikes = m.strike_grid(root, float(m.spot(root, i)))
        mult = self._instruments.checked_multiplier(
            root, "OPT", exchange_multiplier(Contract(root, "OPT", expiries[0], float(strikes[0]), "C", tc.name)),
            trading_class=tc.name, source=f"demo option chain {root} {tc.name}",
        )
        return OptionChain(
            underlying=root, trading_class=tc.name, multiplier=mult, expiries=tuple(expiries),
            strikes=tuple(float(k) for k in strikes), exchange="CBOE" if root in ("SPX", "NDX") else "SMART",
        )

    def get_option_chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        """The SIMULATED chain of ``underlying`` at the clock's session
        (:mod:`portfolio_pipeline.brokers.demo.chain`; seeded with this broker's seed)."""
        root = underlying.upper()
        if root not in DEMO_ROOTS:
            raise BrokerDataError(f"demo broker: no option chain for {underlying!r} (demo underlyings: {', '.join(DEMO_ROOTS)})")
        return simulated_chain(self.market, root, self.session_index(), window, seed=self._seed)

    def get_executions(self, account_id: str, since: date) -> list[Execution]:
        """Executions of sessions ``since`` .. the clock's session (multipliers checked)."""
        book = self.book_of(account_id)
        i = self.session_index()
        m = self.market
        out: list[Execution] = []
        for k, e in book.executions:
            if k > i or m.sessions[k] < since:
                continue
            mult = self._multiplier(e.contract, f"demo:{account_id}:execution {e.exec_id}")
            out.append(e if mult == e.multiplier else replace(e, multiplier=mult))
        return out

    def get_cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        """Deposits and withdrawals of sessions ``since`` .. the clock's session."""
        book = self.book_of(account_id)
        i = self.session_index()
        m = self.market
        return [cf for k, cf in book.cash_flows if k <= i and m.sessions[k] >= since]

    def nlv_series(self, account_id: str | None = None) -> pd.Series:
        """NLV of ``account_id`` (default: the primary) at every simulated close (index:
        tz-naive session dates), whole window."""
        book = self.book_of(account_id or self._account_id)
        values = [book.nlv(day) for day in book.days]
        idx = pd.DatetimeIndex([pd.Timestamp(self.market.sessions[day.session]) for day in book.days], name="session")
        return pd.Series(values, index=idx, name="nlv", dtype="float64")

    # ------------------------------------------------------------------ orders

    def _order_legs(self, order: Order, i: int) -> list[tuple[Contract, float, float]]:
        """(contract, signed quantity, fill price at mid) per leg; validates the contracts."""
        if order.broker != BROKER or order.account_id not in self._specs:
            raise BrokerError(
                f"demo broker: order {order.order_id} is for {order.broker}:{order.account_id}, "
                f"not one of demo:{', '.join(self._specs)}"
            )
        m = self.market
        d = m.sessions[i]
        legs: list[tuple[Contract, float, float]] = []
        for leg in order.legs:
            c = leg.contract
            root = c.underlying.upper()
            where = f"demo broker: order {order.order_id} leg {c.key}"
            if root not in DEMO_ROOTS or c.sec_type not in ("OPT", "STK") or (c.sec_type == "STK" and root not in ("SPY", "QQQ")):
                raise BrokerDataError(f"{where}: the demo trades options on {', '.join(DEMO_ROOTS)} and SPY/QQQ shares only")
            qty = float(leg.ratio * order.quantity) * (1.0 if leg.action == "BUY" else -1.0)
            if c.is_option:
                assert c.expiry is not None and c.strike is not None
                tc = self._instruments.trading_class(root, c.trading_class).name
                if c.expiry not in m.expiries(root, tc, d) or c.expiry <= d:
                    raise BrokerDataError(f"{where}: expiry {c.expiry} is not listed after {d}")
                inc = self._instruments.spec(root).options.strike_increment  # type: ignore[union-attr]
                if not math.isclose(c.strike / inc, round(c.strike / inc), abs_tol=1e-9):
                    raise BrokerDataError(f"{where}: strike {c.strike} is not on the {inc} grid")
                self._multiplier(c, where)
                price = max(float(round_to_tick(self.book.mark(c, i), m.tick(root), "nearest")), 0.0)
            else:
                price = float(round_to_tick(m.spot(root, i), m.tick(root), "nearest"))
            legs.append((c, qty, price))
        return legs

    def get_what_if(self, order: Order) -> WhatIfResult:
        """Margin change, commission and warnings of ``order`` at the clock's session."""
        i = self.session_index()
        m = self.market
        legs = self._order_legs(order, i)
        before = self._margin(i, account_id=order.account_id)
        extra = [
            MarginLeg(c, q, exchange_multiplier(c), p, float(m.spot(c.underlying, i))) for c, q, p in legs
        ]
        after = self._margin(i, extra, account_id=order.account_id)
        costs = sum(sum(commission(c, q)) for c, q, _ in legs)
        nlv = self.nlv_at(i, order.account_id)
        nlv_after = nlv - costs
        warnings = ["demo broker: simulated fill at the model mid of the last close"]
        utilisation = after.maintenance / nlv_after if nlv_after > 0 else math.inf
        if utilisation > MARGIN_WARNING_UTILISATION:
            warnings.append(
                f"margin utilisation would exceed {MARGIN_WARNING_UTILISATION:.0%} "
                f"({utilisation:.1%} of NLV after the order)"
            )
        if nlv_after - after.maintenance < 0:
            warnings.append("excess liquidity would be negative: the order would cause a margin deficit")
        return WhatIfResult(
            init_margin_change=after.initial - before.initial,
            maint_margin_change=after.maintenance - before.maintenance,
            commission=round(costs, 2),
            equity_with_loan_after=nlv_after,
            warnings=tuple(warnings),
        )

    def stage_order(self, order: Order) -> StagedOrder:
        whatif = self.get_what_if(order)
        staged = StagedOrder(order_id=order.order_id, broker_order_id=None, whatif=whatif, staged_at=self._clock())
        self._staged[order.order_id] = staged
        logger.info("demo broker staged order=%s", order.order_id)
        return staged

    def transmit_order(self, order: Order) -> str:
        """Fill a CONFIRMED order at the mid; returns the demo order id."""
        require_confirmed(order)
        i = self.session_index()
        legs = self._order_legs(order, i)
        if order.order_type != "LMT":  # a stop rests (the demo has closes only: it never triggers)
            self._staged.pop(order.order_id, None)
            self._resting[order.order_id] = order
            return f"DEMO-ORD-{hashlib.sha256(order.order_id.encode()).hexdigest()[:16]}"
        # from the order id (the orders table's primary key): unique across processes,
        # where a per-process counter gave every CLI process the same first id
        broker_order_id = f"DEMO-ORD-{hashlib.sha256(order.order_id.encode()).hexdigest()[:16]}"
        now = self._clock()
        self._manual[order.account_id].append(ManualTrade(i, now, order.order_id, broker_order_id, tuple(legs)))
        self._staged.pop(order.order_id, None)
        self._books.pop(order.account_id, None)
        logger.info("demo broker filled order=%s broker_order_id=%s legs=%d", order.order_id, broker_order_id, len(legs))
        return broker_order_id

    def cancel_order(self, order: Order) -> None:
        if self._staged.pop(order.order_id, None) is not None:
            logger.info("demo broker cancelled staged order=%s", order.order_id)
            return
        if self._resting.pop(order.order_id, None) is not None:
            logger.info("demo broker cancelled resting order=%s", order.order_id)
            return
        if any(t.order_id == order.order_id for trades in self._manual.values() for t in trades):
            raise BrokerError(f"demo broker: order {order.order_id} was filled on transmit; nothing to cancel")
        raise BrokerError(f"demo broker: unknown order {order.order_id}")

    # ------------------------------------------------------------------ async protocol

    async def account_ids(self) -> list[str]:
        return list(self._specs)

    async def account_snapshot(self, account_id: str) -> AccountSnapshot:
        return self.get_account_snapshot(account_id)

    async def positions(self, account_id: str) -> list[Position]:
        return self.get_positions(account_id)

    async def quotes(self, contracts: Sequence[Contract]) -> list[Quote]:
        return self.get_quotes(contracts)

    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        return self.get_option_chain(underlying, trading_class)

    async def option_chain_snapshot(self, underlying: str, window: ChainWindow) -> ChainSnapshot:
        return self.get_option_chain_snapshot(underlying, window)

    async def executions(self, account_id: str, since: date) -> list[Execution]:
        return self.get_executions(account_id, since)

    async def cash_flows(self, account_id: str, since: date) -> list[CashFlow]:
        return self.get_cash_flows(account_id, since)

    async def what_if(self, order: Order) -> WhatIfResult:
        return self.get_what_if(order)

    async def stage(self, order: Order) -> StagedOrder:
        return self.stage_order(order)

    async def transmit(self, order: Order) -> str:
        return self.transmit_order(order)

    async def cancel(self, order: Order) -> None:
        self.cancel_order(order)

    # ------------------------------------------------------------------ order groups
    # The demo has closes only, no intraday path: a bracket's entry (a limit order) fills
    # at the mid on transmit like every demo order; take-profit and stop-loss legs (and
    # both legs of an OCO) rest at the demo broker until cancelled.  They never fill.

    async def what_if_group(self, group: OrderGroup) -> list[WhatIfResult]:
        return [self.get_what_if(leg.order) for leg in group.legs]

    async def stage_group(self, group: OrderGroup) -> list[StagedOrder]:
        return [self.stage_order(leg.order) for leg in group.legs]

    async def transmit_group(self, group: OrderGroup) -> TransmittedGroup:
        require_transmittable(group, at=self._clock())
        ids: list[str] = []
        for leg in group.legs:
            self._order_legs(leg.order, self.session_index())  # every leg valid before anything is booked
        for leg in group.legs:
            if leg.role == "entry":
                ids.append(self.transmit_order(leg.order))
            else:
                self._staged.pop(leg.order.order_id, None)
                self._resting[leg.order.order_id] = leg.order
                ids.append(f"DEMO-ORD-{hashlib.sha256(leg.order.order_id.encode()).hexdigest()[:16]}")
        logger.info("demo broker transmitted %s %s", group.kind, group.group_id)
        return TransmittedGroup(tuple(ids))

    async def cancel_group(self, group: OrderGroup) -> dict[str, BrokerError]:
        failures: dict[str, BrokerError] = {}
        for leg in reversed(group.legs):
            order = leg.order
            if not (order.status.is_live_at_broker or order.status.is_staged_at_broker
                    or order.status == OrderStatus.CONFIRMED):
                continue
            if any(t.order_id == order.order_id for trades in self._manual.values() for t in trades):
                failures[order.order_id] = BrokerError(
                    f"demo broker: order {order.order_id} was filled on transmit; nothing to cancel")
            elif order.order_id in self._staged or order.order_id in self._resting:
                self.cancel_order(order)
            else:  # another process's demo broker held it (each process builds its own): a resting leg
                logger.info("demo broker: resting order %s of another process cancelled", order.order_id)
        return failures

    async def resize(self, order: Order, quantity: int) -> None:
        resting = self._resting.get(order.order_id)
        if resting is None:
            raise StaleOrderError(f"demo broker: order {order.order_id} is not resting: not resized")
        self._resting[order.order_id] = replace(resting, quantity=quantity)

    def resting(self) -> list[Order]:
        """Transmitted group legs resting at the demo broker."""
        return list(self._resting.values())
