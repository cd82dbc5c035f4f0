"""``portfolio alerts``: list recent alerts with their acknowledgement and delivery state,
and acknowledge one (which stops its escalation).  Attached by ``cli._attach_subcommands``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from portfolio_pipeline.cli_orders import cli_actor

if TYPE_CHECKING:
    from portfolio_pipeline.storage import Database

__all__ = ["alerts"]

UNKNOWN_ALERT_EXIT = 2


def _database() -> Database:
    from portfolio_pipeline.storage import Database

    db = Database()
    db.migrate()
    return db


@click.group()
def alerts() -> None:
    """Alerts raised to people: list them, acknowledge one."""


@alerts.command("list")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000),
              help="How many of the newest alerts.")
@click.option("--unacked", is_flag=True, help="Only alerts nobody has acknowledged.")
def list_cmd(limit: int, unacked: bool) -> None:
    """Recent alerts, newest first: time (New York), short id, key, type, severity, ack,
    deliveries."""
    from portfolio_pipeline.exchange_calendar import NEW_YORK
    from portfolio_pipeline.notify.store import short_id
    from portfolio_pipeline.storage.notifications import list_alerts

    with _database() as db:
        found = list_alerts(db, limit=limit, unacknowledged_only=unacked)
    if not found:
        click.echo("no alerts")
        return
    for alert, deliveries in found:
        when = alert.created_at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")
        ack = (
            f"acked by {alert.acknowledged_by} "
            f"{alert.acknowledged_at.astimezone(NEW_YORK).strftime('%Y-%m-%d %H:%M %Z')}"
            if alert.acknowledged_at is not None
            else "UNACKED"
        )
        sent = ", ".join(f"{c}={s}" for c, s in deliveries.items()) or "no deliveries"
        click.echo(f"{when}  {short_id(alert.alert_key)}  {alert.alert_key}  "
                   f"[{alert.type}/{alert.severity}]  {ack}  ({sent})")
        click.echo(f"    {alert.title}")


@alerts.command("ack")
@click.argument("alert_id")
@click.option("--by", "who", default=None, help="Who acknowledges (default: cli:<user>).")
@click.pass_context
def ack_cmd(ctx: click.Context, alert_id: str, who: str | None) -> None:
    """Acknowledge alert ALERT_ID: its key or short id, as `portfolio alerts list` and
    every alert message show it."""
    from portfolio_pipeline.exchange_calendar import NEW_YORK
    from portfolio_pipeline.storage.notifications import acknowledge, get_alert

    by = who or cli_actor()
    with _database() as db:
        try:
            new = acknowledge(db, alert_id, by)
        except KeyError:
            click.echo(f"error: no alert with id {alert_id!r}", err=True)
            ctx.exit(UNKNOWN_ALERT_EXIT)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--by") from None
        stored = get_alert(db, alert_id)
    if new:
        click.echo(f"acknowledged {alert_id} by {by}")
    elif stored is not None and stored.acknowledged_at is not None:
        when = stored.acknowledged_at.astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")
        click.echo(f"{alert_id} was already acknowledged by {stored.acknowledged_by} at {when}")


@alerts.command("test")
@click.option("--channel", "only", default=None, help="Only this channel (default: every configured one).")
def test_cmd(only: str | None) -> None:
    """Send a test message through each configured channel and report each outcome."""
    from datetime import UTC, datetime

    from portfolio_pipeline.cli_errors import FAILED, CliError
    from portfolio_pipeline.config import ConfigError, load_platform_config
    from portfolio_pipeline.exchange_calendar import NEW_YORK
    from portfolio_pipeline.notify.channels import DeliveryError, OutgoingMessage, build_channel
    from portfolio_pipeline.notify.secrets import MissingSecretError
    from portfolio_pipeline.paths import config_dir

    config = load_platform_config(config_dir())
    notifications = config.notifications
    if notifications is None or not notifications.channels:
        raise CliError(f"{config.directory / 'notifications.yaml'}: no notification channel configured")
    names = list(notifications.channels)
    if only is not None and only not in names:
        raise CliError(f"--channel {only!r}: not configured in {config.directory / 'notifications.yaml'} "
                       f"(configured: {', '.join(names)})")
    now = datetime.now(UTC).astimezone(NEW_YORK).strftime("%Y-%m-%d %H:%M %Z")
    failed = 0
    for name in [only] if only is not None else names:
        message = OutgoingMessage(title="portfolio: test message",
                                  text=f"Test message from `portfolio alerts test` at {now} (channel {name}).")
        try:
            build_channel(name, notifications.channels[name]).send(message)
        except (MissingSecretError, ConfigError, DeliveryError, OSError) as exc:
            failed += 1
            click.echo(f"{name:<12} FAILED  {exc}")
        else:
            click.echo(f"{name:<12} delivered")
    if failed:
        raise CliError(f"{failed} of {len([only] if only else names)} channel(s) did not deliver", exit_code=FAILED)
