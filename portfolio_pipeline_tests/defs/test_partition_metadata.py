"""Per-session metadata on every partition (``defs/metadata.py``).

A single-run backfill materializes a range of sessions in one run; Dagster records one
materialization per partition.  Each session's numbers must be on that session's
materialization (``add_asset_metadata`` with the partition key), next to the facts of the
range; a single-session run carries its session's numbers the same way.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import func, select

from portfolio_pipeline.defs.metadata import SessionMetadata, metadata_values, pct, usd
from portfolio_pipeline.defs.partitions import session_partitions
from portfolio_pipeline.defs.positions.assets import make_snapshot_assets
from portfolio_pipeline.defs.resources import DatabaseResource, PlatformResource
from portfolio_pipeline.defs.risk.assets import make_risk_assets
from portfolio_pipeline.exchange_calendar import ExchangeCalendar
from portfolio_pipeline.storage import Database, account_snapshot
from portfolio_pipeline.storage.tables import portfolio_returns
from portfolio_pipeline_tests.stubs import CONFIG_DIR, ephemeral_instance

PARTITIONS = session_partitions(ExchangeCalendar())
SNAPSHOTS = make_snapshot_assets(PARTITIONS)
RETURNS_ASSET = next(a for a in make_risk_assets(PARTITIONS) if dg.AssetKey("portfolio_returns") in a.keys)
ACCOUNTS = dg.AssetKey("account_snapshot")
RETURNS = dg.AssetKey("portfolio_returns")
SESSIONS = [date(2018, 2, 1), date(2018, 2, 2), date(2018, 2, 5)]  # the weekend is no session
SINGLE = date(2018, 2, 6)
FILES = ("instruments.yaml", "risk_matrix.yaml", "accounts.yaml", "pricing.yaml")


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with ephemeral_instance() as inst:
        yield inst


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "config"
    directory.mkdir()
    for name in FILES:
        shutil.copy(CONFIG_DIR / name, directory / name)
    return directory


def _run(db_url: str, instance: dg.DagsterInstance, config_dir: Path, **kw: Any) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [SNAPSHOTS, RETURNS_ASSET], instance=instance,
        resources={"db": DatabaseResource(url=db_url),
                   "platform": PlatformResource(demo_only=True, config_dir=str(config_dir))},
        **kw,
    )


def _stored_nlv(db_url: str) -> tuple[dict[date, float], dict[date, float]]:
    """Per session: the summed account NLV (account_snapshot), the book NLV (portfolio_returns)."""
    db = Database(db_url)
    try:
        with db.connect() as conn:
            accounts = dict(conn.execute(
                select(account_snapshot.c.session_date, func.sum(account_snapshot.c.nlv))
                .group_by(account_snapshot.c.session_date)).all())
            book = dict(conn.execute(
                select(portfolio_returns.c.session_date, portfolio_returns.c.nlv)
                .where(portfolio_returns.c.broker == "*", portfolio_returns.c.account_id == "*")).all())
    finally:
        db.dispose()
    return ({d: float(v) for d, v in accounts.items()}, {d: float(v) for d, v in book.items()})


def _observations(instance: dg.DagsterInstance, key: dg.AssetKey, day: date) -> list[dict[str, Any]]:
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=100
    ).records
    return [{k: v.value for k, v in r.asset_observation.metadata.items()}  # type: ignore[union-attr]
            for r in records]


def _materialization(instance: dg.DagsterInstance, key: dg.AssetKey, day: date) -> dict[str, Any]:
    [record] = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
    ).records
    mat = record.asset_materialization
    assert mat is not None and mat.partition == day.isoformat()
    return {k: v.value for k, v in mat.metadata.items()}


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_backfill_range_reports_each_sessions_numbers_on_its_partition(
    db_url: str, instance: dg.DagsterInstance, config_dir: Path, portfolio_env: Path
) -> None:
    backfill = _run(db_url, instance, config_dir, tags={
        "dagster/asset_partition_range_start": SESSIONS[0].isoformat(),
        "dagster/asset_partition_range_end": SESSIONS[-1].isoformat(),
    })
    assert backfill.success
    account_nlv, book_nlv = _stored_nlv(db_url)
    assert sorted(account_nlv) == sorted(book_nlv) == SESSIONS
    assert len(set(account_nlv.values())) == len(SESSIONS)  # the NLV moves from session to session

    for key, stored in ((ACCOUNTS, account_nlv), (RETURNS, book_nlv)):
        shown = {}
        for day in SESSIONS:
            mat = _materialization(instance, key, day)
            shown[day] = mat["NLV ($)"]
            assert (mat["sessions"], mat["first_session"], mat["last_session"]) == (
                3, SESSIONS[0].isoformat(), SESSIONS[-1].isoformat())
            assert _observations(instance, key, day) == []  # the numbers are on the partition itself
        assert shown == {d: round(v) for d, v in stored.items()}, key  # whole dollars, each its own
        assert len(set(shown.values())) == len(SESSIONS), key

    # the other snapshot assets report per session too
    for key in (dg.AssetKey("positions_snapshot"), dg.AssetKey("market_snapshot")):
        assert all("sessions" in _materialization(instance, key, day) for day in SESSIONS)
    vix = [_materialization(instance, dg.AssetKey("market_snapshot"), day)["VIX"] for day in SESSIONS]
    assert len(set(vix)) == len(SESSIONS)

    # one session (the daily schedule): its numbers on the materialization, no observation
    single = _run(db_url, instance, config_dir, partition_key=SINGLE.isoformat())
    assert single.success
    account_nlv, book_nlv = _stored_nlv(db_url)
    for key, stored in ((ACCOUNTS, account_nlv), (RETURNS, book_nlv)):
        mat = _materialization(instance, key, SINGLE)
        assert mat["NLV ($)"] == round(stored[SINGLE])
        assert mat["sessions"] == 1 and mat["last_session"] == SINGLE.isoformat()
        assert _observations(instance, key, SINGLE) == []
    assert account_nlv[SINGLE] != account_nlv[SESSIONS[-1]]


class _Context:
    """The part of an asset context :class:`SessionMetadata` uses."""

    def __init__(self, keys: list[str]) -> None:
        self.partition_keys = keys
        self.added: list[tuple[dg.AssetKey, str, dict[str, Any]]] = []

    def add_asset_metadata(self, metadata: dict[str, Any], asset_key: dg.AssetKey, partition_key: str) -> None:
        self.added.append((asset_key, partition_key, dict(metadata)))


def test_session_metadata_labels_and_values() -> None:
    assert metadata_values({"a": None, "b": math.nan, "c": math.inf, "d": 1.5, "e": 2, "f": True,
                            "g": "x", "h": dg.MetadataValue.float(math.nan)}) == {
        "d": dg.MetadataValue.float(1.5), "e": dg.MetadataValue.int(2),
        "f": dg.MetadataValue.bool(True), "g": dg.MetadataValue.text("x")}
    # whole dollars, ratios as percentages (hand-computed)
    assert usd(596_317.49) == dg.MetadataValue.int(596_317) and usd(-28_550.5) == dg.MetadataValue.int(-28_550)
    assert pct(-0.046123) == dg.MetadataValue.float(-4.61) and pct(None) is None and usd(math.nan) is None

    one = _Context(["2018-02-05"])
    meta = SessionMetadata(one)  # type: ignore[arg-type]
    meta.record(date(2018, 2, 5), "a", {"nlv": 1.0})
    meta.record(date(2018, 2, 5), "a", {"vix": 30.0})  # merged: same session and asset
    assert meta.output_metadata("a", {"reports": 1}) == {
        "sessions": dg.MetadataValue.int(1), "first_session": dg.MetadataValue.text("2018-02-05"),
        "last_session": dg.MetadataValue.text("2018-02-05"), "reports": dg.MetadataValue.int(1)}
    assert one.added == [(dg.AssetKey("a"), "2018-02-05",
                          {"nlv": dg.MetadataValue.float(1.0), "vix": dg.MetadataValue.float(30.0)})]

    rng = _Context(["2018-02-01", "2018-02-02", "2018-02-05"])
    meta = SessionMetadata(rng)  # type: ignore[arg-type]
    meta.record(date(2018, 2, 1), "a", {"nlv": 1.0})
    meta.record(date(2018, 2, 2), "a", {"nlv": 2.0})
    meta.record(date(2018, 2, 2), "b", {"nlv": 9.0})
    out_a = meta.output_metadata("a")
    out_b = meta.output_metadata("b")
    assert [(k.path, p, m["nlv"].value) for k, p, m in rng.added] == [
        (["a"], "2018-02-01", 1.0), (["a"], "2018-02-02", 2.0), (["b"], "2018-02-02", 9.0)]
    assert out_a == out_b == {
        "sessions": dg.MetadataValue.int(3), "first_session": dg.MetadataValue.text("2018-02-01"),
        "last_session": dg.MetadataValue.text("2018-02-05")}
    assert meta.recorded == {dg.AssetKey("a"): [date(2018, 2, 1), date(2018, 2, 2)],
                             dg.AssetKey("b"): [date(2018, 2, 2)]}
    with pytest.raises(ValueError, match="not in this run"):
        meta.record(date(2018, 2, 6), "a", {})
