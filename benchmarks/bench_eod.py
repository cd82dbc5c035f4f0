"""EOD pipeline end to end on the demo broker: one session, then a one-year single-run backfill.

    .venv/bin/python benchmarks/bench_eod.py [--start 2017-07-03] [--end 2018-06-29]

Runs the `eod_job` (every daily asset: broker snapshots, Greeks, returns, attribution, risk
metrics, margin, stress and Monte Carlo, strategies, report) in a throwaway PORTFOLIO_HOME with
SQLite, and prints wall time per step from Dagster's own step statistics. There is no peer
library doing this whole job; the ratio printed is backfill seconds per session against the
single-session run, i.e. what a single-run backfill saves over running sessions one by one.

It also prints CPU time (user + sys of this process, every thread) beside wall time -- on a
shared machine wall time measures the neighbours too -- and splits the backfill into a fixed
cost and a per-session cost from the backfill and a second (warm) one-session run: per session
= (backfill - one session) / (sessions - 1), fixed = one session - per session (run set-up,
GARCH fits, checks, metadata of the run).

Where the seconds go (threads included):

    py-spy record -r 50 -f raw -o eod.txt -- .venv/bin/python benchmarks/bench_eod.py --start 2018-04-02 --end 2018-05-29

That a faster version records the same thing: run `portfolio demo` over the same window with
each version in its own PORTFOLIO_HOME and diff `benchmarks/eod_outputs.py HOME` of the two
(every platform table row, every partition's metadata, every check result).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from datetime import date
from pathlib import Path


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _run(first: date, last: date, dagster_home: str | None = None, tuned: bool = True
         ) -> tuple[float, float, dict[str, float]]:
    """Wall seconds, CPU seconds and per-step wall seconds of one run of ``eod_job``: on an
    in-memory Dagster instance, or on Dagster's default SQLite storage in ``dagster_home``
    (what `portfolio demo` uses: its ``dagster.yaml`` with the pooled event log, its
    ``SqliteRunStorageTuning`` and batched event writes, unless ``tuned`` is false: Dagster's
    storage as it ships)."""
    import contextlib

    import dagster as dg

    from portfolio_pipeline.dagster_home import (
        SqliteRunStorageTuning,
        batched_event_writes,
        sqlite_dagster_yaml,
    )
    from portfolio_pipeline.definitions import build_definitions
    from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar

    sessions = ExchangeCalendar().sessions(first, last)
    job = build_definitions().resolve_job_def("eod_job")
    if dagster_home and tuned:  # the dagster.yaml `portfolio demo` writes (pooled event log)
        Path(dagster_home, "dagster.yaml").write_text(sqlite_dagster_yaml(Path(dagster_home)))
    instance = (dg.DagsterInstance.local_temp(dagster_home) if dagster_home
                else dg.DagsterInstance.ephemeral())
    tuning = (SqliteRunStorageTuning(Path(dagster_home)) if dagster_home and tuned
              else contextlib.nullcontext())
    batching = batched_event_writes(instance) if tuned else contextlib.nullcontext()
    try:
        tuning.__enter__()
        batching.__enter__()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        result = job.execute_in_process(
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
            resources={"db": DatabaseResource(), "platform": PlatformResource(demo_only=True)},
            tags={
                "dagster/asset_partition_range_start": sessions[0].isoformat(),
                "dagster/asset_partition_range_end": sessions[-1].isoformat(),
            },
        )
        elapsed, cpu = time.perf_counter() - started, _cpu_seconds() - cpu_started
        assert result.success
        steps = {
            s.step_key: float((s.end_time or 0.0) - (s.start_time or 0.0))
            for s in instance.get_run_step_stats(result.run_id)
        }
    finally:
        batching.__exit__(None, None, None)
        instance.dispose()
        tuning.__exit__(None, None, None)
    return elapsed, cpu, steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", default="2017-07-03")
    parser.add_argument("--end", default="2018-06-29")
    parser.add_argument("--instance", choices=("memory", "sqlite"), default="memory",
                        help="Dagster's own storage: in memory, or SQLite files as `portfolio demo` "
                        "keeps them (every event a commit)")
    parser.add_argument("--untuned", action="store_true",
                        help="with --instance sqlite: Dagster's SQLite storage as it ships (an engine "
                        "and an fsync per stored event), without portfolio's dagster.yaml "
                        "(PooledSqliteEventLogStorage) and SqliteRunStorageTuning")
    args = parser.parse_args()
    first, last = date.fromisoformat(args.start), date.fromisoformat(args.end)
    with tempfile.TemporaryDirectory() as home:
        os.environ["PORTFOLIO_HOME"] = home
        os.environ.pop("PORTFOLIO_DB_URL", None)
        from portfolio_pipeline.exchange_calendar import ExchangeCalendar

        n = len(ExchangeCalendar().sessions(first, last))
        dagster_home = os.path.join(home, "dagster") if args.instance == "sqlite" else None
        if dagster_home:
            os.makedirs(dagster_home)
        tuned = not args.untuned
        one_t, one_cpu, one_steps = _run(last, last, dagster_home, tuned)  # cold: pays the imports
        year_t, year_cpu, year_steps = _run(first, last, dagster_home, tuned)
        warm_t, warm_cpu, _ = (_run(last, last, dagster_home, tuned) if n > 1
                               else (one_t, one_cpu, one_steps))
    print(f"Dagster instance: {args.instance}"
          + (f" ({'untuned' if args.untuned else 'pooled event log + SqliteRunStorageTuning'})" if dagster_home else ""))
    print(f"one session ({last}): {one_t:.1f} s wall, {one_cpu:.1f} s CPU (first run of the process); "
          f"again after the backfill: {warm_t:.1f} s wall, {warm_cpu:.1f} s CPU")
    print(f"single-run backfill of {n} sessions ({first} .. {last}): {year_t:.1f} s wall, "
          f"{year_cpu:.1f} s CPU; {year_t / n:.2f} s wall/session = "
          f"{one_t / (year_t / n):.1f}x faster per session than one by one")
    if n > 1:  # both runs warm, so the split does not charge the imports to the sessions
        for label, one, year in (("wall", warm_t, year_t), ("CPU", warm_cpu, year_cpu)):
            per = (year - one) / (n - 1)
            print(f"{label:4s}: per-session cost {per:.3f} s, fixed cost {one - per:.1f} s "
                  f"(backfill = fixed + {n} x per-session)")
    print(f"{'step':28s} {'1 session s':>12s} {'backfill s':>12s}")
    for key in sorted(year_steps, key=lambda k: -year_steps[k]):
        print(f"{key:28s} {one_steps.get(key, float('nan')):12.1f} {year_steps[key]:12.1f}")


if __name__ == "__main__":
    main()
