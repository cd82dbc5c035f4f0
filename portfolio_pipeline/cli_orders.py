"""``portfolio orders``: list, stage, show, confirm, reject, reconcile, expire, audit.

Transmission needs two steps by a person: ``show ID`` (stages a proposed order first)
prints the WhatIf result and every broker warning and a one-time token; ``confirm ID
TOKEN`` transmits.  Every command talks to the order's broker (IBKR: on the designated
order client id, never a fallback id).  Text from brokers and the database is printed
with bidirectional control characters escaped.  The lead attaches this group with
``main.add_command(orders)``.
"""

from __future__ import annotations

import asyncio
import functools
import getpass
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import click

from portfolio_pipeline.cli_types import FiniteFloat, LazyChoice, SessionDate

if TYPE_CHECKING:  # imported in the command bodies: building the command tree stays light
    from portfolio_pipeline.brokers.base import OrderBroker
    from portfolio_pipeline.domain.orders import Order
    from portfolio_pipeline.orders import OrderCommands
    from portfolio_pipeline.orders.groups import GroupCommands
    from portfolio_pipeline.orders.schedules import OrderSchedules
    from portfolio_pipeline.orders.slicer import Slicer
    from portfolio_pipeline.storage import Database

__all__ = ["cli_actor", "orders"]


def cli_actor() -> str:
    """Who acts from the command line: ``cli:<login name>`` (``cli:unknown`` if none)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


#: Bidirectional control characters (Trojan-source style reordering), printed escaped.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def safe_text(text: str) -> str:
    """``text`` with bidi control characters shown as ``\\uXXXX`` escapes."""
    if not any(ch in _BIDI for ch in text):
        return text
    return "".join(f"\\u{ord(ch):04x}" if ch in _BIDI else ch for ch in text)


def _echo(text: str, *, err: bool = False) -> None:
    click.echo(safe_text(text), err=err)


def _broker_factory() -> Callable[[Order], OrderBroker]:
    """Order adapters per (broker, account) from config/accounts.yaml (IBKR: order client id).

    The configuration is read when the first order needs its broker: ``list`` and
    ``audit`` only read the database and do not pay for loading (and validating) it."""

    @functools.cache
    def routing() -> Callable[[Order], OrderBroker]:
        from portfolio_pipeline.config import load_platform_config
        from portfolio_pipeline.orders.routing import order_broker_for
        from portfolio_pipeline.paths import config_dir, portfolio_home

        return order_broker_for(load_platform_config(config_dir()), lock_dir=portfolio_home() / "run")

    def broker_for(order: Order) -> OrderBroker:
        return routing()(order)

    return broker_for


def _commands() -> tuple[Database, OrderCommands]:
    from portfolio_pipeline.orders import OrderCommands, OrderStore
    from portfolio_pipeline.storage import Database

    db = Database()
    db.migrate()
    return db, OrderCommands(OrderStore(db), _broker_factory())


def _groups(cmds: OrderCommands) -> GroupCommands:
    from portfolio_pipeline.orders.groups import GroupCommands

    return GroupCommands(cmds)


def _schedules(cmds: OrderCommands) -> OrderSchedules:
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar
    from portfolio_pipeline.orders.schedules import OrderSchedules

    return OrderSchedules(cmds, calendar=ExchangeCalendar(), notify=lambda text: _echo(text))


def _slicer(cmds: OrderCommands) -> Slicer:
    from portfolio_pipeline.orders.slicer import Slicer

    return Slicer(cmds)


def _status_values() -> list[str]:
    from portfolio_pipeline.domain.orders import OrderStatus

    return [s.value for s in OrderStatus]


def _transition_errors() -> tuple[type[Exception], ...]:
    """What a refused transition or an unknown order id raises (reported as one line)."""
    from portfolio_pipeline.domain.errors import IllegalTransitionError

    return (IllegalTransitionError, LookupError)


def _fail(exc: Exception) -> None:
    raise click.ClickException(safe_text(str(exc))) from None


@click.group()
def orders() -> None:
    """Hedge proposals and staged orders (two-step confirmation)."""


@orders.command("list")
@click.option("--status", "statuses", multiple=True, type=LazyChoice(_status_values),
              help="Filter by status (repeatable); default: open orders.")
@click.option("--all", "show_all", is_flag=True, help="Every status.")
def list_cmd(statuses: tuple[str, ...], show_all: bool) -> None:
    """List orders (default: proposed, staged and shown)."""
    from portfolio_pipeline.domain.orders import OrderStatus

    db, cmds = _commands()
    with db:
        wanted = None if show_all else [OrderStatus(s) for s in statuses] or [
            OrderStatus.PROPOSED, OrderStatus.STAGED, OrderStatus.SHOWN]
        rows = cmds.store.list_orders(wanted)
    if not rows:
        click.echo("no orders")
    for o in rows:
        legs = " / ".join(f"{leg.action} {leg.contract.key}" for leg in o.legs)
        _echo(f"{o.order_id}  {o.status.value:<11} {o.created_at:%Y-%m-%d %H:%M}  {o.quantity} x {legs} @ {o.limit_price:.2f}")


@orders.command("stage")
@click.argument("order_id")
@click.option("--ttl-minutes", type=FiniteFloat(0, 7 * 24 * 60, min_open=True), default=60.0, show_default=True)
def stage_cmd(order_id: str, ttl_minutes: float) -> None:
    """Stage a proposed order at the broker (never transmits)."""
    db, cmds = _commands()
    with db:
        try:
            o = asyncio.run(cmds.stage(order_id, actor=cli_actor(), ttl=timedelta(minutes=ttl_minutes)))
        except _transition_errors() as exc:
            _fail(exc)
    _echo(f"staged {o.order_id}; next: portfolio orders show {o.order_id}")


@orders.command("show")
@click.argument("order_id")
def show_cmd(order_id: str) -> None:
    """Show the WhatIf result and every broker warning; issues the confirmation token.

    A proposed (or stale) order is staged at the broker first (never transmitted)."""
    db, cmds = _commands()
    with db:
        groups = _groups(cmds)
        try:
            if groups.store.exists(order_id):  # an order group: every leg, one token
                res = asyncio.run(groups.show(order_id, actor=cli_actor()))
            elif _slicer(cmds).is_parent(order_id):  # a TWAP parent: its WhatIf and plan, one token
                res = asyncio.run(_slicer(cmds).show(order_id, actor=cli_actor(), now=datetime.now(UTC)))  # type: ignore[assignment]
            else:
                res = asyncio.run(cmds.show(order_id, actor=cli_actor()))  # type: ignore[assignment]
        except _transition_errors() as exc:
            _fail(exc)
    _echo(res.text)
    _echo(f"\nTo transmit: portfolio orders confirm {order_id} {res.token}")


@orders.command("confirm")
@click.argument("order_id")
@click.argument("token")
def confirm_cmd(order_id: str, token: str) -> None:
    """Transmit ORDER_ID (an order or an order group) after 'show' (TOKEN is the one 'show' printed)."""
    db, cmds = _commands()
    with db:
        groups = _groups(cmds)
        try:
            if groups.store.exists(order_id):
                g = asyncio.run(groups.confirm(order_id, token, actor=cli_actor()))
                for leg in g.legs:
                    _echo(f"{leg.order.order_id} ({leg.role}): {leg.order.status.value} "
                          f"(broker order {leg.order.broker_order_id})")
                _echo(f"{g.group_id}: {g.status.value}")
                return
            if _slicer(cmds).is_parent(order_id):
                asyncio.run(_slicer(cmds).confirm(order_id, token, actor=cli_actor(), now=datetime.now(UTC)))
                _echo(f"{order_id}: confirmed; `portfolio orders run-schedules` sends each slice when it is due")
                return
            o = asyncio.run(cmds.confirm(order_id, token, actor=cli_actor()))
        except _transition_errors() as exc:
            _fail(exc)
    _echo(f"{o.order_id}: {o.status.value} (broker order {o.broker_order_id})")


@orders.command("reject")
@click.argument("order_id")
@click.option("--reason", default="", help="Recorded in the audit trail.")
def reject_cmd(order_id: str, reason: str) -> None:
    """Reject a proposed/staged order (cancelled at the broker first; exit 2 if that fails)."""
    db, cmds = _commands()
    with db:
        try:
            o = asyncio.run(cmds.reject(order_id, actor=cli_actor(), reason=reason))
        except _transition_errors() as exc:
            _fail(exc)
    _echo(f"{o.order_id}: {o.status.value}")


@orders.command("reconcile")
def reconcile_cmd() -> None:
    """Match local orders with the broker's (fills, cancels in TWS, stale staged orders)."""
    from portfolio_pipeline.domain.orders import OrderStatus

    db, cmds = _commands()
    with db:
        changed = asyncio.run(cmds.reconcile(actor=cli_actor()))
        resized = asyncio.run(_groups(cmds).reconcile(actor=cli_actor()))  # bracket children follow the entry
        unknown = cmds.store.list_orders([OrderStatus.SENT_UNKNOWN])
    for g in resized:
        _echo(f"{g.group_id}: {g.status.value}  children working "
              + ", ".join(f"{leg.role} {leg.quantity}" for leg in g.legs if leg.role != "entry"))
    for o in changed:
        _echo(f"{o.order_id}: {o.status.value}  {o.audit[-1].detail if o.audit else ''}")
    for o in unknown:  # the broker's record did not prove a transmission: the person decides
        _echo(f"{o.order_id}: still sent_unknown (broker order {o.broker_order_id}): check it in TWS; "
              "a Transmit button means it was never sent")
    click.echo(f"reconciled: {len(changed)} order(s) changed")


@orders.command("expire")
def expire_cmd() -> None:
    """Expire staged orders past their expiry."""
    db, cmds = _commands()
    with db:
        done = asyncio.run(cmds.expire_stale(actor=cli_actor(), now=datetime.now(UTC)))
    click.echo(f"expired {len(done)} order(s)")


@orders.command("audit")
@click.argument("order_id")
def audit_cmd(order_id: str) -> None:
    """The full audit trail of an order (who, when, what was shown)."""
    db, cmds = _commands()
    with db:
        trail = cmds.store.audit_trail(order_id)
        if not trail:
            from portfolio_pipeline.cli_errors import CliError

            raise CliError(f"no order with id {order_id!r} (see `portfolio orders list`)")
        for row in trail:
            _echo(f"{row['ts']:%Y-%m-%d %H:%M:%S}  {row['actor']:<20} {row['from_status'] or '-':>11} -> "
                  f"{row['to_status']:<11} {row['detail'].get('detail', '')}")


# ----------------------------------------------------------------------------- order groups and trailing stops

_PRICE = FiniteFloat(0, 1e9, min_open=True)


def _terms(account: str, contract: str, quantity: int, tif: str, session: date | None) -> dict[str, Any]:
    """Common order terms from the options (``--account BROKER:ID``, ``--contract KEY``)."""
    from portfolio_pipeline.demo_window import DEMO_END
    from portfolio_pipeline.domain.positions import contract_from_key

    broker, sep, account_id = account.partition(":")
    if not sep or not broker or not account_id:
        raise click.BadParameter(f"{account!r}: expected BROKER:ACCOUNT, e.g. ibkr:U1234567 or demo:DEMO-001",
                                 param_hint="--account")
    try:
        parsed = contract_from_key(contract, source="--contract")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--contract") from None
    if broker == "demo":  # the demo replays history: the order is placed at a replayed close
        day = session or DEMO_END
        created = datetime(day.year, day.month, day.day, 22, 0, tzinfo=UTC)
    elif session is not None:
        raise click.BadParameter("only for the demo broker", param_hint="--session")
    else:
        created = datetime.now(UTC)
    return {"broker": broker, "account_id": account_id, "contract": parsed, "quantity": quantity,
            "time_in_force": tif, "created_at": created}


def _leg_order(terms: dict[str, Any], action: str, limit: float = 0.0, **changes: Any) -> Order:
    from portfolio_pipeline.domain.orders import Order, OrderLeg

    return Order(order_id="new", broker=terms["broker"], account_id=terms["account_id"],
                 legs=(OrderLeg(terms["contract"], action),),  # type: ignore[arg-type]
                 quantity=terms["quantity"], limit_price=limit, created_at=terms["created_at"],
                 time_in_force=terms["time_in_force"], **changes)


def _stop_changes(stop: float | None, trail_percent: float | None, trail_amount: float | None) -> dict[str, Any]:
    given = [x is not None for x in (stop, trail_percent, trail_amount)]
    if sum(given) != 1:
        raise click.UsageError("give exactly one of --stop, --trail-percent, --trail-amount")
    if stop is not None:
        return {"order_type": "STP", "aux_price": stop}
    if trail_percent is not None:
        return {"order_type": "TRAIL", "trailing_percent": trail_percent}
    return {"order_type": "TRAIL", "aux_price": trail_amount}


def _order_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--account", required=True, help="BROKER:ACCOUNT as in accounts.yaml, e.g. demo:DEMO-001."),
        click.option("--contract", required=True,
                     help="Contract key as `orders list` prints it, e.g. 'SPX|OPT|SPXW|2018-03-16|2500|P'."),
        click.option("--quantity", type=click.IntRange(1, 100_000), required=True),
        click.option("--tif", type=click.Choice(["DAY", "GTC"]), default="GTC", show_default=True),
        click.option("--session", type=SessionDate(), default=None,
                     help="Demo broker only: the replayed session to place it in (default: the demo record's last)."),
    ]):
        fn = option(fn)
    return fn


def _stop_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed([
        click.option("--stop", type=_PRICE, default=None, help="Stop-loss trigger price (STP)."),
        click.option("--trail-percent", type=FiniteFloat(0, 100, min_open=True), default=None,
                     help="Stop-loss as a trailing stop, trailing by this percent (TRAIL)."),
        click.option("--trail-amount", type=_PRICE, default=None,
                     help="Stop-loss as a trailing stop, trailing by this many dollars (TRAIL)."),
    ]):
        fn = option(fn)
    return fn


def _record_group(kind: str, legs: list[tuple[str, Order]]) -> None:
    from portfolio_pipeline.domain.errors import InvalidDataError
    from portfolio_pipeline.orders.groups import build_group

    db, cmds = _commands()
    with db:
        try:
            group = build_group(kind, legs)  # type: ignore[arg-type]
        except InvalidDataError as exc:
            raise click.UsageError(str(exc)) from None
        _groups(cmds).store.insert(group, actor=cli_actor())
    _echo(f"{kind} {group.group_id} proposed: " + ", ".join(f"{leg.role} {leg.order.order_id}" for leg in group.legs))
    _echo(f"next: portfolio orders show {group.group_id}   (stages every leg, WhatIf, one token)")


@orders.command("bracket")
@_order_options
@click.option("--side", type=click.Choice(["BUY", "SELL"]), required=True, help="The entry's side.")
@click.option("--entry", "entry_price", type=_PRICE, required=True, help="Entry limit price.")
@click.option("--take-profit", type=_PRICE, required=True, help="Take-profit limit price.")
@_stop_options
def bracket_cmd(account: str, contract: str, quantity: int, tif: str, session: date | None, side: str,
                entry_price: float, take_profit: float, stop: float | None, trail_percent: float | None,
                trail_amount: float | None) -> None:
    """Propose a bracket: entry + take-profit + stop-loss as one group (show, then confirm)."""
    terms = _terms(account, contract, quantity, tif, session)
    close = "SELL" if side == "BUY" else "BUY"
    _record_group("bracket", [
        ("entry", _leg_order(terms, side, entry_price)),
        ("take_profit", _leg_order(terms, close, take_profit)),
        ("stop_loss", _leg_order(terms, close, **_stop_changes(stop, trail_percent, trail_amount))),
    ])


@orders.command("oco")
@_order_options
@click.option("--side", type=click.Choice(["BUY", "SELL"]), required=True,
              help="Side of both legs (SELL closes a long position).")
@click.option("--take-profit", type=_PRICE, required=True, help="Take-profit limit price.")
@_stop_options
def oco_cmd(account: str, contract: str, quantity: int, tif: str, session: date | None, side: str,
            take_profit: float, stop: float | None, trail_percent: float | None, trail_amount: float | None) -> None:
    """Propose an OCO pair: a take-profit limit and a stop; a fill of one cancels the other."""
    terms = _terms(account, contract, quantity, tif, session)
    _record_group("oco", [
        ("take_profit", _leg_order(terms, side, take_profit)),
        ("stop_loss", _leg_order(terms, side, **_stop_changes(stop, trail_percent, trail_amount))),
    ])


@orders.command("trail")
@_order_options
@click.option("--side", type=click.Choice(["BUY", "SELL"]), required=True)
@click.option("--percent", type=FiniteFloat(0, 100, min_open=True), default=None, help="Trail by this percent.")
@click.option("--amount", type=_PRICE, default=None, help="Trail by this many dollars.")
def trail_cmd(account: str, contract: str, quantity: int, tif: str, session: date | None, side: str,
              percent: float | None, amount: float | None) -> None:
    """Propose a trailing stop (IBKR TRAIL); then `show` and `confirm` it like any order."""
    import secrets

    terms = _terms(account, contract, quantity, tif, session)
    changes = _stop_changes(None, percent, amount)
    db, cmds = _commands()
    with db:
        if terms["broker"] != "ibkr":  # no native trailing stop: the platform trails and asks again
            s = _schedules(cmds).add_trail(
                broker=terms["broker"], account_id=terms["account_id"], contract=terms["contract"], side=side,
                quantity=quantity, percent=percent, amount=amount, by=cli_actor(), now=terms["created_at"])
            _echo(f"platform-side trail {s.schedule_id}: {terms['broker']} has no native trailing stop here; "
                  "each `portfolio orders run-schedules` may stage a new stop and ask you to confirm it "
                  "(a live stop is never re-priced)")
            return
        order = replace(_leg_order(terms, side, **changes), order_id=f"TRL-{secrets.token_hex(4)}")
        cmds.store.insert(order, actor=cli_actor())
    _echo(f"trailing stop {order.order_id} proposed; next: portfolio orders show {order.order_id}")


@orders.command("cancel")
@click.argument("group_id")
@click.option("--reason", default="", help="Recorded in the audit trail.")
def cancel_cmd(group_id: str, reason: str) -> None:
    """Cancel an order group (every leg staged or live at the broker) or an order schedule."""
    db, cmds = _commands()
    with db:
        groups = _groups(cmds)
        schedules = _schedules(cmds)
        if _slicer(cmds).is_parent(group_id):
            report = asyncio.run(_slicer(cmds).cancel(group_id, actor=cli_actor(), now=datetime.now(UTC)))
            _echo(report.text())
            return
        if not groups.store.exists(group_id) and schedules.exists(group_id):
            try:
                sch = schedules.cancel(group_id, actor=cli_actor(), now=datetime.now(UTC))
            except _transition_errors() as exc:
                _fail(exc)
            _echo(f"{sch.schedule_id}: {sch.status}" + (f" (its order {sch.order_id} is unchanged)"
                                                        if sch.order_id else ""))
            return
        try:
            g = asyncio.run(groups.cancel(group_id, actor=cli_actor(), reason=reason))
        except _transition_errors() as exc:
            _fail(exc)
    for leg in g.legs:
        _echo(f"{leg.order.order_id} ({leg.role}): {leg.order.status.value}")
    _echo(f"{g.group_id}: {g.status.value}")


@orders.command("schedule-roll")
@click.option("--account", required=True, help="BROKER:ACCOUNT as in accounts.yaml.")
@click.option("--contract", required=True, help="The held option's key (as `orders list` prints it).")
@click.option("--to-expiry", type=SessionDate(), required=True, help="Expiry of the option rolled into.")
@click.option("--to-strike", type=_PRICE, default=None, help="Strike rolled into (default: the same).")
@click.option("--quantity", type=click.IntRange(1, 100_000), required=True)
@click.option("--at", "at_time", default="15:45", show_default=True, help="New York time (HH:MM) of the roll.")
@click.option("--on", "on_day", type=SessionDate(), default=None,
              help="Session to roll on (default: the held option's expiration session).")
@click.option("--max-price", type=FiniteFloat(-1e9, 1e9), default=None,
              help="Standing confirmation: the worst net price accepted (positive = net debit).")
@click.option("--max-size", type=click.IntRange(1, 100_000), default=None, help="Standing confirmation: max size.")
@click.option("--valid-until", default=None, help="Standing confirmation: ISO time it ends (with a UTC offset).")
def schedule_roll_cmd(account: str, contract: str, to_expiry: date, to_strike: float | None, quantity: int,
                      at_time: str, on_day: date | None, max_price: float | None, max_size: int | None,
                      valid_until: str | None) -> None:
    """Roll a position at a New York time on the exchange calendar (staged with a fresh WhatIf).

    With --max-price, --max-size and --valid-until (all three) a standing confirmation is
    given now: the roll is transmitted at its time only if it is inside those bounds (checked
    then, recorded in the audit trail); otherwise it waits for `show` and `confirm`."""
    from dataclasses import replace as dc_replace
    from datetime import time

    from portfolio_pipeline.domain.errors import InvalidDataError
    from portfolio_pipeline.domain.orders import ConfirmationBounds

    terms = _terms(account, contract, quantity, "DAY", None)
    held = terms["contract"]
    if not held.is_option:
        raise click.BadParameter("a roll is of an option", param_hint="--contract")
    try:
        at = time.fromisoformat(at_time)
    except ValueError:
        raise click.BadParameter(f"{at_time!r} is not HH:MM", param_hint="--at") from None
    standing = None
    given = [x is not None for x in (max_price, max_size, valid_until)]
    if any(given) and not all(given):
        raise click.UsageError("a standing confirmation needs all of --max-price, --max-size and --valid-until")
    if all(given):
        try:
            until = datetime.fromisoformat(str(valid_until))
        except ValueError:
            raise click.BadParameter(f"{valid_until!r} is not an ISO time", param_hint="--valid-until") from None
        if until.tzinfo is None:
            raise click.BadParameter("give a UTC offset, e.g. 2018-03-16T16:00-04:00", param_hint="--valid-until")
        standing = ConfirmationBounds(max_quantity=int(max_size or 0), worst_price=max_price, valid_until=until)
    new = dc_replace(held, expiry=to_expiry, strike=to_strike or held.strike,
                     underlying_expiry=None if held.sec_type != "FOP" else held.underlying_expiry)
    db, cmds = _commands()
    with db:
        try:
            s = _schedules(cmds).add_roll(broker=terms["broker"], account_id=terms["account_id"], held=held, new=new,
                                          quantity=quantity, day=on_day, at=at, standing=standing, by=cli_actor(),
                                          now=datetime.now(UTC))
        except InvalidDataError as exc:
            raise click.UsageError(str(exc)) from None
    assert s.run_at is not None
    from portfolio_pipeline.exchange_calendar import NEW_YORK

    _echo(f"roll {s.schedule_id} scheduled for {s.run_at.astimezone(NEW_YORK):%Y-%m-%d %H:%M} New York: "
          f"{quantity} x {held.key} -> {new.key}"
          + (f"; standing confirmation up to {max_price:+.2f} net, {max_size} lots, until {valid_until}"
             if standing else "; it will wait for your confirmation"))


@orders.command("run-schedules")
def run_schedules_cmd() -> None:
    """Run the due order schedules (rolls, platform-side trails); run it from cron or a scheduler."""
    db, cmds = _commands()
    with db:
        now = datetime.now(UTC)
        lines = asyncio.run(_schedules(cmds).run_due(now=now, actor=cli_actor()))
        slicer = _slicer(cmds)
        for parent_id in slicer.running():
            _echo(asyncio.run(slicer.step(parent_id, now=now, actor=cli_actor())).text())
    click.echo(f"schedules run: {len(lines)}")


@orders.command("twap")
@click.option("--account", required=True, help="BROKER:ACCOUNT as in accounts.yaml.")
@click.option("--contract", required=True, help="Contract key (as `orders list` prints it).")
@click.option("--side", type=click.Choice(["BUY", "SELL"]), required=True)
@click.option("--quantity", type=click.IntRange(1, 100_000), required=True)
@click.option("--limit", "limit_price", type=_PRICE, required=True, help="The worst price accepted for any slice.")
@click.option("--minutes", type=click.IntRange(1, 24 * 60), required=True, help="Window length from now.")
@click.option("--slices", type=click.IntRange(1, 500), required=True)
def twap_cmd(account: str, contract: str, side: str, quantity: int, limit_price: float, minutes: int,
             slices: int) -> None:
    """Propose a TWAP parent: `show` it, `confirm` it once; `run-schedules` sends each slice when due."""
    import secrets
    from datetime import timedelta as td

    from portfolio_pipeline.domain.errors import InvalidDataError

    terms = _terms(account, contract, quantity, "DAY", None)
    if terms["broker"] == "demo":
        raise click.BadParameter("the demo broker has closes only: a TWAP needs live quotes", param_hint="--account")
    parent = replace(_leg_order(terms, side, limit_price), order_id=f"SLC-{secrets.token_hex(4)}")
    start = terms["created_at"]
    db, cmds = _commands()
    with db:
        try:
            _slicer(cmds).create(parent, start=start, end=start + td(minutes=minutes), slices=slices, style="TWAP",
                                 actor=cli_actor())
        except InvalidDataError as exc:
            raise click.UsageError(str(exc)) from None
    _echo(f"TWAP {parent.order_id} proposed: {quantity} in {slices} slices over {minutes} min at {limit_price:.2f} "
          f"or better; next: portfolio orders show {parent.order_id}")
