"""``portfolio strategies ...``: manual names, types and groupings of strategies.

``tag`` writes the ``strategy_overrides`` table (one row per account and strategy id);
the next ``strategy_groups`` run applies it and auto-tagging never overwrites it.  An
entry for the same account and id in ``config/strategies.yaml`` wins over the table.
The lead attaches :data:`strategies` to the ``portfolio`` command group.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import get_args

import click

from portfolio_pipeline.cli_types import LazyChoice

__all__ = ["strategies"]


def _strategy_types() -> tuple[str, ...]:
    from portfolio_pipeline.domain.strategies.legs import StrategyType

    return get_args(StrategyType)


def _legs(values: tuple[str, ...]) -> dict[str, float] | None:
    legs: dict[str, float] = {}
    for value in values:
        key, sep, qty = value.rpartition("=")
        try:
            number = float(qty)
        except ValueError:
            number = math.nan
        if not sep or not key or not math.isfinite(number) or number == 0:
            raise click.BadParameter(
                f"{value!r}: expected POSITION_KEY=QUANTITY with a non-zero quantity, "
                "e.g. 'SPX|OPT|SPXW|2018-03-16|2300|P=1'", param_hint="--leg")
        legs[key] = number
    return legs or None


@click.group()
def strategies() -> None:
    """Name, re-type or group strategies by hand."""


@strategies.command("tag")
@click.argument("strategy_id")
@click.option("--account", "account_id", required=True, help="Account id of the strategy.")
@click.option("--name", default=None, help="A display name.")
@click.option("--type", "strategy_type", type=LazyChoice(_strategy_types), default=None,
              help="Force the strategy type (auto-tagging will not change it).")
@click.option("--leg", "legs", multiple=True, metavar="KEY=QTY",
              help="Claim a position quantity for this strategy (repeatable).")
def tag(strategy_id: str, account_id: str, name: str | None, strategy_type: str | None,
        legs: tuple[str, ...]) -> None:
    """Store a manual name/type/grouping for STRATEGY_ID (replaces an earlier one)."""
    from sqlalchemy import delete

    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.tables import strategy_overrides as t

    if len(strategy_id) > 64:
        raise click.BadParameter("at most 64 characters", param_hint="STRATEGY_ID")
    _check_account(account_id)
    claimed = _legs(legs)
    if name is None and strategy_type is None and claimed is None:
        raise click.UsageError("give at least one of --name, --type or --leg")
    row = {"account_id": account_id, "strategy_id": strategy_id, "name": name,
           "strategy_type": strategy_type, "legs": claimed, "updated_at": datetime.now(UTC)}
    with Database() as database:
        database.migrate()
        with database.begin() as conn:
            conn.execute(delete(t).where(t.c.account_id == account_id, t.c.strategy_id == strategy_id))
            conn.execute(t.insert(), [row])
    click.echo(f"tagged {account_id}/{strategy_id}: name={name!r} type={strategy_type!r} "
               f"legs={len(claimed or {})}")


@strategies.command("untag")
@click.argument("strategy_id")
@click.option("--account", "account_id", required=True)
def untag(strategy_id: str, account_id: str) -> None:
    """Remove the manual override of STRATEGY_ID (auto-tagging takes over again)."""
    from sqlalchemy import delete

    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.tables import strategy_overrides as t

    with Database() as database:
        database.migrate()
        with database.begin() as conn:
            n = conn.execute(delete(t).where(t.c.account_id == account_id,
                                             t.c.strategy_id == strategy_id)).rowcount
    click.echo(f"removed {n} override(s) of {account_id}/{strategy_id}")


def _check_account(account_id: str) -> None:
    """``--account`` must name an account of config/accounts.yaml (a typo would tag nothing)."""
    from portfolio_pipeline.cli_errors import CliError
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.paths import config_dir

    config = load_platform_config(config_dir())
    known = [a.account_id for a in config.accounts.book()]
    if account_id not in known:
        raise CliError(f"--account {account_id!r}: no such account in {config.directory / 'accounts.yaml'} "
                       f"(configured: {', '.join(known) or 'none'})")


@strategies.command("list")
@click.option("--date", "when", type=click.DateTime(["%Y-%m-%d"]), default=None,
              help="Session (default: the latest stored).")
def list_overrides(when: datetime | None) -> None:
    """Open strategies (Greeks, P&L, days in trade, traffic light), then the manual overrides."""
    from sqlalchemy import select

    from portfolio_pipeline.analytics.risk_pack import load_pack, stored_sessions, usd
    from portfolio_pipeline.cli_day import pick_session
    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.tables import strategy_overrides as t

    with Database() as database:
        database.migrate()
        with database.connect() as conn:
            sessions = stored_sessions(conn)
            pack = load_pack(conn, pick_session(sessions, when)) if sessions or when else None
            rows = conn.execute(select(t).order_by(t.c.account_id, t.c.strategy_id)).mappings().all()
    if pack is not None:
        open_ = [r for r in pack.strategies if r["status"] == "open"]
        click.echo(f"open strategies {pack.session}: {len(open_) or 'none'}")
        if open_:
            click.echo(f"  {'light':<6} {'strategy':<26} {'type':<18} {'days':>4} {'DTE':>4} {'day P&L $':>10} "
                       f"{'P&L $':>10} {'delta $':>10} {'gamma/1% $':>10} {'theta $/d':>9} {'vega $/pt':>9}  signal")
        for row in open_:
            life = pack.lifecycle.get(str(row["strategy_id"]), {})
            click.echo(
                f"  {life.get('status') or '-':<6} {row['strategy_id']:<26} {row['strategy_type']:<18} "
                f"{life.get('days_in_trade', '-'):>4} {life.get('dte') if life.get('dte') is not None else '-':>4} "
                f"{usd(row['daily_pnl'], signed=True):>10} {usd(row['cumulative_pnl'], signed=True):>10} "
                f"{usd(row['dollar_delta']):>10} {usd(row['dollar_gamma_1pct']):>10} {usd(row['theta_per_day']):>9} "
                f"{usd(row['vega_per_point']):>9}  {life.get('message') or ''}")
    click.echo("manual overrides:" if rows else "no manual overrides")
    for r in rows:
        click.echo(f"  {r['account_id']}\t{r['strategy_id']}\t{r['strategy_type'] or '-'}\t"
                   f"{r['name'] or '-'}\t{len(r['legs'] or {})} leg(s)")
