"""The EOD run launcher lowers its own CPU priority (the live monitor keeps the CPU).

Changing niceness is irreversible for an unprivileged process, so what touches the
priority runs in a child process; the oracle is the kernel's ``os.getpriority``.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from portfolio_pipeline import cli
from portfolio_pipeline.priority import DEFAULT_EOD_NICE, EOD_NICE_ENV, eod_niceness


def test_eod_niceness_default_and_override() -> None:
    assert eod_niceness({}) == DEFAULT_EOD_NICE == 10
    assert eod_niceness({EOD_NICE_ENV: " 0 "}) == 0
    assert eod_niceness({EOD_NICE_ENV: "19"}) == 19


@pytest.mark.parametrize("raw", ["abc", "-1", "20", "1.5"])
def test_bad_eod_niceness_names_the_variable(raw: str) -> None:
    with pytest.raises(ValueError, match=EOD_NICE_ENV):
        eod_niceness({EOD_NICE_ENV: raw})


def test_lower_priority_only_ever_raises_niceness() -> None:
    code = (
        "import os\n"
        "from portfolio_pipeline.priority import lower_priority\n"
        "start = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "print(lower_priority(start + 3), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "print(lower_priority(start + 1), os.getpriority(os.PRIO_PROCESS, 0))\n"
        "print(start)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    start = int(out[2])
    assert out[0].split() == [str(start + 3), str(start + 3)]
    assert out[1].split() == [str(start + 3), str(start + 3)]  # asked lower: stays where it was


def test_the_run_launcher_refuses_a_bad_niceness_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EOD_NICE_ENV, "high")
    before = os.getpriority(os.PRIO_PROCESS, 0)
    result = CliRunner().invoke(cli.main, ["demo", "--start", "2018-01-02", "--end", "2018-01-02"])
    assert result.exit_code != 0
    assert EOD_NICE_ENV in result.output and "Traceback" not in result.output
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


def test_the_run_launcher_lowers_its_priority_before_the_run() -> None:
    """`_run_sessions` (behind `portfolio run` / `portfolio demo`) sets the niceness before
    anything else; the run is stopped right after by a broken configuration directory."""
    code = (
        "import os, sys\n"
        "from datetime import date\n"
        "from portfolio_pipeline import cli\n"
        "def stop(*a, **k):\n"
        "    print(os.getpriority(os.PRIO_PROCESS, 0)); sys.exit(0)\n"
        "import portfolio_pipeline.config as c\n"
        "c.load_platform_config = stop\n"
        "print(os.getpriority(os.PRIO_PROCESS, 0))\n"
        "cli._run_sessions(date(2018, 1, 2), date(2018, 1, 2), demo=True)\n"
    )
    env = dict(os.environ, PORTFOLIO_EOD_NICE="7")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    before, during = (int(x) for x in out.stdout.split())
    assert during == max(before, 7)
