"""notifications.yaml: the shipped files load, the schema is strict, references are checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from portfolio_pipeline.config.loader import CONFIG_FILES, ConfigError, load_config_file
from portfolio_pipeline.config.notifications import (
    AlertType,
    NotificationsFile,
    QuietBehaviour,
    Severity,
)
from portfolio_pipeline.notify.channels import LogChannel, build_channels
from portfolio_pipeline.notify.secrets import MissingSecretError, Redactor, Secret
from portfolio_pipeline.paths import repo_root

CONFIG = (repo_root() or Path(__file__).parents[2]) / "config"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notifications.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_registered_in_config_files_as_optional() -> None:
    assert CONFIG_FILES["notifications.yaml"] == (NotificationsFile, False)


def test_shipped_default_routes_everything_to_the_log_and_needs_no_secret() -> None:
    cfg = load_config_file(CONFIG / "notifications.yaml", NotificationsFile)
    assert set(cfg.routes) == set(AlertType)
    assert all(route.channels == ["log"] for route in cfg.routes.values())
    channels = build_channels(cfg, environ={})
    assert isinstance(channels["log"], LogChannel)


def test_example_has_every_channel_type_and_shares_the_schema() -> None:
    cfg = load_config_file(CONFIG / "notifications.example.yaml", NotificationsFile)
    assert {c.type for c in cfg.channels.values()} == {"log", "telegram", "slack", "email"}
    assert cfg.escalation.enabled and cfg.escalation.regimes == ["crisis"]
    assert cfg.routes[AlertType.WEEKLY_DIGEST].quiet_hours is QuietBehaviour.DROP
    assert cfg.routes[AlertType.BREACH].severity is Severity.WARNING


def test_routing_table_is_read_per_alert_type() -> None:
    cfg = load_config_file(CONFIG / "notifications.example.yaml", NotificationsFile)
    assert cfg.routes[AlertType.STAGED_ORDER].channels == ["log", "telegram", "email"]
    assert cfg.routes[AlertType.RUN_FAILURE].channels == ["log", "slack"]
    assert cfg.routes[AlertType.EXIT_SIGNAL].quiet_hours is QuietBehaviour.HOLD


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ("channels:\n  log: {type: log, colour: red}\n", "channels.log.log.colour: unknown key"),
        ("surprise: 1\n", "surprise: unknown key"),
        (
            "channels:\n  tg: {type: telegram, bot_token_env: lower_case, chat_id: '1'}\n",
            "bot_token_env",
        ),
        (
            "channels:\n  m: {type: email, host: h, from_addr: a@b.c, to_addrs: [x@y.z]}\n",
            "starttls: required key is missing",
        ),
    ],
)
def test_strict_schema_names_the_key(tmp_path: Path, patch: str, expected: str) -> None:
    base = (CONFIG / "notifications.yaml").read_text(encoding="utf-8")
    if patch.startswith("channels:"):
        base = base.replace("channels:\n  log:\n    type: log\n    level: INFO\n", patch)
    else:
        base += patch
    with pytest.raises(ConfigError) as err:
        load_config_file(_write(tmp_path, base), NotificationsFile)
    assert expected in str(err.value)


def test_unknown_channel_in_a_route_and_missing_alert_type(tmp_path: Path) -> None:
    text = (CONFIG / "notifications.yaml").read_text(encoding="utf-8")
    bad = text.replace("fill:          {channels: [log]", "fill:          {channels: [pager]")
    with pytest.raises(ConfigError, match=r"routes.fill.channels: unknown channel 'pager'"):
        load_config_file(_write(tmp_path, bad), NotificationsFile)
    missing = "\n".join(line for line in text.splitlines() if not line.strip().startswith("fill:"))
    with pytest.raises(ConfigError, match="missing alert type"):
        load_config_file(_write(tmp_path, missing), NotificationsFile)


def test_smtp_login_without_starttls_is_refused() -> None:
    with pytest.raises(ValueError, match="needs starttls"):
        NotificationsFile.model_validate(
            {
                "channels": {
                    "mail": {
                        "type": "email",
                        "host": "relay",
                        "starttls": False,
                        "username": "u",
                        "password_env": "PW",
                        "from_addr": "a@b.c",
                        "to_addrs": ["d@e.f"],
                    }
                },
                "routes": {t.value: {"channels": ["mail"]} for t in AlertType},
            }
        )


def test_missing_secret_names_the_variable_only() -> None:
    cfg = load_config_file(CONFIG / "notifications.example.yaml", NotificationsFile)
    with pytest.raises(MissingSecretError, match="PORTFOLIO_TELEGRAM_BOT_TOKEN is not set"):
        build_channels(cfg, environ={})


def test_secret_never_prints() -> None:
    s = Secret("hunter2")
    assert "hunter2" not in f"{s} {s!r} {s!s} {[s]}"
    assert Redactor([s])("url https://x/bothunter2/send") == "url https://x/bot***/send"
