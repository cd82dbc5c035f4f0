"""A demo backfill in one process vs on 2 local Celery workers, and a paper estimate for N.

    .venv/bin/python benchmarks/bench_scale.py [--start 2018-01-29 --end 2018-02-09]

Needs PostgreSQL (PORTFOLIO_TEST_PG_URL or postgres@127.0.0.1:5432, trust) and RabbitMQ on
127.0.0.1:5672 (PORTFOLIO_CELERY_BROKER). Each mode runs `portfolio demo` over the window on
its own throwaway PostgreSQL database (Dagster's storage and the platform tables), from a
fresh PORTFOLIO_HOME:

* one process: PORTFOLIO_EXECUTOR unset (`portfolio demo` runs the job in its process);
* 2 workers: two `portfolio workers start -n 1` processes on a queue of this benchmark,
  PORTFOLIO_EXECUTOR=celery; the demo process only coordinates.

Printed: wall seconds of the `portfolio demo` process, CPU seconds (user + sys) of every
process involved (the demo, and the workers from their start to their stop: their start-up
imports count), and a one-session run in one process to split the single-process cost into a
fixed and a per-session part. The paper estimate for N workers is Amdahl's: the fixed part
stays serial, the per-session part spreads over N workers at best (chunked backfills whose
chunk runs the daemon launches side by side); it ignores the broker and storage round trips
that the 2-worker row measures. On this 2-core machine (shared with other work) 2 workers
cannot do much better than one process: the row is there to show the overhead, not a gain.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import psycopg
from psycopg import sql

PORTFOLIO = str(Path(sys.executable).with_name("portfolio"))
SERVER = os.environ.get("PORTFOLIO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _database(name: str, create: bool) -> str:
    with psycopg.connect(SERVER, autocommit=True) as admin:
        if create:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        else:
            admin.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
    return SERVER.replace("postgresql://", "postgresql+psycopg://").rsplit("/", 1)[0] + "/" + name


def _env(home: Path, url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PORTFOLIO_", "DAGSTER_"))}
    env.update(PORTFOLIO_HOME=str(home), PORTFOLIO_DB_URL=url, **extra)
    if "PORTFOLIO_CELERY_BROKER" in os.environ:
        env["PORTFOLIO_CELERY_BROKER"] = os.environ["PORTFOLIO_CELERY_BROKER"]
    return env


def _demo(env: dict[str, str], first: date, last: date) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [PORTFOLIO, "demo", "--start", first.isoformat(), "--end", last.isoformat()],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(done.stdout + done.stderr)
    return wall


def one_process(first: date, last: date, scratch: Path) -> tuple[float, float]:
    name = f"bench_scale_{os.getpid()}_{secrets.token_hex(3)}"
    url = _database(name, create=True)
    try:
        cpu0 = _children_cpu()
        wall = _demo(_env(scratch / name, url), first, last)
        return wall, _children_cpu() - cpu0
    finally:
        _database(name, create=False)


def two_workers(first: date, last: date, scratch: Path) -> tuple[float, float]:
    name = f"bench_scale_{os.getpid()}_{secrets.token_hex(3)}"
    queue = name.replace("_", "-")
    url = _database(name, create=True)
    env = _env(scratch / name, url, PORTFOLIO_EXECUTOR="celery", PORTFOLIO_CELERY_QUEUE=queue)
    cpu0 = _children_cpu()
    logs = [scratch / f"{queue}-w{i}.log" for i in (1, 2)]
    workers = [
        subprocess.Popen(
            [
                PORTFOLIO,
                "workers",
                "start",
                "-n",
                "1",
                "--name",
                f"{queue}-w{i}",
                "--loglevel",
                "INFO",
            ],
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for i, log in zip((1, 2), logs, strict=True)
    ]
    try:
        while not all(" ready." in log.read_text() for log in logs):
            if any(w.poll() is not None for w in workers):
                sys.exit("a worker exited: " + " ".join(log.read_text()[-2000:] for log in logs))
            time.sleep(0.5)
        wall = _demo(env, first, last)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait()
        from kombu import Connection

        with Connection(
            os.environ.get("PORTFOLIO_CELERY_BROKER", "amqp://127.0.0.1:5672//")
        ) as conn:
            conn.default_channel.queue_delete(queue)
        _database(name, create=False)
    return wall, _children_cpu() - cpu0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--start", type=date.fromisoformat, default=date(2018, 1, 29))
    parser.add_argument("--end", type=date.fromisoformat, default=date(2018, 2, 9))
    args = parser.parse_args()
    from portfolio_pipeline.exchange_calendar import ExchangeCalendar

    n = len(ExchangeCalendar().sessions(args.start, args.end))
    print(
        f"window {args.start} .. {args.end}: {n} sessions; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} CPUs",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        scratch = Path(tmp)
        w1, c1 = one_process(args.start, args.start, scratch)
        print(f"one process, 1 session : {w1:7.1f} s wall {c1:7.1f} s CPU", flush=True)
        wp, cp = one_process(args.start, args.end, scratch)
        print(f"one process, {n} sessions: {wp:7.1f} s wall {cp:7.1f} s CPU", flush=True)
        ww, cw = two_workers(args.start, args.end, scratch)
        print(
            f"2 workers,   {n} sessions: {ww:7.1f} s wall {cw:7.1f} s CPU (workers' start-up included)",
            flush=True,
        )
    per = max(cp - c1, 0.0) / max(n - 1, 1)
    fixed = cp - per * n
    print(f"CPU split (one process): {per:.2f} s per session, {fixed:.1f} s fixed (serial)")
    print(f"load average now {os.getloadavg()[0]:.1f}")
    print("paper estimate, a 251-session year in chunks over N workers (CPU-bound, ideal spread):")
    for workers in (1, 2, 4, 8, 16):
        print(f"  N={workers:2d}: {fixed + per * 251 / workers:7.0f} s")


if __name__ == "__main__":
    main()
