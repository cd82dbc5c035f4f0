#!/usr/bin/env python3
"""Bootstrap and everyday commands, with nothing but Python 3.11 on the machine.

    python3.11 dev.py demo   # create .venv, install pinned deps, run the demo pipeline
    python3.11 dev.py test   # (install if needed, then) run the whole test suite

``test`` runs pytest on one worker process per CPU (at most 4; pytest-xdist, tests sharing
a server or a timing-sensitive resource are grouped with ``xdist_group``). Set
``PORTFOLIO_TEST_WORKERS=1`` (or pass ``-n``/``-p no:xdist`` yourself) to choose otherwise.

The virtual environment lives in ``.venv/`` at the repository root; every dependency
is pinned exactly (pyproject.toml) and resolved against ``constraints.txt``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".installed"
PYTEST_NO_TESTS = 5
MAX_TEST_WORKERS = 4


def _fingerprint() -> str:
    digest = hashlib.sha256()
    for name in ("pyproject.toml", "constraints.txt"):
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def ensure_installed() -> None:
    """Create .venv and install the project with exact pins (skipped when up to date)."""
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"dev.py needs Python 3.11 (this is {sys.version.split()[0]})")
    if not PYTHON.exists():
        print(f"creating virtual environment in {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    if STAMP.exists() and STAMP.read_text() == _fingerprint():
        return
    pip = [str(PYTHON), "-m", "pip", "--disable-pip-version-check"]
    subprocess.run([*pip, "install", "--quiet", "--upgrade", "pip"], check=True)
    print("installing the project and its pinned dependencies (a minute or two)", flush=True)
    subprocess.run(
        [*pip, "install", "--quiet", "-c", str(ROOT / "constraints.txt"), "-e", f"{ROOT}[dev]"],
        check=True,
    )
    STAMP.write_text(_fingerprint())


def test_workers(environ: dict[str, str], cpus: int | None) -> int:
    """Worker processes for ``dev.py test``: ``PORTFOLIO_TEST_WORKERS`` when set, else one
    per CPU, at most MAX_TEST_WORKERS."""
    raw = environ.get("PORTFOLIO_TEST_WORKERS", "").strip()
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            sys.exit(f"PORTFOLIO_TEST_WORKERS must be a whole number >= 1, got {raw!r}")
        return int(raw)
    return max(1, min(cpus or 1, MAX_TEST_WORKERS))


def pytest_args(rest: list[str], workers: int) -> list[str]:
    """The pytest arguments of ``dev.py test``: the user's, plus ``-n WORKERS --dist
    loadgroup`` unless they chose the parallelism themselves or asked for one worker."""
    chose = any(
        a in ("-n", "--numprocesses", "--dist") or a.startswith(("-n", "--numprocesses=", "--dist="))
        for a in rest
    ) or any(a == "no:xdist" or a == "-pno:xdist" for a in rest)
    if chose or workers <= 1:
        return rest
    return ["-n", str(workers), "--dist", "loadgroup", *rest]


def run(args: list[str]) -> int:
    return subprocess.run(args, cwd=ROOT, check=False).returncode


def main(argv: list[str]) -> int:
    command = argv[0] if argv else "help"
    rest = argv[1:]
    if command == "install":
        ensure_installed()
        return 0
    if command == "demo":
        ensure_installed()
        return run([str(BIN / "portfolio"), "demo", *rest])
    if command == "test":
        ensure_installed()
        workers = test_workers(dict(os.environ), os.cpu_count())
        code = run([str(PYTHON), "-m", "pytest", *pytest_args(rest, workers)])
        if code == PYTEST_NO_TESTS:
            print("pytest collected no tests: that is a failure", file=sys.stderr)
            return 1
        return code
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
