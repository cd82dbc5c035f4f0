"""Where the platform keeps its local state.

Everything local (the SQLite database, ``DAGSTER_HOME``, reports, the streaming
service's on-disk buffer) lives under one directory, ``PORTFOLIO_HOME``.  When it is
unset, a source checkout uses ``.portfolio/`` at the repository root (the README's
two-command flow) and an installed package uses ``~/.portfolio``.

The state is private: ``PORTFOLIO_HOME`` and its directories are mode 0700, every file
in them 0600 (the SQLite database, Dagster's storage and logs, reports, the stream
buffer).  The ``portfolio`` and ``portfolio-stream`` entry points set the umask to 077
(processes they start, such as ``dagster dev``, inherit it) and tighten what an older
version left readable (:func:`secure_home`).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Final

HOME_ENV = "PORTFOLIO_HOME"
CONFIG_ENV = "PORTFOLIO_CONFIG_DIR"

PRIVATE_DIR_MODE: Final = 0o700
PRIVATE_FILE_MODE: Final = 0o600
PRIVATE_UMASK: Final = 0o077
SQLITE_FILENAME: Final = "portfolio.db"
#: what the platform keeps under PORTFOLIO_HOME (secured recursively by secure_home)
_STATE_DIRS: Final = ("dagster", "reports", "buffer", "logs")

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
    return private_dir(home)


def dagster_home(environ: Mapping[str, str] | None = None) -> Path:
    """``DAGSTER_HOME``: honoured when set, else ``<PORTFOLIO_HOME>/dagster``."""
    env = os.environ if environ is None else environ
    raw = env.get("DAGSTER_HOME", "").strip()
    if raw:
        path = Path(raw).expanduser()
        path.mkdir(parents=True, exist_ok=True)
        return path.resolve()
    return private_dir(portfolio_home(env) / "dagster")


def reports_dir(environ: Mapping[str, str] | None = None) -> Path:
    return private_dir(portfolio_home(environ) / "reports")


def buffer_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Private directory (mode 0700) for the streaming service's event buffer."""
    return private_dir(portfolio_home(environ) / "buffer")


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


def private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make it mode 0700; returns it."""
    path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(path.stat().st_mode) != PRIVATE_DIR_MODE:
        path.chmod(PRIVATE_DIR_MODE)
    return path


def write_private_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` with mode 0600, whatever the umask."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        os.fchmod(handle.fileno(), PRIVATE_FILE_MODE)
        handle.write(text)


def private_file(path: Path) -> Path:
    """Create ``path`` empty if missing, and make it mode 0600 (e.g. a SQLite file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return path


def _state_paths(home: Path) -> Iterator[Path]:
    for name in _STATE_DIRS:
        top = home / name
        if top.is_dir() and not top.is_symlink():
            yield top
            for dirpath, dirnames, filenames in os.walk(top):
                base = Path(dirpath)
                yield from (base / d for d in dirnames)
                yield from (base / f for f in filenames)
    yield from home.glob(SQLITE_FILENAME + "*")


def secure_home(home: Path) -> int:
    """Make ``home`` 0700 and the platform's state in it private; returns paths changed.

    Only what the platform keeps there is touched (its database files and the
    ``dagster``, ``reports``, ``buffer`` and ``logs`` directories), so a
    ``PORTFOLIO_HOME`` shared with other files leaves those alone.  Symlinks are skipped.
    """
    changed = 0
    for path in [home, *_state_paths(home)]:
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            continue
        want = PRIVATE_DIR_MODE if stat.S_ISDIR(info.st_mode) else PRIVATE_FILE_MODE
        if stat.S_IMODE(info.st_mode) != want:
            path.chmod(want)
            changed += 1
    return changed


def make_state_private(environ: Mapping[str, str] | None = None) -> int:
    """For an entry point: umask 077 (this process and its children), then secure the home.

    Returns the previous umask, for an in-process caller (tests) to restore.
    """
    previous = os.umask(PRIVATE_UMASK)
    secure_home(portfolio_home(environ))
    return previous
