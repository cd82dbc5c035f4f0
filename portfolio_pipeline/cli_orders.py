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
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from portfolio_pipeline.cli_types import FiniteFloat, LazyChoice

if TYPE_CHECKING:  # imported in the command bodies: building the command tree stays light
    from portfolio_pipeline.brokers.base import OrderBroker
    from portfolio_pipeline.domain.orders import Order
    from portfolio_pipeline.orders import OrderCommands
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
        try:
            res = asyncio.run(cmds.show(order_id, actor=cli_actor()))
        except _transition_errors() as exc:
            _fail(exc)
    _echo(res.text)
    _echo(f"\nTo transmit: portfolio orders confirm {order_id} {res.token}")


@orders.command("confirm")
@click.argument("order_id")
@click.argument("token")
def confirm_cmd(order_id: str, token: str) -> None:
    """Transmit ORDER_ID after 'show' (TOKEN is the one 'show' printed)."""
    db, cmds = _commands()
    with db:
        try:
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
        unknown = cmds.store.list_orders([OrderStatus.SENT_UNKNOWN])
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
