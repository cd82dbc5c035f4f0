"""`portfolio orders bracket|oco|trail|cancel` on the demo broker, and the group `show`/`confirm`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.domain.orders import OrderStatus
from portfolio_pipeline.orders import OrderStore
from portfolio_pipeline.orders.groups import GroupStore
from portfolio_pipeline.storage import Database

PUT = "SPX|OPT|SPXW|2018-07-20|2500|P"


@pytest.fixture
def store(db: Database, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> GroupStore:
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    monkeypatch.setenv("PORTFOLIO_HOME", str(tmp_path))
    return GroupStore(OrderStore(db))


def _ok(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bracket_show_confirm_cancel_from_the_command_line(store: GroupStore) -> None:
    out = _ok(
        [
            "orders",
            "bracket",
            "--account",
            "demo:DEMO-001",
            "--contract",
            PUT,
            "--quantity",
            "2",
            "--side",
            "BUY",
            "--entry",
            "20",
            "--take-profit",
            "30",
            "--stop",
            "12",
        ]
    )
    group_id = re.search(r"bracket (BRA-[0-9a-f]+) proposed", out)
    assert group_id is not None, out
    gid = group_id.group(1)
    shown = _ok(["orders", "show", gid])
    assert shown.count("demo broker: simulated fill") == 3 and "leg 3/3: stop_loss" in shown
    assert "STP stop 12.00" in shown
    token = re.search(rf"portfolio orders confirm {gid} (\S+)", shown)
    assert token is not None
    # a leg on its own is refused
    refused = CliRunner().invoke(main, ["orders", "confirm", f"{gid}-entry", token.group(1)])
    assert refused.exit_code != 0 and f"leg of order group {gid}" in refused.output
    confirmed = _ok(["orders", "confirm", gid, token.group(1)])
    assert f"{gid}-entry (entry): filled" in confirmed and f"{gid}: partially_filled" in confirmed
    cancelled = _ok(["orders", "cancel", gid, "--reason", "done"])
    assert f"{gid}-take_profit (take_profit): cancelled" in cancelled
    group = store.get(gid)
    assert [leg.order.status for leg in group.legs] == [
        OrderStatus.FILLED,
        OrderStatus.CANCELLED,
        OrderStatus.CANCELLED,
    ]


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_bad_group_input_names_the_option(store: GroupStore) -> None:
    bad = CliRunner().invoke(
        main,
        [
            "orders",
            "bracket",
            "--account",
            "demo",
            "--contract",
            PUT,
            "--quantity",
            "1",
            "--side",
            "BUY",
            "--entry",
            "20",
            "--take-profit",
            "30",
            "--stop",
            "12",
        ],
    )
    assert bad.exit_code == 2 and "--account" in bad.output
    bad = CliRunner().invoke(
        main,
        [
            "orders",
            "oco",
            "--account",
            "demo:DEMO-001",
            "--contract",
            "SPX|OPT|x",
            "--quantity",
            "1",
            "--side",
            "SELL",
            "--take-profit",
            "30",
            "--stop",
            "12",
        ],
    )
    assert bad.exit_code == 2 and "--contract" in bad.output
    bad = CliRunner().invoke(
        main,
        [
            "orders",
            "bracket",
            "--account",
            "demo:DEMO-001",
            "--contract",
            PUT,
            "--quantity",
            "1",
            "--side",
            "BUY",
            "--entry",
            "20",
            "--take-profit",
            "10",
            "--stop",
            "12",
        ],
    )
    assert bad.exit_code == 2 and "take-profit must be above" in bad.output
    bad = CliRunner().invoke(
        main,
        [
            "orders",
            "oco",
            "--account",
            "demo:DEMO-001",
            "--contract",
            PUT,
            "--quantity",
            "1",
            "--side",
            "SELL",
            "--take-profit",
            "30",
            "--stop",
            "12",
            "--trail-percent",
            "5",
        ],
    )
    assert bad.exit_code == 2 and "exactly one of --stop" in bad.output
    assert store.group_ids() == []


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_trail_is_native_at_ibkr_and_platform_side_elsewhere(store: GroupStore) -> None:
    out = _ok(
        [
            "orders",
            "trail",
            "--account",
            "ibkr:U1",
            "--contract",
            "SPX|OPT|SPX|2030-12-20|5000|P",
            "--quantity",
            "1",
            "--side",
            "SELL",
            "--percent",
            "15",
        ]
    )
    order_id = re.search(r"trailing stop (TRL-[0-9a-f]+) proposed", out)
    assert order_id is not None, out
    order = store.orders.get(order_id.group(1))
    assert (order.order_type, order.trailing_percent, order.aux_price) == ("TRAIL", 15.0, None)
    out = _ok(
        [
            "orders",
            "trail",
            "--account",
            "demo:DEMO-001",
            "--contract",
            PUT,
            "--quantity",
            "1",
            "--side",
            "SELL",
            "--amount",
            "2.5",
        ]
    )
    assert "platform-side trail TRAIL-" in out and "never re-priced" in out


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_schedule_roll_with_a_standing_confirmation_then_cancel(store: GroupStore) -> None:
    far = "SPX|OPT|SPXW|2030-12-20|5000|P"  # expiration Friday 2030-12-20, 15:45 EST = 20:45 UTC
    bad = CliRunner().invoke(
        main,
        [
            "orders",
            "schedule-roll",
            "--account",
            "ibkr:U1",
            "--contract",
            far,
            "--to-expiry",
            "2030-12-27",
            "--quantity",
            "2",
            "--max-price",
            "1.5",
        ],
    )
    assert (
        bad.exit_code == 2
        and "needs all of --max-price, --max-size and --valid-until" in bad.output
    )
    out = _ok(
        [
            "orders",
            "schedule-roll",
            "--account",
            "ibkr:U1",
            "--contract",
            far,
            "--to-expiry",
            "2030-12-27",
            "--quantity",
            "2",
            "--max-price",
            "1.5",
            "--max-size",
            "2",
            "--valid-until",
            "2030-12-20T16:00-05:00",
        ]
    )
    match = re.search(r"roll (ROLL-[0-9a-f]+) scheduled for 2030-12-20 15:45 New York", out)
    assert match is not None, out
    assert "standing confirmation up to +1.50 net, 2 lots" in out
    assert "schedules run: 0" in _ok(
        ["orders", "run-schedules"]
    )  # not due: nothing built, no broker asked
    assert f"{match.group(1)}: cancelled" in _ok(["orders", "cancel", match.group(1)])


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_twap_is_proposed_and_cancelled_from_the_command_line(store: GroupStore) -> None:
    out = _ok(
        [
            "orders",
            "twap",
            "--account",
            "ibkr:U1",
            "--contract",
            "SPX|OPT|SPX|2030-12-20|5000|P",
            "--side",
            "BUY",
            "--quantity",
            "6",
            "--limit",
            "12.5",
            "--minutes",
            "30",
            "--slices",
            "3",
        ]
    )
    parent = re.search(r"TWAP (SLC-[0-9a-f]+) proposed: 6 in 3 slices", out)
    assert parent is not None, out
    refused = CliRunner().invoke(main, ["orders", "stage", parent.group(1)])
    assert (
        refused.exit_code != 0 and "TWAP/VWAP parent" in refused.output
    )  # never placed as one order
    cancelled = _ok(["orders", "cancel", parent.group(1)])
    assert f"slicer {parent.group(1)}: stopped" in cancelled
    demo = CliRunner().invoke(
        main,
        [
            "orders",
            "twap",
            "--account",
            "demo:DEMO-001",
            "--contract",
            PUT,
            "--side",
            "BUY",
            "--quantity",
            "2",
            "--limit",
            "20",
            "--minutes",
            "10",
            "--slices",
            "2",
        ],
    )
    assert demo.exit_code == 2 and "closes only" in demo.output
