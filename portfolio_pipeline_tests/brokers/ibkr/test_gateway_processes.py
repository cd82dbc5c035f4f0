"""End to end over a real socket: separate processes, one Gateway double (issue 13).

The Gateway double (:mod:`gateway_server`, the IB API wire protocol on 127.0.0.1, in a
thread of this test) serves three real ib_async clients at once: a market-data
connection on client id 17 (what the streaming service holds), a separate process that
stages a proposed hedge the way the streaming service does (``order_broker_for`` ->
the designated order client id 18), and the ``portfolio orders show`` / ``confirm`` CLI
processes.  Asserted from the Gateway's own record: exactly one transmitted order, with
the staged order's client id, order id and permId, and no stray order.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from ib_async import IB

from portfolio_pipeline.cli_errors import EXIT_BROKER
from portfolio_pipeline.domain.orders import OrderLeg
from portfolio_pipeline.domain.positions import Contract
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.brokers.ibkr.book import SPX_PUT, gateway, order
from portfolio_pipeline_tests.brokers.ibkr.fake_ib import ib_option
from portfolio_pipeline_tests.brokers.ibkr.gateway_server import GatewayServer
from portfolio_pipeline_tests.stubs import CONFIG_DIR

STAGE_LIKE_THE_SERVICE = """
import asyncio, sys
from datetime import timedelta
from portfolio_pipeline.config import load_platform_config
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.orders.routing import order_broker_for
from portfolio_pipeline.paths import config_dir, portfolio_home
from portfolio_pipeline.storage import Database

with Database() as db:
    cmds = OrderCommands(OrderStore(db), order_broker_for(load_platform_config(config_dir()),
                                                          lock_dir=portfolio_home() / "run"))
    staged = asyncio.run(cmds.stage(sys.argv[1], actor="streaming:rule", ttl=timedelta(hours=1)))
    print(staged.broker_client_id, staged.broker_order_id)
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PORTFOLIO_HOME": str(tmp_path / "home"),
            "PORTFOLIO_DB_URL": f"sqlite:///{tmp_path / 'orders.sqlite'}",
            "PORTFOLIO_CONFIG_DIR": str(tmp_path / "config")}


def _configure(tmp_path: Path, port: int) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "accounts.yaml").write_text(
        "accounts:\n  - name: ib\n    broker: ibkr\n    account_id: U1\n"
        f"    ibkr: {{host: 127.0.0.1, port: {port}, client_id: 17, timeout_seconds: 5}}\n"
    )
    (tmp_path / "home").mkdir()


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)


def test_service_stages_cli_confirms_one_transmission_across_processes(tmp_path: Path, env: dict[str, str]) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        OrderStore(db).insert(order(order_id="H-X", quantity=2), actor="streaming:proposer")

        data_loop = asyncio.new_event_loop()
        data = IB()  # the streaming service's market-data connection holds client id 17 throughout
        data_loop.run_until_complete(data.connectAsync("127.0.0.1", server.port, clientId=17, timeout=10))
        try:
            staged = _run(env, "-c", STAGE_LIKE_THE_SERVICE, "H-X")
            assert staged.returncode == 0, staged.stderr[-3000:]
            client_id, staged_id = staged.stdout.split()
            cli = [*("-c", "from portfolio_pipeline.cli import main; main()")]
            shown = _run(env, *cli, "orders", "show", "H-X")
            assert shown.returncode == 0, shown.stderr[-3000:]
            token = re.search(r"portfolio orders confirm H-X (\S+)", shown.stdout)
            assert token is not None, shown.stdout
            confirmed = _run(env, *cli, "orders", "confirm", "H-X", token.group(1))
            assert confirmed.returncode == 0, confirmed.stderr[-3000:]
            assert data.isConnected()
        finally:
            data.disconnect()
            data_loop.close()
        transmissions, book = server.state()
        asked = set(server.start_requests)

    assert asked == {17, 18}  # data on 17; every order operation (3 processes) on 18, never another id
    assert client_id == "18"
    ((tx_client, tx_order, tx_perm),) = transmissions  # exactly one order went to the exchange
    assert (tx_client, str(tx_order)) == (18, staged_id)  # ... the very order that was staged
    assert list(book) == [(18, int(staged_id))]  # no stray order at the Gateway
    assert book[(18, int(staged_id))].perm_id == tx_perm and book[(18, int(staged_id))].transmitted
    stored = OrderStore(db).get("H-X")
    assert (stored.broker_client_id, stored.broker_order_id) == (18, staged_id)
    assert stored.status.value == "transmitted"
    db.dispose()


def test_cli_refuses_when_the_order_client_id_is_held_and_never_falls_back(
    tmp_path: Path, env: dict[str, str]
) -> None:
    gw = gateway()
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        OrderStore(db).insert(order(order_id="H-Y"), actor="streaming:proposer")
        loop = asyncio.new_event_loop()
        squatter = IB()  # e.g. TWS or another machine holds the order client id
        loop.run_until_complete(squatter.connectAsync("127.0.0.1", server.port, clientId=18, timeout=10))
        try:
            shown = _run(env, "-c", "from portfolio_pipeline.cli import main; main()", "orders", "show", "H-Y")
        finally:
            squatter.disconnect()
            loop.close()
        _, book = server.state()
        asked = list(server.start_requests)
    assert shown.returncode == EXIT_BROKER
    assert "client id 18 is in use" in shown.stderr and "never fall back" in shown.stderr
    assert "Traceback" not in shown.stderr
    assert book == {}  # nothing was placed
    assert asked == [18, 18]  # the squatter, then the CLI once: no other client id was tried
    assert OrderStore(db).get("H-Y").status.value == "proposed"
    db.dispose()


def test_restart_makes_confirm_refuse_and_reject_cancels_at_the_gateway(tmp_path: Path, env: dict[str, str]) -> None:
    gw = gateway()
    cli = ("-c", "from portfolio_pipeline.cli import main; main()")
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        store = OrderStore(db)
        store.insert(order(order_id="H-S"), actor="streaming:proposer")
        store.insert(order(order_id="H-R"), actor="streaming:proposer")
        shown = _run(env, *cli, "orders", "show", "H-S")
        token = re.search(r"portfolio orders confirm H-S (\S+)", shown.stdout)
        assert token is not None, shown.stderr[-3000:]
        server.restart()  # the untransmitted order is gone from the Gateway
        refused = _run(env, *cli, "orders", "confirm", "H-S", token.group(1))
        staged = _run(env, *cli, "orders", "stage", "H-R")
        assert staged.returncode == 0, staged.stderr[-3000:]
        rejected = _run(env, *cli, "orders", "reject", "H-R", "--reason", "not now")
        transmissions, book = server.state()
    assert refused.returncode == EXIT_BROKER and "no longer exists at the Gateway" in refused.stderr
    assert store.get("H-S").status.value == "stale"
    assert transmissions == []  # never re-placed from local terms
    assert rejected.returncode == 0, rejected.stderr[-3000:]
    assert store.get("H-R").status.value == "rejected"
    assert [(key, o.status) for key, o in book.items()] == [((18, int(store.get("H-R").broker_order_id or 0)),
                                                             "Cancelled")]
    db.dispose()


CLI = ("-c", "from portfolio_pipeline.cli import main; main()")


def test_held_presubmitted_transmit_and_lost_transmit_over_the_socket(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 13.3 over the wire: a transmit held PreSubmitted (outside regular hours) is
    TRANSMITTED; a transmit that never reached the Gateway stays SENT_UNKNOWN through
    ``portfolio orders reconcile`` (never TRANSMITTED without evidence), the person is told."""
    gw = gateway()
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        store = OrderStore(db)
        store.insert(order(order_id="H-H"), actor="streaming:proposer")
        store.insert(order(order_id="H-L"), actor="streaming:proposer")
        gw.outside_rth = True
        shown = _run(env, *CLI, "orders", "show", "H-H")
        token = re.search(r"portfolio orders confirm H-H (\S+)", shown.stdout)
        assert token is not None, shown.stderr[-3000:]
        held = _run(env, *CLI, "orders", "confirm", "H-H", token.group(1))
        gw.lose_transmits = True
        shown = _run(env, *CLI, "orders", "show", "H-L")
        token = re.search(r"portfolio orders confirm H-L (\S+)", shown.stdout)
        assert token is not None, shown.stderr[-3000:]
        lost = _run(env, *CLI, "orders", "confirm", "H-L", token.group(1))
        gw.lose_transmits = False
        reconciled = _run(env, *CLI, "orders", "reconcile")
        transmissions, book = server.state()
    assert held.returncode == 0, held.stderr[-3000:]
    h, lo = store.get("H-H"), store.get("H-L")
    assert h.status.value == "transmitted"
    ((tx_client, tx_order, tx_perm),) = transmissions  # only the held order was transmitted
    assert (tx_client, str(tx_order)) == (18, h.broker_order_id)
    assert book[(18, tx_order)].status == "PreSubmitted" and book[(18, tx_order)].perm_id == tx_perm
    assert lost.returncode != 0 and "sent but not acknowledged" in lost.stderr
    assert reconciled.returncode == 0, reconciled.stderr[-3000:]
    assert lo.status.value == "sent_unknown"  # the reconciler found it open, PreSubmitted: no evidence
    never = book[(18, int(lo.broker_order_id or 0))]
    assert (never.transmitted, never.status) == (False, "PreSubmitted")
    assert "H-L: still sent_unknown" in reconciled.stdout and "Transmit button" in reconciled.stdout
    db.dispose()


def test_partial_then_full_fill_reconciled_by_the_cli_over_the_socket(tmp_path: Path, env: dict[str, str]) -> None:
    """Issue 13.3 across processes: 1 of 2 lots filled -> PARTIALLY_FILLED (the Gateway's
    open-order status); the second lot fills -> FILLED, read from the executions the
    Gateway reports (execDetails over the wire, matched by orderRef), not from the status."""
    gw = gateway()
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        store = OrderStore(db)
        store.insert(order(order_id="H-F", quantity=2), actor="streaming:proposer")
        shown = _run(env, *CLI, "orders", "show", "H-F")
        token = re.search(r"portfolio orders confirm H-F (\S+)", shown.stdout)
        assert token is not None, shown.stderr[-3000:]
        sent = _run(env, *CLI, "orders", "confirm", "H-F", token.group(1))
        assert sent.returncode == 0, sent.stderr[-3000:]
        order_id = int(store.get("H-F").broker_order_id or 0)
        server.fill(18, order_id, 1, 12.0, exec_id="E1")
        partial = _run(env, *CLI, "orders", "reconcile")
        after_partial = store.get("H-F").status.value
        server.fill(18, order_id, 1, 12.5, exec_id="E2")
        full = _run(env, *CLI, "orders", "reconcile")
        transmissions, book = server.state()
    assert partial.returncode == 0 and full.returncode == 0, partial.stderr[-3000:] + full.stderr[-3000:]
    assert after_partial == "partially_filled" and "1 of 2 filled" in partial.stdout
    done = store.get("H-F")
    assert done.status.value == "filled"
    assert "2 of 2 filled, not open at the broker" in full.stdout  # from the executions, not open orders
    assert [(c, o) for c, o, _ in transmissions] == [(18, order_id)]
    assert book[(18, order_id)].status == "Filled" and book[(18, order_id)].filled == 2
    db.dispose()


def test_vertical_combo_staged_confirmed_and_filled_across_processes(tmp_path: Path, env: dict[str, str]) -> None:
    """A put vertical (the delta hedge's shape) as one BAG order over the wire: staged and
    confirmed by CLI processes, one transmission of that BAG with both legs; its fills
    (execDetails of the BAG) reconcile to PARTIALLY_FILLED, then FILLED."""
    gw = gateway()
    gw.add_contract(ib_option(103, "SPX", "20180316", 2650, "P", "SPX"))
    short_leg = Contract("SPX", "OPT", date(2018, 3, 16), 2650.0, "P", "SPX")
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        db = Database(env["PORTFOLIO_DB_URL"])
        db.migrate()
        store = OrderStore(db)
        store.insert(order(OrderLeg(SPX_PUT, "BUY"), OrderLeg(short_leg, "SELL"), order_id="H-V", quantity=2,
                           limit=14.5), actor="streaming:proposer")
        shown = _run(env, *CLI, "orders", "show", "H-V")
        token = re.search(r"portfolio orders confirm H-V (\S+)", shown.stdout)
        assert token is not None, shown.stdout + shown.stderr[-3000:]
        sent = _run(env, *CLI, "orders", "confirm", "H-V", token.group(1))
        assert sent.returncode == 0, sent.stderr[-3000:]
        order_id = int(store.get("H-V").broker_order_id or 0)
        server.fill(18, order_id, 1, 14.4, exec_id="V1")
        partial = _run(env, *CLI, "orders", "reconcile")
        after_partial = store.get("H-V").status.value
        server.fill(18, order_id, 1, 14.5, exec_id="V2")
        full = _run(env, *CLI, "orders", "reconcile")
        transmissions, book = server.state()
        placed = list(gw.placed)
    ((tx_client, tx_order, tx_perm),) = transmissions
    assert (tx_client, tx_order) == (18, order_id)
    assert list(book) == [(18, order_id)]  # one BAG order, not one order per leg
    bag = book[(18, order_id)]
    assert bag.contract.secType == "BAG" and bag.perm_id == tx_perm
    assert [(leg.conId, leg.action, leg.ratio) for leg in bag.contract.comboLegs] == [(101, "BUY", 1), (103, "SELL", 1)]
    assert (bag.order.action, bag.order.totalQuantity, bag.order.lmtPrice) == ("BUY", 2.0, 14.5)
    assert [(o.transmit, o.permId) for _, _, o in placed] == [(False, tx_perm), (True, tx_perm)]
    assert after_partial == "partially_filled" and "1 of 2 filled" in partial.stdout, partial.stderr[-3000:]
    assert store.get("H-V").status.value == "filled" and "2 of 2 filled" in full.stdout, full.stderr[-3000:]
    db.dispose()


def test_bracket_from_the_command_line_across_processes(tmp_path: Path, env: dict[str, str]) -> None:
    """`orders bracket`, `show` and `confirm` as three processes: the Gateway's own record has
    the three legs staged untransmitted with parentId, then transmitted whole by the last one."""
    gw = gateway()
    with GatewayServer(gw) as server:
        _configure(tmp_path, server.port)
        made = _run(env, *CLI, "orders", "bracket", "--account", "ibkr:U1", "--contract", SPX_PUT.key,
                    "--quantity", "2", "--side", "BUY", "--entry", "12", "--take-profit", "15", "--stop", "9")
        assert made.returncode == 0, made.stderr[-3000:]
        group = re.search(r"bracket (BRA-[0-9a-f]+) proposed", made.stdout)
        assert group is not None, made.stdout
        shown = _run(env, *CLI, "orders", "show", group.group(1))
        token = re.search(rf"portfolio orders confirm {group.group(1)} (\S+)", shown.stdout)
        assert token is not None, shown.stderr[-3000:]
        _, staged = server.state()
        confirmed = _run(env, *CLI, "orders", "confirm", group.group(1), token.group(1))
        transmissions, book = server.state()
    assert confirmed.returncode == 0, confirmed.stderr[-3000:]
    entry, tp, sl = sorted(staged)  # placement order: entry, take-profit, stop-loss
    assert [staged[k].transmitted for k in (entry, tp, sl)] == [False, False, False]
    assert staged[tp].order.parentId == staged[sl].order.parentId == entry[1]
    assert [(c, o) for c, o, _ in transmissions] == [entry, tp, sl]  # parent first, as one bracket
    assert set(book) == {entry, tp, sl} and set(server.start_requests) == {18}
    assert f"{group.group(1)}: transmitted" in confirmed.stdout
