"""Named what-if scenarios: the ``scenario_result`` asset, its ``scenario_job`` (typed run
config for the launchpad) and the function ``portfolio scenario run`` shares.

A scenario (:class:`~portfolio_pipeline.config.scenario.ScenarioSpec`) moves a stored
session's book by full revaluation (the shock grid's pricer settings):

* spot: each underlying of ``spot_moves_pct`` by its move; the others by beta x
  ``spx_move_pct`` (volatility indices stay); ``S_1 = S_0 (1 + m)``;
* implied vol: every option's vol becomes ``vol_scale x vol + vol_shift_points / 100``
  (floored at the grid's ``min_vol``), before the skew rule;
* rate: every option's rate moves by ``rate_shift_bp``; its effect on today's value is
  in the P&L (``V(scenario, r + dr) - V(today, r)``);
* time: ``days_forward`` calendar days of decay;
* ``trades``: extra legs priced as ``portfolio whatif`` prices them; the P&L is reported
  for the book and for the book with them.

Results are stored per name in ``scenario_results`` (one row per underlying and one for
the book, '*'); the last ``keep_last`` names by run time are kept.
"""

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import numpy as np
from pydantic import Field
from sqlalchemy import Connection, delete, select

from portfolio_pipeline.analytics.risk_pack import stored_sessions
from portfolio_pipeline.config.loader import PlatformConfig
from portfolio_pipeline.config.scenario import ScenarioSpec
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress.book import american_kwargs, load_book
from portfolio_pipeline.defs.stress.profile import spx_level
from portfolio_pipeline.defs.stress.whatif import extend_book, model_values
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.symbols import AGGREGATE as ALL
from portfolio_pipeline.domain.trade_legs import parse_legs
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.quant.scenario_book import Book
from portfolio_pipeline.quant.scenario_set import DAYS_PER_YEAR, ScenarioSet
from portfolio_pipeline.storage import replace_partition
from portfolio_pipeline.storage.tables import scenario_results

__all__ = [
    "SCENARIO",
    "ScenarioRunConfig",
    "list_scenarios",
    "run_scenario",
    "scenario_job",
    "store_scenario",
]

SCENARIO = dg.AssetKey("scenario_result")
DEFAULT_KEEP = 20


@dataclass(frozen=True)
class ScenarioResult:
    spec: ScenarioSpec
    session: date
    rows: list[dict[str, Any]]
    """Per underlying, then the book ('*'): spot, spot_after, pnl, pnl_with_trades."""


def run_scenario(
    conn: Connection, spec: ScenarioSpec, config: PlatformConfig, calendar: ExchangeCalendar
) -> ScenarioResult:
    """The scenario on its stored session (the latest when ``spec.session`` is None)."""
    sessions = stored_sessions(conn)
    if not sessions:
        raise InvalidDataError(
            "no session stored yet: run `portfolio demo` or `portfolio run` first"
        )
    day = spec.session or sessions[-1]
    if day not in sessions:
        raise InvalidDataError(
            f"scenario {spec.name}: session {day} is not stored ({sessions[0]} .. {sessions[-1]})"
        )
    cfg = config.stress_scenarios
    as_of = calendar.session_close(day)
    sb = load_book(conn, day, as_of, config, cfg, calendar)
    unknown = sorted(set(k.upper() for k in spec.spot_moves_pct) - set(sb.book.factors))
    if unknown:
        raise InvalidDataError(
            f"scenario {spec.name}: spot_moves_pct names {', '.join(unknown)}, not in the "
            f"{day} book ({', '.join(sb.book.factors)})"
        )
    legs = parse_legs(spec.trades, config.instruments) if spec.trades else []
    ext, two, _ = (
        extend_book(conn, sb, legs, as_of, config, calendar) if legs else (sb, _two(sb.book), [])
    )
    c = two.contracts
    moves = {k.upper(): v / 100.0 for k, v in spec.spot_moves_pct.items()}
    volf = ext.is_vol_factor
    beta = ext.per_factor("beta")
    simple = np.array(
        [
            moves[f]
            if f in moves
            else (
                0.0 if volf[i] or spec.spx_move_pct is None else beta[i] * spec.spx_move_pct / 100.0
            )
            for i, f in enumerate(two.factors)
        ]
    )
    if np.any(simple <= -1.0):
        raise InvalidDataError(f"scenario {spec.name}: a move takes a price to zero or below")
    sc = ScenarioSet.build(np.log1p(simple)[None, :], 1.0, spec.days_forward / DAYS_PER_YEAR)
    vol_beta = np.where(
        c.is_option, (spec.vol_scale - 1.0) * c.vol + spec.vol_shift_points / 100.0, 0.0
    )
    kw: dict[str, Any] = {
        "skew_slope": ext.per_factor("skew_slope"),
        "skew_rule": cfg.grid.skew_rule,
        "min_vol": cfg.grid.min_vol,
        **american_kwargs(cfg.grid),
    }
    shifted = dataclasses.replace(
        c, r=np.where(c.is_option, c.r + spec.rate_shift_bp / 10_000.0, c.r)
    )
    units = two.units
    # per factor: the two unit columns of its contracts only
    groups = np.zeros((c.size, 2 * len(two.factors)))
    for f in range(len(two.factors)):
        on = c.factor == f
        groups[on, 2 * f : 2 * f + 2] = units[on]
    book = Book(
        shifted,
        groups,
        tuple(f"{f}|{k}" for f in two.factors for k in ("before", "after")),
        two.factors,
    )
    pnl = revalue(book, sc, vol_beta=vol_beta, **kw)[0]
    if spec.rate_shift_bp:
        pnl = pnl + (model_values(shifted, config) - model_values(c, config)) @ groups
    spot_now = {
        two.factors[int(f)]: float(c.spot[i]) for i, f in reversed(list(enumerate(c.factor)))
    }
    rows = [
        {
            "name": spec.name,
            "underlying": f,
            "session_date": day,
            "spot": spot_now[f],
            "spot_after": spot_now[f] * (1 + float(simple[i])),
            "pnl": float(pnl[2 * i]),
            "pnl_with_trades": float(pnl[2 * i + 1]),
        }
        for i, f in enumerate(two.factors)
    ]
    spx = spx_level(conn, day) or math.nan
    spx_move = (spec.spx_move_pct or 0.0) / 100.0 if "SPX" not in moves else moves["SPX"]
    rows.append(
        {
            "name": spec.name,
            "underlying": ALL,
            "session_date": day,
            "spot": spx,
            "spot_after": spx * (1 + spx_move),
            "pnl": float(pnl[0::2].sum()),
            "pnl_with_trades": float(pnl[1::2].sum()),
        }
    )
    return ScenarioResult(spec, day, rows)


def _two(book: Book) -> Book:
    total = book.units.sum(axis=1)
    return Book(book.contracts, np.stack([total, total], axis=1), ("before", "after"), book.factors)


def store_scenario(conn: Connection, result: ScenarioResult, keep_last: int, now: datetime) -> None:
    """Replace the name's rows and keep the last ``keep_last`` names (by run time)."""
    spec = result.spec.model_dump(mode="json")
    replace_partition(
        conn,
        scenario_results,
        {"name": result.spec.name},
        [{**r, "created_at": now, "spec": spec} for r in result.rows],
    )
    t = scenario_results
    names = [
        r[0]
        for r in conn.execute(
            select(t.c.name, t.c.created_at)
            .where(t.c.underlying == ALL)
            .order_by(t.c.created_at.desc(), t.c.name)
        )
    ]
    old = names[keep_last:]
    if old:
        conn.execute(delete(t).where(t.c.name.in_(old)))


def list_scenarios(conn: Connection) -> list[dict[str, Any]]:
    """The stored scenarios' book rows, newest first."""
    t = scenario_results
    return [
        dict(r)
        for r in conn.execute(
            select(t).where(t.c.underlying == ALL).order_by(t.c.created_at.desc(), t.c.name)
        ).mappings()
    ]


def scenario_markdown(result: ScenarioResult) -> str:
    top = max((abs(r["pnl_with_trades"]) for r in result.rows), default=0.0) or 1.0
    lines = [
        f"Scenario **{result.spec.name}** on the {result.session} book "
        f"(vol x{result.spec.vol_scale:g} {result.spec.vol_shift_points:+g} pt, rate "
        f"{result.spec.rate_shift_bp:+g} bp, {result.spec.days_forward} days forward, "
        f"{len(result.spec.trades)} extra legs)\n",
        "| underlying | price | in the scenario | P&L ($) | with the trades ($) | |",
        "|---|---:|---:|---:|---:|:---|",
    ]
    for r in result.rows:
        bar = ("█" if r["pnl_with_trades"] >= 0 else "▒") * round(
            20 * abs(r["pnl_with_trades"]) / top
        )
        lines.append(
            f"| {'book' if r['underlying'] == ALL else r['underlying']} | {r['spot']:,.2f} | "
            f"{r['spot_after']:,.2f} | {r['pnl']:,.0f} | {r['pnl_with_trades']:,.0f} | {bar} |"
        )
    return "\n".join(lines)


class ScenarioRunConfig(dg.Config):
    """The launchpad form of ``scenario_job`` (validated into ``ScenarioSpec``)."""

    name: str = Field(description="the key it is stored under (letters, digits, _ . -)")
    session: str | None = Field(
        default=None, description="stored session YYYY-MM-DD (default: the latest)"
    )
    spot_moves_pct: dict[str, float] = Field(default={}, description="underlying -> move in %")
    spx_move_pct: float | None = Field(default=None, description="SPX move in %; others by beta")
    vol_shift_points: float = 0.0
    vol_scale: float = 1.0
    rate_shift_bp: float = 0.0
    days_forward: int = 0
    trades: list[str] = Field(
        default=[], description="extra legs, e.g. 'sell 1 SPX 2018-03-16 2600P'"
    )
    keep_last: int = Field(
        default=DEFAULT_KEEP, ge=1, le=1000, description="scenarios kept (newest names)"
    )

    def spec(self) -> ScenarioSpec:
        values: Mapping[str, Any] = self.model_dump(exclude={"keep_last"})
        return ScenarioSpec.model_validate(values)


@dg.asset(
    key=SCENARIO,
    group_name="scenarios",
    kinds={"sql"},
    description="A named what-if scenario on a stored session's book (spot moves per underlying or SPX with "
    "beta, vol shift/scale, rate shift, days forward, extra trades), full revaluation; stored in "
    "scenario_results (the last keep_last names).",
)
def scenario_result(
    config: ScenarioRunConfig, db: DatabaseResource, platform: PlatformResource
) -> dg.MaterializeResult[Any]:
    spec = config.spec()
    with db.database.begin() as conn:
        result = run_scenario(conn, spec, platform.config, platform.calendar)
        store_scenario(conn, result, config.keep_last, datetime.now(UTC))
    book = result.rows[-1]
    return dg.MaterializeResult(
        metadata={
            "scenario": dg.MetadataValue.text(spec.name),
            "session": dg.MetadataValue.text(result.session.isoformat()),
            "book P&L ($)": dg.MetadataValue.float(float(round(book["pnl"]))),
            "book P&L with the trades ($)": dg.MetadataValue.float(
                float(round(book["pnl_with_trades"]))
            ),
            "result": dg.MetadataValue.md(scenario_markdown(result)),
        }
    )


scenario_job = dg.define_asset_job(
    "scenario_job",
    selection=[SCENARIO],
    description="Run a named what-if scenario on the book (fill the run config in the launchpad).",
)


def definitions() -> dg.Definitions:
    return dg.Definitions(assets=[scenario_result], jobs=[scenario_job])
