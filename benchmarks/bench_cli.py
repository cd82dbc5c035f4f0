"""Start-up time of the ``portfolio`` command, as a user sees it (a new process each time).

Rows: ``portfolio --help``, ``portfolio orders list`` and ``portfolio config check`` on a
fresh ``PORTFOLIO_HOME`` (SQLite, created and migrated by the first run; the runs after it
are timed), each the median of ``--repeat`` runs of the installed entry point, plus the
number of modules (and which heavy libraries) ``import portfolio_pipeline.cli`` loads.
The baseline is the bare interpreter (``python -c pass``): no command can start faster.

    .venv/bin/python benchmarks/bench_cli.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("dagster", "pandas", "sqlalchemy", "numpy", "scipy", "great_expectations",
         "ib_async", "tastytrade", "arch", "exchange_calendars", "pydantic", "alembic")
COMMANDS = (["--help"], ["orders", "list"], ["config", "check"])


def _time(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    entry = Path(sys.executable).with_name("portfolio")
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "PORTFOLIO_HOME": home}
        subprocess.run([str(entry), "db", "migrate"], env=env, capture_output=True, check=True)
        bare = _time([sys.executable, "-c", "pass"], env, args.repeat)
        print(f"{'command':<28} {'median s':>9}  (of {args.repeat} runs; bare python {bare:.3f} s)")
        for command in COMMANDS:
            print(f"{'portfolio ' + ' '.join(command):<28} {_time([str(entry), *command], env, args.repeat):>9.3f}")
    # run from a neutral directory: the installed package is measured, not the current one
    neutral = tempfile.gettempdir()
    probe = ("import sys, json, portfolio_pipeline.cli\n"
             "print(json.dumps([len(sys.modules), sorted({m.split('.')[0] for m in sys.modules})]))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=neutral)
    count, roots = json.loads(out.stdout)
    base = subprocess.run([sys.executable, "-c", "import sys; print(len(sys.modules))"],
                          capture_output=True, text=True, check=True, cwd=neutral)
    heavy = sorted(set(roots) & set(HEAVY))
    print(f"import portfolio_pipeline.cli: {count} modules in sys.modules "
          f"(bare python {base.stdout.strip()}); heavy libraries: {', '.join(heavy) or 'none'}")


if __name__ == "__main__":
    main()
