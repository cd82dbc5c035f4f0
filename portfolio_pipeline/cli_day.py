"""The trading day at the command line: ``portfolio status`` and ``portfolio report``.

Both read the stored record (the latest session, or ``--date``); ``report`` writes the
daily risk pack (``analytics/risk_pack.py``) and can serve it on 127.0.0.1, since browsers
refuse ``file://`` links from the Dagster UI.  Attached by ``cli._attach_subcommands``.
"""

from __future__ import annotations

import functools
import http.server
from datetime import date, datetime
from typing import Any

import click

from portfolio_pipeline.cli_errors import CliError

__all__ = ["report", "status"]

DATE = click.DateTime(["%Y-%m-%d"])


def pick_session(sessions: list[date], when: datetime | None) -> date:
    """``--date`` (which must be stored) or the latest stored session."""
    if not sessions:
        raise CliError("no session stored yet: run `portfolio demo` or `portfolio run` first")
    if when is None:
        return sessions[-1]
    day = when.date()
    if day not in sessions:
        raise CliError(f"--date {day}: no session stored there (stored: {sessions[0]} .. {sessions[-1]})")
    return day


def _money(x: Any, signed: bool = False) -> str:
    from portfolio_pipeline.analytics.risk_pack import usd

    return usd(x, signed=signed)


def account_labels() -> dict[str, str]:
    """account id -> display name from ``accounts.yaml`` (empty when it cannot be read)."""
    from portfolio_pipeline.config import ConfigError, load_platform_config
    from portfolio_pipeline.paths import config_dir

    try:
        return {a.account_id: a.label for a in load_platform_config(config_dir()).accounts.book()}
    except ConfigError:
        return {}


def _pick_accounts(name: str | None, stored: list[tuple[str, str]], labels: dict[str, str]
                   ) -> list[tuple[str, str] | None]:
    """``--account``: None (the book only), ``all`` (the book, then every stored account), or
    one account by its accounts.yaml name, display name or account id."""
    if name is None:
        return [None]
    if name == "all":
        return [None, *stored]
    wanted = {name}
    try:
        from portfolio_pipeline.config import load_platform_config
        from portfolio_pipeline.paths import config_dir

        wanted.add(load_platform_config(config_dir()).accounts.named(name).account_id)
    except Exception:  # an account only in the record (e.g. removed from accounts.yaml) is still shown
        pass
    wanted |= {a for a, label in labels.items() if label == name}
    hit = [s for s in stored if s[1] in wanted]
    if not hit:
        known = ", ".join(f"{labels.get(a, a)} ({a})" for _, a in stored) or "none"
        raise CliError(f"--account {name}: no such account in the stored session (accounts: {known}; or 'all')")
    return list(hit)


@click.command("status")
@click.option("--date", "when", type=DATE, default=None, help="Session (default: the latest stored).")
@click.option("--account", "account", default=None, metavar="NAME|all",
              help="One account (accounts.yaml name, display name or id), or 'all': the consolidated "
                   "book then every account (default: the consolidated book).")
def status(when: datetime | None, account: str | None) -> None:
    """The book at a glance: NLV, P&L, Greeks by underlying, regime, limits, orders, exit signals."""
    from portfolio_pipeline.analytics.risk_pack import (
        BOOK,
        load_pack,
        stored_accounts,
        stored_sessions,
    )
    from portfolio_pipeline.domain.orders import OrderStatus
    from portfolio_pipeline.orders.store import OrderStore
    from portfolio_pipeline.storage import Database

    labels = account_labels()
    with Database() as database:
        database.migrate()
        with database.connect() as conn:
            day = pick_session(stored_sessions(conn), when)
            stored = stored_accounts(conn, day)
            scopes = _pick_accounts(account, stored, labels)
            packs = [load_pack(conn, day, s or BOOK, None if s is None else labels.get(s[1], s[1])) for s in scopes]
        waiting = OrderStore(database).list_orders([OrderStatus.PROPOSED, OrderStatus.STAGED, OrderStatus.SHOWN])
    click.echo(f"session {day} (latest stored)" if when is None else f"session {day}")
    for pack in packs:
        _print_status(pack, stored, labels, several=len(stored) > 1)
    if len(scopes) == 1 and scopes[0] is not None:
        waiting = [o for o in waiting if o.account_id == scopes[0][1]]
    click.echo(f"Orders waiting for a person: {len(waiting) or 'none'}")
    for o in waiting:
        legs = " / ".join(f"{leg.action} {leg.contract.key}" for leg in o.legs)
        click.echo(f"  {o.order_id}  {o.account_id}  {o.status.value:<8} {o.quantity} x {legs}")


def _print_status(pack: Any, stored: list[tuple[str, str]], labels: dict[str, str], *, several: bool) -> None:
    from portfolio_pipeline.analytics.risk_pack import limit_rows, pct, var_breaches
    from portfolio_pipeline.domain.symbols import AGGREGATE

    day = pack.session
    today = pack.today
    if several or not pack.is_book:
        who = "consolidated book" if pack.is_book else f"account {pack.label} ({pack.scope[0]}:{pack.scope[1]})"
        click.echo(f"== {who}")
    if today is None:
        click.echo("  no returns row stored for this session")
        return
    margin = next((r for r in pack.margin if r["session_date"] == day), None)
    click.echo(f"  NLV ${_money(today['nlv'])}   day P&L ${_money(today['pnl'], True)} "
               f"({pct(today['twr'], 2, signed=True)})   drawdown {pct(today['drawdown'])}"
               + (f"   external flow ${_money(today['external_flow'], True)}" if today["external_flow"] else ""))
    if margin is not None:
        click.echo(f"  regime {margin['regime']}   VIX {float(margin['vix']):.2f}   "
                   f"margin {pct(margin['margin_utilisation'])} of NLV")
    if pack.is_book and several:
        click.echo("  accounts:")
        for b, a in stored:
            row = next((r for r in pack.scopes if (r["broker"], r["account_id"]) == (b, a)), None)
            nlv = _money(row["nlv"]) if row else "–"
            flag = f"{row['breaches']} limit(s) breached: {row['breached_metrics']}" if row and row["breaches"] else "ok"
            click.echo(f"    {labels.get(a, a):<24} {b}:{a:<12} NLV ${nlv:>12}   {flag}")
    for vb in var_breaches(pack):
        click.echo(f"  VaR {vb.label}: {'BREACH' if vb.breached else 'within'} "
                   f"(day ${_money(vb.day_pnl, True)} vs prior VaR ${_money(vb.prior_var)})")
    click.echo("Greeks by underlying ($):")
    click.echo(f"  {'underlying':<10} {'beta-wtd delta':>15} {'gamma/1%':>12} {'theta/day':>11} {'vega/pt':>10}")
    for r in sorted(pack.by_underlying, key=lambda r: (r["underlying"] == AGGREGATE, r["underlying"])):
        name = ("book" if pack.is_book else "account") if r["underlying"] == AGGREGATE else r["underlying"]
        click.echo(f"  {name:<10} {_money(r['beta_weighted_dollar_delta']):>15} {_money(r['dollar_gamma_1pct']):>12} "
                   f"{_money(r['theta_per_day']):>11} {_money(r['vega_per_point']):>10}")
    mine = "book" if pack.is_book else f"{pack.scope[0]}:{pack.scope[1]}"
    click.echo(f"Limits ({'book' if pack.is_book else pack.label}):")
    for r in limit_rows(pack):
        if r["scope"] != mine:
            continue
        flag = "BREACH" if r["breached"] else "ok"
        if "count" in r:
            click.echo(f"  {r['metric']:<24} {r['count'] or 0:>10g} held, 0 allowed  {flag}")
            continue
        click.echo(f"  {r['metric']:<24} ${_money(r['value_usd']):>10} of ${_money(r['limit_usd']):>10} "
                   f"({pct(r['utilisation'], 0):>5} used)  {flag}")
    ids = {str(r["strategy_id"]) for r in pack.strategies}
    signals = sorted((sid, life) for sid, life in pack.lifecycle.items()
                     if life.get("status") in ("red", "yellow") and (pack.is_book or sid in ids))
    click.echo(f"Exit signals: {len(signals) or 'none'}")
    for sid, life in signals:
        click.echo(f"  {life['status']:<6} {sid}  {life.get('message') or life.get('rule') or ''}")


@click.command("report")
@click.option("--date", "when", type=DATE, default=None, help="Session (default: the latest stored).")
@click.option("--all", "every", is_flag=True, help="Write the pack of every stored session.")
@click.option("--serve", is_flag=True, help="Serve the reports on 127.0.0.1 until Ctrl-C.")
@click.option("--port", default=None, type=click.IntRange(0, 65535),
              help="Port for --serve (default 8800, where the Dagster UI links point; 0: any free port).")
def report(when: datetime | None, every: bool, serve: bool, port: int | None) -> None:
    """Write the daily risk pack (HTML) of a session and the index; optionally serve them."""
    from portfolio_pipeline.analytics.risk_pack import (
        DEFAULT_PORT,
        INDEX_NAME,
        pack_name,
        stored_sessions,
        write_packs,
    )
    from portfolio_pipeline.paths import reports_dir
    from portfolio_pipeline.storage import Database

    directory = reports_dir()
    with Database() as database:
        database.migrate()
        with database.connect() as conn:
            sessions = stored_sessions(conn)
            day = pick_session(sessions, when)
            written = write_packs(conn, sessions if every else [day], directory, account_labels())
    click.echo(f"risk pack {day}: {directory / pack_name(day)}" + (f" (+{len(written) - 1} more)" if every else ""))
    click.echo(f"index: {directory / INDEX_NAME}")
    if not serve:
        return
    port = DEFAULT_PORT if port is None else port
    handler = functools.partial(_QuietHandler, directory=str(directory))
    try:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        raise CliError(f"--port {port}: cannot listen on 127.0.0.1 ({exc.strerror})", exit_code=1) from None
    port = int(server.server_address[1])
    click.echo(f"serving http://127.0.0.1:{port}/{pack_name(day)}  (index: http://127.0.0.1:{port}/; Ctrl-C stops)")
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            click.echo("stopped")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the reports directory; requests are not echoed to the console."""

    def log_message(self, format: str, *args: Any) -> None:
        return
