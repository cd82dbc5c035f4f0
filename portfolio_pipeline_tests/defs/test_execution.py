"""PORTFOLIO_EXECUTOR / PORTFOLIO_CELERY_* / PORTFOLIO_BACKFILL_CHUNK: read in one place,
bad values named, Celery refused over SQLite storage, the jobs get the chosen executor."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pytest

from portfolio_pipeline.defs.execution import (
    DEFAULT_BROKER,
    DEFAULT_QUEUE,
    backfill_chunk,
    chunks,
    execution_settings,
    session_backfill_policy,
)

PG = {"PORTFOLIO_DB_URL": "postgresql+psycopg://postgres@127.0.0.1:5432/portfolio"}


def test_default_is_dagsters_multiprocess_executor() -> None:
    for env in ({}, {"PORTFOLIO_EXECUTOR": ""}, {"PORTFOLIO_EXECUTOR": "multiprocess"}):
        settings = execution_settings(env)
        assert settings.kind == "multiprocess"
        assert settings.executor() is None  # Definitions keep Dagster's default executor
    assert (
        execution_settings({"PORTFOLIO_EXECUTOR": "in_process"}).executor()
        is dg.in_process_executor
    )


def test_celery_settings_defaults_and_overrides() -> None:
    settings = execution_settings({"PORTFOLIO_EXECUTOR": "celery", **PG})
    assert settings.celery is not None
    assert (settings.celery.broker, settings.celery.queue) == (DEFAULT_BROKER, DEFAULT_QUEUE)
    assert DEFAULT_BROKER == "amqp://guest:guest@127.0.0.1:5672//"  # pragma: allowlist secret
    custom = execution_settings(
        {
            "PORTFOLIO_EXECUTOR": "celery",
            "PORTFOLIO_CELERY_BROKER": "amqp://u:p@mq:5672//",
            "PORTFOLIO_CELERY_QUEUE": "desk-2",
            **PG,
        }
    ).celery
    assert custom is not None
    config = custom.app_config()
    assert config["broker"] == "amqp://u:p@mq:5672//"
    assert config["config_source"]["task_default_queue"] == "desk-2"
    assert config["config_source"]["task_acks_late"] is True
    executor = execution_settings({"PORTFOLIO_EXECUTOR": "celery", **PG}).executor()
    assert executor is not None and executor.name == "celery"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            {"PORTFOLIO_EXECUTOR": "threads"},
            r"PORTFOLIO_EXECUTOR='threads': expected one of in_process, multiprocess, celery",
        ),
        (
            {"PORTFOLIO_EXECUTOR": "celery"},
            r"PORTFOLIO_EXECUTOR=celery needs Dagster's run/event storage in PostgreSQL",
        ),
        (
            {"PORTFOLIO_EXECUTOR": "celery", "PORTFOLIO_DB_URL": "sqlite:////tmp/x.db"},
            r"needs .* PostgreSQL",
        ),
        (
            {"PORTFOLIO_EXECUTOR": "celery", "PORTFOLIO_CELERY_BROKER": "http://mq", **PG},
            r"PORTFOLIO_CELERY_BROKER='http://mq'",
        ),
        (
            {"PORTFOLIO_EXECUTOR": "celery", "PORTFOLIO_CELERY_QUEUE": "a b", **PG},
            r"PORTFOLIO_CELERY_QUEUE='a b'",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        execution_settings(env)


def test_backfill_chunk_policy() -> None:
    assert backfill_chunk({}) is None
    assert session_backfill_policy({}) == dg.BackfillPolicy.single_run()
    assert session_backfill_policy(
        {"PORTFOLIO_BACKFILL_CHUNK": "20"}
    ) == dg.BackfillPolicy.multi_run(20)
    for bad, message in (("x", "not a whole number"), ("0", "at least 1")):
        with pytest.raises(ValueError, match=f"PORTFOLIO_BACKFILL_CHUNK.*{message}"):
            backfill_chunk({"PORTFOLIO_BACKFILL_CHUNK": bad})
    days = [date(2018, 2, d) for d in (5, 6, 7, 8, 9, 12, 13)]
    assert chunks(days, 3) == [days[:3], days[3:6], days[6:]]
    assert chunks(days, None) == [days]


def test_definitions_carry_the_executor_and_the_chunked_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from portfolio_pipeline.definitions import build_definitions

    monkeypatch.setenv("PORTFOLIO_EXECUTOR", "in_process")
    monkeypatch.setenv("PORTFOLIO_BACKFILL_CHUNK", "5")
    defs = build_definitions()
    assert defs.resolve_job_def("eod_job").executor_def is dg.in_process_executor
    policy = defs.resolve_assets_def("market_history").backfill_policy
    assert policy == dg.BackfillPolicy.multi_run(5)
    monkeypatch.setenv("PORTFOLIO_EXECUTOR", "celery")
    monkeypatch.delenv("PORTFOLIO_DB_URL", raising=False)
    with pytest.raises(ValueError, match="PORTFOLIO_EXECUTOR=celery needs"):
        build_definitions()
