"""Issue 13, end to end: the real `portfolio-stream --broker ibkr` process and the CLI against ONE Gateway.

The Gateway double speaks the IB API wire protocol on 127.0.0.1 (:mod:`gateway_server`,
in a thread of this test).  The account holds a short SPX straddle (30 puts + 30 calls at
the money, 35+ days out) whose vega is beyond the vega limit (1% of NLV per vol
point); ``streaming.yaml`` stages vega hedges by rule (``staging.auto_stage``), the way a
user opts in.  The service process detects the breach, proposes a long put, checks it
with a WhatIf and stages it on the order client id; then ``portfolio orders show`` and
``confirm`` run as separate processes.  Everything asserted about what was sent comes
from the Gateway's own record: exactly one transmitted order, the staged order's client
id / order id / permId, no stray order, no client id other than 17 (data) and 18 (orders).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import socket
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

import pytest

from portfolio_pipeline.domain.orders import Order, OrderStatus
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import (
    FakeGateway,
    MarketScript,
    ib_index,
    ib_option,
)
from portfolio_pipeline_tests.brokers.ibkr.gateway_server import GatewayServer
from portfolio_pipeline_tests.streaming.test_stream_process_gateway import _until
from portfolio_pipeline_tests.stubs import CONFIG_DIR

SPOT = 2762.13
STRIKES = [2500.0 + 25.0 * i for i in range(21)]  # 2500 .. 3000
VOL = 0.20


def _third_friday_after(day: date, min_days: int) -> date:
    """The first monthly (third Friday, a full session) expiry at least ``min_days`` after ``day``.

    Third Fridays that are holidays (Good Friday, Juneteenth) are skipped: their SPX
    monthlies expire the day before, which this scripted chain does not model.
    """
    calendar = ExchangeCalendar()
    month = date(day.year, day.month, 1)
    while True:
        first_friday = month + timedelta(days=(4 - month.weekday()) % 7)
        expiry = first_friday + timedelta(days=14)
        if (expiry - day).days >= min_days and calendar.is_session(expiry) and not calendar.is_half_day(expiry):
            return expiry
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _black_scholes(right: str, strike: float, years: float) -> float:
    """Plain Black-Scholes (no rate, no dividend) at VOL: plausible marks for the straddle."""
    sd = VOL * math.sqrt(years)
    d1 = (math.log(SPOT / strike) + 0.5 * sd * sd) / sd
    n = lambda x: 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))  # noqa: E731
    call = SPOT * n(d1) - strike * n(d1 - sd)
    return call if right == "C" else call - SPOT + strike


def _gateway(expiry: date) -> FakeGateway:
    gw = FakeGateway(accounts=["U1"])
    gw.add_contract(ib_index(601, "VIX"))
    gw.add_contract(ib_index(602, "VIX3M"))
    spx = gw.add_contract(ib_index(501, "SPX"))
    gw.market[601] = MarketScript(last=17.31)
    gw.market[602] = MarketScript(last=18.1)
    gw.market[501] = MarketScript(last=SPOT, close=SPOT)
    exp = f"{expiry:%Y%m%d}"
    years = (expiry - date.today()).days / 365.0
    con = 1000
    for k in STRIKES:
        for right in ("P", "C"):
            con += 1
            c = gw.add_contract(ib_option(con, "SPX", exp, k, right, "SPX"), under_con_id=spx.conId)
            if k == 2775.0:  # the short straddle (about delta-neutral: only vega and gamma breach)
                mark = round(_black_scholes(right, k, years), 1)
                gw.positions.append(("U1", c, -30.0, mark * 100))
                gw.portfolio_prices[con] = mark
                gw.market[con] = MarketScript(bid=mark - 0.5, ask=mark + 0.5)
    gw.option_chains["SPX"] = [("SMART", 501, "SPX", "100", [exp], STRIKES)]
    gw.account_summary += [("U1", tag, value, "USD") for tag, value in (
        ("NetLiquidation", "1000000"), ("TotalCashValue", "1000000"), ("InitMarginReq", "120000"),
        ("MaintMarginReq", "100000"), ("ExcessLiquidity", "900000"), ("BuyingPower", "3600000"))]
    return gw


@pytest.mark.slow
def test_stream_process_stages_a_hedge_and_the_cli_confirms_it_one_transmission(tmp_path: Path) -> None:
    expiry = _third_friday_after(date.today(), 35)
    gw = _gateway(expiry)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        health_port = int(s.getsockname()[1])
    with GatewayServer(gw) as server:
        config = tmp_path / "config"
        shutil.copytree(CONFIG_DIR, config)
        (config / "accounts.yaml").write_text(
            "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n"
            f"    ibkr: {{host: 127.0.0.1, port: {server.port}, client_id: 17, timeout_seconds: 5}}\n"
        )
        streaming = (config / "streaming.yaml").read_text()
        streaming = streaming.replace("debounce_ticks: 3", "debounce_ticks: 1")
        streaming = streaming.replace("auto_stage: false", "auto_stage: true")
        streaming = streaming.replace("auto_stage_metrics: [beta_weighted_delta]", "auto_stage_metrics: [vega]")
        (config / "streaming.yaml").write_text(streaming)
        (tmp_path / "home").mkdir()
        env = {**os.environ, "PORTFOLIO_HOME": str(tmp_path / "home"),
               "PORTFOLIO_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite'}", "PORTFOLIO_CONFIG_DIR": str(config)}
        log = (tmp_path / "stream.log").open("w")
        proc = subprocess.Popen(
            [sys.executable, "-c", "from streaming_service.main import main; main()", "--broker", "ibkr",
             "--health-port", str(health_port), "--config-dir", str(config)],
            env=env, stderr=log, stdout=subprocess.DEVNULL,
        )
        db = Database(env["PORTFOLIO_DB_URL"])
        try:
            def staged() -> list[Order]:
                if proc.poll() is not None:
                    raise AssertionError((tmp_path / "stream.log").read_text()[-3000:])
                try:
                    return OrderStore(db).list_orders([OrderStatus.STAGED])
                except Exception:  # the service has not created the tables yet
                    return []

            (hedge,) = _until(staged, 45)
            cli = [sys.executable, "-c", "from portfolio_pipeline.cli import main; main()", "orders"]
            shown = subprocess.run([*cli, "show", hedge.order_id], env=env, capture_output=True, text=True,
                                   timeout=60)
            token = re.search(rf"portfolio orders confirm {re.escape(hedge.order_id)} (\S+)", shown.stdout)
            assert token is not None, shown.stdout + shown.stderr[-3000:]
            confirmed = subprocess.run([*cli, "confirm", hedge.order_id, token.group(1)], env=env,
                                       capture_output=True, text=True, timeout=60)
            assert confirmed.returncode == 0, confirmed.stderr[-3000:]
            proc.terminate()
            rc = proc.wait(timeout=15)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
        transmissions, book = server.state()
        placed = list(gw.placed)
        asked = set(server.start_requests)
    text = (tmp_path / "stream.log").read_text()
    assert rc == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    stored = OrderStore(db).get(hedge.order_id)
    db.dispose()
    assert stored.status == OrderStatus.TRANSMITTED
    assert stored.proposal_id and "vega" in stored.proposal_id  # from the service's breach, not a fixture
    ((tx_client, tx_order, tx_perm),) = transmissions  # exactly one order went to the exchange
    assert (tx_client, str(tx_order)) == (18, hedge.broker_order_id)  # the very order the service staged
    assert (stored.broker_client_id, stored.broker_order_id) == (18, hedge.broker_order_id)
    assert list(book) == [(18, tx_order)]  # no stray order at the Gateway
    assert book[(18, tx_order)].perm_id == tx_perm
    # placed twice, both the same order (same id and permId): the service's stage
    # (transmit=False) and the CLI's transmit; nothing else was ever placed
    assert [(o.orderId, o.transmit, o.permId) for _, _, o in placed] == [
        (tx_order, False, tx_perm), (tx_order, True, tx_perm)]
    sent = book[(18, tx_order)]
    assert (sent.contract.secType, sent.contract.right, sent.order.action) == ("OPT", "P", "BUY")
    assert sent.contract.lastTradeDateOrContractMonth == f"{expiry:%Y%m%d}"
    assert asked == {17, 18}  # data on 17, every order operation on 18: no fallback client id
