#!/usr/bin/env python3
"""Bootstrap and everyday commands, with nothing but Python 3.11 on the machine.

    python3.11 dev.py demo   # create .venv, install pinned deps, run the demo pipeline
    python3.11 dev.py test   # (install if needed, then) run the whole test suite

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
        code = run([str(PYTHON), "-m", "pytest", *rest])
        if code == PYTEST_NO_TESTS:
            print("pytest collected no tests: that is a failure", file=sys.stderr)
            return 1
        return code
    print(__doc__)
    return 0 if command in ("help", "-h", "--help") else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
