"""deploy/: the systemd units pass ``systemd-analyze verify``; the compose file, the units,
the Dockerfile and the environment example describe the same processes and settings."""

from __future__ import annotations

import configparser
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from portfolio_pipeline.log_setup import LOG_FORMAT_ENV
from portfolio_pipeline_tests.stubs import REPO_ROOT

SYSTEMD = REPO_ROOT / "deploy" / "systemd"
DOCKER = REPO_ROOT / "deploy" / "docker"
INSTALL_DIR = "/opt/portfolio"
UNITS = ("portfolio-dagster-webserver.service", "portfolio-dagster-daemon.service", "portfolio-stream.service",
         "portfolio-health.service", "portfolio-health.timer", "portfolio-celery-worker.service")
LONG_RUNNING = (*UNITS[:3], "portfolio-celery-worker.service")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(SYSTEMD / name)
    return parser


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (SYSTEMD / "portfolio.env.example").read_text().splitlines()
             if line and not line.startswith("#"))
    return {k: v for k, v in pairs}


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (Debian: apt-get install systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    """Verified as installed: /opt/portfolio (the checkout with its .venv) is this checkout.

    ``verify`` exits 0 on an unknown key, so any line it prints counts as a failure."""
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert INSTALL_DIR in text
        (tmp_path / name).write_text(text.replace(INSTALL_DIR, str(REPO_ROOT)))
    done = subprocess.run(["systemd-analyze", "verify", *(str(tmp_path / n) for n in UNITS)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).strip() == ""


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_verify_catches_a_typo(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    bad = tmp_path / "portfolio-stream.service"
    bad.write_text((SYSTEMD / "portfolio-stream.service").read_text().replace("Nice=", "Nicee=")
                   .replace(INSTALL_DIR, str(REPO_ROOT)))
    done = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=120)
    assert "Nicee" in done.stdout + done.stderr


def test_units_share_environment_restart_user_and_hardening() -> None:
    for name in LONG_RUNNING:
        service = _unit(name)["Service"]
        assert service["EnvironmentFile"] == "/etc/portfolio/portfolio.env"
        assert service["Restart"] == "on-failure"
        assert service["User"] == "portfolio"
        assert service["ProtectSystem"] == "strict"
        assert service["ReadWritePaths"] == _env_example()["PORTFOLIO_HOME"]
        assert service["NoNewPrivileges"] == "yes"
        assert service["UMask"] == "0077"


def test_the_stream_outranks_the_daemon_and_its_runs() -> None:
    stream, daemon = _unit("portfolio-stream.service")["Service"], _unit("portfolio-dagster-daemon.service")["Service"]
    assert int(stream["Nice"]) < 0 < int(daemon["Nice"])
    assert int(stream["CPUWeight"]) > int(daemon["CPUWeight"])
    assert int(stream["IOSchedulingPriority"]) < int(daemon["IOSchedulingPriority"])
    worker = _unit("portfolio-celery-worker.service")["Service"]  # runs the daemon's steps
    assert (worker["Nice"], worker["CPUWeight"]) == (daemon["Nice"], daemon["CPUWeight"])


def test_worker_unit_starts_the_platforms_workers() -> None:
    from click.testing import CliRunner

    from portfolio_pipeline.cli import main

    argv = shlex.split(_unit("portfolio-celery-worker.service")["Service"]["ExecStart"])
    assert argv[:3] == [f"{INSTALL_DIR}/.venv/bin/portfolio", "workers", "start"]
    # the arguments parse (--help after them: nothing is started)
    done = CliRunner().invoke(main, [*argv[1:], "--help"])
    assert done.exit_code == 0, done.output


def test_environment_example_names_what_the_code_reads() -> None:
    from portfolio_pipeline.dagster_home import DAGSTER_PG_URL_ENV
    from portfolio_pipeline.storage.engine import DB_URL_ENV

    env = _env_example()
    assert {"PORTFOLIO_HOME", "DAGSTER_HOME", "PORTFOLIO_CONFIG_DIR", DB_URL_ENV, DAGSTER_PG_URL_ENV,
            LOG_FORMAT_ENV, "PORTFOLIO_STREAM_BROKER"} <= env.keys()
    assert env["DAGSTER_HOME"].startswith(env["PORTFOLIO_HOME"] + "/")
    # the two URLs are one database with the two drivers (storage/engine.py's rule)
    from portfolio_pipeline.storage.engine import dagster_postgres_url

    assert dagster_postgres_url({DB_URL_ENV: env[DB_URL_ENV]}) == env[DAGSTER_PG_URL_ENV]


# --- docker ------------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load((DOCKER / "compose.yaml").read_text())
    assert isinstance(doc, dict)
    return doc


def _argv(command: list[str] | str) -> list[str]:
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    if argv[:2] == ["sh", "-c"]:
        argv = shlex.split(argv[2].replace("$$", "$"))  # compose's escape of a shell variable
    return [a for a in argv if a != "exec"]


def test_compose_runs_the_units_processes_on_one_volume() -> None:
    doc = _compose()
    services = doc["services"]
    assert set(services) == {"postgres", "migrate", "webserver", "daemon", "stream"}
    env = _env_example()
    for name in ("migrate", "webserver", "daemon", "stream"):
        service = services[name]
        environment = service["environment"]
        assert {"PORTFOLIO_HOME", "DAGSTER_HOME", "PORTFOLIO_DB_URL", "DAGSTER_PG_URL", LOG_FORMAT_ENV} <= environment.keys()
        assert environment["DAGSTER_HOME"] == env["DAGSTER_HOME"]
        assert environment["PORTFOLIO_HOME"] == env["PORTFOLIO_HOME"]
        assert service["volumes"] == [f"portfolio-home:{env['PORTFOLIO_HOME']}"]
        assert service["build"]["dockerfile"] == "deploy/docker/Dockerfile"
        assert (DOCKER / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKER / "Dockerfile"
        if name != "migrate":
            assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}
    assert set(doc["volumes"]) == {"portfolio-home", "postgres-data"}
    # the same program and arguments as the units' ExecStart (paths and bind address aside)
    for name, unit in (("webserver", "portfolio-dagster-webserver.service"),
                       ("daemon", "portfolio-dagster-daemon.service"), ("stream", "portfolio-stream.service")):
        exec_start = shlex.split(_unit(unit)["Service"]["ExecStart"].replace("${", "$").replace("}", ""))
        composed = _argv(services[name]["command"])
        assert Path(exec_start[0]).name == composed[0], (exec_start, composed)
        strip = {"-h", "127.0.0.1", "0.0.0.0"}
        assert [Path(a).name if "/" in a else a for a in exec_start[1:] if a not in strip] == \
               [Path(a).name if "/" in a else a for a in composed[1:] if a not in strip]
    assert services["stream"]["cpu_shares"] > services["daemon"]["cpu_shares"]
    # the database URL points at the compose service and the database it creates
    pg = services["postgres"]["environment"]
    url = services["webserver"]["environment"]["PORTFOLIO_DB_URL"]
    assert re.fullmatch(rf"postgresql\+psycopg://{pg['POSTGRES_USER']}:\$\{{POSTGRES_PASSWORD[^}}]*\}}"
                        rf"@postgres:5432/{pg['POSTGRES_DB']}", url), url


def test_dockerfile_uses_the_pins_and_a_non_root_user() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    assert "pip install -c constraints.txt" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users == ["portfolio"]
    assert text.index("USER portfolio") > text.index("pip install -c constraints.txt")
    for copied in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for path in copied.split():
            assert (REPO_ROOT / path).exists(), path
    env = _env_example()
    assert f"PORTFOLIO_HOME={env['PORTFOLIO_HOME']}" in text and f"DAGSTER_HOME={env['DAGSTER_HOME']}" in text


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True,
                                                 timeout=60).returncode == 0:
        return ["docker", "compose"]
    return None


@pytest.mark.skipif(_compose_cli() is None,
                    reason="no compose CLI (docker compose plugin or Debian's docker-compose) installed")
def test_compose_cli_accepts_the_file(tmp_path: Path) -> None:
    """``config`` parses, interpolates and validates against the compose schema (no daemon needed)."""
    cli = _compose_cli()
    assert cli is not None
    compose = [*cli, "-f", str(DOCKER / "compose.yaml"), "config"]
    done = subprocess.run(compose, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin:/usr/local/bin", "POSTGRES_PASSWORD": "pw"})  # pragma: allowlist secret
    assert done.returncode == 0, done.stderr
    resolved = yaml.safe_load(done.stdout)
    assert resolved["services"]["stream"]["environment"]["PORTFOLIO_DB_URL"] == \
        "postgresql+psycopg://portfolio:pw@postgres:5432/portfolio"  # pragma: allowlist secret
    missing = subprocess.run(compose, capture_output=True, text=True, timeout=120,
                             env={"PATH": "/usr/bin:/bin:/usr/local/bin"})
    assert missing.returncode != 0 and "POSTGRES_PASSWORD" in missing.stderr
