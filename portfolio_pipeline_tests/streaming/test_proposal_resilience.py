"""Issue 17 item 3 (and issue 13 item 8's last clause): the live monitor never dies and
never forgets a proposal.

- An unknown or unpriceable hedge underlying: a ``hedge_failed`` event (the Dagster
  ``hedge_failure_sensor`` turns it into an alert) and the monitor goes on.
- A breach during a database outage: the proposal is queued on disk and created when
  the database returns (also by a new process: the queue survives a restart).
- ``portfolio-stream`` starts with the database down and migrates when it returns.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError

from portfolio_pipeline.brokers.base import OptionChain
from portfolio_pipeline.config.streaming import HedgeSettings, StreamingConfig
from portfolio_pipeline.defs.alerts.sensors import hedge_failure_sensor
from portfolio_pipeline.defs.alerts.sinks import AlertMessage, AlertsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import events
from portfolio_pipeline_tests.orders.fakes import RecordingBroker
from portfolio_pipeline_tests.streaming.helpers import T0
from portfolio_pipeline_tests.streaming.test_buffer_service import ListFeed
from portfolio_pipeline_tests.stubs import CONFIG_DIR, platform_config
from streaming_service.buffer import DiskBuffer, EventWriter, StreamEvent
from streaming_service.engine import Tick
from streaming_service.pending import PendingProposals, moment_from_json, moment_to_json
from streaming_service.service import StreamingService
from streaming_service.staging import HEDGE_FAILED, HEDGE_PROPOSED, HedgeDesk


class ChainBroker(RecordingBroker):
    async def option_chain(self, underlying: str, trading_class: str | None = None) -> OptionChain:
        expiries = tuple(T0.date() + timedelta(days=d) for d in (11, 25, 39, 46, 74, 109))
        strikes = tuple(float(k) for k in range(1500, 3500, 5))
        return OptionChain(underlying, trading_class or underlying, 100.0, expiries, strikes)


class OutageStore(OrderStore):
    """The real order store; every call fails like a stopped server while ``down``."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise OperationalError("SELECT", {}, ConnectionRefusedError("database stopped"))

    def by_proposal(self, proposal_id: str):  # type: ignore[no-untyped-def]
        self._check()
        return super().by_proposal(proposal_id)

    def insert(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        self._check()
        return super().insert(*args, **kwargs)


def _ticks() -> list[Tick]:
    """VIX 45 and SPX down 13%: the stub book breaches delta and vega (crisis limits)."""
    out: list[Tick] = []
    for i in range(6):
        out.append(Tick("VIX", T0 + timedelta(seconds=10 * i + 1), 45.0))
        out.append(Tick("SPX", T0 + timedelta(seconds=10 * i + 2), 2400.0 - i))
    out += [Tick("SPX", T0 + timedelta(seconds=100 + i), 2390.0 + i) for i in range(5)]
    return out


def _run(db: Database, tmp_path: Path, hedge: HedgeSettings, store: OrderStore | None = None,
         pending: PendingProposals | None = None) -> tuple[StreamingService, HedgeDesk, list[StreamEvent]]:
    cfg = platform_config()
    seen: list[StreamEvent] = []

    class Memory:
        def write(self, batch: Sequence[StreamEvent]) -> list[int | None]:
            seen.extend(batch)
            return list(range(len(batch)))

    settings = StreamingConfig(hedge=hedge)
    broker = ChainBroker()
    store = store or OrderStore(db)
    writer = EventWriter(Memory(), DiskBuffer(tmp_path, max_events=1000))
    desk = HedgeDesk(broker=broker, account_id="DEMO-001", store=store,  # type: ignore[arg-type]
                     commands=OrderCommands(store, lambda o: broker),  # type: ignore[arg-type,return-value]
                     instruments=cfg.instruments, hedge=hedge, staging=settings.staging,
                     submit=writer.submit, pending=pending)
    svc = StreamingService(feed=ListFeed(_ticks()), writer=writer, instruments=cfg.instruments,
                           regimes=RegimeService(cfg.risk_matrix), settings=settings, account_id="DEMO-001",
                           desk=desk, rate=0.014, dividend_yields={"SPX": 0.019, "NDX": 0.009})
    asyncio.run(svc.run())
    return svc, desk, seen


@pytest.mark.parametrize("underlying", ["ZZZ", "VIX"])
def test_unbuildable_hedge_is_an_event_and_monitoring_goes_on(db: Database, tmp_path: Path,
                                                              underlying: str) -> None:
    """ZZZ: unknown everywhere (fails at capture); VIX: a configured root this book holds no
    position in, so the engine has no spot/vol to build a hedge from.  Either way: an event."""
    svc, desk, seen = _run(db, tmp_path, HedgeSettings(hedge_underlying=underlying))
    breaches = [e for e in seen if e.kind == "limit_breach"]
    failed = [e for e in seen if e.kind == HEDGE_FAILED]
    assert len(breaches) >= 1 and len(failed) == len(breaches) == desk.failed
    assert {e.payload["breach_event_key"] for e in failed} == {e.event_key for e in breaches}
    assert all(e.payload["hedge_underlying"] == underlying and e.payload["reason"] for e in failed)
    assert svc.metrics.ticks == len(_ticks())  # every tick after the breach was still processed
    assert svc.metrics.feed_done


def test_breach_during_outage_keeps_its_proposal(db: Database, tmp_path: Path) -> None:
    store = OutageStore(db)
    store.down = True
    pending = PendingProposals(tmp_path)
    _svc, desk, seen = _run(db, tmp_path, HedgeSettings(), store=store, pending=pending)
    breaches = [e for e in seen if e.kind == "limit_breach"]
    delta = [e for e in breaches if e.payload["metric"] == "beta_weighted_delta"]
    assert delta and desk.proposed == 0 and not any(e.kind == HEDGE_FAILED for e in seen)
    queued = pending.load()
    assert sorted(m.signal.event_key for m in queued) == sorted(e.event_key for e in breaches)
    assert stat.S_IMODE(pending.path.stat().st_mode) == 0o600
    assert moment_from_json(moment_to_json(queued[0])) == queued[0]

    # a new process (after a restart) with the database back proposes what was queued
    store.down = False
    cfg = platform_config()
    proposed: list[StreamEvent] = []
    broker = ChainBroker()
    desk2 = HedgeDesk(broker=broker, account_id="DEMO-001", store=store,  # type: ignore[arg-type]
                      commands=OrderCommands(store, lambda o: broker),  # type: ignore[arg-type,return-value]
                      instruments=cfg.instruments, hedge=HedgeSettings(), staging=StreamingConfig().staging,
                      submit=proposed.append, pending=PendingProposals(tmp_path))
    assert asyncio.run(desk2.retry_pending()) == len(breaches)
    assert len(pending) == 0 and not pending.path.exists()
    (order,) = store.by_proposal(delta[0].event_key)
    assert order.status == OrderStatus.PROPOSED and order.legs[0].contract.underlying == "SPX"
    assert {e.payload["breach_event_key"] for e in proposed if e.kind == HEDGE_PROPOSED} == {
        e.event_key for e in breaches if store.by_proposal(e.event_key)
    }
    assert asyncio.run(desk2.retry_pending()) == 0  # nothing twice


class Recording(AlertsResource):
    def sink(self, db: object, notifications: object | None) -> Recording:  # type: ignore[override]
        return self

    def send(self, alert: AlertMessage) -> None:
        SENT.append(alert)


SENT: list[AlertMessage] = []


def test_hedge_failure_sensor_alerts_once_per_event(db: Database, db_url: str) -> None:
    with db.begin() as conn:
        conn.execute(insert(events).values(
            event_key="hedge_failed:limit_breach:DEMO-001:vega:x", kind=HEDGE_FAILED, severity="warning", ts=T0,
            account_id="DEMO-001", payload={"metric": "vega", "hedge_underlying": "ZZZ", "reason": "unknown",
                                            "regime": "crisis", "breach_event_key": "limit_breach:x"}))
    SENT.clear()
    resources = {"db": DatabaseResource(url=db_url), "alerts": Recording(),
                 "platform": PlatformResource(config_dir=str(CONFIG_DIR), demo_only=True)}
    with dg.build_sensor_context(cursor=None, instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        hedge_failure_sensor(ctx)
        cursor = ctx.cursor
    assert len(SENT) == 1 and SENT[0].kind == "breach" and "ZZZ" in SENT[0].title
    with dg.build_sensor_context(cursor=cursor, instance=dg.DagsterInstance.ephemeral(), resources=resources) as ctx:
        hedge_failure_sensor(ctx)
    assert len(SENT) == 1


def test_stream_starts_with_the_database_down_and_migrates_later(tmp_path: Path, db_url: str) -> None:
    from streaming_service.buffer import DatabaseEventStore

    dead = Database("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1")
    from streaming_service.main import _migrate_or_defer

    assert _migrate_or_defer(dead) is False  # no exception: the service starts
    dead.dispose()
    fresh = Database(f"sqlite:///{tmp_path / 'fresh.db'}")  # never migrated
    store = DatabaseEventStore(fresh, migrate_first=True)
    ids = store.write([StreamEvent("k1", "limit_breach", "warning", T0, {"x": 1}, "DEMO-001")])
    assert ids[0] is not None
    fresh.dispose()
