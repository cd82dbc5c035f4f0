"""How the pipeline's runs execute: the executor and the backfill chunk size (the one place
that reads ``PORTFOLIO_EXECUTOR``, ``PORTFOLIO_CELERY_*`` and ``PORTFOLIO_BACKFILL_CHUNK``).

``PORTFOLIO_EXECUTOR``

* ``multiprocess`` (default, also when unset): Dagster's default executor, each step in its
  own process (runs the UI or the daemon launch); ``portfolio run``/``demo`` run in process.
* ``in_process``: every step in the run's own process.
* ``celery``: every step is a task on Dagster's Celery executor (``dagster-celery``, the
  ``celery`` extra) over ``PORTFOLIO_CELERY_BROKER`` (RabbitMQ), on the queue
  ``PORTFOLIO_CELERY_QUEUE``; the workers (``portfolio workers start``) are other processes,
  so Dagster's run/event storage must be the shared PostgreSQL (``PORTFOLIO_DB_URL``).

``PORTFOLIO_BACKFILL_CHUNK=K``: backfills of the daily assets run as several runs of at most
K sessions (``BackfillPolicy.multi_run(K)``); unset: one run for the whole range.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

import dagster as dg

from portfolio_pipeline.storage.engine import dagster_postgres_url

EXECUTOR_ENV = "PORTFOLIO_EXECUTOR"
CELERY_BROKER_ENV = "PORTFOLIO_CELERY_BROKER"
CELERY_QUEUE_ENV = "PORTFOLIO_CELERY_QUEUE"
BACKFILL_CHUNK_ENV = "PORTFOLIO_BACKFILL_CHUNK"
DEFAULT_BROKER = "amqp://guest:guest@127.0.0.1:5672//"  # pragma: allowlist secret
DEFAULT_QUEUE = "portfolio"
CELERY_BACKEND = "rpc://"
"""Celery's result backend: replies over the broker (nothing else to run)."""
STEP_RETRIES = 2
"""A step whose worker died is re-queued this many times (Dagster retries, enabled)."""

ExecutorKind = Literal["in_process", "multiprocess", "celery"]
EXECUTORS: tuple[ExecutorKind, ...] = ("in_process", "multiprocess", "celery")


@dataclass(frozen=True)
class CelerySettings:
    """Where the Celery executor sends steps and the workers listen."""

    broker: str
    queue: str

    def app_config(self) -> dict[str, Any]:
        """The ``celery_executor`` config; the workers' app is built from the same dict."""
        return {
            "broker": self.broker,
            "backend": CELERY_BACKEND,
            "include": [],
            "config_source": {
                "task_default_queue": self.queue,
                # a task is acknowledged only once it has run: a worker killed mid-step
                # leaves its task on the broker, which hands it to another worker
                "task_acks_late": True,
                "task_reject_on_worker_lost": True,
                "worker_prefetch_multiplier": 1,
            },
            "retries": {"enabled": {}},
        }


@dataclass(frozen=True)
class ExecutionSettings:
    kind: ExecutorKind
    celery: CelerySettings | None = None

    def executor(self) -> dg.ExecutorDefinition | None:
        """The executor of every job (None: Dagster's default, multiprocess)."""
        if self.kind == "in_process":
            return dg.in_process_executor
        if self.kind == "celery":
            assert self.celery is not None
            from dagster_celery import celery_executor

            return celery_executor.configured(self.celery.app_config(), name="celery")
        return None


def _env(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def execution_settings(environ: Mapping[str, str] | None = None) -> ExecutionSettings:
    """``PORTFOLIO_EXECUTOR`` and, for ``celery``, its broker and queue; a bad value (or
    ``celery`` over SQLite storage, or without the extra) is an error naming the variable."""
    env = _env(environ)
    raw = env.get(EXECUTOR_ENV, "").strip().lower() or "multiprocess"
    if raw not in EXECUTORS:
        raise ValueError(
            f"{EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r}: expected one of {', '.join(EXECUTORS)}"
        )
    kind: ExecutorKind = (
        "celery" if raw == "celery" else "in_process" if raw == "in_process" else "multiprocess"
    )
    if kind != "celery":
        return ExecutionSettings(kind)
    if dagster_postgres_url(env) is None:
        raise ValueError(
            f"{EXECUTOR_ENV}=celery needs Dagster's run/event storage in PostgreSQL (PORTFOLIO_DB_URL="
            "postgresql+psycopg://...): Celery workers are other processes and read the run from it, "
            "not from this machine's SQLite files"
        )
    try:
        import dagster_celery  # noqa: F401
    except ImportError:
        raise ValueError(
            f"{EXECUTOR_ENV}=celery needs the celery extra: pip install "
            "'portfolio-pipeline[celery]' (python3.11 dev.py install has it)"
        ) from None
    broker = env.get(CELERY_BROKER_ENV, "").strip() or DEFAULT_BROKER
    if not broker.startswith(("amqp://", "amqps://", "pyamqp://", "redis://", "rediss://")):
        raise ValueError(
            f"{CELERY_BROKER_ENV}={broker!r}: expected a Celery broker URL (amqp://host:5672//)"
        )
    queue = env.get(CELERY_QUEUE_ENV, "").strip() or DEFAULT_QUEUE
    if not queue.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"{CELERY_QUEUE_ENV}={queue!r}: letters, digits, '-', '_' and '.' only")
    return ExecutionSettings(kind, CelerySettings(broker=broker, queue=queue))


def backfill_chunk(environ: Mapping[str, str] | None = None) -> int | None:
    """``PORTFOLIO_BACKFILL_CHUNK`` (sessions per run) or None (one run per backfill)."""
    env = _env(environ)
    raw = env.get(BACKFILL_CHUNK_ENV, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{BACKFILL_CHUNK_ENV}={raw!r}: not a whole number of sessions") from None
    if value < 1:
        raise ValueError(f"{BACKFILL_CHUNK_ENV}={value}: must be at least 1 session")
    return value


def session_backfill_policy(environ: Mapping[str, str] | None = None) -> dg.BackfillPolicy:
    """The backfill policy of every daily asset: one run, or runs of at most K sessions."""
    chunk = backfill_chunk(environ)
    return dg.BackfillPolicy.single_run() if chunk is None else dg.BackfillPolicy.multi_run(chunk)


def chunks(sessions: list[date], size: int | None) -> list[list[date]]:
    """``sessions`` in consecutive runs of at most ``size`` (all in one when None)."""
    if size is None or not sessions:
        return [sessions]
    return [sessions[i : i + size] for i in range(0, len(sessions), size)]
