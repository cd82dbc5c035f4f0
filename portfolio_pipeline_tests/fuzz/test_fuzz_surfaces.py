"""Fuzz each input surface with a small budget (the long run: benchmarks/fuzz_surfaces.py).

Oracle: the one-line error contract of issue 17.  Every generated input is either
accepted or refused with an error that names file and field; nothing escapes as a
Python exception, and an accepted configuration holds no non-finite number.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from portfolio_pipeline_tests.fuzz import surfaces

_CHECKS = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture]


def _budget(n: int) -> settings:
    return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                    suppress_health_check=_CHECKS)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz_config")
    surfaces.prepare_config_dir(directory)
    return directory


@_budget(60)
@given(case=surfaces.config_cases())
def test_config_files(config_dir: Path, case: surfaces.ConfigCase) -> None:
    result = surfaces.run_config_case(case, config_dir)
    assert result.outcome != "traceback", result.detail


@_budget(250)
@given(content=surfaces.flex_cases())
def test_ibkr_flex_xml(content: bytes) -> None:
    result = surfaces.run_flex_case(content)
    assert result.outcome != "traceback", result.detail


@_budget(250)
@given(content=surfaces.tastytrade_cases())
def test_tastytrade_csv(content: bytes) -> None:
    result = surfaces.run_tastytrade_case(content)
    assert result.outcome != "traceback", result.detail


@_budget(60)
@given(args=surfaces.cli_cases())
def test_cli_arguments(portfolio_env: Path, args: list[str]) -> None:
    result = surfaces.run_cli_case(args)
    assert result.outcome != "traceback", result.detail


def test_the_classifier_catches_what_it_must() -> None:
    """The oracle can fail: an escaped exception and an accepted NaN are tracebacks."""
    assert surfaces._classify(1, "", KeyError("x")).outcome == "traceback"
    assert surfaces._classify(1, "error: internal error (ValueError: x); run with -v", None).outcome == "traceback"
    assert surfaces._classify(2, "error: f.yaml: a.b: bad", SystemExit(2)).outcome == "clean"
    from pydantic import BaseModel

    class M(BaseModel):
        x: float

    assert list(surfaces.non_finite_paths(M(x=float("nan")))) == ["x"]
