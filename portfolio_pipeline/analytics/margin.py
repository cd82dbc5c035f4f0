"""Margin utilisation and limit checks of one session (rows of margin_history / limit_checks).

Pure: the session's account snapshots and book Greeks in, the regime state (and its
service for per-account overrides) given, rows out.  ``portfolio_pipeline.defs.risk``
stores them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

import numpy as np

from portfolio_pipeline.analytics.performance import ALL
from portfolio_pipeline.domain.accounts import AccountConfig, account_limits
from portfolio_pipeline.domain.limits import RiskSnapshot, evaluate_limits
from portfolio_pipeline.domain.regime import RegimeService, RegimeState
from portfolio_pipeline.domain.structures import StructureViolation, TaggedLeg, banned_structures
from portfolio_pipeline.storage.frames import AccountsFrame, PortfolioGreeksFrame

__all__ = ["ACCOUNT_AMOUNTS", "MarginRows", "margin_rows", "regime_label", "structure_violations"]

ACCOUNT_AMOUNTS = ("nlv", "maint_margin", "init_margin", "excess_liquidity")
"""account_snapshot amounts carried into margin_history (summed for the book)."""
_GREEKS = ("beta_weighted_dollar_delta", "dollar_gamma_1pct", "vega_per_point", "theta_per_day")

MarginRows = tuple[list[dict[str, Any]], list[dict[str, Any]]]


def _or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0


def _book_greeks(greeks: PortfolioGreeksFrame) -> dict[tuple[str, str], dict[str, float]]:
    """(broker, account) -> the all-underlyings Greeks of that scope (missing -> 0)."""
    out: dict[tuple[str, str], dict[str, float]] = {}
    for i in np.flatnonzero(greeks.underlying == ALL):
        out[(str(greeks.broker[i]), str(greeks.account_id[i]))] = {
            name: _or_zero(float(getattr(greeks, name)[i])) for name in _GREEKS}
    return out


def structure_violations(
    configured: Mapping[str, AccountConfig],
    service: RegimeService,
    strategies: Iterable[Mapping[str, Any]],
) -> dict[str, tuple[tuple[str, ...], list[StructureViolation]]]:
    """account id -> (the bans of its type, the banned structures it holds), for every
    configured account whose type has ``structure_bans``; ``strategies``:
    ``strategy_groups`` rows of one session (closed ones are skipped)."""
    bans = service.matrix.structure_bans
    by_account: dict[str, list[tuple[str, str, str, list[TaggedLeg]]]] = {}
    for r in strategies:
        if r["status"] != "open" or r["account_id"] == ALL:
            continue
        legs = [TaggedLeg(None if x.get("sec_type") != "OPT" else x.get("right"), float(x["quantity"]))
                for x in r["legs"] or []]
        by_account.setdefault(str(r["account_id"]), []).append(
            (str(r["strategy_id"]), str(r["strategy_type"]), str(r["underlying"]), legs))
    return {
        account_id: (tuple(bans[cfg.type]),
                      banned_structures(account_id, bans[cfg.type], by_account.get(account_id, [])))
        for account_id, cfg in configured.items() if bans.get(cfg.type)
    }


def margin_rows(
    day: date,
    accounts: AccountsFrame,
    greeks: PortfolioGreeksFrame,
    service: RegimeService,
    state: RegimeState,
    configured: Mapping[str, AccountConfig],
    strategies: Iterable[Mapping[str, Any]] = (),
) -> MarginRows:
    """``margin_history`` and ``limit_checks`` rows of session ``day``.

    One scope per account (its limits: :func:`~portfolio_pipeline.domain.accounts.
    account_limits` of ``configured[account_id]``, the regime's when not configured) and,
    when there is any account, the book ('*', '*') with the summed amounts and the
    regime's limits.  An account whose type has ``structure_bans`` gets one check per
    banned structure (metric ``naked_short_call`` / ``naked_short_put``: value = naked
    short contracts, limit 0, breached when any).  A scope with NLV <= 0 has no row (the
    quality checks report it)."""
    violations = structure_violations(configured, service, strategies)
    scopes: list[tuple[tuple[str, str], dict[str, float], RegimeState]] = []
    book = dict.fromkeys(ACCOUNT_AMOUNTS, 0.0)
    order = sorted(range(len(accounts)), key=lambda i: (accounts.broker[i], accounts.account_id[i]))
    for i in order:
        values = {k: float(getattr(accounts, k)[i]) for k in ACCOUNT_AMOUNTS}
        for k in book:
            book[k] += values[k]
        account = str(accounts.account_id[i])
        limits = state
        if account in configured:
            limits = dataclasses.replace(state, limits=account_limits(service, configured[account], state.name))
        scopes.append(((str(accounts.broker[i]), account), values, limits))
    if scopes:
        scopes.append(((ALL, ALL), book, state))
    totals = _book_greeks(greeks)
    margin: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    for key, values, regime in scopes:
        if values["nlv"] <= 0:
            continue
        g = totals.get(key, dict.fromkeys(_GREEKS, 0.0))
        found = evaluate_limits(RiskSnapshot(scope=f"{key[0]}:{key[1]}", nlv=values["nlv"],
                                             maint_margin=values["maint_margin"], **g), regime)
        bans = _ban_rows(day, key, regime, violations.get(key[1]) if key[1] != ALL else None)
        breached = [c.metric for c in found if c.breached] + [b["metric"] for b in bans if b["breached"]]
        margin.append({
            "session_date": day, "broker": key[0], "account_id": key[1], **values,
            "margin_utilisation": values["maint_margin"] / values["nlv"],
            "regime": regime.name, "vix": regime.vix, "vix3m": regime.vix3m,
            "term_ratio": regime.term_ratio, "backwardation": bool(regime.backwardation),
            "breaches": len(breached), "breached_metrics": ",".join(breached),
        })
        checks.extend({
            "session_date": day, "broker": key[0], "account_id": key[1], "metric": c.metric,
            "value": c.value, "limit_value": c.limit,
            "utilisation": c.utilisation if math.isfinite(c.utilisation) else 1e9,
            "breached": c.breached, "regime": c.regime, "vix": c.vix, "vix3m": c.vix3m,
        } for c in found)
        checks.extend(bans)
    return margin, checks


def _ban_rows(day: date, key: tuple[str, str], regime: RegimeState,
              found: tuple[tuple[str, ...], list[StructureViolation]] | None) -> list[dict[str, Any]]:
    if found is None:
        return []
    bans, violations = found
    out: list[dict[str, Any]] = []
    for ban in bans:
        contracts = sum(v.contracts for v in violations if v.ban == ban)
        out.append({
            "session_date": day, "broker": key[0], "account_id": key[1], "metric": ban,
            "value": contracts, "limit_value": 0.0, "utilisation": 1e9 if contracts > 0 else 0.0,
            "breached": contracts > 0, "regime": regime.name, "vix": regime.vix, "vix3m": regime.vix3m,
        })
    return out


def regime_label(names: tuple[str, ...]) -> str:
    """Label of the plotted regime level: '0 calm .. 3 crisis' style, from the configured order."""
    return "regime level (" + ", ".join(f"{i}={n}" for i, n in enumerate(names)) + ")"
