"""Where the platform keeps its local state.

Everything local (the SQLite database, ``DAGSTER_HOME``, reports, the streaming
service's on-disk buffer) lives under one directory, ``PORTFOLIO_HOME``.  When it is
unset, a source checkout uses ``.portfolio/`` at the repository root (the README's
two-command flow) and an installed package uses ``~/.portfolio``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

HOME_ENV = "PORTFOLIO_HOME"
CONFIG_ENV = "PORTFOLIO_CONFIG_DIR"

_PACKAGE_DIR = Path(__file__).resolve().parent
_REPO_ROOT = _PACKAGE_DIR.parent


def repo_root() -> Path | None:
    """The source checkout this package runs from, or None when installed elsewhere."""
    if (_REPO_ROOT / "pyproject.toml").is_file() and (_REPO_ROOT / "config").is_dir():
        return _REPO_ROOT
    return None


def portfolio_home(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding all local state (created on first use)."""
    env = os.environ if environ is None else environ
    raw = env.get(HOME_ENV, "").strip()
    if raw:
        home = Path(raw).expanduser()
    else:
        root = repo_root()
        home = root / ".portfolio" if root is not None else Path.home() / ".portfolio"
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    """``DAGSTER_HOME``: honoured when set, else ``<PORTFOLIO_HOME>/dagster``."""
    env = os.environ if environ is None else environ
    raw = env.get("DAGSTER_HOME", "").strip()
    path = Path(raw).expanduser() if raw else portfolio_home(env) / "dagster"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def reports_dir(environ: Mapping[str, str] | None = None) -> Path:
    path = portfolio_home(environ) / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def buffer_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Private directory (mode 0700) for the streaming service's event buffer."""
    path = portfolio_home(environ) / "buffer"
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The configuration directory: ``PORTFOLIO_CONFIG_DIR`` or the checkout's ``config/``."""
    env = os.environ if environ is None else environ
    raw = env.get(CONFIG_ENV, "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    root = repo_root()
    if root is not None:
        return root / "config"
    return portfolio_home(env) / "config"
