"""Start-up cost of the ``portfolio`` command: building the command tree imports no heavy library.

Asserts what is imported (in a fresh interpreter), never how long it takes; the times
are printed by ``benchmarks/bench_cli.py``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline_tests.stubs import REPO_ROOT

#: libraries that cost 0.1-1 s each to import; the commands import them in their bodies
HEAVY = ("dagster", "pandas", "sqlalchemy", "numpy", "scipy", "great_expectations",
         "ib_async", "tastytrade", "arch", "exchange_calendars", "pydantic", "alembic")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True,
                         check=True, timeout=120)
    roots = set(json.loads(out.stdout.splitlines()[-1]))
    return sorted(roots & set(HEAVY))


def test_importing_the_cli_imports_no_heavy_library() -> None:
    assert _imported_after("import portfolio_pipeline.cli") == []


def test_top_level_help_imports_no_heavy_library() -> None:
    code = ("import sys\nfrom portfolio_pipeline.cli import main\n"
            "try:\n    main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass")
    assert _imported_after(code) == []


def test_the_probe_sees_a_heavy_import() -> None:
    """The check above can fail: importing a command's dependencies shows up in it."""
    assert "sqlalchemy" in _imported_after("import portfolio_pipeline.cli\nimport portfolio_pipeline.storage")


@pytest.mark.parametrize(("group", "option", "expected"), [
    (["orders", "list"], "--status", ["proposed", "staged", "shown", "filled"]),
    (["strategies", "tag"], "--type", ["iron_condor", "vertical"]),
])
def test_lazy_choices_still_list_and_check_values(group: list[str], option: str, expected: list[str]) -> None:
    """The choices loaded on first use are the enum's/Literal's values, in help and in checks."""
    from typing import get_args

    from portfolio_pipeline.domain.orders import OrderStatus
    from portfolio_pipeline.domain.strategies.legs import StrategyType

    every = [s.value for s in OrderStatus] if option == "--status" else list(get_args(StrategyType))
    for value in expected:
        assert value in every
    help_text = CliRunner().invoke(main, [*group, "--help"]).output
    assert "|".join(every[:2]) in help_text.replace("\n", "").replace(" ", "")
    bad = CliRunner().invoke(main, [*group, *(["x", "--account", "a"] if group[0] == "strategies" else []),
                                    option, "no-such-value"])
    assert bad.exit_code == 2
    assert "no-such-value" in bad.output and option in bad.output
