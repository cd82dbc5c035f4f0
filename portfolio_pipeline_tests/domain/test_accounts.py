"""accounts.yaml: account tags, IBKR managed accounts (include / exclude), clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from portfolio_pipeline.config.loader import check_config_dir
from portfolio_pipeline.domain.accounts import AccountsFile, account_limits
from portfolio_pipeline.domain.regime import LimitOverrides, RegimeService

CONFIG = Path(__file__).resolve().parents[2] / "config"


def _login(**extra: Any) -> dict[str, Any]:
    return {
        "name": "fa",
        "broker": "ibkr",
        "account_id": "F100",
        "owner": "alex",
        "group": "trading",
        "account_type": "margin",
        **extra,
    }


def test_managed_accounts_expand_with_inherited_tags_and_exclusions() -> None:
    f = AccountsFile.model_validate(
        {
            "accounts": [
                _login(
                    managed_accounts=[
                        {
                            "account_id": "U1",
                            "display_name": "IRA",
                            "group": "retirement",
                            "account_type": "ira",
                        },
                        {"account_id": "U2", "name": "joint"},
                        {"account_id": "U3", "include": False},
                    ]
                ),
                {"name": "tt", "broker": "tastytrade", "account_id": "5WX1"},
            ]
        }
    )
    read = f.book()
    assert [(a.name, a.account_id) for a in read] == [
        ("fa-U1", "U1"),
        ("joint", "U2"),
        ("tt", "5WX1"),
    ]
    u1, u2, tt = read
    assert (u1.group, u1.type, u1.owner, u1.label) == ("retirement", "ira", "alex", "IRA")
    assert (u2.group, u2.type, u2.owner, u2.label) == ("trading", "margin", "alex", "joint")
    assert u1.managed_accounts is None and u1.broker == "ibkr"
    assert tt.type == "margin" and tt.label == "tt"
    assert set(f.by_account_id()) == {"U1", "U2", "5WX1"}
    assert f.named("IRA").account_id == "U1" and f.named("U2").name == "joint"
    with pytest.raises(KeyError, match="unknown account 'U3'"):
        f.named("U3")


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            _login(managed_accounts=[{"account_id": "U1", "include": False}]),
            "every account is excluded",
        ),
        (
            _login(managed_accounts=[{"account_id": "U1"}, {"account_id": "U1"}]),
            "U1 listed more than once",
        ),
        (_login(managed_accounts=[]), "list at least one account"),
        (
            {
                "name": "t",
                "broker": "tastytrade",
                "account_id": "5",
                "managed_accounts": [{"account_id": "U1"}],
            },
            "only an ibkr login manages accounts",
        ),
        (_login(account_type="brokerage"), "account_type"),
        (_login(base_currency="usd"), "base_currency"),
        (_login(group="no spaces"), "group"),
        (_login(managed_accounts=[{"account_id": "U1", "colour": "red"}]), "colour"),
    ],
)
def test_bad_accounts_name_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        AccountsFile.model_validate({"accounts": [entry]})


def test_a_managed_account_may_not_repeat_another_entry() -> None:
    with pytest.raises(ValidationError, match="ibkr:U1"):
        AccountsFile.model_validate(
            {
                "accounts": [
                    _login(managed_accounts=[{"account_id": "U1"}]),
                    {"name": "other", "broker": "ibkr", "account_id": "U1"},
                ]
            }
        )


def test_risk_matrix_references_are_checked(tmp_path: Path) -> None:
    for f in CONFIG.glob("*.yaml"):
        if not f.name.endswith(".example.yaml"):
            (tmp_path / f.name).write_text(f.read_text())
    matrix = yaml.safe_load((tmp_path / "risk_matrix.yaml").read_text())
    matrix["accounts"] = {"nobody": {"base_limits": {"max_abs_vega": 0.02}}}
    matrix["groups"]["hedge-fund"] = {"regime_scales": {"crisis": 0.5}}
    (tmp_path / "risk_matrix.yaml").write_text(yaml.safe_dump(matrix))
    problems = sorted(str(p) for p in check_config_dir(tmp_path)[0])
    assert any(
        "risk_matrix.yaml: accounts.nobody: unknown account 'nobody'" in p for p in problems
    ), problems
    assert not any("hedge-fund" in p for p in problems)  # a group no account is in yet is allowed


def test_example_twin_reads_managed_accounts() -> None:
    f = AccountsFile.model_validate(yaml.safe_load((CONFIG / "accounts.example.yaml").read_text()))
    ids = [a.account_id for a in f.book()]
    assert "U5555555" not in ids and "F1234567" not in ids and {"U1234567", "U7654321"} <= set(ids)


def test_account_limits_layering() -> None:
    """base 0.010 vega; group base 0.004; account base 0.006 (wins over the group); the
    elevated regime scales by 0.6 unless the group's scale (0.5) replaces it; an
    accounts.yaml override is absolute, after the regime."""
    from portfolio_pipeline.config.loader import load_platform_config

    matrix = load_platform_config(CONFIG).risk_matrix
    data = {
        **matrix.model_dump(),
        "groups": {
            "g": {"base_limits": {"max_abs_vega": 0.004}, "regime_scales": {"elevated": 0.5}}
        },
        "accounts": {"acc": {"base_limits": {"max_abs_vega": 0.006}}},
    }
    service = RegimeService(type(matrix).model_validate(data))
    f = AccountsFile.model_validate(
        {
            "accounts": [
                {"name": "acc", "broker": "demo", "account_id": "A", "group": "g"},
                {"name": "grp", "broker": "demo", "account_id": "B", "group": "g"},
                {
                    "name": "abs",
                    "broker": "demo",
                    "account_id": "C",
                    "group": "g",
                    "limit_overrides": LimitOverrides(max_abs_vega=0.02).model_dump(
                        exclude_none=True
                    ),
                },
                {"name": "plain", "broker": "demo", "account_id": "D"},
            ]
        }
    )
    a, b, c, d = f.book()
    assert account_limits(service, a, "calm").max_abs_vega == pytest.approx(0.006)
    assert account_limits(service, a, "elevated").max_abs_vega == pytest.approx(0.003)
    assert account_limits(service, b, "elevated").max_abs_vega == pytest.approx(0.002)
    assert account_limits(service, c, "elevated").max_abs_vega == pytest.approx(0.02)
    assert account_limits(service, d, "elevated").max_abs_vega == pytest.approx(0.006)
    assert account_limits(service, None, "elevated") == service.limits_for("elevated")
