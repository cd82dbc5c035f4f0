"""Issue 17 item 4: PORTFOLIO_HOME is 0700 and every file the platform keeps there 0600.

Oracle: ``stat`` of what the real commands leave behind (POSIX permission bits).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.dagster_home import prepare_dagster_home
from portfolio_pipeline.paths import (
    PRIVATE_DIR_MODE,
    PRIVATE_FILE_MODE,
    reports_dir,
    secure_home,
    write_private_text,
)
from portfolio_pipeline.storage import Database
from portfolio_pipeline_tests.stubs import REPO_ROOT

FLEX = REPO_ROOT / "portfolio_pipeline_tests" / "brokers" / "history" / "fixtures" / "ibkr_flex_2018-02.xml"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


@pytest.fixture
def loose_umask() -> object:
    """Run with the usual 022 umask, so only the platform's own care makes files private."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_commands_leave_home_private(portfolio_env: Path, loose_umask: object) -> None:
    assert CliRunner().invoke(main, ["import", "ibkr-flex", str(FLEX)]).exit_code == 0
    prepare_dagster_home()
    write_private_text(reports_dir() / "daily_2018-02-05.html", "<html></html>")
    assert _mode(portfolio_env) == PRIVATE_DIR_MODE
    seen = 0
    for path in portfolio_env.rglob("*"):
        want = PRIVATE_DIR_MODE if path.is_dir() else PRIVATE_FILE_MODE
        assert _mode(path) == want, (path, oct(_mode(path)))
        seen += 1
    assert (portfolio_env / "portfolio.db").is_file() and (portfolio_env / "dagster" / "dagster.yaml").is_file()
    assert seen >= 5


def test_cli_umask_is_restored_after_the_command(portfolio_env: Path, loose_umask: object) -> None:
    CliRunner().invoke(main, ["db", "migrate"])
    assert os.umask(0o022) == 0o022  # the command's 077 ends with the command (in-process runs)


def test_secure_home_tightens_an_older_install(tmp_path: Path, loose_umask: object) -> None:
    home = tmp_path / "home"
    (home / "dagster" / "storage").mkdir(parents=True)
    (home / "reports").mkdir()
    files = [home / "portfolio.db", home / "portfolio.db-wal", home / "dagster" / "storage" / "runs.db",
             home / "reports" / "daily.html"]
    for path in files:
        path.write_text("x")
        path.chmod(0o644)
    for directory in (home, home / "dagster", home / "dagster" / "storage", home / "reports"):
        directory.chmod(0o755)
    unrelated = home / "notes.txt"  # not the platform's: left alone
    unrelated.write_text("mine")
    unrelated.chmod(0o644)
    assert secure_home(home) == len(files) + 4
    assert all(_mode(p) == PRIVATE_FILE_MODE for p in files)
    assert _mode(home) == _mode(home / "dagster" / "storage") == PRIVATE_DIR_MODE
    assert _mode(unrelated) == 0o644
    assert secure_home(home) == 0


def test_new_sqlite_database_file_is_private(tmp_path: Path, loose_umask: object) -> None:
    path = tmp_path / "x" / "platform.db"
    with Database(f"sqlite:///{path}") as db:
        db.migrate()
    assert _mode(path) == PRIVATE_FILE_MODE


def test_portfolio_stream_secures_home_before_anything(portfolio_env: Path, loose_umask: object,
                                                       tmp_path: Path) -> None:
    from streaming_service.main import main as stream_main

    leaked = portfolio_env / "reports"
    leaked.mkdir(mode=0o755)
    (leaked / "old.html").write_text("x")
    (leaked / "old.html").chmod(0o644)
    broken = tmp_path / "no-config"
    result = CliRunner().invoke(stream_main, ["--config-dir", str(broken)])
    assert result.exit_code == 2
    assert _mode(leaked) == PRIVATE_DIR_MODE and _mode(leaked / "old.html") == PRIVATE_FILE_MODE
