"""The secret scan that pre-commit (and so CI) runs catches a planted secret.

``detect-secrets-hook`` runs exactly as ``.pre-commit-config.yaml`` calls it, with the
repository's ``.secrets.baseline`` (its plugins and filters), on files planted in a
temporary directory.  The secrets are assembled at run time so that this file itself
holds none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from portfolio_pipeline_tests.stubs import REPO_ROOT

HOOK = [str(Path(sys.executable).parent / "detect-secrets-hook"), "--baseline", ".secrets.baseline"]

AWS_KEY_ID = "AKIA" + "J7QX2M4PRZ6W3NVB"
TELEGRAM_TOKEN = "7312" + "045886:" + "AAH" + "k9XqT2vLm4RpZ8sWy1NcB6dFgHj3KoUe"  # pragma: allowlist secret


def _scan(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HOOK, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          check=False)


@pytest.mark.parametrize(("text", "kind"), [
    (f'AWS_ACCESS_KEY_ID = "{AWS_KEY_ID}"\n', "AWS Access Key"),
    (f"notify:\n  bot: '{TELEGRAM_TOKEN}'\n", "Telegram Bot Token"),
])
def test_a_planted_secret_fails_the_hook(tmp_path: Path, text: str, kind: str) -> None:
    planted = tmp_path / "settings.py"
    planted.write_text(text)
    done = _scan(planted)
    assert done.returncode == 1, done.stdout + done.stderr
    assert kind in done.stdout
    assert str(planted) in done.stdout


def test_names_of_secret_variables_are_not_secrets(tmp_path: Path) -> None:
    """``*_env`` fields hold the *name* of a variable (config/accounts.yaml): no finding."""
    clean = tmp_path / "accounts.yaml"
    clean.write_text("tastytrade:\n  client_secret_env: TASTYTRADE_CLIENT_SECRET\n"
                     "  refresh_token_env: TASTYTRADE_REFRESH_TOKEN\n")
    done = _scan(clean)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_baseline_holds_no_accepted_finding_and_precommit_runs_the_hook() -> None:
    """Fakes in tests are allow-listed on their line, so no finding is waved through by the baseline."""
    baseline = json.loads((REPO_ROOT / ".secrets.baseline").read_text())
    assert baseline["results"] == {}
    hooks = yaml.safe_load((REPO_ROOT / ".pre-commit-config.yaml").read_text())["repos"]
    entries = {h["id"]: h["entry"] for repo in hooks for h in repo["hooks"]}
    assert entries["detect-secrets"] == ".venv/bin/detect-secrets-hook --baseline .secrets.baseline"
    assert {repo["repo"] for repo in hooks} == {"local"}  # nothing fetched from a hook repository
    assert entries.keys() == {"ruff", "mypy", "detect-secrets"}
