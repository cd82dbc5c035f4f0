"""The package layering, enforced by reading every module's imports (``ast``).

Rules (README "Architecture", docs/ARCHITECTURE.md):

- ``portfolio_pipeline`` never imports ``streaming_service`` (the service builds on the
  pipeline, not the other way round);
- ``domain`` imports only ``domain``; ``quant`` only ``domain`` and ``quant``;
  ``config`` only ``config``, ``domain``, ``quant`` (schemas and pure kernels) and
  ``retry`` (the one retry policy, a leaf module the notification schema builds on);
- ``domain``, ``quant`` and ``config`` import no Dagster, SQLAlchemy, broker SDK or
  network library;
- ``notify`` and ``brokers.history`` do not import ``storage``: they declare the store
  they need as a Protocol, ``storage`` implements it and the composition root (Dagster
  resources, the CLI) passes it in.

Every import counts, also one inside a function or under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIPELINE = "portfolio_pipeline"
#: the one retry policy: a leaf module (stdlib and tenacity only) that config may build on
RETRY = "portfolio_pipeline.retry"

#: packages whose modules may import only the project packages listed (plus outside libraries)
ALLOWED_PROJECT_IMPORTS: dict[str, tuple[str, ...]] = {
    "portfolio_pipeline.domain": ("portfolio_pipeline.domain",),
    "portfolio_pipeline.quant": ("portfolio_pipeline.domain", "portfolio_pipeline.quant"),
    "portfolio_pipeline.config": (
        "portfolio_pipeline.config", "portfolio_pipeline.domain", "portfolio_pipeline.quant",
        RETRY,
    ),
}

#: package -> imports it must never make (a name and everything below it)
FORBIDDEN: dict[str, tuple[str, ...]] = {
    PIPELINE: ("streaming_service",),
    "portfolio_pipeline.notify": ("portfolio_pipeline.storage",),
    "portfolio_pipeline.brokers.history": ("portfolio_pipeline.storage",),
    **{
        pure: ("dagster", "sqlalchemy", "alembic", "ib_async", "tastytrade", "httpx", "requests",
               "aiohttp", "urllib.request", "http.client", "socket", "smtplib")
        for pure in ALLOWED_PROJECT_IMPORTS
    },
}


@dataclass(frozen=True)
class Violation:
    module: str
    line: int
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.imported} ({self.rule})"


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, module: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``, relative ones resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # ``from portfolio_pipeline import storage``
                yield node.lineno, f"{target}.{alias.name}"


def violations(root: Path, package: str = PIPELINE) -> list[Violation]:
    """Every import under ``root/package`` that breaks a rule above."""
    found: list[Violation] = []
    for path in sorted((root / package).rglob("*.py")):
        module = _module_name(path, root)
        for line, imported in _imports(path, module):
            for owner, banned in FORBIDDEN.items():
                if not _within(module, owner):
                    continue
                for name in banned:
                    if _within(imported, name):
                        found.append(Violation(module, line, imported, f"{owner} must not import {name}"))
            for owner, allowed in ALLOWED_PROJECT_IMPORTS.items():
                if (
                    _within(module, owner)
                    and _within(imported, PIPELINE)
                    and imported != PIPELINE
                    and not any(_within(imported, a) for a in allowed)
                ):
                    found.append(Violation(module, line, imported,
                                           f"{owner} may import only {', '.join(allowed)}"))
    first: dict[tuple[str, int, str], Violation] = {}
    for v in sorted(found, key=lambda v: (v.module, v.line, len(v.imported))):
        first.setdefault((v.module, v.line, v.rule), v)  # ``from x import y``: report ``x`` once
    return list(first.values())


def test_the_tree_keeps_the_layering() -> None:
    broken = violations(ROOT)
    assert not broken, "layering broken:\n" + "\n".join(map(str, broken))


def test_the_retry_policy_is_a_leaf() -> None:
    path = ROOT / (RETRY.replace(".", "/") + ".py")
    project = [name for _, name in _imports(path, RETRY) if _within(name, PIPELINE)]
    assert project == [], f"{RETRY} imports {project}: config builds on it, so it must stay a leaf"


def test_the_rules_cover_the_packages_they_name() -> None:
    for package in [*FORBIDDEN, *ALLOWED_PROJECT_IMPORTS]:
        assert (ROOT / package.replace(".", "/")).is_dir(), package


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("portfolio_pipeline/defs/alerts/sensors.py",
         "def f():\n    from streaming_service.config import StreamingConfig\n",
         "portfolio_pipeline must not import streaming_service"),
        ("portfolio_pipeline/config/loader.py", "import streaming_service.main\n",
         "portfolio_pipeline must not import streaming_service"),
        ("portfolio_pipeline/notify/dispatcher.py",
         "from portfolio_pipeline.storage.tables import alerts\n",
         "portfolio_pipeline.notify must not import portfolio_pipeline.storage"),
        ("portfolio_pipeline/notify/store.py", "from ..storage import Database\n",
         "portfolio_pipeline.notify must not import portfolio_pipeline.storage"),
        ("portfolio_pipeline/brokers/history/store.py", "from portfolio_pipeline import storage\n",
         "portfolio_pipeline.brokers.history must not import portfolio_pipeline.storage"),
        ("portfolio_pipeline/config/loader.py",
         "from portfolio_pipeline.notify.config import NotificationsFile\n",
         "portfolio_pipeline.config may import only"),
        ("portfolio_pipeline/domain/greeks.py", "from portfolio_pipeline.quant import pricing\n",
         "portfolio_pipeline.domain may import only"),
        ("portfolio_pipeline/quant/pricing.py",
         "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import sqlalchemy\n",
         "portfolio_pipeline.quant must not import sqlalchemy"),
    ],
)
def test_each_rule_catches_a_breaking_import(tmp_path: Path, path: str, source: str, rule: str) -> None:
    target = tmp_path / path
    target.parent.mkdir(parents=True)
    target.write_text(source)
    found = violations(tmp_path)
    assert found, source
    assert all(v.module == _module_name(target, tmp_path) for v in found)
    assert any(v.rule.startswith(rule) for v in found), [str(v) for v in found]


def test_allowed_imports_are_not_flagged(tmp_path: Path) -> None:
    target = tmp_path / "portfolio_pipeline/config/loader.py"
    target.parent.mkdir(parents=True)
    target.write_text(
        "from portfolio_pipeline.domain.regime import RiskMatrix\n"
        "from portfolio_pipeline.quant.scenarios import StressScenariosFile\n"
        "from .streaming import StreamingConfig\nimport pydantic\n"
    )
    assert violations(tmp_path) == []
