"""Pre-trade what-if on a stored session: the book with and without a trade.

The trade's legs (:mod:`portfolio_pipeline.domain.trade_legs`) are priced like the
session's own contracts (``book.load_book``: the grid's rate and dividend yield, the
settlement instant of the exchange calendar, the American tree for equity/ETF options)
and added to the shock grid's book as a second column of units, so ONE revaluation gives
"before" and "after" on the same scenarios:

* Greeks: the stored ``portfolio_greeks`` book row, plus the trade's position Greeks
  (``domain.greeks.position_greeks``, the beta stored for the underlying in
  ``position_greeks``);
* limits: :func:`portfolio_pipeline.domain.whatif.limit_changes` under the session's stored
  regime, with the margin change of the demo margin model (``brokers/demo/margin.py``) on
  the book's positions grouped by underlying, with and without the legs;
* VaR/CVaR: 1-day historical full revaluation over the last ``var_days`` sessions of SPX
  and VIX closes up to the session (each underlying moves by its beta x the SPX return,
  ATM vols by vix_beta x the VIX change), 95 % and 99 %;
* the stress grid (0 days) and the risk profile of the beta-weighted book.

A leg's implied vol: its ``@ PRICE`` when given; else the session's quote of that
contract; else the held option of the underlying nearest in strike (then expiry), moved
along the configured skew slope (``vol + skew_slope x ln(K / K_held)``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Literal

import numpy as np
from sqlalchemy import Connection, select

from portfolio_pipeline.analytics.risk_profile import ProfileCurves, build_profiles
from portfolio_pipeline.analytics.stress import var_cvar
from portfolio_pipeline.brokers.demo.margin import MarginLeg, account_margin
from portfolio_pipeline.config.loader import PlatformConfig
from portfolio_pipeline.defs.stress.book import (
    StressBook,
    american_kwargs,
    grid_scenarios,
    load_book,
)
from portfolio_pipeline.defs.stress.profile import profile_inputs, spx_level
from portfolio_pipeline.domain.errors import InvalidDataError
from portfolio_pipeline.domain.greeks import position_greeks
from portfolio_pipeline.domain.limits import RiskSnapshot
from portfolio_pipeline.domain.positions import contract_from_row
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline.domain.settlement import years_to_settlement
from portfolio_pipeline.domain.symbols import AGGREGATE as ALL
from portfolio_pipeline.domain.trade_legs import TradeLeg
from portfolio_pipeline.domain.whatif import LimitChange, RiskChange, limit_changes
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.quant import pricing
from portfolio_pipeline.quant.revaluation import revalue
from portfolio_pipeline.quant.scenario_book import Book, ContractSet
from portfolio_pipeline.quant.scenario_set import ScenarioSet
from portfolio_pipeline.storage import market_snapshot, positions_snapshot, read_partition
from portfolio_pipeline.storage.regimes import session_regime_state
from portfolio_pipeline.storage.tables import margin_history, portfolio_greeks
from portfolio_pipeline.storage.tables import position_greeks as pg_table

__all__ = ["WhatIf", "extend_book", "model_values", "what_if"]

VAR_DAYS = 500
TRADING_DAYS = 252.0


@dataclass(frozen=True)
class PricedLeg:
    leg: TradeLeg
    contract_index: int
    spot: float
    vol: float
    vol_source: str
    value: float
    """Model value per share/point today."""


@dataclass(frozen=True)
class WhatIf:
    session: date
    legs: tuple[PricedLeg, ...]
    change: RiskChange
    """The trade's Greeks and demo-margin change."""
    greeks_before: dict[str, float]
    limits: list[LimitChange]
    margin_before: float
    margin_after: float
    """Demo margin model on the book's positions (before) and with the legs (after)."""
    var_before: dict[str, float]
    var_after: dict[str, float]
    grid: list[tuple[float, str, float, float]]
    """(spot shock, vol column, P&L before, P&L after) at 0 days."""
    profile_before: ProfileCurves | None
    profile_after: ProfileCurves | None
    trade_value: float
    """Model value of the legs today ($, + = paid for what is bought)."""


def _nearest_vol(c: ContractSet, f: int, strike: float, T: float) -> tuple[int, float] | None:
    sel = np.flatnonzero(c.is_option & (c.factor == f) & (c.vol > 0) & (c.T > 0))
    if sel.size == 0:
        return None
    d = np.abs(np.log(c.strike[sel] / strike))
    best = int(sel[np.lexsort((np.abs(c.T[sel] - T), np.round(d, 12)))[0]])
    return best, float(c.vol[best])


def extend_book(
    conn: Connection,
    sb: StressBook,
    legs: Sequence[TradeLeg],
    as_of: datetime,
    config: PlatformConfig,
    calendar: ExchangeCalendar,
) -> tuple[StressBook, Book, list[PricedLeg]]:
    """The book with the legs' contracts (reused where the book holds them already), and a
    Book with two unit columns: ``before`` (the book) and ``after`` (book + legs)."""
    cfg = config.stress_scenarios
    c = sb.book.contracts
    cols: dict[str, list[Any]] = {
        f.name: list(getattr(c, f.name)) for f in dataclasses.fields(ContractSet)
    }
    keys = list(sb.contract_keys)
    factors = list(sb.book.factors)
    settings = list(sb.settings)
    quotes = {
        str(q["instrument_key"]): q
        for q in read_partition(conn, market_snapshot, {"session_date": sb.session})
    }
    trade_units: dict[int, float] = {}
    priced: list[PricedLeg] = []
    for n, leg in enumerate(legs, start=1):
        k = leg.contract
        where = f"leg {n} {leg.text!r}"
        root = k.underlying.upper()
        if root not in factors:
            und = next(
                (
                    q
                    for q in quotes.values()
                    if str(q["underlying"]).upper() == root and q["sec_type"] in ("STK", "IND")
                ),
                None,
            )
            if und is None:
                raise InvalidDataError(
                    f"{where}: no {root} price in the {sb.session} market snapshot"
                )
            factors.append(root)
            settings.append(cfg.underlying(root))
            spot_new: float | None = float(und["mark"])
        else:
            spot_new = None
        f = factors.index(root)
        on_f = [i for i in range(len(cols["factor"])) if cols["factor"][i] == f]
        spot = spot_new if spot_new is not None else float(cols["spot"][on_f[0]])
        if k.key in keys:
            i = keys.index(k.key)
            vol, source = float(cols["vol"][i]), "the book's own contract"
        elif not k.is_option:
            i = len(keys)
            vol, source = 0.0, "shares"
            for name, v in (
                ("factor", f),
                ("is_option", False),
                ("is_call", False),
                ("black76", False),
                ("spot", spot),
                ("strike", math.nan),
                ("T", 0.0),
                ("r", 0.0),
                ("q", 0.0),
                ("vol", 0.0),
                ("american", False),
            ):
                cols[name].append(v)
            keys.append(k.key)
        else:
            assert k.expiry is not None and k.strike is not None
            tc = config.instruments.trading_class(root, k.trading_class)
            T = years_to_settlement(as_of, k.expiry, tc.settlement_time, calendar)
            if T <= 0:
                raise InvalidDataError(f"{where}: expired at the {sb.session} close")
            q = settings[f].dividend_yield
            american = config.instruments.exercise_style(root) == "american"
            quote = quotes.get(k.key)
            if leg.price is not None or (
                quote is not None and quote.get("iv") is None and quote.get("mark")
            ):
                px = leg.price if leg.price is not None else float(quote["mark"])  # type: ignore[index]
                vol = float(
                    np.asarray(
                        pricing.implied_vol(px, k.right == "C", spot, k.strike, T, cfg.rate, q)
                    )
                )
                source = f"implied from {'@ price' if leg.price is not None else 'the quote mark'} {px:g}"
            elif quote is not None and quote.get("iv"):
                vol, source = float(quote["iv"]), "the session's quote"
            else:
                ext = ContractSet.build(**{name: np.asarray(v) for name, v in cols.items()})
                near = _nearest_vol(ext, f, k.strike, T)
                if near is None:
                    raise InvalidDataError(
                        f"{where}: no implied vol: not quoted on {sb.session} and no {root} "
                        "option in the book; give a price ('@ 12.50')"
                    )
                j, v0 = near
                vol = max(
                    v0 + settings[f].skew_slope * math.log(k.strike / float(ext.strike[j])),
                    cfg.grid.min_vol,
                )
                source = f"the book's {root} smile (nearest strike {float(ext.strike[j]):g})"
            if not math.isfinite(vol) or vol <= 0:
                raise InvalidDataError(
                    f"{where}: the price gives no implied vol (below intrinsic or above the bound)"
                )
            i = len(keys)
            for name, v in (
                ("factor", f),
                ("is_option", True),
                ("is_call", k.right == "C"),
                ("black76", False),
                ("spot", spot),
                ("strike", k.strike),
                ("T", T),
                ("r", cfg.rate),
                ("q", q),
                ("vol", vol),
                ("american", american),
            ):
                cols[name].append(v)
            keys.append(k.key)
        trade_units[i] = trade_units.get(i, 0.0) + leg.units
        priced.append(PricedLeg(leg, i, spot, vol, source, math.nan))
    contracts = ContractSet.build(**{name: np.asarray(v) for name, v in cols.items()})
    before = np.zeros(contracts.size)
    before[: c.size] = sb.book.units.sum(axis=1)
    after = before.copy()
    for i, u in trade_units.items():
        after[i] += u
    two = Book(contracts, np.stack([before, after], axis=1), ("before", "after"), tuple(factors))
    values = model_values(contracts, config)
    priced = [dataclasses.replace(p, value=float(values[p.contract_index])) for p in priced]
    ext_sb = dataclasses.replace(
        sb,
        book=Book(contracts, two.units[:, 1:], ("after",), tuple(factors)),
        settings=tuple(settings),
        contract_keys=tuple(keys),
    )
    return ext_sb, two, priced


def model_values(c: ContractSet, config: PlatformConfig) -> np.ndarray:
    """Per-unit model value today of every contract (the revaluation's own kernels: the
    closed form, the grid's American pricer)."""
    grid = config.stress_scenarios.grid
    method: Literal["lr", "bs2002"] = "bs2002" if grid.american_method == "bs2002" else "lr"
    out = np.where(c.is_option, 0.0, c.spot)
    for i in np.flatnonzero(c.is_option):
        if c.american[i]:
            v = pricing.american_price(
                bool(c.is_call[i]),
                c.spot[i],
                c.strike[i],
                c.T[i],
                c.r[i],
                c.q[i],
                c.vol[i],
                method=method,
                steps=grid.american_steps,
            )
        else:
            v = pricing.price(
                bool(c.is_call[i]), c.spot[i], c.strike[i], c.T[i], c.r[i], c.q[i], c.vol[i]
            )
        out[i] = float(np.asarray(v))
    return out


def _trade_change(
    conn: Connection,
    day: date,
    book: Book,
    priced: Sequence[PricedLeg],
    spx: float,
    margin_change: float,
) -> RiskChange:
    c = book.contracts
    betas = {
        str(r[0]).upper(): float(r[1])
        for r in conn.execute(
            select(pg_table.c.underlying, pg_table.c.beta).where(pg_table.c.session_date == day)
        )
    }
    total = RiskChange(maint_margin=margin_change)
    for p in priced:
        i = p.contract_index
        beta = betas.get(p.leg.contract.underlying.upper(), 1.0)
        if c.is_option[i]:
            g = pricing.greeks(
                bool(c.is_call[i]),
                c.spot[i],
                c.strike[i],
                c.T[i],
                c.r[i],
                c.q[i],
                c.vol[i],
                exercise="american" if c.american[i] else "european",
            )
            d, gm, v, t = (float(np.asarray(x)) for x in (g.delta, g.gamma, g.vega, g.theta))
        else:
            d, gm, v, t = 1.0, 0.0, 0.0, 0.0
        pg = position_greeks(
            delta=d,
            gamma=gm,
            vega=v,
            theta=t,
            quantity=p.leg.quantity,
            multiplier=p.leg.multiplier,
            spot=float(c.spot[i]),
            beta=beta,
            reference_price=spx,
        )
        total = total + RiskChange(
            float(pg.beta_weighted_dollar_delta),
            float(pg.dollar_gamma_1pct),
            float(pg.vega_per_point),
            float(pg.theta_per_day),
        )
    return total


def _demo_margin(conn: Connection, day: date, priced: Sequence[PricedLeg]) -> tuple[float, float]:
    """Demo margin model on the book's positions by underlying, without and with the legs."""
    groups: dict[str, list[MarginLeg]] = {}
    for r in read_partition(conn, positions_snapshot, {"session_date": day}):
        contract = contract_from_row(r)
        spot = float(r["underlying_price"] if r["underlying_price"] is not None else r["mark"])
        groups.setdefault(contract.underlying.upper(), []).append(
            MarginLeg(
                contract, float(r["quantity"]), float(r["multiplier"]), float(r["mark"]), spot
            )
        )
    before = account_margin(groups.values()).maintenance
    for p in priced:  # a leg on a held contract changes that position (closing it removes it)
        group = groups.setdefault(p.leg.contract.underlying.upper(), [])
        held = next((n for n, m in enumerate(group) if m.contract.key == p.leg.contract.key), None)
        if held is None:
            group.append(
                MarginLeg(p.leg.contract, p.leg.quantity, p.leg.multiplier, p.value, p.spot)
            )
        else:
            group[held] = dataclasses.replace(
                group[held], quantity=group[held].quantity + p.leg.quantity
            )
    after = [[m for m in g if m.quantity != 0] for g in groups.values()]
    return before, account_margin(after).maintenance


def _book_row(conn: Connection, table: Any, day: date, **extra: str) -> dict[str, Any]:
    t = table
    clauses = [
        t.c.session_date == day,
        t.c.broker == ALL,
        t.c.account_id == ALL,
        *(t.c[k] == v for k, v in extra.items()),
    ]
    row = conn.execute(select(t).where(*clauses)).mappings().first()
    if row is None:
        raise InvalidDataError(
            f"{t.name} has no book row for session {day}: run the EOD pipeline for it first"
        )
    return dict(row)


def _history_scenarios(sb: StressBook, history: Any, day: date, days: int) -> ScenarioSet:
    spx = history.spx_close().astype("float64")
    vix = history.vix().astype("float64")
    joint = spx.to_frame("spx").join(vix.rename("vix"), how="inner")
    joint = joint[joint.index.date <= day].tail(days + 1)
    if len(joint) < 30:
        raise InvalidDataError(
            f"only {len(joint)} SPX/VIX closes up to {day} for the historical VaR"
        )
    r = np.diff(np.log(joint["spx"].to_numpy()))
    dv = np.diff(joint["vix"].to_numpy())
    lv = np.diff(np.log(joint["vix"].to_numpy()))
    volf = sb.is_vol_factor
    beta = sb.per_factor("beta")
    x = np.where(volf[None, :], lv[:, None], r[:, None]) * beta[None, :]
    d_atm = np.where(volf, 0.0, sb.per_factor("vix_beta"))[None, :] * (dv / 100.0)[:, None]
    return ScenarioSet.build(x, d_atm, 1.0 / TRADING_DAYS)


def what_if(
    conn: Connection,
    day: date,
    legs: Sequence[TradeLeg],
    config: PlatformConfig,
    calendar: ExchangeCalendar,
    history: Any,
    *,
    var_days: int = VAR_DAYS,
) -> WhatIf:
    """Everything ``portfolio whatif`` prints, for the stored session ``day``."""
    cfg = config.stress_scenarios
    as_of = calendar.session_close(day)
    sb = load_book(conn, day, as_of, config, cfg, calendar)
    spx = spx_level(conn, day)
    if spx is None:
        raise InvalidDataError(
            f"market_snapshot of {day} has no SPX quote (the beta-weighting reference)"
        )
    ext, two, priced = extend_book(conn, sb, legs, as_of, config, calendar)
    m_before, m_after = _demo_margin(conn, day, priced)
    change = _trade_change(conn, day, two, priced, spx, m_after - m_before)
    greeks = _book_row(conn, portfolio_greeks, day, underlying=ALL)
    margin = _book_row(conn, margin_history, day)
    risk = RiskSnapshot(
        "book",
        float(margin["nlv"]),
        float(greeks["beta_weighted_dollar_delta"]),
        float(greeks["dollar_gamma_1pct"]),
        float(greeks["vega_per_point"]),
        float(greeks["theta_per_day"]),
        float(margin["maint_margin"]),
    )
    regime = session_regime_state(
        conn,
        RegimeService(config.risk_matrix),
        day,
        calendar.previous_session(day),
        sb.vix,
        sb.vix3m,
    )
    kw: dict[str, Any] = {
        "skew_slope": ext.per_factor("skew_slope"),
        "skew_rule": cfg.grid.skew_rule,
        "min_vol": cfg.grid.min_vol,
        **american_kwargs(cfg.grid),
    }
    hist = revalue(two, _history_scenarios(ext, history, day, var_days), **kw)
    grid = grid_scenarios(ext, cfg)
    gp = revalue(two, grid.scenarios, **kw)
    cells = [
        (float(grid.spot_shocks[i]), grid.vol_labels[j], float(gp[n, 0]), float(gp[n, 1]))
        for n, (i, j, k) in enumerate(grid.cells)
        if grid.horizons_days[k] == 0
    ]
    before_sb = dataclasses.replace(
        ext, book=Book(two.contracts, two.units[:, :1], ("before",), two.factors)
    )
    prof_before = build_profiles(profile_inputs(before_sb, cfg, calendar, spx)).book()
    prof_after = build_profiles(profile_inputs(ext, cfg, calendar, spx)).book()
    value = float(sum(p.value * p.leg.units for p in priced))
    return WhatIf(
        day,
        tuple(priced),
        change,
        {
            k: float(greeks[k])
            for k in (
                "beta_weighted_dollar_delta",
                "dollar_gamma_1pct",
                "vega_per_point",
                "theta_per_day",
            )
        },
        limit_changes(risk, change, regime),
        m_before,
        m_after,
        var_cvar(hist[:, 0]),
        var_cvar(hist[:, 1]),
        cells,
        prof_before,
        prof_after,
        value,
    )
