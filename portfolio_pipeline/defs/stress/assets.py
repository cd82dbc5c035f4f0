"""Stress tests and Monte Carlo VaR of the session's book, all by full revaluation.

Each asset loads the book (``book.load_book``), calls the pure kernels of
the scenario engine (``quant.revaluation`` and its siblings), replaces its session partition in one
transaction and reports the headline numbers as metadata.  Configuration:
``config/stress_scenarios.yaml`` (schema ``quant.scenario_config.StressScenariosFile``).
"""


import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
from sqlalchemy import Table, select

from portfolio_pipeline.analytics.stress import (
    crisis_matrix,
    entity_matrix,
    grid_rows,
    grid_zero_cell,
    historical_rows,
    monte_carlo_rows,
    var_cvar,
)
from portfolio_pipeline.defs.execution import session_backfill_policy
from portfolio_pipeline.defs.marketdata.reader import (
    ended_windows,
    model_history,
    replay_history,
    uses_stored_history,
)
from portfolio_pipeline.defs.metadata import SessionMetadata, usd
from portfolio_pipeline.defs.partitions import partition_dates
from portfolio_pipeline.defs.progress import tracked
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.stress import checks, vol_rule
from portfolio_pipeline.defs.stress.book import (
    ALL,
    McFits,
    McSetup,
    ReplayPath,
    StressBook,
    american_kwargs,
    grid_scenarios,
    mc_scenarios,
    mc_setup,
    replay_paths,
    session_book,
)
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.quant.correlation import NearestCorrelation
from portfolio_pipeline.quant.revaluation import greeks_pnl, revalue, today_values
from portfolio_pipeline.quant.scenario_config import MonteCarloConfig, StressScenariosFile
from portfolio_pipeline.quant.scenario_risk import tail_contributions
from portfolio_pipeline.storage import replace_partition
from portfolio_pipeline.storage.frames import read_frame
from portfolio_pipeline.storage.regimes import session_regime_state
from portfolio_pipeline.storage.tables import (
    correlation_stress,
    monte_carlo_distribution,
    monte_carlo_var,
    portfolio_returns,
    stress_historical,
    stress_shock_grid,
)

GROUP = "stress"
UPSTREAM = [
    dg.AssetKey("positions_snapshot"),
    dg.AssetKey("market_history"),  # the GARCH/correlation history (defs/marketdata)
    dg.AssetKey("market_snapshot"),
    dg.AssetKey("position_greeks"),  # per-position vol/T/r/q when present (defs/greeks)
]


# --------------------------------------------------------------------------- helpers


def _replay_vs_actual(db: DatabaseResource, sb: StressBook, day: date, replay: list[ReplayPath],
                      kw: dict[str, Any], agg: np.ndarray) -> list[dict[str, Any]]:
    """Replayed days that start at ``day`` (the book's own session) beside the book P&L
    stored for the next session (portfolio_returns), when there is one."""
    out = []
    for path in replay:
        if day not in path.dates[:-1]:
            continue
        t = path.dates.index(day)
        nxt = path.dates[t + 1]
        actual = read_frame(db, portfolio_returns, [nxt], where={"broker": ALL, "account_id": ALL})
        if actual.empty or pd.isna(actual.iloc[0]["prev_nlv"]):
            continue
        pnl = float((revalue(sb.book, vol_rule.step_scenario(path, sb, t), **kw) @ agg)[0, -1])
        out.append({"window": path.name, "session": nxt, "replay": pnl,
                    "actual": float(actual.iloc[0]["pnl"])})
    return out


def _replay_md(rows: list[dict[str, Any]]) -> str:
    lines = ["Replayed days the book lived through: today's book moved by the window's next "
             "day (spot, vol rule, decay) beside the book P&L stored for that session.\n",
             "| window | session | replay P&L | actual P&L | difference |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['window']} | {r['session']} | {_money(r['replay'])} | {_money(r['actual'])} "
                     f"| {_money(r['replay'] - r['actual'])} |")
    return "\n".join(lines)


def entities(sb: StressBook) -> tuple[list[tuple[str, str, str]], np.ndarray]:
    """Reporting entities of the session's book (:func:`analytics.stress.entity_matrix`)."""
    return entity_matrix(sb.group_keys, sb.accounts())


def _load(context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource,
          day: date, table: Table, cfg: StressScenariosFile) -> StressBook | None:
    """The session's book, or None (and the session's rows cleared) when it holds nothing."""
    as_of = platform.calendar.session_close(day)
    with db.database.connect() as conn:  # one read per run, shared by the stress steps
        sb = session_book(platform.run_memo(context.run.run_id), conn, day, as_of, platform.config, cfg,
                          platform.calendar)
    if sb is None:
        with db.database.begin() as conn:
            replace_partition(conn, table, {"session_date": day}, [])
        context.log.info("session=%s: no positions, nothing to stress", day)
        return None
    context.log.info("session=%s positions=%s contracts=%s groups=%s",
                     day, sb.positions, sb.book.contracts.size, len(sb.group_keys))
    return sb


WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Threads that simulate and revalue the horizons / matrices of one session side by side
(numpy and scipy release the GIL in their loops; every task has its own seeded generator,
so the numbers do not depend on the thread count)."""

_VAR_KEYS = ("var_95", "cvar_95", "var_99", "cvar_99")


def _simulator(
    fits: McFits, sb: StressBook, setup: McSetup, kw: dict[str, Any]
) -> Callable[[np.ndarray, int], np.ndarray]:
    """(correlation, horizon) -> per-group Monte Carlo P&L of the session's book."""

    priced = {**kw, "american_method": fits.cfg.american_method, "american_steps": fits.cfg.american_steps}
    today = today_values(sb.book, **priced)  # once for every horizon and matrix

    def run(corr: np.ndarray, h: int) -> np.ndarray:
        paths = fits.paths(setup, corr, h)
        return revalue(sb.book, mc_scenarios(sb, setup, paths, h), **priced, today=today)

    return run


def _portfolio_risk(groups: np.ndarray, agg: np.ndarray) -> dict[str, float]:
    """VaR/CVaR of the portfolio column of ``groups @ agg`` -- the very expression
    ``monte_carlo_var`` stores in its ``('*', '*', '*')`` row, so the two agree bit for bit."""
    return var_cvar((groups @ agg)[:, -1])


def _portfolio_var(db: DatabaseResource, days: list[date]) -> dict[tuple[date, int], dict[str, Any]]:
    """``monte_carlo_var`` portfolio rows of ``days`` by (session, horizon), one query."""
    t = monte_carlo_var
    with db.database.connect() as conn:
        found = conn.execute(
            select(t.c.session_date, t.c.horizon_days, t.c.n_scenarios, t.c.seed, t.c.regime,
                   t.c.vol_multiplier, *(t.c[k] for k in _VAR_KEYS))
            .where(t.c.session_date.between(days[0], days[-1]), t.c.broker == ALL,
                   t.c.account_id == ALL, t.c.group_key == ALL)
        ).mappings().all()
    return {(r["session_date"], int(r["horizon_days"])): dict(r) for r in found}


def _stored_var(row: dict[str, Any] | None, mc: MonteCarloConfig, setup: McSetup) -> dict[str, float] | None:
    """A stored ``monte_carlo_var`` portfolio row's VaR/CVaR when it was simulated with
    this session's configuration and regime (else None: compute)."""
    if row is None or (row["n_scenarios"], row["seed"], row["regime"], row["vol_multiplier"]) != (
        mc.n_scenarios, mc.seed, setup.regime, setup.multiplier
    ):
        return None
    values = {k: row[k] for k in _VAR_KEYS}
    if any(v is None for v in values.values()):
        return None
    return {k: float(v) for k, v in values.items()}


def distribution_rows(day: date, horizon: int, book_pnl: np.ndarray, bins: int) -> list[dict[str, object]]:
    """The histogram of the book's simulated P&L at ``horizon`` (rows of monte_carlo_distribution)."""
    counts, edges = np.histogram(book_pnl, bins=bins)
    return [{"session_date": day, "horizon_days": horizon, "bin": i, "pnl_from": float(edges[i]),
             "pnl_to": float(edges[i + 1]), "scenarios": int(c)} for i, c in enumerate(counts)]


def _money(x: float) -> str:
    return f"{x:,.0f}"


def _histogram_md(pnl: np.ndarray, bins: int, var99: float) -> str:
    counts, edges = np.histogram(pnl, bins=bins)
    top = max(int(counts.max()), 1)
    lines = ["| P&L from | to | count | |", "|---:|---:|---:|:---|"]
    for c, lo, hi in zip(counts, edges[:-1], edges[1:], strict=True):
        mark = " <- VaR99" if lo <= -var99 < hi else ""
        lines.append(f"| {_money(lo)} | {_money(hi)} | {int(c)} | {'█' * round(30 * c / top)}{mark} |")
    return "\n".join(lines)


def _matrix_md(names: list[str], m: np.ndarray) -> str:
    head = "| | " + " | ".join(names) + " |\n" + "|---" * (len(names) + 1) + "|"
    body = "\n".join(
        f"| {n} | " + " | ".join(f"{v:+.2f}" for v in m[i]) + " |" for i, n in enumerate(names)
    )
    return head + "\n" + body


# --------------------------------------------------------------------------- stress_shock_grid


def _grid_md(grid: Any, total: np.ndarray, approx: np.ndarray) -> str:
    """Portfolio P&L at 0 days, spot x vol, full revaluation (Greeks approximation)."""
    cube = total.reshape(grid.shape)[:, :, 0]
    cube_g = approx.reshape(grid.shape)[:, :, 0]
    lines = ["| spot \\ vol | " + " | ".join(grid.vol_labels) + " |", "|---" * (len(grid.vol_labels) + 1) + "|"]
    for r, shock in enumerate(grid.spot_shocks):
        lines.append(f"| {shock:+.0%} | " + " | ".join(
            f"{_money(cube[r, c])} ({_money(cube_g[r, c])})" for c in range(cube.shape[1])) + " |")
    return "Portfolio P&L at 0 days: full revaluation (Greeks approximation)\n\n" + "\n".join(lines)


def _grid_metadata(grid: Any, full: np.ndarray, approx: np.ndarray, sb: StressBook,
                   cfg: StressScenariosFile, rows: int) -> dict[str, Any]:
    total = full[:, -1]
    worst = int(np.argmin(total))
    i, j, k = grid.cells[worst]
    return {
        "worst_cell": dg.MetadataValue.text(
            f"spot {grid.spot_shocks[i]:+.0%}, {grid.vol_labels[j]}, {grid.horizons_days[k]:g}d"),
        "worst grid P&L ($)": usd(float(total[worst])),
        "worst grid P&L, Greeks approximation ($)": usd(float(approx[worst, -1])),
        "max Greeks approximation error ($)": usd(float(np.abs(approx[:, -1] - total).max())),
        "vix": dg.MetadataValue.float(sb.vix),
        "skew_rule": dg.MetadataValue.text(cfg.grid.skew_rule),
        "rows": dg.MetadataValue.int(rows),
        "grid_0d": dg.MetadataValue.md(_grid_md(grid, total, approx[:, -1])),
    }


def stress_shock_grid_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    meta = SessionMetadata(context)
    all_pnl: list[np.ndarray] = []
    zero_pnl = 0.0
    cfg = platform.config.stress_scenarios  # once per run
    for day in tracked("stress_shock_grid", meta.days, context.log):
        sb = _load(context, db, platform, day, stress_shock_grid, cfg)
        if sb is None:
            continue
        grid = grid_scenarios(sb, cfg)
        kw = {"skew_slope": sb.per_factor("skew_slope"), "skew_rule": cfg.grid.skew_rule,
              "min_vol": cfg.grid.min_vol, **american_kwargs(cfg.grid)}
        ents, agg = entities(sb)
        full = revalue(sb.book, grid.scenarios, **kw) @ agg  # type: ignore[arg-type]
        approx = greeks_pnl(sb.book, grid.scenarios, **kw) @ agg  # type: ignore[arg-type]
        all_pnl.append(full)
        rows = grid_rows(day, grid, ents, full, approx)
        with db.database.begin() as conn:
            replace_partition(conn, stress_shock_grid, {"session_date": day}, rows)
        zero_pnl = float(full[grid_zero_cell(grid), -1])
        meta.record(day, checks.GRID, _grid_metadata(grid, full, approx, sb, cfg, len(rows)))
    yield dg.MaterializeResult(asset_key=checks.GRID, metadata=meta.output_metadata(checks.GRID))
    yield checks.grid_check(np.concatenate([p.ravel() for p in all_pnl] or [np.zeros(0)]), zero_pnl)


# --------------------------------------------------------------------------- stress_historical


def _replay_book(day: date, sb: StressBook, replay: list[ReplayPath], kw: dict[str, Any], live: bool,
                 totals: list[np.ndarray]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows and metadata of today's book replayed through each window (``totals`` gets
    each window's portfolio path)."""
    ents, agg = entities(sb)
    rows: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    lines = ["| window | worst day | worst P&L | Greeks approx | end P&L | filled days |",
             "|---|---|---:|---:|---:|---:|"]
    for path in replay:
        if live and path.dates[-1] > day:  # no look-ahead on broker history
            values[f"{path.name}_skipped"] = dg.MetadataValue.text(f"window ends {path.dates[-1]}, after the session")
            continue
        sc = path.scenarios(sb)
        full = revalue(sb.book, sc, **kw) @ agg
        approx = greeks_pnl(sb.book, sc, **kw) @ agg
        totals.append(full[:, -1])
        rows += historical_rows(day, path, ents, full, approx)
        w = int(np.argmin(full[:, -1]))
        filled = sum(s != "published" for s in (*path.spx_source, *path.vix_source))
        lines.append(f"| {path.name} | {path.dates[w]} | {_money(full[w, -1])} | "
                     f"{_money(approx[w, -1])} | {_money(full[-1, -1])} | {filled} |")
        values[f"{path.name} worst P&L ($)"] = usd(float(full[w, -1]))
        values[f"{path.name}_worst_date"] = dg.MetadataValue.text(path.dates[w].isoformat())
    values["summary"] = dg.MetadataValue.md(
        "Portfolio P&L of today's book replayed through each window (filled = "
        "interpolated or realised-vol proxy closes, never published data)\n\n" + "\n".join(lines))
    return rows, values


def stress_historical_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    history = replay_history(db, platform, partition_dates(context)[-1])  # once per run
    live = uses_stored_history(platform)  # the demo replays its 2018 spike on 2018 books
    replay: list[ReplayPath] | None = None
    meta = SessionMetadata(context)
    totals: list[np.ndarray] = []
    checked: list[dict[str, Any]] = []  # replayed days the book lived through
    cfg = platform.config.stress_scenarios  # once per run
    surfaces: vol_rule.SurfaceHistory | None = None
    for day in tracked("stress_historical", meta.days, context.log):
        sb = _load(context, db, platform, day, stress_historical, cfg)
        if sb is None:
            continue
        if replay is None:  # the windows do not depend on the session
            replay = replay_paths(history, platform.calendar, ended_windows(cfg, meta.days[-1]) if live else cfg)
        with db.database.connect() as conn:  # vol rule fitted on the surface history to today
            if surfaces is None and cfg.historical.vol_rule != "full_vix":  # read once per run
                surfaces = vol_rule.SurfaceHistory(conn, meta.days[-1], cfg)
            rule = vol_rule.fit_rule(conn, day, cfg, surfaces)
        kw = {"skew_slope": sb.per_factor("skew_slope"), "skew_rule": cfg.grid.skew_rule,
              "min_vol": cfg.grid.min_vol, **american_kwargs(cfg.grid),
              "vol_beta": vol_rule.contract_betas(sb, rule)}
        checked.extend(_replay_vs_actual(db, sb, day, replay, kw, entities(sb)[1]))
        rows, values = _replay_book(day, sb, replay, kw, live, totals)
        with db.database.begin() as conn:
            replace_partition(conn, stress_historical, {"session_date": day}, rows)
        values = {"vol_rule": dg.MetadataValue.md(
            f"historical.vol_rule = {cfg.historical.vol_rule}: option vol change = beta x "
            "VIX beta x VIX change / 100, beta (fitted days) by days to expiry and "
            "ln(K/S):\n\n" + rule.describe()), **values}
        meta.record(day, checks.HISTORICAL, values)
    run_facts: dict[str, Any] = {}
    if checked:
        run_facts["replay_vs_actual"] = dg.MetadataValue.md(_replay_md(checked))
    yield dg.MaterializeResult(asset_key=checks.HISTORICAL,
                               metadata=meta.output_metadata(checks.HISTORICAL, run_facts))
    yield checks.historical_check(totals)


# --------------------------------------------------------------------------- monte_carlo_var


def _mc_horizon_md(h: int, mc: MonteCarloConfig, setup: McSetup, pnl: np.ndarray, var99: float,
                   ents: list[tuple[str, str, str]], n_groups: int, contrib99: np.ndarray) -> str:
    lines = ["| account | group | contribution to CVaR99 |", "|---|---|---:|"]
    for e, (b, a, g) in enumerate(ents[:n_groups]):
        lines.append(f"| {b}:{a} | {g} | {_money(contrib99[e])} |")
    return (f"Portfolio P&L over {h} trading day(s), {mc.n_scenarios} scenarios, seed "
            f"{mc.seed}, regime {setup.regime} (x{setup.multiplier:g})\n\n"
            + _histogram_md(pnl, mc.histogram_bins, var99) + "\n\n" + "\n".join(lines))


def _mc_session(day: date, sb: StressBook, setup: McSetup, mc: MonteCarloConfig, results: list[np.ndarray]
                ) -> tuple[list[dict[str, Any]], list[dict[str, object]], dict[str, Any]]:
    """monte_carlo_var rows, monte_carlo_distribution rows and metadata of one session."""
    ents, agg = entities(sb)
    run = {"n_scenarios": mc.n_scenarios, "seed": mc.seed, "regime": setup.regime,
           "vol_multiplier": setup.multiplier}
    rows: list[dict[str, Any]] = []
    hist_rows: list[dict[str, object]] = []
    values: dict[str, Any] = {}
    for h, groups in zip(mc.horizons_days, results, strict=True):
        pnl = groups @ agg
        hist_rows += distribution_rows(day, h, pnl[:, -1], mc.histogram_bins)
        contrib = {lv: tail_contributions(groups, lv)[0] @ agg for lv in (0.95, 0.99)}
        rows += monte_carlo_rows(day, h, ents, pnl, contrib, run)
        tot = rows[-1]
        for key in _VAR_KEYS:
            kind, level = key.split("_")
            values[f"MC {'CVaR' if kind == 'cvar' else 'VaR'} {level}% {h}d ($)"] = usd(float(tot[key]))
        values[f"distribution_{h}d"] = dg.MetadataValue.md(_mc_horizon_md(
            h, mc, setup, pnl[:, -1], float(tot["var_99"]), ents, len(sb.group_keys), contrib[0.99]))
    values["regime"] = dg.MetadataValue.text(setup.regime)
    values["vol_multiplier"] = dg.MetadataValue.float(setup.multiplier)
    values["fit_notes"] = dg.MetadataValue.text("; ".join(setup.notes))
    return rows, hist_rows, values


def monte_carlo_var_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    history = model_history(db, platform, partition_dates(context)[-1])
    fits: McFits | None = None  # the run's GARCH fits, correlations and shocks
    meta = SessionMetadata(context)
    check_rows: list[dict[str, object]] = []  # every session of the run is checked
    cfg = platform.config.stress_scenarios  # once per run
    pool = ThreadPoolExecutor(WORKERS)  # the horizons of a session side by side
    for day in tracked("monte_carlo_var", meta.days, context.log):
        sb = _load(context, db, platform, day, monte_carlo_var, cfg)
        if sb is None:
            continue
        fits = fits or McFits(history, platform.calendar, cfg)
        with db.database.begin() as conn:  # THE session regime (stored by margin_history)
            regime = session_regime_state(conn, RegimeService(platform.config.risk_matrix), day,
                                          platform.calendar.previous_session(day), sb.vix, sb.vix3m)
        setup = mc_setup(sb, history, platform.config, cfg, fits, regime.name)
        kw = {"skew_slope": sb.per_factor("skew_slope"), "skew_rule": cfg.grid.skew_rule,
              "min_vol": cfg.grid.min_vol}
        run = _simulator(fits, sb, setup, kw)
        results = list(pool.map(lambda h: run(setup.corr, h), cfg.monte_carlo.horizons_days))  # noqa: B023
        rows, hist_rows, values = _mc_session(day, sb, setup, cfg.monte_carlo, results)
        with db.database.begin() as conn:
            replace_partition(conn, monte_carlo_var, {"session_date": day}, rows)
            replace_partition(conn, monte_carlo_distribution, {"session_date": day}, hist_rows)
        check_rows.extend(rows)
        meta.record(day, checks.MONTE_CARLO, values)
    pool.shutdown()
    if fits is not None:
        context.log.info("monte_carlo_var: %s GARCH fits", fits.garch_fits)
    yield dg.MaterializeResult(asset_key=checks.MONTE_CARLO, metadata=meta.output_metadata(checks.MONTE_CARLO))
    yield checks.mc_check(check_rows)


# --------------------------------------------------------------------------- correlation_stress


def _correlation_md(names: list[str], corr: np.ndarray, cfg: StressScenariosFile,
                    repaired: NearestCorrelation) -> str:
    return (f"Historical (estimated)\n\n{_matrix_md(names, corr)}\n\nCrisis (weight "
            f"{cfg.correlation.crisis_weight:g}, overrides, Higham repair in "
            f"{repaired.iterations} iterations, distance {repaired.distance:.3g})\n\n"
            f"{_matrix_md(names, repaired.matrix)}")


def _correlation_rows(day: date, names: list[str], matrices: dict[str, np.ndarray], repaired: NearestCorrelation,
                      tasks: list[tuple[str, int]], risks: list[dict[str, float] | None]
                      ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    values: dict[str, Any] = {}
    for (name, h), risk in zip(tasks, risks, strict=True):
        assert risk is not None
        rows.append({
            "session_date": day, "matrix_name": name, "horizon_days": h, **risk,
            "min_eigenvalue": float(np.linalg.eigvalsh(matrices[name]).min()),
            "repair_iterations": repaired.iterations if name == "crisis" else None,
            "factors": names, "matrix": np.round(matrices[name], 10).tolist(),
        })
        values[f"{name} correlation VaR 99% {h}d ($)"] = usd(float(risk["var_99"]))
    return rows, values


def correlation_stress_asset(
    context: dg.AssetExecutionContext, db: DatabaseResource, platform: PlatformResource
) -> Iterator[dg.MaterializeResult[Any] | dg.AssetCheckResult]:
    history = model_history(db, platform, partition_dates(context)[-1])
    fits: McFits | None = None  # the same fits, correlations and shocks as monte_carlo_var
    crisis: dict[tuple[tuple[str, ...], bytes], NearestCorrelation] = {}
    meta = SessionMetadata(context)
    matrices: dict[str, np.ndarray] = {}
    stored = _portfolio_var(db, meta.days)
    reused = 0
    cfg = platform.config.stress_scenarios  # once per run
    pool = ThreadPoolExecutor(WORKERS)
    for day in tracked("correlation_stress", meta.days, context.log):
        sb = _load(context, db, platform, day, correlation_stress, cfg)
        if sb is None:
            continue
        mc = cfg.monte_carlo
        fits = fits or McFits(history, platform.calendar, cfg)
        setup = mc_setup(sb, history, platform.config, cfg, fits)
        names = list(setup.model.names)
        ckey = (setup.model.names, setup.corr.tobytes())
        if ckey not in crisis:  # changes with the fit date only
            crisis[ckey] = crisis_matrix(setup.corr, names, cfg.correlation.crisis_weight, cfg.correlation.overrides)
        repaired = crisis[ckey]
        matrices = {"historical": setup.corr, "crisis": repaired.matrix}
        kw = {"skew_slope": sb.per_factor("skew_slope"), "skew_rule": cfg.grid.skew_rule,
              "min_vol": cfg.grid.min_vol}
        agg = entities(sb)[1]
        run = _simulator(fits, sb, setup, kw)
        tasks = [(name, h) for name in matrices for h in mc.horizons_days]
        # the historical matrix is exactly monte_carlo_var's simulation: take its stored
        # portfolio row when it was made with this session's setup
        risks = [_stored_var(stored.get((day, h)), mc, setup) if name == "historical" else None
                 for name, h in tasks]
        reused += sum(r is not None for r in risks)
        todo = [k for k, v in enumerate(risks) if v is None]
        computed = pool.map(lambda k: _portfolio_risk(run(matrices[tasks[k][0]], tasks[k][1]), agg), todo)  # noqa: B023
        for k, v in zip(todo, computed, strict=True):
            risks[k] = v
        rows, values = _correlation_rows(day, names, matrices, repaired, tasks, risks)
        with db.database.begin() as conn:
            replace_partition(conn, correlation_stress, {"session_date": day}, rows)
        values["fit_notes"] = dg.MetadataValue.text("; ".join(setup.notes))
        values["matrices"] = dg.MetadataValue.md(_correlation_md(names, setup.corr, cfg, repaired))
        meta.record(day, checks.CORRELATION, values)
    pool.shutdown()
    context.log.info("correlation_stress: %s GARCH fits, %s historical rows from monte_carlo_var",
                     fits.garch_fits if fits else 0, reused)
    yield dg.MaterializeResult(asset_key=checks.CORRELATION, metadata=meta.output_metadata(checks.CORRELATION))
    yield checks.correlation_check(matrices)


# --------------------------------------------------------------------------- definitions

_DESCRIPTIONS = {
    "stress_shock_grid": "Spot (-30%..+20%) x implied vol (points and VIX targets, sticky-strike or "
    "sticky-moneyness) x horizon (days of decay) P&L per group, account and portfolio, by "
    "full revaluation with the Greeks approximation beside it.",
    "stress_historical": "Replay of Feb 2018, Oct 2008, Mar 2020 and the configured windows against "
    "the session's book: the path P&L and its worst point (filled days labelled).  Each "
    "option's vol moves by beta(expiry, moneyness) x the VIX change (historical.vol_rule, "
    "fitted on the stored surface history); replayed days the book lived through are "
    "shown beside its actual P&L.",
    "monte_carlo_var": "Monte Carlo VaR/CVaR 95/99 at 1 and 10 days: correlated GARCH(1,1)-t "
    "scenarios of the underlyings and the VIX, regime-scaled, full revaluation of every "
    "position, tail contributions per group; seeded.  Regime: the session's stored "
    "regime (session_regime, with hysteresis, as the limits use).",
    "correlation_stress": "Monte Carlo VaR under the correlation estimated from history and under a "
    "crisis matrix (|rho| pushed toward 1, repaired to the nearest correlation matrix). "
    "The historical matrix is monte_carlo_var's simulation (its portfolio rows are reused).",
}


def make_stress_assets(partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    """The four stress assets on ``partitions`` (session partitions; tests pass a short range)."""
    specs: list[tuple[Callable[..., Any], str, dg.AssetCheckSpec, tuple[dg.AssetKey, ...]]] = [
        (stress_shock_grid_asset, "stress_shock_grid", checks.GRID_CHECK, ()),
        (stress_historical_asset, "stress_historical", checks.HISTORICAL_CHECK, (dg.AssetKey("portfolio_returns"),)),
        (monte_carlo_var_asset, "monte_carlo_var", checks.MC_CHECK, (dg.AssetKey("margin_history"),)),
        (correlation_stress_asset, "correlation_stress", checks.CORRELATION_CHECK, (checks.MONTE_CARLO,)),
    ]
    return [
        dg.asset(name=name, description=_DESCRIPTIONS[name], check_specs=[check], partitions_def=partitions,
                 backfill_policy=session_backfill_policy(), group_name=GROUP, deps=[*UPSTREAM, *deps],
                 kinds={"sql"})(body)
        for body, name, check, deps in specs
    ]
