"""``portfolio orders``: list, show, confirm, reject, stage and expire staged orders.

Transmission needs two steps by a person: ``show ID`` prints the WhatIf result and every
broker warning and a one-time token; ``confirm ID TOKEN`` transmits.  The lead attaches
this group with ``main.add_command(orders)``.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import click

from portfolio_pipeline.brokers.base import BrokerAdapter
from portfolio_pipeline.domain.errors import IllegalTransitionError
from portfolio_pipeline.domain.orders import Order, OrderStatus
from portfolio_pipeline.orders import OrderCommands, OrderStore
from portfolio_pipeline.storage import Database

__all__ = ["cli_actor", "orders"]


def cli_actor() -> str:
    """Who acts from the command line: ``cli:<login name>`` (``cli:unknown`` if none)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def _broker_factory() -> Callable[[Order], BrokerAdapter]:
    """Adapters built lazily per (broker, account) from config/accounts.yaml."""
    from portfolio_pipeline.brokers.factory import make_adapter
    from portfolio_pipeline.clock import Clock, SettableClock, system_clock
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.paths import config_dir

    config = load_platform_config(config_dir())
    cache: dict[tuple[str, str], BrokerAdapter] = {}

    def broker_for(order: Order) -> BrokerAdapter:
        key = (order.broker, order.account_id)
        if key not in cache:
            accounts = [a for a in config.accounts.accounts if a.broker == order.broker and a.account_id == order.account_id]
            if not accounts:
                raise click.ClickException(f"order {order.order_id}: no account {order.broker}:{order.account_id} configured")
            # The demo broker lives in replayed time: it answers as of the order's moment.
            clock: Clock = SettableClock(order.created_at) if order.broker == "demo" else system_clock
            cache[key] = make_adapter(accounts[0].broker, accounts, config.instruments, clock)
        return cache[key]

    return broker_for


def _commands() -> tuple[Database, OrderCommands]:
    db = Database()
    db.migrate()
    return db, OrderCommands(OrderStore(db), _broker_factory())


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


@click.group()
def orders() -> None:
    """Hedge proposals and staged orders (two-step confirmation)."""


@orders.command("list")
@click.option("--status", "statuses", multiple=True, type=click.Choice([s.value for s in OrderStatus]),
              help="Filter by status (repeatable); default: open orders.")
@click.option("--all", "show_all", is_flag=True, help="Every status.")
def list_cmd(statuses: tuple[str, ...], show_all: bool) -> None:
    """List orders (default: proposed, staged and shown)."""
    db, cmds = _commands()
    with db:
        wanted = None if show_all else [OrderStatus(s) for s in statuses] or [
            OrderStatus.PROPOSED, OrderStatus.STAGED, OrderStatus.SHOWN]
        rows = cmds.store.list_orders(wanted)
    if not rows:
        click.echo("no orders")
    for o in rows:
        legs = " / ".join(f"{leg.action} {leg.contract.key}" for leg in o.legs)
        click.echo(f"{o.order_id}  {o.status.value:<11} {o.created_at:%Y-%m-%d %H:%M}  {o.quantity} x {legs} @ {o.limit_price:.2f}")


@orders.command("stage")
@click.argument("order_id")
@click.option("--ttl-minutes", type=float, default=60.0, show_default=True)
def stage_cmd(order_id: str, ttl_minutes: float) -> None:
    """Stage a proposed order at the broker (never transmits)."""
    db, cmds = _commands()
    with db:
        try:
            o = asyncio.run(cmds.stage(order_id, actor=cli_actor(), ttl=timedelta(minutes=ttl_minutes)))
        except (IllegalTransitionError, LookupError) as exc:
            _fail(exc)
    click.echo(f"staged {o.order_id}; next: portfolio orders show {o.order_id}")


@orders.command("show")
@click.argument("order_id")
def show_cmd(order_id: str) -> None:
    """Show the WhatIf result and every broker warning; issues the confirmation token."""
    db, cmds = _commands()
    with db:
        try:
            res = asyncio.run(cmds.show(order_id, actor=cli_actor()))
        except (IllegalTransitionError, LookupError) as exc:
            _fail(exc)
    click.echo(res.text)
    click.echo(f"\nTo transmit: portfolio orders confirm {order_id} {res.token}")


@orders.command("confirm")
@click.argument("order_id")
@click.argument("token")
def confirm_cmd(order_id: str, token: str) -> None:
    """Transmit ORDER_ID after 'show' (TOKEN is the one 'show' printed)."""
    db, cmds = _commands()
    with db:
        try:
            o = asyncio.run(cmds.confirm(order_id, token, actor=cli_actor()))
        except (IllegalTransitionError, LookupError) as exc:
            _fail(exc)
    click.echo(f"{o.order_id}: {o.status.value} (broker order {o.broker_order_id})")


@orders.command("reject")
@click.argument("order_id")
@click.option("--reason", default="", help="Recorded in the audit trail.")
def reject_cmd(order_id: str, reason: str) -> None:
    """Reject a proposed/staged order."""
    db, cmds = _commands()
    with db:
        try:
            o = asyncio.run(cmds.reject(order_id, actor=cli_actor(), reason=reason))
        except (IllegalTransitionError, LookupError) as exc:
            _fail(exc)
    click.echo(f"{o.order_id}: {o.status.value}")


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
            click.echo(f"{row['ts']:%Y-%m-%d %H:%M:%S}  {row['actor']:<20} {row['from_status'] or '-':>11} -> "
                       f"{row['to_status']:<11} {row['detail'].get('detail', '')}")
