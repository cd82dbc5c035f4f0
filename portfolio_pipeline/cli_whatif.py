"""``portfolio whatif``: a trade's effect on the stored book before anything is staged.

Attached by ``cli._attach_subcommands``; the numbers are
:func:`portfolio_pipeline.defs.stress.whatif.what_if`.
"""

from __future__ import annotations

import asyncio
import math
from datetime import datetime
from pathlib import Path
from typing import Any

import click

from portfolio_pipeline.cli_errors import CliError

__all__ = ["scenario", "whatif"]

DATE = click.DateTime(["%Y-%m-%d"])
PROFILE_MOVES = (-0.10, -0.05, 0.0, 0.05, 0.10)


def _usd(x: float, signed: bool = False) -> str:
    from portfolio_pipeline.analytics.risk_pack import usd

    return usd(x, signed=signed)


def _broker_whatif(account: str, legs: Any, trade_value: float, session_close: datetime) -> str:
    """The connected broker's WhatIf of the trade as one combo order (adapters that have it).

    The demo broker lives in replayed time: it is asked as of the what-if session's close;
    a real broker is asked now."""
    from datetime import UTC
    from functools import reduce

    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.domain.orders import Order, OrderLeg
    from portfolio_pipeline.orders.routing import order_broker_for
    from portfolio_pipeline.paths import config_dir, portfolio_home

    broker, _, account_id = account.partition(":")
    if not broker or not account_id:
        raise CliError(f"--account {account!r}: expected BROKER:ACCOUNT (e.g. demo:DEMO-001)")
    qty = [abs(int(p.leg.quantity)) for p in legs]
    n = reduce(math.gcd, qty)
    order = Order(
        order_id="whatif",
        broker=broker,
        account_id=account_id,
        legs=tuple(
            OrderLeg(p.leg.contract, "BUY" if p.leg.quantity > 0 else "SELL", q // n)
            for p, q in zip(legs, qty, strict=True)
        ),
        quantity=n,
        limit_price=round(trade_value / (n * legs[0].leg.multiplier), 2),
        created_at=session_close if broker == "demo" else datetime.now(UTC),
    )
    adapter = order_broker_for(
        load_platform_config(config_dir()), lock_dir=portfolio_home() / "run"
    )(order)
    what_if = getattr(adapter, "what_if", None)
    if what_if is None:
        return f"{broker}: this adapter has no WhatIf"
    result = asyncio.run(what_if(order))
    warn = "; ".join(result.warnings) or "none"
    return (
        f"{broker}:{account_id} WhatIf: initial margin {_usd(result.init_margin_change, True)}, maintenance "
        f"{_usd(result.maint_margin_change, True)}, commission {result.commission:,.2f}; warnings: {warn}"
    )


@click.command("whatif")
@click.argument("legs", nargs=-1, required=True)
@click.option(
    "--date", "when", type=DATE, default=None, help="Session (default: the latest stored)."
)
@click.option(
    "--broker-whatif",
    "account",
    default=None,
    metavar="BROKER:ACCOUNT",
    help="Also ask that account's broker for its WhatIf (adapters that have one).",
)
def whatif(legs: tuple[str, ...], when: datetime | None, account: str | None) -> None:
    """Greeks, limits, margin, VaR, stress grid and risk profile with and without a trade.

    Each LEG is 'buy|sell QTY INSTRUMENT [@ PRICE]', INSTRUMENT an OCC symbol
    ('SPXW  180316P02600000'), 'ROOT YYYY-MM-DD STRIKE{C|P}' or a stock/ETF root:

        portfolio whatif "sell 1 SPX 2018-03-16 2600P" "buy 1 SPX 2018-03-16 2550P"
    """
    from portfolio_pipeline.analytics.risk_pack import stored_sessions
    from portfolio_pipeline.cli_day import pick_session
    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.domain.trade_legs import parse_legs
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar
    from portfolio_pipeline.paths import config_dir
    from portfolio_pipeline.storage import Database

    config = load_platform_config(config_dir())
    parsed = parse_legs(legs, config.instruments)
    calendar = ExchangeCalendar()
    with Database() as database:
        database.migrate()
        with database.connect() as conn:
            day = pick_session(stored_sessions(conn), when)
            history = _history(conn, config, day)
            from portfolio_pipeline.defs.stress.whatif import what_if

            result = what_if(conn, day, parsed, config, calendar, history)
    _print(result)
    if account is not None:
        close = calendar.session_close(result.session)
        click.echo(_broker_whatif(account, result.legs, result.trade_value, close))


def _history(conn: Any, config: Any, day: Any) -> Any:
    """The shipped history on a demo-only configuration, else the stored market history."""
    from portfolio_pipeline.defs.marketdata.reader import uses_stored_history
    from portfolio_pipeline.defs.resources import PlatformResource
    from portfolio_pipeline.marketdata.history import MarketHistory
    from portfolio_pipeline.marketdata.store import StoredHistory
    from portfolio_pipeline.paths import config_dir

    if uses_stored_history(PlatformResource(config_dir=str(config_dir()))):
        return StoredHistory(conn, day)
    return MarketHistory()


def _print(r: Any) -> None:
    click.echo(f"what-if on session {r.session}")
    click.echo("legs:")
    for p in r.legs:
        click.echo(
            f"  {p.leg.text:<40} value {p.value:,.2f}  spot {p.spot:,.2f}  vol {100 * p.vol:.1f}% "
            f"({p.vol_source})"
        )
    click.echo(f"  trade value ${_usd(r.trade_value, True)} (+ pays, - receives)")
    click.echo(f"{'Greeks ($)':<22} {'before':>12} {'trade':>12} {'after':>12}")
    c = r.change
    for label, key, d in (
        ("beta-weighted delta", "beta_weighted_dollar_delta", c.beta_weighted_dollar_delta),
        ("gamma per 1%", "dollar_gamma_1pct", c.dollar_gamma_1pct),
        ("vega per point", "vega_per_point", c.vega_per_point),
        ("theta per day", "theta_per_day", c.theta_per_day),
    ):
        b = r.greeks_before[key]
        click.echo(f"  {label:<20} {_usd(b):>12} {_usd(d, True):>12} {_usd(b + d):>12}")
    click.echo(
        f"margin (demo model, maintenance): before ${_usd(r.margin_before)}  after ${_usd(r.margin_after)}  "
        f"change ${_usd(r.margin_after - r.margin_before, True)}"
    )
    click.echo("limits (value % of NLV, utilisation):")
    for lc in r.limits:
        b, a = lc.before, lc.after
        click.echo(
            f"  {b.metric:<20} {100 * b.value:+7.2f}% -> {100 * a.value:+7.2f}%   "
            f"{100 * b.utilisation:6.1f}% -> {100 * a.utilisation:6.1f}% of {100 * b.limit:.2f}%   {lc.effect}"
        )
    click.echo("VaR/CVaR, 1-day historical full revaluation ($):")
    for k in ("var_95", "cvar_95", "var_99", "cvar_99"):
        click.echo(
            f"  {k.replace('_', ' ').upper():<10} {_usd(r.var_before[k]):>12} -> {_usd(r.var_after[k]):>12}"
        )
    click.echo("stress grid, 0 days, P&L before -> after ($):")
    cols = list(dict.fromkeys(v for _, v, _, _ in r.grid))
    click.echo("  " + f"{'spot':>6} " + " ".join(f"{v:>23}" for v in cols))
    cells = {(s, v): (b, a) for s, v, b, a in r.grid}
    for s in sorted({s for s, _, _, _ in r.grid}):
        click.echo(
            f"  {s:+6.0%} "
            + " ".join(f"{_usd(cells[(s, v)][0]):>11}->{_usd(cells[(s, v)][1]):>10}" for v in cols)
        )
    worst_b = min(r.grid, key=lambda x: x[2])
    worst_a = min(r.grid, key=lambda x: x[3])
    click.echo(
        f"  worst cell before {worst_b[0]:+.0%} {worst_b[1]} ${_usd(worst_b[2])}; "
        f"after {worst_a[0]:+.0%} {worst_a[1]} ${_usd(worst_a[3])}"
    )
    _print_profile(r.profile_before, r.profile_after)


def _print_profile(before: Any, after: Any) -> None:
    if before is None or after is None:
        return
    click.echo(
        f"risk profile, book beta-weighted to SPX (SPX {before.spot:,.2f}), P&L ($) without -> with:"
    )
    moves = list(before.curves.moves)
    idx = [moves.index(m) for m in PROFILE_MOVES if m in moves]
    click.echo(
        f"  {'horizon':<16} "
        + " ".join(f"{m:>+23.0%}" for m in (moves[i] for i in idx))
        + "   breakevens without | with"
    )
    later = {hz.label: h for h, hz in enumerate(after.curves.horizons)}
    for h, hz in enumerate(before.curves.horizons):
        if hz.label not in later:
            continue
        cb, ca = before.curves.curve(h, 0), after.curves.curve(later[hz.label], 0)
        sb, sa = before.summaries[(0, h)], after.summaries[(0, later[hz.label])]
        be = ", ".join(f"{before.spot * (1 + x):,.0f}" for x in sb.breakevens) or "none"
        ae = ", ".join(f"{after.spot * (1 + x):,.0f}" for x in sa.breakevens) or "none"
        click.echo(
            f"  {hz.label:<16} "
            + " ".join(f"{_usd(cb[i]):>11}->{_usd(ca[i]):>10}" for i in idx)
            + f"   {be} | {ae}"
        )
        click.echo(f"  {'':<16} max loss in range {_usd(sb.max_loss)} -> {_usd(sa.max_loss)}")


@click.group("scenario")
def scenario() -> None:
    """Named what-if scenarios (the same as the Dagster scenario_job)."""


@scenario.command("run")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--keep-last",
    default=20,
    show_default=True,
    type=click.IntRange(1, 1000),
    help="Scenarios kept (newest names).",
)
def scenario_run(path: Path, keep_last: int) -> None:
    """Run the scenario of FILE.yaml on the stored book and store it under its name."""
    from datetime import UTC

    from portfolio_pipeline.config import load_platform_config
    from portfolio_pipeline.config.loader import load_config_file
    from portfolio_pipeline.config.scenario import ScenarioSpec
    from portfolio_pipeline.defs.stress.scenario import run_scenario, store_scenario
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar
    from portfolio_pipeline.paths import config_dir
    from portfolio_pipeline.storage import Database

    spec = load_config_file(path, ScenarioSpec)
    config = load_platform_config(config_dir())
    with Database() as database:
        database.migrate()
        with database.begin() as conn:
            result = run_scenario(conn, spec, config, ExchangeCalendar())
            store_scenario(conn, result, keep_last, datetime.now(UTC))
    click.echo(f"scenario {spec.name} on the {result.session} book (stored)")
    click.echo(
        f"  {'underlying':<10} {'price':>10} {'scenario':>10} {'P&L ($)':>12} {'with trades ($)':>16}"
    )
    for r in result.rows:
        name = "book" if r["underlying"] == "*" else r["underlying"]
        click.echo(
            f"  {name:<10} {r['spot']:>10,.2f} {r['spot_after']:>10,.2f} {_usd(r['pnl'], True):>12} "
            f"{_usd(r['pnl_with_trades'], True):>16}"
        )


@scenario.command("list")
def scenario_list() -> None:
    """The stored scenarios, newest first."""
    from portfolio_pipeline.defs.stress.scenario import list_scenarios
    from portfolio_pipeline.storage import Database

    with Database() as database:
        database.migrate()
        with database.connect() as conn:
            rows = list_scenarios(conn)
    if not rows:
        click.echo(
            "no scenario stored yet: `portfolio scenario run FILE.yaml` or the scenario_job in the UI"
        )
        return
    for r in rows:
        click.echo(
            f"  {r['name']:<24} session {r['session_date']}  run {r['created_at']:%Y-%m-%d %H:%M} UTC  "
            f"book P&L {_usd(r['pnl'], True)}  with trades {_usd(r['pnl_with_trades'], True)}"
        )
