"""From breach to proposal to (maybe) staged order -- never further.

:class:`HedgeDesk` runs off the tick loop: for a breach it asks the broker for the
option chain, builds the candidate (:mod:`.proposer`), checks it with the broker's
``what_if``, records it as a PROPOSED order (``OrderStore``) and emits a
``hedge_proposed`` event.  :class:`StagingPolicy` decides whether the proposal is
staged by rule (``staging.auto_stage`` and its filters); otherwise only a person's
``portfolio orders stage ID`` stages it.  Confirmation and transmission are never done
here: they need ``portfolio orders show`` + ``confirm ID TOKEN``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Final

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.config.streaming import HedgeSettings, StagingSettings
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.domain.limits import RiskSnapshot
from portfolio_pipeline.domain.orders import Order, OrderStatus
from portfolio_pipeline.domain.regime import RegimeService, RegimeState
from portfolio_pipeline.domain.settlement import SessionHours
from portfolio_pipeline.domain.whatif import RiskChange, describe_changes, limit_changes
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.store import whatif_to_json
from streaming_service.breach import BreachSignal
from streaming_service.buffer import StreamEvent
from streaming_service.engine import Engine
from streaming_service.proposer import MarketView, proposal_order_id, propose_hedge

if TYPE_CHECKING:
    from streaming_service.pending import PendingProposals

__all__ = ["HEDGE_FAILED", "HEDGE_PROPOSED", "HedgeDesk", "Moment", "StagingPolicy"]

logger = logging.getLogger(__name__)

HEDGE_PROPOSED: Final = "hedge_proposed"
HEDGE_FAILED: Final = "hedge_failed"
"""A breach whose hedge proposal cannot be built (unknown/unpriceable underlying, no
chain, a broker refusal): an event (the Dagster ``hedge_failure_sensor`` alerts on it)."""
ORDER_STAGED: Final = "order_staged"


@dataclass(frozen=True, slots=True)
class Moment:
    signal: BreachSignal
    risk: RiskSnapshot
    root: str
    spot: float
    vol: float
    rate: float
    dividend_yield: float
    beta: float


@dataclass(frozen=True, slots=True)
class StagingPolicy:
    """Whether a proposal is staged by rule (the only automatic step there is)."""

    settings: StagingSettings

    def should_stage(self, metric: str, regime: str, open_staged: int) -> bool:
        s = self.settings
        if not s.auto_stage or metric not in s.auto_stage_metrics:
            return False
        if s.auto_stage_regimes and regime not in s.auto_stage_regimes:
            return False
        return open_staged < s.max_auto_staged


#: Orders that make a new proposal for the same limit redundant (proposed .. at the broker).
_IN_FLIGHT = (
    OrderStatus.PROPOSED, OrderStatus.STAGED, OrderStatus.SHOWN, OrderStatus.CONFIRMED,
    OrderStatus.SENT_UNKNOWN, OrderStatus.TRANSMITTED, OrderStatus.PARTIALLY_FILLED, OrderStatus.STALE,
)
#: Seconds between reconciliations of local orders with the broker's (live service).
RECONCILE_SECONDS = 60.0


def idempotency_key(event_key: str) -> str:
    """The breach event key without its timestamp: ``limit_breach:<scope>:<metric>:``.

    A proposal's ``proposal_id`` is its breach's event key, so every proposal for the same
    limit of the same scope starts with this key, whenever the breach fired.
    """
    kind, scope, metric, _ = event_key.split(":", 3) if event_key.count(":") >= 3 else (event_key, "", "", "")
    return f"{kind}:{scope}:{metric}:"


class HedgeDesk:
    """Proposals (and staging by rule) for breaches; see the module docstring."""

    def __init__(
        self,
        *,
        broker: BrokerAdapter,
        account_id: str,
        store: OrderStore,
        commands: OrderCommands,
        instruments: InstrumentTable,
        hedge: HedgeSettings,
        staging: StagingSettings,
        submit: Callable[[StreamEvent], None],
        calendar: SessionHours | None = None,
        pending: PendingProposals | None = None,
        regimes: RegimeService | None = None,
    ) -> None:
        if calendar is None:
            from portfolio_pipeline.exchange_calendar import ExchangeCalendar

            calendar = ExchangeCalendar()
        self._calendar: SessionHours = calendar
        self._regimes = regimes
        """The limits of each regime: a proposal carries what it does to every limit."""
        self._broker = broker
        self._account = account_id
        self._store = store
        self._commands = commands
        self._instruments = instruments
        self._hedge = hedge
        self._policy = StagingPolicy(staging)
        self._ttl = timedelta(minutes=staging.staged_ttl_minutes)
        self._submit = submit
        self._pending = pending
        self.proposed = 0
        self.staged = 0
        self.failed = 0
        self.queued = 0

    @property
    def commands(self) -> OrderCommands:
        return self._commands

    async def reconcile_forever(self, stop: asyncio.Event, interval: float = RECONCILE_SECONDS) -> None:
        """Reconcile orders with the broker at start and every ``interval`` s until ``stop``;
        then order groups (a bracket's children follow its entry's fill)."""
        from portfolio_pipeline.orders.groups import GroupCommands

        groups = GroupCommands(self._commands)
        while not stop.is_set():
            try:
                await self._commands.reconcile(actor="streaming:reconciler")
                await groups.reconcile(actor="streaming:reconciler")
            except Exception:
                logger.exception("order reconciliation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    def capture(self, engine: Engine, signal: BreachSignal) -> Moment:
        """The market and risk at the breach (taken synchronously, before later ticks move it)."""
        root = self._hedge.hedge_underlying.upper()
        return Moment(
            signal=signal, risk=engine.risk_snapshot(), root=root, spot=engine.spot(root),
            vol=engine.atm_vol(root), rate=engine.rate, dividend_yield=engine.dividend_yield(root),
            beta=engine.beta(root),
        )

    async def market_view(self, m: Moment) -> MarketView:
        chain = await self._broker.option_chain(m.root, self._hedge.trading_classes.get(m.root))
        return MarketView.build(
            self._instruments, m.root, trading_class=chain.trading_class, spot=m.spot, vol=m.vol,
            rate=m.rate, dividend_yield=m.dividend_yield, beta=m.beta, expiries=chain.expiries,
            strikes=chain.strikes, as_of=m.signal.ts, calendar=self._calendar,
        )

    def try_capture(self, engine: Engine, signal: BreachSignal) -> Moment | None:
        """:meth:`capture`, or None after a ``hedge_failed`` event (e.g. an underlying the
        engine does not price): the monitor goes on either way."""
        try:
            return self.capture(engine, signal)
        except Exception as exc:
            self.report_failure(signal, self._hedge.hedge_underlying, exc)
            return None

    def report_failure(self, signal: BreachSignal, root: str, exc: BaseException) -> None:
        """A proposal that cannot be built: one log line and a ``hedge_failed`` event."""
        self.failed += 1
        reason = f"{type(exc).__name__}: {exc}"
        logger.error("hedge proposal cannot be built event_key=%s underlying=%s reason=%s",
                     signal.event_key, root, reason)
        self._submit(StreamEvent(
            event_key=f"{HEDGE_FAILED}:{signal.event_key}", kind=HEDGE_FAILED, severity="warning",
            ts=signal.ts, account_id=self._account,
            payload={"breach_event_key": signal.event_key, "metric": signal.check.metric,
                     "hedge_underlying": root, "reason": reason[:500], "regime": signal.check.regime,
                     "vix": signal.check.vix, "value": signal.check.value, "limit": signal.check.limit},
        ))

    async def handle(self, moment: Moment) -> Order | None:
        """Propose (and maybe stage) a hedge for a fired breach; never raises.

        Database unavailable: the moment is queued on disk (``pending``) and proposed by
        :meth:`retry_pending` when the database returns.  Any other failure: a
        ``hedge_failed`` event.
        """
        try:
            return await self._handle(moment)
        except Exception as exc:
            if self._pending is not None and _database_unavailable(exc):
                if await asyncio.to_thread(self._pending.add, moment):
                    self.queued += 1
                logger.warning("database unavailable: hedge proposal queued on disk event_key=%s error=%s",
                               moment.signal.event_key, type(exc).__name__)
                return None
            self.report_failure(moment.signal, moment.root, exc)
            return None

    async def retry_pending(self) -> int:
        """Propose the queued moments, oldest first; returns how many left the queue."""
        if self._pending is None:
            return 0
        done = 0
        for moment in await asyncio.to_thread(self._pending.load):
            try:
                await self._handle(moment)
            except Exception as exc:
                if _database_unavailable(exc):
                    break  # still down: keep this and the rest, in order
                self.report_failure(moment.signal, moment.root, exc)
            await asyncio.to_thread(self._pending.remove, moment.signal.event_key)
            done += 1
        if done:
            logger.info("queued hedge proposals processed count=%s", done)
        return done

    async def retry_loop(self, interval: float) -> None:
        """:meth:`retry_pending` now and every ``interval`` seconds (until cancelled)."""
        while True:
            await self.retry_pending()
            await asyncio.sleep(interval)

    def effect(self, moment: Moment, change: RiskChange) -> dict[str, object]:
        """What the proposal does (``domain.whatif``, as ``portfolio whatif`` reports it): its
        dollar Greeks and margin, and every limit's utilisation before and after under the
        breach's regime (the limits only when the desk knows the regimes)."""
        out: dict[str, object] = {"greeks": dataclasses.asdict(change)}
        if self._regimes is None:
            return out
        check = moment.signal.check
        names = [r.name for r in self._regimes.matrix.regimes]
        regime = RegimeState(name=check.regime, index=names.index(check.regime) if check.regime in names else -1,
                             vix=check.vix, vix3m=check.vix3m, term_ratio=None, backwardation=False,
                             limits=self._regimes.limits_for(check.regime))
        changes = limit_changes(moment.risk, change, regime)
        out["limits"] = [{"metric": c.after.metric, "before": c.before.value, "after": c.after.value,
                          "utilisation_before": c.before.utilisation, "utilisation_after": c.after.utilisation,
                          "effect": c.effect} for c in changes]
        out["summary"] = describe_changes(changes)
        return out

    async def _handle(self, moment: Moment) -> Order | None:
        signal = moment.signal
        order_id = proposal_order_id(signal.event_key)
        existing: list[Order] = await asyncio.to_thread(self._store.by_proposal, signal.event_key)
        if existing:
            logger.info("proposal already recorded event_key=%s order_id=%s", signal.event_key, existing[0].order_id)
            return existing[0]
        key = idempotency_key(signal.event_key)
        pending = await asyncio.to_thread(self._store.open_for_proposal_key, key, self._account, list(_IN_FLIGHT))
        if pending:
            # e.g. a restart re-detects the same breach: the hedge is already proposed/staged/sent
            logger.info(
                "hedge already in flight for key=%s order_id=%s status=%s; not proposed again",
                key, pending[0].order_id, pending[0].status.value,
            )
            return pending[0]
        view = await self.market_view(moment)
        candidate = propose_hedge(signal.check, moment.risk, view, self._hedge)
        if candidate is None:
            return None
        order = candidate.to_order(
            order_id=order_id, broker=self._broker.name, account_id=self._account,
            created_at=signal.ts, proposal_id=signal.event_key,
        )
        whatif = await self._broker.what_if(order)
        order = replace(order, whatif=whatif)
        effect = self.effect(moment, candidate.change + RiskChange(maint_margin=whatif.maint_margin_change))
        await asyncio.to_thread(self._store.insert, order, actor="streaming:proposer", detail={
            "rationale": candidate.rationale, "structure": candidate.structure,
            "metric_before": candidate.metric_before, "metric_after": candidate.metric_after,
            "whatif": whatif_to_json(whatif), "effect": effect,
        })
        self.proposed += 1
        self._submit(StreamEvent(
            event_key=f"{HEDGE_PROPOSED}:{order_id}", kind=HEDGE_PROPOSED, severity="info", ts=signal.ts,
            account_id=self._account,
            payload={
                "order_id": order_id, "breach_event_key": signal.event_key, "metric": candidate.metric,
                "structure": candidate.structure, "quantity": candidate.quantity,
                "limit_price": candidate.limit_price, "legs": [
                    {"action": leg.action, "contract": leg.contract.key, "strike": leg.contract.strike,
                     "expiry": leg.contract.expiry.isoformat() if leg.contract.expiry else None}
                    for leg in candidate.legs
                ],
                "spot": view.spot, "metric_before": candidate.metric_before,
                "metric_after": candidate.metric_after, "rationale": candidate.rationale,
                "whatif": whatif_to_json(whatif), "regime": signal.check.regime, "vix": signal.check.vix,
                "effect": effect,
            },
        ))
        logger.info("hedge proposed order_id=%s %s", order_id, candidate.rationale)
        open_staged = await asyncio.to_thread(self._store.count, [OrderStatus.STAGED, OrderStatus.SHOWN])
        if self._policy.should_stage(candidate.metric, signal.check.regime, open_staged):
            order = await self._commands.stage(order_id, actor="streaming:rule", ttl=self._ttl, reason="rule")
            self.staged += 1
            self._submit(StreamEvent(
                event_key=f"{ORDER_STAGED}:{order_id}", kind=ORDER_STAGED, severity="warning", ts=signal.ts,
                account_id=self._account,
                payload={"order_id": order_id, "breach_event_key": signal.event_key,
                         "expires_at": order.expires_at.isoformat() if order.expires_at else None},
            ))
        return order


def _database_unavailable(exc: BaseException) -> bool:
    """The database cannot be used now (down, unreachable, or not migrated yet): retry later."""
    from sqlalchemy.exc import ProgrammingError

    from streaming_service.buffer import is_connectivity_error

    return is_connectivity_error(exc) or isinstance(exc, ProgrammingError)
