from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from portfolio_pipeline.config import CONFIG_FILES, ConfigError, check_config_dir, load_config_file
from portfolio_pipeline_tests.stubs import CONFIG_DIR


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    return target


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_shipped_file_and_its_example_share_one_schema(name: str) -> None:
    model, _required = CONFIG_FILES[name]
    load_config_file(CONFIG_DIR / name, model)
    example = CONFIG_DIR / name.replace(".yaml", ".example.yaml")
    assert example.exists(), f"{example.name} must ship beside {name}"
    load_config_file(example, model)


def test_shipped_directory_is_valid() -> None:
    problems, summary = check_config_dir(CONFIG_DIR)
    assert problems == []
    assert summary.startswith("ok:")


def _problems(path: Path) -> list[str]:
    problems, _ = check_config_dir(path)
    return [str(p) for p in problems]


def test_unknown_key_names_file_and_key_path(cfg: Path) -> None:
    text = (cfg / "instruments.yaml").read_text().replace("      exercise: european\n", "      exercise: european\n      excercise_style: x\n", 1)
    (cfg / "instruments.yaml").write_text(text)
    assert _problems(cfg) == [f"{cfg / 'instruments.yaml'}: instruments.SPX.options.excercise_style: unknown key"]


def test_wrong_type_and_missing_field(cfg: Path) -> None:
    text = (cfg / "risk_matrix.yaml").read_text()
    text = text.replace("max_abs_vega: 0.010", "max_abs_vega: lots").replace("  min_theta: -0.002", "")
    (cfg / "risk_matrix.yaml").write_text(text)
    lines = _problems(cfg)
    assert any(line.endswith("base_limits.max_abs_vega: Input should be a valid number, unable to parse string as a number (got 'lots')") for line in lines), lines
    assert any(line.endswith("base_limits.min_theta: required key is missing") for line in lines), lines
    assert all(str(cfg / "risk_matrix.yaml") in line for line in lines)


def test_duplicate_key_is_an_error(cfg: Path) -> None:
    (cfg / "accounts.yaml").write_text(
        "accounts:\n  - name: a\n    broker: demo\n    broker: ibkr\n    account_id: X\n"
    )
    [line] = _problems(cfg)
    assert "accounts.yaml: line 4, column 5: invalid YAML: duplicate key 'broker'" in line


def test_secrets_are_env_var_names_only(cfg: Path) -> None:
    (cfg / "accounts.yaml").write_text(
        "accounts:\n  - name: t\n    broker: tastytrade\n    account_id: 5WX1\n"
        "    tastytrade:\n      client_secret_env: 'my-actual-secret'\n"  # pragma: allowlist secret (a test's fake)
    )
    [line] = _problems(cfg)
    assert "accounts[0].tastytrade.client_secret_env: String should match pattern" in line


def test_semantic_rules(cfg: Path) -> None:
    text = (cfg / "risk_matrix.yaml").read_text().replace("vix_below: 20", "vix_below: 12")
    (cfg / "risk_matrix.yaml").write_text(text)
    [line] = _problems(cfg)
    assert "strictly increasing vix_below" in line


def test_unknown_and_missing_files(cfg: Path) -> None:
    (cfg / "risk_matrix.yaml").unlink()
    (cfg / "limits.yaml").write_text("x: 1\n")
    lines = _problems(cfg)
    assert f"{cfg / 'risk_matrix.yaml'}: required file is missing" in lines
    assert f"{cfg / 'limits.yaml'}: unknown configuration file" in lines


def test_broken_example_is_reported(cfg: Path) -> None:
    (cfg / "accounts.example.yaml").write_text("accounts: []\n")
    [line] = _problems(cfg)
    assert "accounts.example.yaml: accounts: List should have at least 1 item" in line


def test_load_raises_config_error_listing_every_problem(cfg: Path) -> None:
    from portfolio_pipeline.config import load_platform_config

    (cfg / "accounts.yaml").write_text("accounts:\n  - name: a\n    broker: etrade\n    account_id: X\n    colour: red\n")
    with pytest.raises(ConfigError) as err:
        load_platform_config(cfg)
    assert len(err.value.problems) == 2
    assert "accounts[0].broker" in str(err.value) and "accounts[0].colour: unknown key" in str(err.value)


def test_cli_config_check_exit_codes(cfg: Path) -> None:
    ok = subprocess.run([sys.executable, "-m", "portfolio_pipeline.cli", "config", "check", str(cfg)],
                        capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("ok: ") and len(ok.stdout.strip().splitlines()) == 1
    (cfg / "instruments.yaml").write_text("instruments:\n  SPX:\n    description: x\n    underlying_type: bond\n")
    bad = subprocess.run([sys.executable, "-m", "portfolio_pipeline.cli", "config", "check", str(cfg)],
                         capture_output=True, text=True, check=False)
    assert bad.returncode == 1
    assert "instruments.SPX.underlying_type: Input should be" in bad.stderr
