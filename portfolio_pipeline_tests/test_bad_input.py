"""Issue 17: every bad input the fuzzing found is one line naming file and field.

Each case is one of the inputs that produced a Python traceback before; the oracle is
the contract itself: a non-zero exit, ``error:``/problem lines that name the file (and
the key or line), and no ``Traceback``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from portfolio_pipeline.cli import main
from portfolio_pipeline.config import (
    ConfigError,
    check_config_dir,
    load_config_file,
    load_platform_config,
)
from portfolio_pipeline.config.safe_yaml import MAX_BYTES, MAX_DEPTH, YamlProblem, load_yaml_text
from portfolio_pipeline.domain.instruments import InstrumentsFile
from portfolio_pipeline_tests.stubs import REPO_ROOT

CONFIG = REPO_ROOT / "config"


@pytest.fixture
def config_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    target = tmp_path / "config"
    target.mkdir()
    for path in CONFIG.glob("*.yaml"):
        if ".example." not in path.name:
            shutil.copyfile(path, target / path.name)
    monkeypatch.setenv("PORTFOLIO_CONFIG_DIR", str(target))
    return target


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def _check(directory: Path) -> list[str]:
    result = CliRunner().invoke(main, ["config", "check", str(directory)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output.strip().splitlines()


YAML_CASES = [
    # (file, old text, new text, expected fragment of the problem line)
    ("streaming.yaml", "target_dte: 45", "target_dte: !!int x", "line 11, column 15: invalid YAML: invalid int value"),
    ("streaming.yaml", "max_contracts: 50", "max_contracts: " + "9" * 5000, "more than 100 digits"),
    ("streaming.yaml", "auto_stage: false", "auto_stage: !!bool maybe", "invalid bool value"),
    ("streaming.yaml", 'demo_session: "2018-02-05"', "demo_session: 2018-02-30", "invalid timestamp value"),
    ("streaming.yaml", "hedge:\n", "hedge:\n  ? [a, b]\n  : 1\n", "a mapping key must be a plain value"),
    ("streaming.yaml", "hedge:\n", "hedge:\n  x: " + "[" * 300 + "]" * 300 + "\n", f"deeper than {MAX_DEPTH}"),
    ("streaming.yaml", "hedge:\n", "hedge:\n  x: &a [*a]\n", "streaming.yaml"),
    ("streaming.yaml", "hedge:\n", "hedge:\n  x: *nope\n", "undefined alias"),
    ("instruments.yaml", "instruments:\n", "instruments:\n  bad: !!float y\n", "invalid float value"),
]


@pytest.mark.parametrize(("file", "old", "new", "expected"), YAML_CASES, ids=[c[2][:24] for c in YAML_CASES])
def test_yaml_that_broke_the_loader_is_one_line(config_copy: Path, file: str, old: str, new: str,
                                                 expected: str) -> None:
    _replace(config_copy / file, old, new)
    lines = _check(config_copy)
    assert any(str(config_copy / file) in line and expected in line for line in lines), lines


def test_non_utf8_config_names_file_and_line(config_copy: Path) -> None:
    path = config_copy / "accounts.yaml"
    path.write_bytes(path.read_bytes() + b"\n# caf\xe9\n")
    lines = _check(config_copy)
    assert any(str(path) in line and "not UTF-8" in line and "line " in line for line in lines), lines


def test_nul_byte_in_config(config_copy: Path) -> None:
    path = config_copy / "accounts.yaml"
    path.write_bytes(path.read_bytes() + b"\x00")
    assert any(str(path) in line and "NUL" in line for line in _check(config_copy))


def test_directory_where_a_config_file_should_be(config_copy: Path) -> None:
    path = config_copy / "pricing.yaml"
    path.unlink()
    path.mkdir()
    assert any(str(path) in line and "is a directory" in line for line in _check(config_copy))


def test_oversized_config_is_refused_before_parsing(config_copy: Path) -> None:
    path = config_copy / "strategies.yaml"
    with path.open("a", encoding="utf-8") as handle:
        handle.write("#" * (MAX_BYTES + 1))
    assert any(str(path) in line and "larger than" in line for line in _check(config_copy))


def test_alias_bomb_is_refused() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n" for i in range(6)
    )
    with pytest.raises(YamlProblem, match="aliases counted expanded"):
        load_yaml_text(bomb)


@pytest.mark.parametrize("token", [".inf", "-.inf", ".nan", "nan", "'inf'", "1e400"])
def test_non_finite_numbers_are_rejected_in_every_schema(config_copy: Path, token: str) -> None:
    cases = [
        ("instruments.yaml", "multiplier: 100", f"multiplier: {token}"),
        ("streaming.yaml", "hysteresis: 0.05", f"hysteresis: {token}"),
        ("pricing.yaml", "fallback: 1.0", f"fallback: {token}"),
    ]
    for file, old, new in cases:
        original = (config_copy / file).read_text(encoding="utf-8")
        _replace(config_copy / file, old, new)
        problems, _ = check_config_dir(config_copy)
        assert problems and all(str(config_copy / file) in str(p) for p in problems), (file, problems)
        assert any("finite" in p.message for p in problems), problems
        (config_copy / file).write_text(original, encoding="utf-8")


def test_every_config_schema_shares_the_finite_number_rule() -> None:
    """Every model reachable from a config file's schema derives from StrictModel."""
    from pydantic import BaseModel

    from portfolio_pipeline.config import CONFIG_FILES
    from portfolio_pipeline.domain.schema import StrictModel

    seen: set[type[BaseModel]] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        assert issubclass(model, StrictModel), model
        assert model.model_config.get("allow_inf_nan") is False, model
        for field in model.model_fields.values():
            for arg in _types(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    walk(arg)

    def _types(annotation: object) -> list[object]:
        from typing import get_args

        args = list(get_args(annotation))
        return [annotation] + [t for a in args for t in _types(a)]

    for schema, _required in CONFIG_FILES.values():
        walk(schema)
    assert len(seen) > 20


def test_instrument_keys_are_unique_regardless_of_case(config_copy: Path) -> None:
    text = (config_copy / "instruments.yaml").read_text(encoding="utf-8")
    start = text.index("  SPX:")
    block_end = min(i for i in (text.find("\n  " + c, start + 5) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
                    if i > 0)
    spx_block = text[start:block_end]
    (config_copy / "instruments.yaml").write_text(
        text + "\n" + spx_block.replace("  SPX:", "  spx:", 1).replace("multiplier: 100", "multiplier: 10")
        + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config_file(config_copy / "instruments.yaml", InstrumentsFile)
    assert "'spx' repeats 'SPX'" in str(info.value)


@pytest.mark.parametrize(("file", "old", "new", "key"), [
    ("streaming.yaml", "hedge_underlying: SPX", "hedge_underlying: ZZZ", "hedge.hedge_underlying"),
    ("streaming.yaml", "hedge_underlying: SPX", "hedge_underlying: VIX_NO_OPTIONS", "hedge.hedge_underlying"),
    ("streaming.yaml", "trading_classes: {SPX: SPX, NDX: NDX}", "trading_classes: {SPX: SPQ}",
     "hedge.trading_classes.SPX"),
    ("pricing.yaml", "reference: SPX", "reference: SPXX", "beta.reference"),
    ("strategies.yaml", "overrides: []", "overrides: [{id: x, account_id: NOPE, name: n}]",
     "overrides[0].account_id"),
    ("stress_scenarios.yaml", "underlyings:\n", "underlyings:\n  NOPE: {proxy: spx}\n", "underlyings.NOPE"),
])
def test_cross_file_references_must_exist(config_copy: Path, file: str, old: str, new: str, key: str) -> None:
    _replace(config_copy / file, old, new)
    lines = _check(config_copy)
    assert any(f"{config_copy / file}: {key}:" in line for line in lines), lines


def test_hedge_underlying_without_options_is_unpriceable(config_copy: Path) -> None:
    instruments = load_platform_config(CONFIG).instruments
    no_options = next(root for root in instruments if instruments[root].options is None)
    _replace(config_copy / "streaming.yaml", "hedge_underlying: SPX", f"hedge_underlying: {no_options}")
    lines = _check(config_copy)
    assert any("no hedge can be priced" in line for line in lines), lines


def test_broken_config_stops_demo_and_run_before_dagster(config_copy: Path, portfolio_env: Path) -> None:
    _replace(config_copy / "pricing.yaml", "fallback: 1.0", "fallback: .nan")
    for args in (["demo", "--start", "2018-02-01", "--end", "2018-02-02"], ["run", "--date", "2018-02-05"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert f"error: {config_copy / 'pricing.yaml'}: beta.fallback:" in result.output
        assert "Traceback" not in result.output and "dagster" not in result.output.lower()
    assert not (portfolio_env / "dagster").exists()


@pytest.mark.parametrize(("args", "fragment"), [
    (["run", "--date", "1900-01-01"], "outside the supported range"),
    (["run", "--date", "2018-02-30"], "is not a date"),
    (["demo", "--start", "0001-01-01"], "outside the supported range"),
    (["orders", "stage", "X", "--ttl-minutes", "nan"], "not a finite number"),
    (["orders", "stage", "X", "--ttl-minutes", "1e308"], "is outside"),
    (["orders", "stage", "X", "--ttl-minutes", "-1"], "is outside"),
    (["import", "ibkr-flex", "a\x00b"], "not a usable file name"),
    (["config", "check", "a\x00b"], "not a usable file name"),
])
def test_bad_arguments_are_usage_errors(portfolio_env: Path, args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), result.output
    assert fragment in result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_portfolio_stream_reports_a_broken_config_in_one_line(config_copy: Path) -> None:
    from streaming_service.main import main as stream_main

    _replace(config_copy / "streaming.yaml", "hysteresis: 0.05", "hysteresis: .inf")
    result = CliRunner().invoke(stream_main, ["--config-dir", str(config_copy)])
    assert result.exit_code == 2, result.output
    assert f"error: {config_copy / 'streaming.yaml'}: breach.hysteresis:" in result.output
    assert "Traceback" not in result.output
    speed = CliRunner().invoke(stream_main, ["--speed", "inf"])
    assert speed.exit_code == 2 and "not a finite number" in speed.output


def test_internal_errors_are_one_line_and_verbose_shows_the_traceback(
    portfolio_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import portfolio_pipeline.config as config_pkg

    def boom(directory: Path) -> object:
        raise KeyError("surprise")

    monkeypatch.setattr(config_pkg, "check_config_dir", boom)
    quiet = CliRunner().invoke(main, ["config", "check"])
    assert quiet.exit_code == 1
    assert quiet.output.strip() == (
        "error: internal error (KeyError: 'surprise'); run with -v for the traceback"
    )
    loud = CliRunner().invoke(main, ["-v", "config", "check"])
    assert loud.exit_code == 1 and "Traceback (most recent call last)" in loud.output


@pytest.mark.parametrize("args", [["orders", "show", "a\x00b"], ["alerts", "ack", "a\x00b"],
                                  ["orders", "reject", "a\x00b", "--reason", "x\x00y"]])
def test_nul_byte_arguments_are_one_line_on_both_backends(
    db_url: str, portfolio_env: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """PostgreSQL refuses NUL in text (psycopg DataError): bad input, exit 2, one line."""
    monkeypatch.setenv("PORTFOLIO_DB_URL", db_url)
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (1, 2), result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].lower().startswith("error: ")
    assert "\\x00" in lines[0] or "NUL" in lines[0]
    assert "Traceback" not in result.output
