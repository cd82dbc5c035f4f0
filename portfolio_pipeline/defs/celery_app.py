"""The Celery app of the platform's workers: dagster-celery's step task on the broker and
queue of ``PORTFOLIO_CELERY_BROKER``/``PORTFOLIO_CELERY_QUEUE`` (``defs.execution``).

``portfolio workers start`` runs ``celery -A portfolio_pipeline.defs.celery_app worker``; the
run's process submits each step with the same settings (the ``celery`` executor).
"""

from __future__ import annotations

from typing import Any

from portfolio_pipeline.defs.execution import CelerySettings, ExecutionSettings, execution_settings


def app_args(settings: CelerySettings) -> dict[str, Any]:
    """The Celery app arguments dagster-celery's executor builds from the same config."""
    from dagster._core.execution.retries import RetryMode
    from dagster_celery.executor import CeleryExecutor

    config = settings.app_config()
    executor = CeleryExecutor(  # type: ignore[no-untyped-call]
        retries=RetryMode.ENABLED,
        broker=config["broker"],
        backend=config["backend"],
        include=config["include"],
        config_source=config["config_source"],
    )
    args: dict[str, Any] = executor.app_args()  # type: ignore[no-untyped-call]
    return args


def _celery_settings() -> CelerySettings:
    settings: ExecutionSettings = execution_settings()
    if settings.celery is None:
        raise ValueError(
            "the Celery workers need PORTFOLIO_EXECUTOR=celery (set by `portfolio workers start`)"
        )
    return settings.celery


def _make() -> Any:
    from dagster_celery.make_app import make_app
    from dagster_celery.tasks import create_task

    celery = make_app(app_args(_celery_settings()))  # type: ignore[no-untyped-call]
    create_task(celery)  # type: ignore[no-untyped-call]
    return celery


app = _make()
