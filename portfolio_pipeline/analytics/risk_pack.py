"""The daily risk pack: one self-contained HTML page per session, and an index page.

Everything comes from the stored tables of the session (no recomputation): the headline
(NLV, day P&L, drawdown, regime) with every limit of the regime in force, breached limits
highlighted; the VaR breach flag (the day's loss exceeded the PRIOR session's VaR: the
stored ``var_exceedances`` rows of the ``var_backtest`` asset, the one place that tests it);
positions with their Greeks; Greeks by underlying and by strategy; the stress grid as a
heat map; the Monte Carlo P&L distribution with VaR/CVaR marked; the risk profile (P&L vs price at
T+0, T+n and the expiries, breakevens and expected move marked); the historical replays;
strategies with their traffic light and exit signal; margin and regime history.

With several accounts each session also gets one page per account
(``risk_pack_<date>__<account>.html``: that account's rows of the same tables, its own
limits; stress and Monte Carlo where they are stored per account) and every page and the
index carry an account selector (consolidated / each account).

Pages use inline CSS and SVG only, so they work offline and behind ``portfolio report
--serve`` (browsers block ``file://`` links from the Dagster UI).
"""

from __future__ import annotations

import html
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, and_, select

from portfolio_pipeline.analytics.report import line_chart
from portfolio_pipeline.domain.numbers import finite_or_none
from portfolio_pipeline.domain.symbols import AGGREGATE
from portfolio_pipeline.storage import dict_rows
from portfolio_pipeline.storage.tables import (
    limit_checks,
    margin_history,
    monte_carlo_distribution,
    monte_carlo_var,
    option_flow_metrics,
    portfolio_greeks,
    portfolio_returns,
    position_greeks,
    position_lifecycle,
    risk_metrics,
    risk_profile,
    risk_profile_summary,
    strategy_performance,
    stress_historical,
    stress_shock_grid,
)
from portfolio_pipeline.storage.var_backtest import read_var_exceedances

ALL = AGGREGATE
PACK_PREFIX = "risk_pack_"
INDEX_NAME = "index.html"
DEFAULT_PORT = 8800
"""Port of ``portfolio report --serve`` on 127.0.0.1 (the asset metadata links there)."""

Row = dict[str, Any]

LIMIT_LABELS: Mapping[str, tuple[str, str]] = {
    "beta_weighted_delta": ("beta-weighted delta", "$ (SPX-equivalent)"),
    "short_gamma": ("short gamma per 1% move", "$"),
    "vega": ("vega", "$ per vol point"),
    "theta": ("theta", "$ per day"),
    "margin_utilisation": ("maintenance margin", "$"),
    "naked_short_call": ("naked short calls (banned)", "contracts"),
    "naked_short_put": ("naked short puts (banned)", "contracts"),
}
BANS = frozenset({"naked_short_call", "naked_short_put"})
"""Structure-ban metrics: value = naked short contracts, limit 0 (not fractions of NLV)."""
"""Limit metric -> (name, unit of the dollar value); limits are stored as fractions of NLV."""

PACK_VAR: tuple[tuple[str, float], ...] = (
    ("historical_full", 0.95), ("historical_full", 0.99), ("monte_carlo_1d", 0.95), ("monte_carlo_1d", 0.99))
"""The (model, level) rows of ``var_exceedances`` the pack flags: historical full-window VaR and,
when stored, the Monte Carlo 1-day VaR."""
INDEX_VAR = ("historical_full", 0.99)
"""The (model, level) of the index page's per-session VaR breach column."""
MODEL_LABELS: Mapping[str, str] = {"historical_full": "", "monte_carlo_1d": " Monte Carlo 1-day"}


Scope = tuple[str, str]
BOOK: Scope = (ALL, ALL)
"""(broker, account_id) of the consolidated book."""


def _slug(account_id: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in account_id)


def pack_name(day: date, account_id: str | None = None) -> str:
    """File name of a session's pack (consolidated, or one account's)."""
    if account_id is None or account_id == ALL:
        return f"{PACK_PREFIX}{day.isoformat()}.html"
    return f"{PACK_PREFIX}{day.isoformat()}__{_slug(account_id)}.html"


def pack_url(day: date, port: int = DEFAULT_PORT) -> str:
    """Where ``portfolio report --serve`` serves the pack of ``day``."""
    return f"http://127.0.0.1:{port}/{pack_name(day)}"


@dataclass(frozen=True)
class PackData:
    """The stored rows of one session that the pack shows (book rows are broker '*')."""

    session: date
    returns: list[Row]
    """Book rows of portfolio_returns up to the session, oldest first."""
    risk: dict[str, Row]
    """Book risk_metrics of the session (window 'full'), by metric."""
    exceedances: list[Row]
    """var_exceedances rows of the session for the models of :data:`PACK_VAR` (the day's
    P&L against the previous session's VaR, as the var_backtest asset stored them)."""
    limits: list[Row]
    margin: list[Row]
    """Book rows of margin_history up to the session, oldest first."""
    positions: list[Row]
    by_underlying: list[Row]
    strategies: list[Row]
    lifecycle: dict[str, Row]
    grid: list[Row]
    replays: list[Row]
    mc: list[Row]
    mc_hist: list[Row] = field(default_factory=list)
    scopes: list[Row] = field(default_factory=list)
    """margin_history rows of the session, every scope (the NLV that scales each limit)."""
    profile: list[Row] = field(default_factory=list)
    """risk_profile rows of the session's totals (strategy '*'), by profile, horizon and point."""
    profile_summary: list[Row] = field(default_factory=list)
    """risk_profile_summary rows of the session's totals (strategy '*')."""
    flow: list[Row] = field(default_factory=list)
    """option_flow_metrics rows of the session (the options_flow asset), every underlying."""
    scope: Scope = BOOK
    """Whose pack: the consolidated book, or one (broker, account_id)."""
    label: str = "consolidated"

    @property
    def is_book(self) -> bool:
        return self.scope == BOOK

    @property
    def today(self) -> Row | None:
        last = self.returns[-1] if self.returns else None
        return last if last is not None and last["session_date"] == self.session else None


def _rows(conn: Connection, table: Table, *clauses: Any, order: Sequence[str] = ()) -> list[Row]:
    stmt = select(table).where(and_(*clauses)) if clauses else select(table)
    cols = [table.c[name] for name in order] or list(table.primary_key.columns)
    return dict_rows(conn.execute(stmt.order_by(*cols)))


def stored_sessions(conn: Connection) -> list[date]:
    """Sessions with a book row in portfolio_returns, oldest first."""
    t = portfolio_returns
    stmt = select(t.c.session_date).where(t.c.broker == ALL, t.c.account_id == ALL).order_by(t.c.session_date)
    return [r[0] for r in conn.execute(stmt)]


def stored_accounts(conn: Connection, day: date | None = None) -> list[Scope]:
    """(broker, account_id) of every account with a portfolio_returns row (on ``day``)."""
    t = portfolio_returns
    stmt = select(t.c.broker, t.c.account_id).where(t.c.broker != ALL).distinct()
    if day is not None:
        stmt = stmt.where(t.c.session_date == day)
    return sorted((str(b), str(a)) for b, a in conn.execute(stmt))


@dataclass(frozen=True)
class _DayRows:
    """Rows of a session that are the same on the book's page and every account's."""

    exceedances: list[Row]
    lifecycle: dict[str, Row]
    scopes: list[Row]
    flow: list[Row]

    @classmethod
    def read(cls, conn: Connection, day: date) -> _DayRows:
        lc, m = position_lifecycle, margin_history
        return cls(
            exceedances=read_var_exceedances(
                conn, day, day, models=sorted({m for m, _ in PACK_VAR})).to_dict("records"),
            lifecycle={str(x["strategy_id"]): x for x in _rows(conn, lc, lc.c.session_date == day)},
            scopes=_rows(conn, m, m.c.session_date == day),
            flow=_rows(conn, option_flow_metrics, option_flow_metrics.c.session_date == day,
                       order=["underlying", "metric", "scope"]),
        )


@dataclass(frozen=True)
class PackHistory:
    """The ``portfolio_returns`` and ``margin_history`` rows of every scope up to a run's
    last session, read once: each pack shows the history up to its session, so the packs
    of a year's run would otherwise read the history again for every page (a quadratic
    cost).  Rows are shared between packs, which only read them."""

    last: date
    returns: Mapping[Scope, list[Row]]
    margin: Mapping[Scope, list[Row]]
    days: dict[date, _DayRows] = field(default_factory=dict)
    """The session rows every scope's pack shows alike, read once per session."""

    def day(self, conn: Connection, day: date) -> _DayRows:
        if day not in self.days:
            self.days.clear()  # pages are written session by session
            self.days[day] = _DayRows.read(conn, day)
        return self.days[day]

    @classmethod
    def load(cls, conn: Connection, last: date) -> PackHistory:
        def by_scope(table: Table) -> dict[Scope, list[Row]]:
            out: dict[Scope, list[Row]] = {}
            for row in _rows(conn, table, table.c.session_date <= last,
                             order=["broker", "account_id", "session_date"]):
                out.setdefault((str(row["broker"]), str(row["account_id"])), []).append(row)
            return out

        return cls(last, by_scope(portfolio_returns), by_scope(margin_history))

    @staticmethod
    def upto(rows: Sequence[Row], day: date) -> list[Row]:
        """The rows (oldest first) with ``session_date <= day``."""
        return list(rows[: bisect_right([r["session_date"] for r in rows], day)])


def load_pack(conn: Connection, day: date, scope: Scope = BOOK, label: str | None = None,
              history: PackHistory | None = None) -> PackData:
    """The stored rows of session ``day`` (and the history the charts need) of ``scope``:
    the consolidated book (default) or one (broker, account_id).  ``history`` (read up to a
    session on or after ``day``) supplies the returns and margin history instead of a query."""
    b, a = scope
    book = scope == BOOK
    r, m, rm = portfolio_returns, margin_history, risk_metrics
    if history is not None and day > history.last:
        raise ValueError(f"pack history read up to {history.last}, not up to {day}")
    if history is None:
        returns = _rows(conn, r, r.c.broker == b, r.c.account_id == a, r.c.session_date <= day,
                        order=["session_date"])
        margin = _rows(conn, m, m.c.broker == b, m.c.account_id == a, m.c.session_date <= day,
                       order=["session_date"])
    else:
        returns = history.upto(history.returns.get(scope, []), day)
        margin = history.upto(history.margin.get(scope, []), day)
    risk = _rows(conn, rm, rm.c.session_date == day, rm.c.broker == b, rm.c.account_id == a,
                 rm.c.window == "full")
    shared = history.day(conn, day) if history is not None else _DayRows.read(conn, day)

    pg, sp = portfolio_greeks, strategy_performance
    grid, hist, mc, dist = stress_shock_grid, stress_historical, monte_carlo_var, monte_carlo_distribution
    pgr = position_greeks
    return PackData(
        session=day,
        returns=returns,
        risk={str(x["metric"]): x for x in risk},
        exceedances=shared.exceedances if book else [],  # var_backtest tests the book's VaR
        limits=_rows(conn, limit_checks, limit_checks.c.session_date == day,
                     *(() if book else (limit_checks.c.broker == b, limit_checks.c.account_id == a)),
                     order=["broker", "account_id", "metric"]),
        margin=margin,
        positions=_rows(conn, pgr, pgr.c.session_date == day,
                        *(() if book else (pgr.c.broker == b, pgr.c.account_id == a))),
        by_underlying=_rows(conn, pg, pg.c.session_date == day, pg.c.broker == b, pg.c.account_id == a,
                            order=["underlying"]),
        strategies=_rows(conn, sp, sp.c.session_date == day, *(() if book else (sp.c.broker == b, sp.c.account_id == a)),
                         order=["broker", "account_id", "strategy_id"]),
        lifecycle=shared.lifecycle,
        grid=_rows(conn, grid, grid.c.session_date == day, grid.c.broker == b, grid.c.account_id == a,
                   grid.c.group_key == ALL, grid.c.strategy_id.is_(None)),
        replays=_rows(conn, hist, hist.c.session_date == day, hist.c.broker == b, hist.c.account_id == a,
                      order=["scenario", "step"]),
        mc=_rows(conn, mc, mc.c.session_date == day, mc.c.broker == b, mc.c.account_id == a,
                 mc.c.group_key == ALL, order=["horizon_days"]),
        mc_hist=_rows(conn, dist, dist.c.session_date == day, order=["horizon_days", "bin"]) if book else [],
        scopes=shared.scopes,
        # the profiles are the whole book's (an account page has none); the flow is the market's
        profile=_rows(conn, risk_profile, risk_profile.c.session_date == day, risk_profile.c.strategy_id == ALL,
                      risk_profile.c.broker == b, risk_profile.c.account_id == a,
                      order=["profile", "horizon_days", "point"]),
        profile_summary=_rows(conn, risk_profile_summary, risk_profile_summary.c.session_date == day,
                              risk_profile_summary.c.strategy_id == ALL, risk_profile_summary.c.broker == b,
                              risk_profile_summary.c.account_id == a, order=["profile", "horizon_days"]),
        flow=shared.flow,
        scope=scope,
        label=label or ("consolidated" if book else a),
    )


# ------------------------------------------------------------------------ numbers


def usd(value: Any, *, signed: bool = False) -> str:
    """Whole dollars with thousands separators ('–' when missing)."""
    x = finite_or_none(value)
    if x is None:
        return "–"
    return f"{x:+,.0f}" if signed else f"{x:,.0f}"


def pct(ratio: Any, digits: int = 1, *, signed: bool = False) -> str:
    """A ratio as a percentage ('–' when missing)."""
    x = finite_or_none(ratio)
    if x is None:
        return "–"
    return f"{100 * x:+.{digits}f}%" if signed else f"{100 * x:.{digits}f}%"


@dataclass(frozen=True, slots=True)
class VarBreach:
    """A stored ``var_exceedances`` row: the session's P&L against the prior session's VaR."""

    model: str
    level: float
    var_session: date
    day_pnl: float
    prior_var: float
    breached: bool
    """``exceeded`` as stored by the var_backtest asset (``-pnl > VaR``), not recomputed."""

    @property
    def label(self) -> str:
        """'99%' for the historical VaR, '99% Monte Carlo 1-day' for the Monte Carlo one."""
        return f"{100 * self.level:.0f}%{MODEL_LABELS.get(self.model, ' ' + self.model)}"


def var_breaches(pack: PackData) -> list[VarBreach]:
    """The session's stored exceedance rows of :data:`PACK_VAR`, in that order (empty when the
    var_backtest asset stored none, e.g. the first session)."""
    rows = {(str(x["model"]), round(float(x["level"]), 6)): x for x in pack.exceedances}
    out = []
    for model, level in PACK_VAR:
        row = rows.get((model, round(level, 6)))
        if row is None:
            continue
        pnl, var = finite_or_none(row["pnl_usd"]), finite_or_none(row["var_usd"])
        if pnl is not None and var is not None:
            out.append(VarBreach(model, level, row["var_session_date"], pnl, var, bool(row["exceeded"])))
    return out


def limit_rows(pack: PackData) -> list[Row]:
    """The session's limit checks with $ values (fraction x the scope's NLV), book first."""
    nlv = {(r["broker"], r["account_id"]): finite_or_none(r["nlv"]) for r in pack.scopes}
    out = []
    for r in sorted(pack.limits, key=lambda x: (x["broker"] != ALL, x["broker"], x["account_id"], x["metric"])):
        scale = nlv.get((r["broker"], r["account_id"]))
        if scale is None and r["broker"] == ALL and pack.today is not None:
            scale = finite_or_none(pack.today["nlv"])
        name, unit = LIMIT_LABELS.get(str(r["metric"]), (str(r["metric"]), "$"))
        value, limit = finite_or_none(r["value"]), finite_or_none(r["limit_value"])
        if r["metric"] in BANS:
            out.append({
                "scope": f"{r['broker']}:{r['account_id']}", "metric": name, "unit": unit, "value_pct": None,
                "limit_pct": None, "value_usd": None, "limit_usd": None, "count": value,
                "utilisation": None, "breached": bool(r["breached"]), "regime": r["regime"],
            })
            continue
        out.append({
            "scope": "book" if r["broker"] == ALL else f"{r['broker']}:{r['account_id']}",
            "metric": name, "unit": unit, "value_pct": value, "limit_pct": limit,
            "value_usd": None if scale is None or value is None else value * scale,
            "limit_usd": None if scale is None or limit is None else limit * scale,
            "utilisation": finite_or_none(r["utilisation"]), "breached": bool(r["breached"]), "regime": r["regime"],
        })
    return out


# ------------------------------------------------------------------------ HTML

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:0 12px;color:#222}"
    "table{border-collapse:collapse;margin:6px 0 14px}"
    "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}"
    "th{background:#f3f3f3}td.l,th.l{text-align:left}td.l a{white-space:nowrap}"
    "tr.breach td{background:#fde0dc;font-weight:600}"
    ".flag{display:inline-block;padding:2px 8px;border-radius:4px;font-weight:600}"
    ".bad{background:#d62728;color:#fff}.ok{background:#2ca02c;color:#fff}.warn{background:#ffbf00}"
    ".light{display:inline-block;width:12px;height:12px;border-radius:6px;margin-right:4px;vertical-align:middle}"
    ".green{background:#2ca02c}.yellow{background:#ffbf00}.red{background:#d62728}.grey{background:#aaa}"
    "h2{border-bottom:2px solid #ddd;padding-bottom:2px;margin-top:28px}"
)


def _e(value: Any) -> str:
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, left: int = 1,
           classes: Sequence[str] | None = None) -> str:
    """An HTML table; the first ``left`` columns are left aligned; cells are already escaped."""
    head = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        cells = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{cells}</tr>")
    if not body:
        return "<p><em>none</em></p>"
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _headline(pack: PackData) -> str:
    today = pack.today
    if today is None:
        return f"<p><em>No book row stored for {pack.session}.</em></p>"
    margin = next((r for r in pack.margin if r["session_date"] == pack.session), None)
    parts = [
        f"NLV <b>${usd(today['nlv'])}</b>",
        f"day P&amp;L <b>${usd(today['pnl'], signed=True)}</b> ({pct(today['twr'], 2, signed=True)})",
        f"drawdown {pct(today['drawdown'], 1)}",
    ]
    if margin is not None:
        parts += [f"regime <b>{_e(margin['regime'])}</b>", f"VIX {finite_or_none(margin['vix']) or 0:.2f}",
                  f"margin {pct(margin['margin_utilisation'])} of NLV"]
    var99 = pack.risk.get("var_99_historical")
    if var99 is not None:
        parts.append(f"VaR 99% 1-day ${usd(var99['value_usd'])} ({pct(var99['value'], 2)})")
    breaches = sorted({r["metric"] for r in limit_rows(pack) if r["breached"]})
    flags = []
    for vb in var_breaches(pack):
        cls, word = ("bad", "VaR BREACH") if vb.breached else ("ok", "within VaR")
        flags.append(f'<span class="flag {cls}">{word} {_e(vb.label)}: day ${usd(vb.day_pnl, signed=True)} vs prior '
                     f"VaR ${usd(vb.prior_var)}</span>")
    lim = (f'<span class="flag bad">limits breached: {_e(", ".join(breaches))}</span>' if breaches
           else '<span class="flag ok">all limits within</span>')
    return f"<p>{' · '.join(parts)}</p><p>{lim} {' '.join(flags)}</p>"


def limits_html(pack: PackData) -> str:
    rows = limit_rows(pack)
    return _table(
        ["scope", "limit", "value (% NLV)", "limit (% NLV)", "value ($)", "limit ($)", "unit", "utilisation", "regime"],
        [[_e(r["scope"]), _e(r["metric"]), pct(r["value_pct"], 2), pct(r["limit_pct"], 2),
          usd(r["value_usd"]), usd(r["limit_usd"]), _e(r["unit"]), pct(r["utilisation"], 0), _e(r["regime"])]
         if "count" not in r else
         [_e(r["scope"]), _e(r["metric"]), "–", "–", f"{r['count'] or 0:g} held", "0 allowed", _e(r["unit"]),
          "BANNED" if r["breached"] else "none held", _e(r["regime"])]
         for r in rows],
        left=2, classes=["breach" if r["breached"] else "" for r in rows],
    )


_GREEK_HEAD = ["beta-wtd delta ($)", "dollar delta ($)", "gamma per 1% ($)", "theta ($/day)", "vega ($/vol pt)"]
_GREEK_COLS = ["beta_weighted_dollar_delta", "dollar_delta", "dollar_gamma_1pct", "theta_per_day", "vega_per_point"]


def _positions_html(pack: PackData) -> str:
    rows = sorted(pack.positions, key=lambda r: (r["underlying"], r["position_key"]))
    return _table(
        ["position", "account", "qty", "mark", "IV", *_GREEK_HEAD, "market value ($)"],
        [[_e(r["position_key"]), _e(r["account_id"]), f"{finite_or_none(r['quantity']) or 0:g}",
          f"{finite_or_none(r['mark']) or 0:,.2f}", pct(r["vol"], 1) if finite_or_none(r["vol"]) else "–",
          *[usd(r[c]) for c in _GREEK_COLS], usd(r["market_value"])] for r in rows],
        left=2,
    )


def _by_underlying_html(pack: PackData) -> str:
    rows = sorted(pack.by_underlying, key=lambda r: (r["underlying"] == ALL, r["underlying"]))
    return _table(["underlying", "positions", *_GREEK_HEAD],
                  [[_e("book" if r["underlying"] == ALL else r["underlying"]), str(r["positions"]),
                    *[usd(r[c]) for c in _GREEK_COLS]] for r in rows])


def _open(pack: PackData) -> list[Row]:
    return [r for r in pack.strategies if r["status"] == "open"]


def _by_strategy_html(pack: PackData) -> str:
    totals: dict[str, list[float]] = {}
    counts: dict[str, int] = {}
    cols = ["dollar_delta", "dollar_gamma_1pct", "theta_per_day", "vega_per_point"]
    for r in _open(pack):
        key = str(r["strategy_type"])
        acc = totals.setdefault(key, [0.0] * len(cols))
        counts[key] = counts.get(key, 0) + 1
        for i, c in enumerate(cols):
            acc[i] += finite_or_none(r[c]) or 0.0
    return _table(["strategy type", "open", "dollar delta ($)", "gamma per 1% ($)", "theta ($/day)", "vega ($/vol pt)"],
                  [[_e(k), str(counts[k]), *[usd(v) for v in vals]] for k, vals in sorted(totals.items())])


def traffic_light(status: Any) -> str:
    s = str(status) if status in ("green", "yellow", "red") else "grey"
    return f'<span class="light {s}"></span>{_e(s)}'


def _strategies_html(pack: PackData) -> str:
    rows = _open(pack)
    out = []
    for r in rows:
        life = pack.lifecycle.get(str(r["strategy_id"]), {})
        signal = life.get("message") or life.get("rule") or ""
        out.append([_e(r["strategy_id"]), _e(r["strategy_type"]), traffic_light(life.get("status")),
                    _e(life.get("days_in_trade", "–")), _e(life.get("dte", "–")), usd(r["daily_pnl"], signed=True),
                    usd(r["cumulative_pnl"], signed=True), usd(r["dollar_delta"]), usd(r["theta_per_day"]),
                    usd(r["vega_per_point"]), _e(signal)])
    return _table(["strategy", "type", "light", "days in trade", "DTE", "day P&L ($)", "P&L ($)",
                   "dollar delta ($)", "theta ($/day)", "vega ($/vol pt)", "exit signal"], out, left=3)


def _heat(value: float | None, top: float) -> str:
    if value is None:
        return ""
    a = min(abs(value) / top, 1.0) if top > 0 else 0.0
    rgb = (214, 39, 40) if value < 0 else (44, 160, 44)
    return f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},{0.08 + 0.8 * a:.2f})"


def _grid_html(pack: PackData) -> str:
    cells = [r for r in pack.grid if r["horizon_days"] == 0]
    if not cells:
        return "<p><em>no stress grid stored</em></p>"
    shocks = sorted({float(r["spot_shock"]) for r in cells})
    vols = list(dict.fromkeys(str(r["vol_scenario"]) for r in sorted(cells, key=_vol_order)))
    pnl = {(float(r["spot_shock"]), str(r["vol_scenario"])): finite_or_none(r["pnl"]) for r in cells}
    top = max((abs(v) for v in pnl.values() if v is not None), default=0.0)
    head = '<tr><th class="l">spot \\ vol</th>' + "".join(f"<th>{_e(v)}</th>" for v in vols) + "</tr>"
    body = []
    for s in shocks:
        tds = "".join(f'<td style="{_heat(pnl.get((s, v)), top)}">{usd(pnl.get((s, v)))}</td>' for v in vols)
        body.append(f'<tr><td class="l">{s:+.0%}</td>{tds}</tr>')
    return (f"<p>Book P&amp;L ($) of an instant shock (full revaluation): rows spot, columns implied vol "
            f"(points or VIX level).</p><table>{head}{''.join(body)}</table>")


def _vol_order(r: Row) -> tuple[int, float]:
    v = str(r["vol_scenario"])
    if v.startswith("VIX"):
        return (1, float(v.split()[1]))
    return (0, float(v.replace("pt", "")))


def _mc_html(pack: PackData) -> str:
    if not pack.mc:
        return "<p><em>no Monte Carlo result stored</em></p>"
    parts = [_table(["horizon", "VaR 95% ($)", "CVaR 95% ($)", "VaR 99% ($)", "CVaR 99% ($)", "mean ($)",
                     "std ($)", "scenarios", "regime"],
                    [[f"{r['horizon_days']} d", usd(r["var_95"]), usd(r["cvar_95"]), usd(r["var_99"]),
                      usd(r["cvar_99"]), usd(r["mean_pnl"], signed=True), usd(r["std_pnl"]), str(r["n_scenarios"]),
                      _e(r["regime"])] for r in pack.mc])]
    for r in pack.mc:
        bins = [b for b in pack.mc_hist if b["horizon_days"] == r["horizon_days"]]
        if bins:
            parts.append(histogram_svg(bins, {"VaR 95%": -float(r["var_95"]), "VaR 99%": -float(r["var_99"]),
                                              "CVaR 99%": -float(r["cvar_99"])},
                                       title=f"Book P&L over {r['horizon_days']} day(s), {r['n_scenarios']} scenarios"))
    return "".join(parts)


def histogram_svg(bins: Sequence[Row], marks: Mapping[str, float], *, title: str) -> str:
    """Bars of a P&L histogram (losses red) with vertical lines at ``marks`` (P&L values)."""
    w, h, pad = 720, 220, 40
    total = sum(int(b["scenarios"]) for b in bins)
    kept, seen = [], 0
    for b in bins:  # the far right tail (gains) would squeeze the loss side into a few pixels
        kept.append(b)
        seen += int(b["scenarios"])
        if seen >= 0.995 * total and float(b["pnl_to"]) > max(marks.values(), default=0.0):
            break
    cut = total - seen
    if cut:
        title = f"{title} (right tail: {cut} scenarios above ${usd(kept[-1]['pnl_to'])} not drawn)"
    bins = kept
    lo, hi = float(bins[0]["pnl_from"]), float(bins[-1]["pnl_to"])
    span = (hi - lo) or 1.0
    top = max(int(b["scenarios"]) for b in bins) or 1

    def x(v: float) -> float:
        return pad + (v - lo) / span * (w - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">'
             f'<title>{_e(title)}</title><text x="{pad}" y="14" font-size="12">{_e(title)}</text>']
    for b in bins:
        x0, x1 = x(float(b["pnl_from"])), x(float(b["pnl_to"]))
        bh = int(b["scenarios"]) / top * (h - 2 * pad)
        color = "#d62728" if float(b["pnl_to"]) <= 0 else "#1f77b4"
        parts.append(f'<rect x="{x0:.1f}" y="{h - pad - bh:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
                     f'height="{bh:.1f}" fill="{color}" opacity="0.75"/>')
    for k, (label, value) in enumerate(marks.items()):
        xv = x(value)
        parts.append(f'<line x1="{xv:.1f}" y1="{pad - 10}" x2="{xv:.1f}" y2="{h - pad}" stroke="#000" '
                     f'stroke-dasharray="4 3"/><text x="{xv + 3:.1f}" y="{pad + 4 + 12 * k}" font-size="11">'
                     f"{_e(label)} {usd(-value)}</text>")
    parts.append(f'<text x="{pad}" y="{h - 10}" font-size="10">{usd(lo)}</text>'
                 f'<text x="{w - pad - 60}" y="{h - 10}" font-size="10">{usd(hi)}</text></svg>')
    return "".join(parts)


PROFILE_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def profile_svg(curves: Mapping[str, Sequence[tuple[float, float]]], *, spot: float, title: str,
                expected_move: float | None = None, breakevens: Sequence[float] = ()) -> str:
    """P&L (y) against price (x), one line per horizon; today's price, the expected move band
    (± one sigma) and ``breakevens`` (of the last curve) marked; the zero line dashed."""
    w, h, pad, legend_h = 720, 260, 46, 16
    pts = [p for c in curves.values() for p in c]
    if not pts:
        return f"<p><em>{_e(title)}: no curve stored</em></p>"
    x_lo, x_hi = min(p[0] for p in pts), max(p[0] for p in pts)
    y_lo, y_hi = min(0.0, *(p[1] for p in pts)), max(0.0, *(p[1] for p in pts))
    xs, ys = (x_hi - x_lo) or 1.0, (y_hi - y_lo) or 1.0
    top = pad + legend_h * ((len(curves) + 3) // 4)

    def x(v: float) -> float:
        return pad + (v - x_lo) / xs * (w - 2 * pad)

    def y(v: float) -> float:
        return h - pad - (v - y_lo) / ys * (h - pad - top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{_e(title)}">'
             f'<title>{_e(title)}</title><text x="{pad}" y="14" font-size="12">{_e(title)}</text>']
    if expected_move:
        a, b = x(max(spot - expected_move, x_lo)), x(min(spot + expected_move, x_hi))
        parts.append(f'<rect x="{a:.1f}" y="{top}" width="{max(b - a, 0):.1f}" height="{h - pad - top}" '
                     f'fill="#9ecae1" opacity="0.25"><title>expected move ±{expected_move:,.2f}</title></rect>')
    parts.append(f'<line x1="{pad}" y1="{y(0):.1f}" x2="{w - pad}" y2="{y(0):.1f}" stroke="#999" '
                 f'stroke-dasharray="4 3"/>')
    parts.append(f'<line x1="{x(spot):.1f}" y1="{top}" x2="{x(spot):.1f}" y2="{h - pad}" stroke="#000"/>'
                 f'<text x="{x(spot) + 3:.1f}" y="{h - pad - 4}" font-size="10">today {spot:,.2f}</text>')
    for be in breakevens:
        parts.append(f'<line x1="{x(be):.1f}" y1="{top}" x2="{x(be):.1f}" y2="{h - pad}" stroke="#d62728" '
                     f'stroke-dasharray="2 2"><title>breakeven {be:,.2f}</title></line>')
    for k, (label, c) in enumerate(curves.items()):
        color = PROFILE_COLORS[k % len(PROFILE_COLORS)]
        coords = " ".join(f"{x(px):.1f},{y(v):.1f}" for px, v in c)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>'
                     f'<text x="{pad + 160 * (k % 4)}" y="{30 + legend_h * (k // 4)}" font-size="11" '
                     f'fill="{color}">■ {_e(label)}</text>')
    parts.append(f'<text x="2" y="{top + 4}" font-size="10">{usd(y_hi)}</text>'
                 f'<text x="2" y="{h - pad}" font-size="10">{usd(y_lo)}</text>'
                 f'<text x="{pad}" y="{h - 10}" font-size="10">{x_lo:,.2f}</text>'
                 f'<text x="{w - pad - 60}" y="{h - 10}" font-size="10">{x_hi:,.2f}</text></svg>')
    return "".join(parts)


def _profile_html(pack: PackData) -> str:
    if not pack.profile and not pack.is_book:
        return "<p><em>the risk profile is the consolidated book's (its page)</em></p>"
    if not pack.profile:
        return "<p><em>no risk profile stored</em></p>"
    by: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in pack.profile:
        by.setdefault(str(r["profile"]), {}).setdefault(str(r["horizon"]), []).append(
            (float(r["price"]), float(r["pnl"])))
    summaries: dict[str, list[Row]] = {}
    for r in pack.profile_summary:
        summaries.setdefault(str(r["profile"]), []).append(r)
    rows, charts = [], []
    for name in sorted(by, key=lambda n: (n != ALL, n)):
        ss = summaries.get(name, [])
        label = "book, beta-weighted to SPX" if name == ALL else name
        for r in ss:
            rows.append([_e(label), _e(r["horizon"]), usd(r["max_loss"], signed=True), f"{float(r['max_loss_price']):,.2f}",
                         usd(r["max_profit"], signed=True), f"{float(r['max_profit_price']):,.2f}",
                         _e(", ".join(f"{b:,.2f}" for b in r["breakevens"]) or "none"),
                         "–" if r["expected_move"] is None else f"±{float(r['expected_move']):,.2f}"])
        if not ss:
            continue
        em = next((float(r["expected_move"]) for r in ss if r["expected_move"] is not None), None)
        last = ss[-1]
        charts.append(profile_svg(
            by[name], spot=float(ss[0]["spot"]), expected_move=em, breakevens=[float(b) for b in last["breakevens"]],
            title=f"{label}: P&L ($) vs {ss[0]['driver']} price (vol shift {float(ss[0]['vol_shift_points']):+g} pt; "
                  f"breakevens of {last['horizon']} dotted, band ±1 sigma to {next((r['horizon'] for r in ss if r['expected_move'] is not None), '–')})"))
    table = _table(["profile", "horizon", "max loss ($)", "at", "max profit ($)", "at", "breakevens",
                    "expected move"], rows, left=2)
    return ("<p>P&amp;L of the book against the underlying's price (full revaluation, the stress grid's vol "
            "rule), at today (T+0), T+n sessions and the nearest expiries; max profit and loss within the "
            "range shown.</p>" + table + "".join(charts))


def _replays_html(pack: PackData) -> str:
    by: dict[str, list[Row]] = {}
    for r in pack.replays:
        if (r["broker"], r["account_id"]) == pack.scope:
            by.setdefault(str(r["scenario"]), []).append(r)
    rows, charts = [], []
    for name, steps in by.items():
        steps.sort(key=lambda r: r["step"])
        worst = min(steps, key=lambda r: float(r["pnl"]))
        rows.append([_e(name), _e(f"{steps[0]['step_date']} .. {steps[-1]['step_date']}"), _e(worst["step_date"]),
                     usd(worst["pnl"], signed=True), usd(steps[-1]["pnl"], signed=True),
                     str(sum(1 for s in steps if s["spx_source"] != "published" or s["vix_source"] != "published"))])
        charts.append(line_chart([s["step_date"] for s in steps], [float(s["pnl"]) for s in steps],
                                 title=f"{name}: today's book through the window, P&L ($)", color="#d62728"))
    table = _table(["window", "dates", "worst day", "worst P&L ($)", "end P&L ($)", "filled closes"], rows, left=3)
    return table + "".join(charts)


def _history_html(pack: PackData) -> str:
    ret, mar = pack.returns, pack.margin
    regimes = {str(r["regime"]) for r in mar}
    colors = {"calm": "#2ca02c", "normal": "#9ecae1", "elevated": "#ffbf00", "crisis": "#d62728"}
    strip = ""
    if mar:
        w = 640 / len(mar)
        rects = "".join(f'<rect x="{36 + i * w:.2f}" y="18" width="{w + 0.3:.2f}" height="16" '
                        f'fill="{colors.get(str(r["regime"]), "#888")}"><title>{r["session_date"]}: {_e(r["regime"])}'
                        f"</title></rect>" for i, r in enumerate(mar))
        legend = " ".join(f'<tspan fill="{colors.get(n, "#888")}">■ {_e(n)}</tspan>' for n in sorted(regimes))
        strip = (f'<svg xmlns="http://www.w3.org/2000/svg" width="712" height="50" role="img" aria-label="regime">'
                 f'<text x="36" y="12" font-size="12">Regime {mar[0]["session_date"]} .. {mar[-1]["session_date"]} '
                 f"{legend}</text>{rects}</svg>")
    return "".join([
        line_chart([r["session_date"] for r in ret], [float(r["nlv"]) for r in ret], title="NLV ($)"),
        line_chart([r["session_date"] for r in ret], [100 * float(r["drawdown"]) for r in ret],
                   title="Drawdown (%)", color="#d62728"),
        line_chart([r["session_date"] for r in mar], [100 * float(r["margin_utilisation"]) for r in mar],
                   title="Margin utilisation (% of NLV)", color="#ff7f0e"),
        line_chart([r["session_date"] for r in mar], [float(r["vix"]) for r in mar], title="VIX", color="#9467bd"),
        strip,
    ])


def _num(value: Any, digits: int = 0) -> str:
    v = finite_or_none(value)
    return "n/a" if v is None else f"{v:,.{digits}f}"


def flow_html(pack: PackData) -> str:
    """Options flow per underlying (``option_flow_metrics``): headline, exposures per expiry,
    put/call per bucket; the positioning assumption and a simulated chain are named."""
    if not pack.flow:
        return "<p><em>no options flow stored for this session</em></p>"
    out: list[str] = []
    for underlying in sorted({str(r["underlying"]) for r in pack.flow}):
        rows = [r for r in pack.flow if r["underlying"] == underlying]
        by = {(str(r["metric"]), str(r["scope"])): r["value"] for r in rows}
        first = rows[0]
        label = f"{underlying} (simulated chain)" if first["simulated"] else underlying
        pins = sorted((str(r["scope"]), str(r["metric"]), r["value"]) for r in rows
                      if str(r["metric"]).startswith("pin_") and str(r["metric"]).count("_") == 1)
        nxt = next((str(r["scope"]) for r in rows if r["metric"] == "max_pain"), None)
        headline = [
            ("spot", _num(by.get(("spot", "all")), 2)),
            ("dealer GEX ($ per 1% move)", _e(usd(by.get(("total_gex", "all")), signed=True))),
            ("zero-gamma level", "no sign change in the spot sweep" if by.get(("zero_gamma", "all")) is None
             else f"{_num(by.get(('zero_gamma', 'all')), 1)} "
                  f"({pct(by.get(('zero_gamma_distance', 'all')), signed=True)} from spot)"),
            ("vanna ($ delta per vol point)", _e(usd(by.get(("vanna", "all")), signed=True))),
            ("charm ($ delta per day)", _e(usd(by.get(("charm", "all")), signed=True))),
            ("put/call OI, volume", f"{_num(by.get(('put_call_oi', 'all')), 2)}, "
                                    f"{_num(by.get(('put_call_volume', 'all')), 2)}"),
            (f"max pain, next expiry {nxt or 'n/a'}", _num(by.get(("max_pain", nxt or "")))),
            ("highest-OI strikes, next expiry", ", ".join(_num(v) for _, _, v in pins) or "n/a"),
            ("unusual contracts", _num(by.get(("unusual_contracts", "all")))),
        ]
        expiries = sorted({str(r["scope"]) for r in rows if r["metric"] == "gex"})
        out.append(
            f"<h3>{_e(label)}</h3><p>dealer positioning: <code>{_e(first['positioning'])}</code></p>"
            + _table(["figure", "value"], [[_e(k), v] for k, v in headline])
            + _table(["expiry", "GEX ($ per 1%)", "vanna ($ delta / vol pt)", "charm ($ delta / day)"],
                     [[_e(e), _e(usd(by.get(("gex", e)), signed=True)), _e(usd(by.get(("vanna", e)), signed=True)),
                       _e(usd(by.get(("charm", e)), signed=True))] for e in expiries])
            + _table(["days to expiry", "put/call volume", "put/call OI"],
                     [[_e(b), _num(by.get(("put_call_volume", b)), 2), _num(by.get(("put_call_oi", b)), 2)]
                      for b in sorted({str(r["scope"]) for r in rows if r["metric"] == "put_call_oi"},
                                      key=lambda x: (x == "all", x.startswith(">"), len(x), x))])
        )
    return "".join(out)


def account_selector(day: date, accounts: Sequence[tuple[Scope, str]], current: Scope | None = None) -> str:
    """Links to the consolidated pack and each account's pack of ``day`` (the current one bold)."""
    if not accounts:
        return ""
    links = []
    for scope, label in ((BOOK, "consolidated"), *accounts):
        text = _e(label)
        if scope == current:
            links.append(f"<b>{text}</b>")
        else:
            links.append(f'<a href="{pack_name(day, None if scope == BOOK else scope[1])}">{text}</a>')
    return f'<p class="accounts">account: {" | ".join(links)}</p>'


def render_pack(pack: PackData, *, previous: date | None = None, following: date | None = None,
                accounts: Sequence[tuple[Scope, str]] = ()) -> str:
    """The pack of one session as a complete HTML page; ``accounts`` ((broker, account_id),
    label) feed the account selector (none: no selector)."""
    account = None if pack.is_book else pack.scope[1]
    nav = [f'<a href="{INDEX_NAME}">all sessions</a>']
    if previous is not None:
        nav.insert(0, f'<a href="{pack_name(previous, account)}">&larr; {previous}</a>')
    if following is not None:
        nav.append(f'<a href="{pack_name(following, account)}">{following} &rarr;</a>')
    sections = [
        ("Limits", limits_html(pack)),
        ("Positions and Greeks", _positions_html(pack)),
        ("Greeks by underlying", _by_underlying_html(pack)),
        ("Greeks by strategy type (open strategies)", _by_strategy_html(pack)),
        ("Strategies: traffic lights and exit signals", _strategies_html(pack)),
        ("Stress grid (heat map)", _grid_html(pack)),
        ("Monte Carlo P&amp;L distribution", _mc_html(pack)),
        ("Risk profile: P&amp;L vs price", _profile_html(pack)),
        ("Historical replays", _replays_html(pack)),
        ("History: NLV, drawdown, margin and regime", _history_html(pack)),
        ("Options flow", flow_html(pack)),
    ]
    body = "".join(f"<h2>{title}</h2>{content}" for title, content in sections)
    who = "" if pack.is_book and not accounts else f" — {_e(pack.label)}"
    return ("<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>Risk pack {pack.session}{who}</title><style>{STYLE}</style></head><body>"
            f"<p>{' · '.join(nav)}</p>{account_selector(pack.session, accounts, pack.scope)}"
            f"<h1>Risk pack {pack.session}{who}</h1>{_headline(pack)}{body}</body></html>")


def index_rows(conn: Connection) -> list[Row]:
    """One row per stored session: NLV, P&L, regime, limit breaches, and the VaR breach of
    :data:`INDEX_VAR` (the stored ``var_exceedances`` row; None when there is none)."""
    r, m = portfolio_returns, margin_history
    returns = _rows(conn, r, r.c.broker == ALL, r.c.account_id == ALL, order=["session_date"])
    margin = {x["session_date"]: x for x in _rows(conn, m, m.c.broker == ALL, m.c.account_id == ALL)}
    model, level = INDEX_VAR
    tested = {x["session_date"]: x for x in read_var_exceedances(conn, models=[model]).to_dict("records")
              if round(float(x["level"]), 6) == round(level, 6)}
    out = []
    for row in returns:
        day = row["session_date"]
        mg = margin.get(day, {})
        hit = tested.get(day)
        out.append({"session_date": day, "nlv": row["nlv"], "pnl": finite_or_none(row["pnl"]), "twr": row["twr"],
                    "regime": mg.get("regime", "–"), "breaches": mg.get("breaches", 0),
                    "breached_metrics": mg.get("breached_metrics", ""),
                    "var_breach": None if hit is None else bool(hit["exceeded"]),
                    "prior_var": None if hit is None else finite_or_none(hit["var_usd"])})
    return out


def render_index(rows: Sequence[Row], available: set[date],
                 accounts: Sequence[tuple[Scope, str]] = (), account_pages: set[tuple[date, str]] | None = None) -> str:
    """The index page: every session, newest first, breaches highlighted, linked to its pack;
    with ``accounts`` an account selector (each account's latest pack) and each session's
    account pages."""
    rows = sorted(rows, key=lambda r: r["session_date"], reverse=True)
    pages = account_pages or set()
    n_limit = sum(1 for r in rows if r["breaches"])
    n_var = sum(1 for r in rows if r["var_breach"])
    cells = []
    for r in rows:
        day = r["session_date"]
        link = f'<a href="{pack_name(day)}">{day}</a>' if day in available else _e(day)
        vb = "–" if r["var_breach"] is None else ('<span class="flag bad">yes</span>' if r["var_breach"] else "no")
        row = [link, usd(r["nlv"]), usd(r["pnl"], signed=True), pct(r["twr"], 2, signed=True), _e(r["regime"]),
               str(r["breaches"]), _e((r["breached_metrics"] or "").replace(",", ", ")), usd(r["prior_var"]), vb]
        if accounts:
            row.append(" · ".join(f'<a href="{pack_name(day, s[1])}">{_e(label)}</a>'
                                for s, label in accounts if (day, s[1]) in pages) or "–")
        cells.append(row)
    head = ["session", "NLV ($)", "day P&L ($)", "day return", "regime", "limits breached", "which",
            "prior VaR 99% ($)", "VaR breach"] + (["accounts"] if accounts else [])
    table = _table(head, cells, classes=["breach" if r["breaches"] or r["var_breach"] else "" for r in rows])
    selector = ""
    latest = next((r["session_date"] for r in rows if r["session_date"] in available), None)
    if accounts and latest is not None:
        selector = ("<h2>Accounts</h2>" + account_selector(latest, accounts)
                    + f"<p>Each link opens the account's pack of {latest} (the latest session); the "
                    "sessions below link every account's pack; their limit columns count the "
                    "consolidated book's breaches (each account's are on its page).</p>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Risk packs</title>"
            f"<style>{STYLE}</style></head><body><h1>Risk packs</h1>"
            f"<p>{len(rows)} sessions · limit breaches on {n_limit} · VaR 99% breaches on {n_var}</p>"
            f"{selector}{table}</body></html>")


def headline_markdown(pack: PackData) -> str:
    """The pack's key tables as markdown (the asset's metadata; fits the Dagster UI)."""
    today = pack.today
    lines = []
    if today is not None:
        lines.append(f"**{pack.session}** NLV ${usd(today['nlv'])}, day P&L ${usd(today['pnl'], signed=True)} "
                     f"({pct(today['twr'], 2, signed=True)}), drawdown {pct(today['drawdown'])}")
    for vb in var_breaches(pack):
        lines.append(f"- VaR {vb.label}: {'**BREACH**' if vb.breached else 'within'} "
                     f"(day ${usd(vb.day_pnl, signed=True)} vs prior VaR ${usd(vb.prior_var)})")
    lines += ["", "| limit | value | limit | used |", "|---|---:|---:|---:|"]
    for r in limit_rows(pack):
        if r["scope"] != "book":
            continue
        mark = "**" if r["breached"] else ""
        lines.append(f"| {mark}{r['metric']}{mark} | ${usd(r['value_usd'])} ({pct(r['value_pct'], 2)}) | "
                     f"${usd(r['limit_usd'])} ({pct(r['limit_pct'], 2)}) | {mark}{pct(r['utilisation'], 0)}{mark} |")
    signals = [(sid, life) for sid, life in pack.lifecycle.items() if life.get("status") in ("red", "yellow")]
    if signals:
        lines += ["", "| strategy | light | exit signal |", "|---|---|---|"]
        lines += [f"| {sid} | {life['status']} | {life.get('message') or life.get('rule') or ''} |"
                  for sid, life in sorted(signals)]
    return "\n".join(lines)


def write_packs(conn: Connection, days: Sequence[date], directory: Path,
                labels: Mapping[str, str] | None = None) -> list[tuple[Path, PackData]]:
    """Write the packs of ``days`` (with several accounts, each account's too) and refresh
    the index in ``directory``; each consolidated pack's path with its data.  ``labels``:
    account id -> display name (``accounts.yaml``; default the account id)."""
    directory.mkdir(parents=True, exist_ok=True)
    sessions = stored_sessions(conn)
    position = {d: i for i, d in enumerate(sessions)}
    names = dict(labels or {})
    everyone = stored_accounts(conn)
    accounts = [(s, names.get(s[1], s[1])) for s in everyone] if len(everyone) > 1 else []
    written = []
    history = PackHistory.load(conn, max(days)) if days else None
    for day in days:
        i = position.get(day)
        previous = sessions[i - 1] if i is not None and i > 0 else None
        following = sessions[i + 1] if i is not None and i + 1 < len(sessions) else None
        held = set(stored_accounts(conn, day)) if accounts else set()
        selector = [(s, label) for s, label in accounts if s in held]
        pack = load_pack(conn, day, history=history)
        path = directory / pack_name(day)
        path.write_text(render_pack(pack, previous=previous, following=following, accounts=selector),
                        encoding="utf-8")
        written.append((path, pack))
        for scope, label in selector:
            mine = load_pack(conn, day, scope, label, history)
            (directory / pack_name(day, scope[1])).write_text(
                render_pack(mine, previous=previous, following=following, accounts=selector), encoding="utf-8")
    available: set[date] = set()
    account_pages: set[tuple[date, str]] = set()
    slugs = {_slug(s[1]): s[1] for s, _ in accounts}
    for p in directory.glob(f"{PACK_PREFIX}*.html"):
        stem = p.name[len(PACK_PREFIX):-len(".html")]
        day_text, _, account = stem.partition("__")
        try:
            day = date.fromisoformat(day_text)
        except ValueError:
            continue
        if not account:
            available.add(day)
        elif account in slugs:
            account_pages.add((day, slugs[account]))
    (directory / INDEX_NAME).write_text(render_index(index_rows(conn), available, accounts, account_pages),
                                        encoding="utf-8")
    return written
