"""Cross-file checks: what one configuration file names must exist in another.

Each file validates on its own (its schema); these checks need two files at once:

- ``streaming.yaml`` ``hedge.hedge_underlying`` is an instrument with options (priceable:
  the proposer builds option spreads on it) and ``hedge.trading_classes`` maps known
  roots to trading classes those roots define;
- ``strategies.yaml`` overrides name configured accounts and instruments;
- ``pricing.yaml`` (beta reference, dividend yields, beta overrides) and
  ``stress_scenarios.yaml`` (``underlyings``) name instruments of ``instruments.yaml``;
- ``flow.yaml`` ``underlyings`` are instruments with options;
- ``stress_scenarios.yaml`` ``monte_carlo.regime_vol_multiplier`` names exactly the
  regimes of ``risk_matrix.yaml`` (the defaults apply when the file is absent).

Names are compared case-insensitively, like every instrument lookup.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel

from portfolio_pipeline.config.loader import ConfigProblem
from portfolio_pipeline.domain.accounts import AccountsFile
from portfolio_pipeline.domain.instruments import InstrumentsFile
from portfolio_pipeline.domain.regime import RiskMatrix
from portfolio_pipeline.quant.scenario_config import StressScenariosFile

__all__ = ["reference_problems"]


def _roots(instruments: InstrumentsFile) -> dict[str, set[str]]:
    """Upper-case root -> upper-case trading classes (empty set: no options)."""
    return {
        root.upper(): {tc.name.upper() for tc in spec.options.trading_classes}
        if spec.options is not None
        else set()
        for root, spec in instruments.instruments.items()
    }


def _unknown(names: Iterable[str], roots: Mapping[str, set[str]]) -> list[str]:
    return [name for name in names if name.upper() not in roots]


def reference_problems(directory: Path, loaded: Mapping[str, BaseModel]) -> list[ConfigProblem]:
    """Problems of references between the files of ``loaded`` (each already valid alone)."""
    instruments = loaded.get("instruments.yaml")
    accounts = loaded.get("accounts.yaml")
    if not isinstance(instruments, InstrumentsFile):
        return []
    roots = _roots(instruments)
    known = ", ".join(sorted(roots))
    problems: list[ConfigProblem] = []

    def add(file_name: str, key_path: str, message: str) -> None:
        problems.append(ConfigProblem(str(directory / file_name), key_path, message))

    streaming = loaded.get("streaming.yaml")
    hedge = getattr(streaming, "hedge", None)
    if hedge is not None:
        underlying = str(hedge.hedge_underlying)
        classes = roots.get(underlying.upper())
        if classes is None:
            add("streaming.yaml", "hedge.hedge_underlying",
                f"unknown instrument {underlying!r} (instruments.yaml defines {known})")
        elif not classes:
            add("streaming.yaml", "hedge.hedge_underlying",
                f"instrument {underlying!r} has no options in instruments.yaml, "
                "so no hedge can be priced on it")
        for root, tc in dict(hedge.trading_classes).items():
            root_classes = roots.get(str(root).upper())
            if root_classes is None:
                add("streaming.yaml", f"hedge.trading_classes.{root}",
                    f"unknown instrument {root!r} (instruments.yaml defines {known})")
            elif str(tc).upper() not in root_classes:
                add("streaming.yaml", f"hedge.trading_classes.{root}",
                    f"trading class {tc!r} is not defined for {root!r} in instruments.yaml "
                    f"({', '.join(sorted(root_classes)) or 'no options'})")

    matrix = loaded.get("risk_matrix.yaml")
    if isinstance(accounts, AccountsFile) and matrix is not None:
        read = accounts.book()
        keys = {a.name for a in read} | {a.account_id for a in read}
        for key in getattr(matrix, "accounts", {}) or {}:
            if key not in keys:
                add("risk_matrix.yaml", f"accounts.{key}",
                    f"unknown account {key!r} (accounts.yaml lists {', '.join(sorted(a.name for a in read))})")
        # a group no account is in yet is fine: it applies once an account joins it

    strategies = loaded.get("strategies.yaml")
    account_ids = (
        {a.account_id for a in accounts.book()} if isinstance(accounts, AccountsFile) else None
    )
    for i, override in enumerate(getattr(strategies, "overrides", None) or []):
        if account_ids is not None and override.account_id not in account_ids:
            add("strategies.yaml", f"overrides[{i}].account_id",
                f"unknown account {override.account_id!r} (accounts.yaml lists "
                f"{', '.join(sorted(account_ids))})")
        for key in override.legs or {}:
            root = str(key).split("|", 1)[0]
            if root.upper() not in roots:
                add("strategies.yaml", f"overrides[{i}].legs.{key}",
                    f"unknown instrument {root!r} (instruments.yaml defines {known})")

    pricing = loaded.get("pricing.yaml")
    if pricing is not None:
        beta = getattr(pricing, "beta", None)
        if beta is not None and str(beta.reference).upper() not in roots:
            add("pricing.yaml", "beta.reference",
                f"unknown instrument {beta.reference!r} (instruments.yaml defines {known})")
        for name in _unknown(getattr(pricing, "dividend_yields", {}), roots):
            add("pricing.yaml", f"dividend_yields.{name}",
                f"unknown instrument {name!r} (instruments.yaml defines {known})")
        for name in _unknown(getattr(beta, "overrides", {}) if beta is not None else {}, roots):
            add("pricing.yaml", f"beta.overrides.{name}",
                f"unknown instrument {name!r} (instruments.yaml defines {known})")

    stress = loaded.get("stress_scenarios.yaml")
    for name in _unknown(getattr(stress, "underlyings", None) or {}, roots):
        add("stress_scenarios.yaml", f"underlyings.{name}",
            f"unknown instrument {name!r} (instruments.yaml defines {known})")
    flow = loaded.get("flow.yaml")
    for i, name in enumerate(getattr(flow, "underlyings", None) or []):
        if name.upper() not in roots:
            add("flow.yaml", f"underlyings[{i}]", f"unknown instrument {name!r} (instruments.yaml defines {known})")
        elif not roots[name.upper()]:
            add("flow.yaml", f"underlyings[{i}]", f"instrument {name!r} has no options in instruments.yaml")
    matrix = loaded.get("risk_matrix.yaml")
    if isinstance(matrix, RiskMatrix):
        multipliers = (
            stress if isinstance(stress, StressScenariosFile) else StressScenariosFile()
        ).monte_carlo.regime_vol_multiplier
        regimes = {r.name for r in matrix.regimes}
        unknown, missing = sorted(set(multipliers) - regimes), sorted(regimes - set(multipliers))
        if unknown or missing:
            absent = "" if stress is not None else " (file absent: its defaults apply)"
            add("stress_scenarios.yaml", "monte_carlo.regime_vol_multiplier",
                f"unknown regimes {unknown}, missing regimes {missing} (risk_matrix.yaml has "
                f"{sorted(regimes)}){absent}")
    return problems
