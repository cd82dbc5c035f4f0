"""Fuzz every input surface and print counts by outcome (ok / clean error / traceback).

    .venv/bin/python benchmarks/fuzz_surfaces.py                 # 10,000 cases per surface
    .venv/bin/python benchmarks/fuzz_surfaces.py --cases 500 --surface config --show 5

Surfaces and generators: ``portfolio_pipeline_tests/fuzz/surfaces.py`` (the same ones the
test suite runs with a small budget).  ``traceback`` counts inputs that escaped the
one-line error contract (an exception the CLI would call an internal error, a problem
that is not one line naming the file, or a non-finite number accepted); ``--show N``
prints the first N of them.  Exit status 1 when any traceback was seen.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from portfolio_pipeline_tests.fuzz import surfaces


def _fuzz(
    strategy: st.SearchStrategy[Any], runner: Callable[[Any], surfaces.Result], cases: int, seed: int
) -> tuple[Counter[str], list[str], int]:
    counts: Counter[str] = Counter()
    failures: list[str] = []

    @settings(max_examples=cases, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(case: Any) -> None:
        result = runner(case)
        counts[result.outcome] += 1
        if result.outcome == "traceback":
            failures.append(f"{result.detail}  <- {repr(case)[:160]}")

    from hypothesis import seed as hypothesis_seed

    hypothesis_seed(seed)(run)()
    return counts, failures, sum(counts.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=10_000, help="cases per surface (default 10,000)")
    parser.add_argument("--surface", action="append", choices=["config", "flex", "tastytrade", "cli"])
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--show", type=int, default=3, help="tracebacks to print per surface")
    args = parser.parse_args()
    chosen = args.surface or ["config", "flex", "tastytrade", "cli"]
    total_tracebacks = 0
    with tempfile.TemporaryDirectory(prefix="fuzz_surfaces_") as tmp:
        root = Path(tmp)
        os.environ["PORTFOLIO_HOME"] = str(root / "home")
        os.environ.pop("PORTFOLIO_DB_URL", None)
        os.environ.pop("DAGSTER_HOME", None)
        config_dir = root / "config"
        surfaces.prepare_config_dir(config_dir)
        plans: dict[str, tuple[st.SearchStrategy[Any], Callable[[Any], surfaces.Result]]] = {
            "config": (surfaces.config_cases(), lambda case: surfaces.run_config_case(case, config_dir)),
            "flex": (surfaces.flex_cases(), surfaces.run_flex_case),
            "tastytrade": (surfaces.tastytrade_cases(), surfaces.run_tastytrade_case),
            "cli": (surfaces.cli_cases(), surfaces.run_cli_case),
        }
        print(f"{'surface':<11} {'cases':>7} {'ok':>7} {'clean':>7} {'traceback':>9} {'seconds':>8}")
        for name in chosen:
            strategy, runner = plans[name]
            started = time.perf_counter()
            counts, failures, n = _fuzz(strategy, runner, args.cases, args.seed)
            elapsed = time.perf_counter() - started
            total_tracebacks += counts["traceback"]
            print(f"{name:<11} {n:>7} {counts['ok']:>7} {counts['clean']:>7} {counts['traceback']:>9} "
                  f"{elapsed:>8.1f}", flush=True)
            for line in failures[: args.show]:
                print(f"    traceback: {line}", flush=True)
    return 1 if total_tracebacks else 0


if __name__ == "__main__":
    sys.exit(main())
