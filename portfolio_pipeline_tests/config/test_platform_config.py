"""The typed configuration: one attribute per file of ``CONFIG_FILES``, loaded once."""

from __future__ import annotations

import dataclasses
import shutil
import typing
from pathlib import Path

import pytest
import yaml

from portfolio_pipeline.config import (
    CONFIG_FILES,
    ConfigError,
    PlatformConfig,
    check_config_dir,
    load_config_file,
    load_platform_config,
)
from portfolio_pipeline.config.flow import DEFAULT_FLOW
from portfolio_pipeline.config.pricing import DEFAULT_PRICING
from portfolio_pipeline.config.streaming import DEFAULT_STREAMING
from portfolio_pipeline.domain.instruments import InstrumentTable
from portfolio_pipeline.quant.scenario_config import StressScenariosFile
from portfolio_pipeline_tests.stubs import CONFIG_DIR

OPTIONAL = sorted(name for name, (_model, required) in CONFIG_FILES.items() if not required)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target)
    return target


def _attribute(file_name: str) -> str:
    return file_name.removesuffix(".yaml")


def test_one_typed_attribute_per_configuration_file() -> None:
    hints = typing.get_type_hints(PlatformConfig)
    fields = {f.name for f in dataclasses.fields(PlatformConfig)} - {"directory"}
    assert fields == {_attribute(name) for name in CONFIG_FILES}
    for name, (model, required) in CONFIG_FILES.items():
        hint = hints[_attribute(name)]
        types = set(typing.get_args(hint)) or {hint}
        if name == "instruments.yaml":  # the validated file becomes the lookup table
            assert types == {InstrumentTable}
        else:
            assert model in types, (name, hint)
        assert (type(None) in types) == (not required and name in (
            "notifications.yaml", "exit_rules.yaml", "strategies.yaml")), name


@pytest.mark.parametrize("name", [n for n in sorted(CONFIG_FILES) if n != "instruments.yaml"])
def test_each_attribute_is_its_validated_file(name: str) -> None:
    config = load_platform_config(CONFIG_DIR)
    model, _required = CONFIG_FILES[name]
    assert getattr(config, _attribute(name)) == load_config_file(CONFIG_DIR / name, model)


def test_instruments_attribute_is_the_table_of_the_file() -> None:
    config = load_platform_config(CONFIG_DIR)
    shipped = yaml.safe_load((CONFIG_DIR / "instruments.yaml").read_text())["instruments"]
    assert sorted(config.instruments) == sorted(shipped)


def test_absent_optional_files_take_defaults_or_none(cfg: Path) -> None:
    for name in OPTIONAL:
        (cfg / name).unlink()
        (cfg / name.replace(".yaml", ".example.yaml")).unlink(missing_ok=True)
    config = load_platform_config(cfg)
    assert config.pricing is DEFAULT_PRICING
    assert config.streaming is DEFAULT_STREAMING
    assert config.flow is DEFAULT_FLOW
    assert config.stress_scenarios == StressScenariosFile()
    assert config.notifications is None
    assert config.exit_rules is None
    assert config.strategies is None
    assert config.streaming.staging.remind_after_minutes == 10.0


def test_stress_regime_multipliers_must_name_the_risk_matrix_regimes(cfg: Path) -> None:
    path = cfg / "stress_scenarios.yaml"
    data = yaml.safe_load(path.read_text())
    multipliers = data.setdefault("monte_carlo", {}).setdefault(
        "regime_vol_multiplier", dict(StressScenariosFile().monte_carlo.regime_vol_multiplier))
    multipliers.pop("crisis")
    multipliers["panic"] = 2.0
    path.write_text(yaml.safe_dump(data))
    problems, _ = check_config_dir(cfg)
    assert [str(p) for p in problems] == [
        f"{path}: monte_carlo.regime_vol_multiplier: unknown regimes ['panic'], missing regimes "
        "['crisis'] (risk_matrix.yaml has ['calm', 'crisis', 'elevated', 'normal'])"
    ]
    with pytest.raises(ConfigError, match="regime_vol_multiplier"):
        load_platform_config(cfg)


def test_absent_stress_file_is_checked_with_its_defaults(cfg: Path) -> None:
    (cfg / "stress_scenarios.yaml").unlink()
    matrix = cfg / "risk_matrix.yaml"
    # the retirement group's regime_scales entry follows the renamed regime
    matrix.write_text(matrix.read_text().replace("name: crisis", "name: panic").replace("crisis: 0.20", "panic: 0.20"))
    problems = [str(p) for p in check_config_dir(cfg)[0]]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{cfg / 'stress_scenarios.yaml'}: monte_carlo.regime_vol_multiplier: ")
    assert problems[0].endswith("(file absent: its defaults apply)")


def test_configuration_is_frozen() -> None:
    config = load_platform_config(CONFIG_DIR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.streaming = DEFAULT_STREAMING  # type: ignore[misc]


@pytest.mark.parametrize(("text", "where"), [
    ("positioning: dealers_long\n", "flow.yaml: positioning"),
    ("window: {moneyness: 8}\n", "flow.yaml: window.moneyness"),
    ("put_call_buckets_days: [30, 7]\n", "put_call_buckets_days must be positive, increasing"),
    ("underlyings: [SPX, spx]\n", "underlyings repeat"),
    ("unusual: {min_volume: 10, typo: 1}\n", "flow.yaml: unusual.typo: unknown key"),
    ("underlyings: [SPX, XYZ]\n", "flow.yaml: underlyings[1]: unknown instrument 'XYZ'"),
    ("underlyings: [VIX3M]\n", "flow.yaml: underlyings[0]: instrument 'VIX3M' has no options"),
])
def test_flow_yaml_errors_name_file_and_key(cfg: Path, text: str, where: str) -> None:
    (cfg / "flow.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_platform_config(cfg)
    assert where in str(err.value)
