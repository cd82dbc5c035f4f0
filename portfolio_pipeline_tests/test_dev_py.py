"""dev.py's test command: parallel by default, the user's choice wins, exit code 5 fails."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from portfolio_pipeline_tests.stubs import REPO_ROOT


def _dev() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dev_script", REPO_ROOT / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_worker_per_cpu_at_most_four() -> None:
    dev = _dev()
    assert dev.test_workers({}, 2) == 2
    assert dev.test_workers({}, 64) == 4
    assert dev.test_workers({}, None) == 1
    assert dev.test_workers({"PORTFOLIO_TEST_WORKERS": "3"}, 2) == 3


def test_bad_worker_count_names_the_variable() -> None:
    dev = _dev()
    with pytest.raises(SystemExit, match="PORTFOLIO_TEST_WORKERS"):
        dev.test_workers({"PORTFOLIO_TEST_WORKERS": "two"}, 2)
    with pytest.raises(SystemExit, match="PORTFOLIO_TEST_WORKERS"):
        dev.test_workers({"PORTFOLIO_TEST_WORKERS": "0"}, 2)


@pytest.mark.parametrize(
    ("rest", "workers", "expected"),
    [
        ([], 2, ["-n", "2", "--dist", "loadgroup"]),
        (["-k", "greeks"], 2, ["-n", "2", "--dist", "loadgroup", "-k", "greeks"]),
        (["-n", "1"], 2, ["-n", "1"]),
        (["-n4"], 2, ["-n4"]),
        (["--numprocesses=3"], 2, ["--numprocesses=3"]),
        (["-p", "no:xdist"], 2, ["-p", "no:xdist"]),
        (["--dist=loadfile"], 2, ["--dist=loadfile"]),
        (["-x"], 1, ["-x"]),
    ],
)
def test_pytest_args(rest: list[str], workers: int, expected: list[str]) -> None:
    assert _dev().pytest_args(rest, workers) == expected


def test_no_tests_collected_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    dev = _dev()
    calls: list[list[str]] = []
    monkeypatch.setattr(dev, "ensure_installed", lambda: None)
    monkeypatch.setattr(dev, "run", lambda args: calls.append(args) or dev.PYTEST_NO_TESTS)
    monkeypatch.setenv("PORTFOLIO_TEST_WORKERS", "2")
    assert dev.main(["test", "-k", "nothing"]) == 1
    assert calls[0][-6:] == ["-n", "2", "--dist", "loadgroup", "-k", "nothing"]
