"""End to end on the demo: replay 2018-02-05 -> breach events -> sensor run ->
proposal with the configured OTM wings -> staged -> show -> confirm -> filled."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import select

from portfolio_pipeline.brokers.demo import DemoBroker
from portfolio_pipeline.clock import SettableClock
from portfolio_pipeline.config.streaming import HedgeSettings, StreamingConfig
from portfolio_pipeline.defs.alerts.jobs import breach_response_job
from portfolio_pipeline.defs.alerts.sensors import breach_sensor
from portfolio_pipeline.defs.alerts.sinks import AlertMessage, AlertsResource
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.marketdata.history import MarketHistory
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline.storage.tables import events
from portfolio_pipeline_tests.stubs import CONFIG_DIR, platform_config
from streaming_service.buffer import DatabaseEventStore, DiskBuffer, EventWriter
from streaming_service.feeds.demo import DemoFeed
from streaming_service.service import StreamingService
from streaming_service.staging import HedgeDesk


class RecordingAlerts(AlertsResource):
    def sink(self, db: object, notifications: object | None) -> RecordingAlerts:  # type: ignore[override]
        return self

    def send(self, alert: AlertMessage) -> None:
        SENT.append(alert)


SENT: list[AlertMessage] = []


class PinnedAlerts(AlertsResource):
    at: str

    def now(self) -> datetime:
        return datetime.fromisoformat(self.at)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_demo_spike_to_filled_hedge(db_url: str, tmp_path: Path) -> None:
    cfg = platform_config()
    matrix = cfg.risk_matrix  # the shipped limits: the 2018-02-05 move crosses them
    settings = StreamingConfig(hedge=HedgeSettings(wing_otm_pct=0.02, wing_width_pct=0.02))
    clock = SettableClock(datetime(2018, 2, 5, 14, 30, tzinfo=UTC))
    history = MarketHistory()
    broker = DemoBroker(cfg.instruments, account_id="DEMO-001", clock=clock, seed=7, history=history)
    feed = DemoFeed(broker, "DEMO-001", history, date(2018, 2, 5), speed=None, tick_seconds=60, clock=clock)
    db = Database(db_url)
    store = OrderStore(db)
    commands = OrderCommands(store, lambda o: broker)
    writer = EventWriter(DatabaseEventStore(db), DiskBuffer(tmp_path, max_events=10_000))
    desk = HedgeDesk(broker=broker, account_id="DEMO-001", store=store, commands=commands,
                     instruments=cfg.instruments, hedge=settings.hedge, staging=settings.staging,
                     submit=writer.submit)
    service = StreamingService(feed=feed, writer=writer, instruments=cfg.instruments,
                               regimes=RegimeService(matrix), settings=settings,
                               account_id="DEMO-001", desk=desk, rate=0.0142,
                               dividend_yields={"SPX": 0.019, "NDX": 0.009})
    try:
        asyncio.run(service.run())
        with db.connect() as conn:
            rows = conn.execute(select(events).where(events.c.kind == "limit_breach").order_by(events.c.id)).mappings().all()
        delta = [r for r in rows if r["payload"]["metric"] == "beta_weighted_delta"]
        assert delta, "the 2018-02-05 spike must trip the delta limit"
        breach = delta[0]
        p = breach["payload"]  # the live intraday VIX (above the 17.31 prior close), never a constant
        assert p["vix"] > 17.31 and p["vix3m"] is not None
        # the regime is the one that VIX gives (hysteresis may hold the previous one a step back)
        regimes = RegimeService(matrix)
        live = regimes.classify(p["vix"], p["vix3m"])
        assert abs(regimes.regime_names.index(p["regime"]) - live.index) <= 1, (p, live)
        assert breach["payload"]["value"] > breach["payload"]["limit"]

        # Dagster: the sensor launches one breach_response run per breach event.
        instance = dg.DagsterInstance.ephemeral()
        # the sensor's first start ignores breaches older than its max age before "now":
        # now is the end of the replayed session, the age a whole day
        resources = {"db": DatabaseResource(url=db_url),
                     "alerts": PinnedAlerts(at=datetime(2018, 2, 5, 21, 0, tzinfo=UTC).isoformat(),
                                            breach_first_start_max_age_minutes=24 * 60)}
        with dg.build_sensor_context(cursor=None, instance=instance, resources=resources) as ctx:
            requests = list(breach_sensor(ctx))
            cursor = ctx.cursor
        assert [r.run_key for r in requests] == [f"breach:{r['id']}" for r in rows]
        with dg.build_sensor_context(cursor=cursor, instance=instance, resources=resources) as again:
            assert list(breach_sensor(again)) == []
        req = next(r for r in requests if r.run_key == f"breach:{breach['id']}")
        result = breach_response_job.execute_in_process(
            run_config=req.run_config, instance=instance,
            resources={"db": DatabaseResource(url=db_url), "alerts": RecordingAlerts(),
                       "platform": PlatformResource(config_dir=str(CONFIG_DIR), demo_only=True)},
        )
        assert result.success
        assert SENT and "VIX" in SENT[-1].title and "proposal" in SENT[-1].text

        # The proposal: a put vertical with the short strike 2% OTM of spot, on the 5-point grid.
        (order,) = store.by_proposal(breach["event_key"])
        assert order.status == OrderStatus.PROPOSED and order.whatif is not None
        spot = breach["payload"]["spots"]["SPX"]
        long_leg, short_leg = order.legs
        assert short_leg.action == "SELL" and short_leg.contract.right == "P"
        assert abs(short_leg.contract.strike - 0.98 * spot) <= 2.5
        assert abs(long_leg.contract.strike - short_leg.contract.strike - 0.02 * spot) <= 5.0
        with db.connect() as conn:
            record = conn.execute(select(events.c.payload).where(events.c.kind == "breach_response")).scalar_one()
        assert record["proposals"][0]["order_id"] == order.order_id

        # Staged by request, shown (token), confirmed -> filled at the demo broker.
        asyncio.run(commands.stage(order.order_id, actor="test", ttl=timedelta(hours=1)))
        shown = asyncio.run(commands.show(order.order_id, actor="test"))
        assert "demo broker: simulated fill" in shown.text
        done = asyncio.run(commands.confirm(order.order_id, shown.token, actor="test"))
        assert done.status == OrderStatus.FILLED
        fills = asyncio.run(broker.executions("DEMO-001", date(2018, 2, 1)))
        assert any(e.order_ref == done.broker_order_id for e in fills)
    finally:
        db.dispose()
