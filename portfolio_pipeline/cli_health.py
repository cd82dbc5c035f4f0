"""``portfolio health``: is every part of a deployment up?  For people and for monitoring.

Checks, each ``ok``, ``degraded`` or ``failed`` with a one-line detail:

- ``database``: connects to the platform database (``PORTFOLIO_DB_URL`` or the SQLite file
  under ``PORTFOLIO_HOME``) and compares its Alembic revision with the newest one
  (behind = degraded: run ``portfolio db migrate``; no schema or no connection = failed);
- ``daemon``: the Dagster daemon's heartbeats in the instance at ``DAGSTER_HOME`` (every
  daemon the instance requires has beaten within ``--heartbeat-max-age`` = ok; some = degraded;
  none = failed; a daemon whose last heartbeat carries errors = degraded);
- ``stream``: ``GET /health`` of ``portfolio-stream`` (200 with status ok = ok; its own
  ``degraded`` document with 503 = degraded; no answer within ``--timeout`` = failed);
- ``broker:<name>``, one per configured broker: demo is always ok (simulated); IBKR = a TCP
  connection to each configured Gateway/TWS ``host:port`` (no API session, so no client id is
  taken); Tastytrade = its credential variables are set and its API host accepts a TCP
  connection.

Exit code: 0 when every check is ok, 1 when any is degraded or failed; 2 (as for every
command) when the checks cannot run at all, e.g. an invalid configuration or option.
Attached by ``cli._attach_subcommands``; heavy libraries are imported inside the checks.
"""

from __future__ import annotations

import json
import math
import os
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

import click

from portfolio_pipeline.cli_types import FiniteFloat

if TYPE_CHECKING:
    from portfolio_pipeline.domain.accounts import AccountConfig

__all__ = [
    "CHECKS",
    "CheckResult",
    "Status",
    "check_brokers",
    "check_daemon",
    "check_database",
    "check_stream",
    "evaluate_heartbeats",
    "health",
    "overall",
]

Status = Literal["ok", "degraded", "failed"]

CHECKS: Final = ("database", "daemon", "stream", "brokers")
DEFAULT_STREAM_URL: Final = "http://127.0.0.1:8765/health"
DEFAULT_TIMEOUT_S: Final = 5.0
DEFAULT_HEARTBEAT_MAX_AGE_S: Final = 300.0
"""Dagster's daemons beat every 30 s; 5 minutes leaves room for a long sensor tick."""

TASTYTRADE_API: Final = {False: ("api.tastyworks.com", 443), True: ("api.cert.tastyworks.com", 443)}
"""Tastytrade's API host for production and for its certification (``is_test``) environment."""

_RANK: Final[dict[Status, int]] = {"ok": 0, "degraded": 1, "failed": 2}
EXIT_OK: Final = 0
EXIT_NOT_OK: Final = 1


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome: ``name``, ``status``, a one-line ``detail`` and machine fields."""

    name: str
    status: Status
    detail: str
    data: dict[str, Any] = field(default_factory=dict)


def overall(results: Sequence[CheckResult]) -> Status:
    """The worst status of ``results`` (``ok`` for none)."""
    return max((r.status for r in results), key=_RANK.__getitem__, default="ok")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- database ------------------------------------------------------------------------


def check_database(environ: Mapping[str, str], timeout_s: float) -> CheckResult:
    """Connect and compare the schema's revision with the newest migration."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from portfolio_pipeline.storage import Database
    from portfolio_pipeline.storage.engine import DB_URL_ENV, database_url
    from portfolio_pipeline.storage.migrations import current_revision, head_revision

    url = make_url(database_url(environ))
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        if url.database and not os.path.exists(url.database):
            return CheckResult("database", "failed", f"{shown}: no database file (run `portfolio db migrate`)",
                               {"url": shown})
    else:  # libpq's own connect timeout, so an unreachable host cannot hang the check
        url = url.update_query_dict({"connect_timeout": str(max(1, math.ceil(timeout_s)))})
    head = head_revision()
    try:
        with Database(url) as db, db.connect() as conn:
            current = current_revision(conn)
    except (SQLAlchemyError, OSError) as exc:
        source = DB_URL_ENV if environ.get(DB_URL_ENV, "").strip() else "PORTFOLIO_HOME"
        return CheckResult("database", "failed", f"{shown} ({source}): cannot connect: {_first_line(exc)}",
                           {"url": shown})
    data = {"url": shown, "revision": current, "head": head}
    if current is None:
        return CheckResult("database", "failed", f"{shown}: no platform schema (run `portfolio db migrate`)", data)
    if current != head:
        return CheckResult("database", "degraded",
                           f"{shown}: schema at {current}, newest is {head} (run `portfolio db migrate`)", data)
    return CheckResult("database", "ok", f"{shown}: connected, schema at {head} (newest)", data)


# --- Dagster daemon --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A daemon's last heartbeat: when (epoch seconds) and how many errors it reported."""

    timestamp: float
    errors: int = 0


def evaluate_heartbeats(
    required: Sequence[str], beats: Mapping[str, Heartbeat], *, now: float, max_age_s: float
) -> CheckResult:
    """ok: every required daemon beat within ``max_age_s`` without errors; degraded: some
    did, or one reports errors; failed: none did (the daemon is not running)."""
    if not required:
        return CheckResult("daemon", "failed", "the instance requires no daemon (an ephemeral instance?)")
    ages = {t: now - beats[t].timestamp for t in required if t in beats}
    fresh = sorted(t for t, age in ages.items() if age <= max_age_s)
    missing = sorted(set(required) - set(fresh))
    erring = sorted(t for t in fresh if beats[t].errors)
    data: dict[str, Any] = {
        "required": sorted(required), "fresh": fresh, "stale_or_missing": missing, "with_errors": erring,
        "age_seconds": {t: round(a, 1) for t, a in sorted(ages.items())},
    }
    if not fresh:
        last = f"; newest heartbeat {min(ages.values()):.0f} s ago" if ages else "; no heartbeat ever"
        return CheckResult("daemon", "failed", f"no daemon heartbeat within {max_age_s:.0f} s{last}", data)
    newest = min(ages[t] for t in fresh)
    detail = f"{len(fresh)}/{len(required)} daemons beat within {max_age_s:.0f} s (newest {newest:.0f} s ago)"
    if missing:
        return CheckResult("daemon", "degraded", f"{detail}; silent: {', '.join(missing)}", data)
    if erring:
        return CheckResult("daemon", "degraded", f"{detail}; reporting errors: {', '.join(erring)}", data)
    return CheckResult("daemon", "ok", detail, data)


def check_daemon(environ: Mapping[str, str], *, now: float, max_age_s: float) -> CheckResult:
    """The heartbeats of the Dagster instance at ``DAGSTER_HOME`` (read, never written)."""
    import dagster as dg

    from portfolio_pipeline.dagster_home import DAGSTER_PG_URL_ENV
    from portfolio_pipeline.paths import dagster_home
    from portfolio_pipeline.storage.engine import dagster_postgres_url

    home = dagster_home(environ)
    if not (home / "dagster.yaml").is_file():
        return CheckResult("daemon", "failed",
                           f"{home}: no dagster.yaml (no Dagster instance was set up with this DAGSTER_HOME)",
                           {"dagster_home": str(home)})
    pg_url = dagster_postgres_url(environ)
    if pg_url is not None and not os.environ.get(DAGSTER_PG_URL_ENV):
        os.environ[DAGSTER_PG_URL_ENV] = pg_url  # what dagster.yaml reads, as for `portfolio ui`
    try:
        instance = dg.DagsterInstance.from_config(str(home))
    except Exception as exc:
        return CheckResult("daemon", "failed", f"{home}: cannot open the Dagster instance: {_first_line(exc)}",
                           {"dagster_home": str(home)})
    try:
        required = list(instance.get_required_daemon_types())
        beats = {t: Heartbeat(b.timestamp, len(b.errors or ())) for t, b in instance.get_daemon_heartbeats().items()}
    except Exception as exc:
        return CheckResult("daemon", "failed", f"{home}: cannot read heartbeats: {_first_line(exc)}",
                           {"dagster_home": str(home)})
    finally:
        instance.dispose()
    result = evaluate_heartbeats(required, beats, now=now, max_age_s=max_age_s)
    return CheckResult(result.name, result.status, result.detail, {"dagster_home": str(home), **result.data})


# --- streaming service ------------------------------------------------------------------


def check_stream(url: str, timeout_s: float) -> CheckResult:
    """``GET url``: the service's own status document (200 ok, 503 degraded)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # http(s) only: _http_url
            code, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        code, body = exc.code, exc.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return CheckResult("stream", "failed", f"{url}: no answer: {reason}", {"url": url})
    try:
        doc = json.loads(body)
    except ValueError:
        return CheckResult("stream", "failed", f"{url}: HTTP {code}, not a health document", {"url": url})
    if not isinstance(doc, dict):
        return CheckResult("stream", "failed", f"{url}: HTTP {code}, not a health document", {"url": url})
    status = str(doc.get("status", ""))
    data = {"url": url, "http_status": code, "health": doc}
    if code == 200 and status == "ok":
        return CheckResult("stream", "ok", f"{url}: ok, regime {doc.get('regime') or '-'}", data)
    reasons = []
    if doc.get("db") not in (None, "up"):
        reasons.append(f"db {doc['db']}")
    if doc.get("broker_connected") is False:
        reasons.append("broker disconnected")
    if doc.get("stale_symbols"):
        reasons.append("stale: " + ", ".join(map(str, doc["stale_symbols"])))
    why = f" ({'; '.join(reasons)})" if reasons else ""
    if code in (200, 503) and status:
        return CheckResult("stream", "degraded", f"{url}: status {status}{why}", data)
    return CheckResult("stream", "failed", f"{url}: HTTP {code}", data)


# --- brokers -------------------------------------------------------------------------------


def _tcp(host: str, port: int, timeout_s: float) -> str | None:
    """None when ``host:port`` accepts a TCP connection within the timeout, else why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return None
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def check_brokers(
    accounts: Sequence[AccountConfig],
    environ: Mapping[str, str],
    timeout_s: float,
    *,
    tastytrade_endpoint: Callable[[bool], tuple[str, int]] = TASTYTRADE_API.__getitem__,
) -> list[CheckResult]:
    """One light connectivity check per configured broker (accounts grouped by broker)."""
    from portfolio_pipeline.domain.accounts import IbkrConnection, TastytradeConnection

    by_broker: dict[str, list[AccountConfig]] = {}
    for account in accounts:
        by_broker.setdefault(account.broker, []).append(account)
    results = []
    data: dict[str, Any]
    for broker, group in by_broker.items():
        name = f"broker:{broker}"
        ids = [a.account_id for a in group]
        if broker == "demo":
            results.append(CheckResult(name, "ok", "simulated broker, no connection needed", {"accounts": ids}))
        elif broker == "ibkr":
            endpoints = sorted({((a.ibkr or IbkrConnection()).host, (a.ibkr or IbkrConnection()).port) for a in group})
            down = [(h, p, why) for h, p in endpoints if (why := _tcp(h, p, timeout_s)) is not None]
            shown = ", ".join(f"{h}:{p}" for h, p in endpoints)
            data = {"accounts": ids, "endpoints": [f"{h}:{p}" for h, p in endpoints]}
            if down:
                text = "; ".join(f"{h}:{p}: {why}" for h, p, why in down)
                results.append(CheckResult(name, "failed", f"IB Gateway/TWS not reachable: {text}", data))
            else:
                results.append(CheckResult(name, "ok", f"IB Gateway/TWS accepts connections at {shown}", data))
        elif broker == "tastytrade":
            conns = [a.tastytrade or TastytradeConnection() for a in group]
            unset = sorted({v for c in conns for v in (c.client_secret_env, c.refresh_token_env)
                            if not environ.get(v, "").strip()})
            data = {"accounts": ids}
            if unset:
                results.append(CheckResult(name, "failed", f"credential variables not set: {', '.join(unset)}", data))
                continue
            host, port = tastytrade_endpoint(any(c.is_test for c in conns))
            why = _tcp(host, port, timeout_s)
            data["endpoint"] = f"{host}:{port}"
            if why is not None:
                results.append(CheckResult(name, "failed", f"API host {host}:{port} not reachable: {why}", data))
            else:
                results.append(CheckResult(name, "ok", f"credentials set, API host {host}:{port} reachable", data))
        else:  # pragma: no cover - the accounts schema allows only the brokers above
            results.append(CheckResult(name, "failed", f"no check for broker {broker!r}", {"accounts": ids}))
    return results


# --- the command ----------------------------------------------------------------------------


def run_checks(
    environ: Mapping[str, str], *, skip: Sequence[str], stream_url: str, timeout_s: float, heartbeat_max_age_s: float,
) -> list[CheckResult]:
    results: list[CheckResult] = []
    if "database" not in skip:
        results.append(check_database(environ, timeout_s))
    if "daemon" not in skip:
        results.append(check_daemon(environ, now=time.time(), max_age_s=heartbeat_max_age_s))
    if "stream" not in skip:
        results.append(check_stream(stream_url, timeout_s))
    if "brokers" not in skip:
        from portfolio_pipeline.config import load_platform_config
        from portfolio_pipeline.paths import config_dir

        config = load_platform_config(config_dir(environ))
        results.extend(check_brokers(config.accounts.book(), environ, timeout_s))
    return results


def _http_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.BadParameter(f"{value!r} is not an http:// or https:// URL", ctx, param)
    return value.strip()


def _table(results: Sequence[CheckResult]) -> str:
    width = max([len("check"), *(len(r.name) for r in results)])
    lines = [f"{'check':<{width}}  {'status':<8}  detail"]
    lines += [f"{r.name:<{width}}  {r.status:<8}  {r.detail}" for r in results]
    lines.append(f"{'overall':<{width}}  {overall(results)}")
    return "\n".join(lines)


@click.command("health")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout (for monitoring).")
@click.option("--stream-url", default=DEFAULT_STREAM_URL, show_default=True, callback=_http_url,
              help="The streaming service's /health URL.")
@click.option("--timeout", "timeout_s", type=FiniteFloat(0, 300, min_open=True), default=DEFAULT_TIMEOUT_S,
              show_default=True, help="Seconds each network check waits.")
@click.option("--heartbeat-max-age", "heartbeat_max_age_s", type=FiniteFloat(0, 86_400, min_open=True),
              default=DEFAULT_HEARTBEAT_MAX_AGE_S, show_default=True,
              help="Seconds since a Dagster daemon's last heartbeat that still count as alive.")
@click.option("--skip", type=click.Choice(CHECKS), multiple=True, help="Leave a check out (repeatable).")
def health(as_json: bool, stream_url: str, timeout_s: float, heartbeat_max_age_s: float, skip: tuple[str, ...]) -> None:
    """Database, Dagster daemon, streaming service and brokers: exit 0 all ok, 1 otherwise."""
    results = run_checks(os.environ, skip=skip, stream_url=stream_url, timeout_s=timeout_s,
                         heartbeat_max_age_s=heartbeat_max_age_s)
    status = overall(results)
    if as_json:
        click.echo(json.dumps({"status": status, "checks": [asdict(r) for r in results]}, sort_keys=True,
                              default=str))
    else:
        click.echo(_table(results))
    sys.exit(EXIT_OK if status == "ok" else EXIT_NOT_OK)
