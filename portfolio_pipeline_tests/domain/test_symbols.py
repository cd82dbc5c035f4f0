"""One aggregate marker and one set of VIX symbols: defined in ``domain.symbols`` only.

Scans the package sources for a module-level name bound to ``"*"``, ``"VIX"`` or
``"VIX3M"`` (or a tuple/set/list literal of the VIX symbols) anywhere else.
"""

from __future__ import annotations

import ast
from pathlib import Path

import portfolio_pipeline
import streaming_service
from portfolio_pipeline.brokers.snapshot import VOLATILITY_INDICES
from portfolio_pipeline.domain.symbols import AGGREGATE, VOLATILITY_INDEX_SYMBOLS
from portfolio_pipeline.marketdata.bars import INDEX_SYMBOLS

RESERVED = {"*", "VIX", "VIX3M"}
HOME = Path(portfolio_pipeline.__file__).parent / "domain" / "symbols.py"


def _literals(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {v for e in node.elts for v in _literals(e)}
    if isinstance(node, ast.Call) and node.args:  # frozenset({...})
        return _literals(node.args[0])
    return set()


def test_reserved_symbols_are_defined_once() -> None:
    offenders = []
    for package in (portfolio_pipeline, streaming_service):
        for path in Path(package.__file__).parent.rglob("*.py"):
            if path == HOME:
                continue
            for node in ast.parse(path.read_text(encoding="utf-8")).body:
                value = node.value if isinstance(node, ast.Assign | ast.AnnAssign) else None
                if value is not None and _literals(value) & RESERVED:
                    offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []


def test_derived_sets_follow_the_constant() -> None:
    assert AGGREGATE == "*"
    assert tuple(c.underlying for c in VOLATILITY_INDICES) == VOLATILITY_INDEX_SYMBOLS
    assert set(VOLATILITY_INDEX_SYMBOLS) <= set(INDEX_SYMBOLS)
