"""Per-session metadata of the daily assets, right on every partition.

A daily asset runs over one session (the schedule) or, under its single-run backfill
policy, over a range of sessions in ONE run.  Dagster records one materialization per
partition of the range; the run's ``MaterializeResult`` metadata is copied onto every
one of them, while ``context.add_asset_metadata(values, asset_key=..., partition_key=...)``
(Dagster 1.13) adds metadata to ONE partition's materialization only.

:class:`SessionMetadata` is the one mechanism the assets use:

* :meth:`SessionMetadata.record` takes a session's values during the loop;
* each session's values go onto that session's partition (``add_asset_metadata`` with
  the partition key), so the metadata plots over partitions show each session's own
  numbers, in a schedule run and in a backfill alike;
* the ``MaterializeResult`` (:meth:`SessionMetadata.output_metadata`) carries only facts
  of the run (``sessions``, ``first_session``, ``last_session`` and run facts the asset
  passes), true for every partition it covers.

Labels carry their unit and values are rounded for reading (:func:`usd`, :func:`pct`):
whole dollars as ``... ($)``, ratios as percentages ``... (%)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import dagster as dg

from portfolio_pipeline.defs.partitions import partition_dates

AssetKeyLike = dg.AssetKey | str | Sequence[str]
"""What :meth:`dagster.AssetKey.from_coercible` takes."""



def metadata_value(value: Any) -> dg.MetadataValue | None:
    """``value`` as a metadata value; None for None and non-finite numbers (not plottable)."""
    if value is None:
        return None
    if isinstance(value, dg.FloatMetadataValue):
        return value if value.value is not None and math.isfinite(value.value) else None
    if isinstance(value, dg.MetadataValue):
        return value
    if isinstance(value, bool):
        return dg.MetadataValue.bool(value)
    if isinstance(value, numbers.Integral):
        return dg.MetadataValue.int(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        return dg.MetadataValue.float(number) if math.isfinite(number) else None
    if isinstance(value, str):
        return dg.MetadataValue.text(value)
    if isinstance(value, Mapping | list | tuple):
        return dg.MetadataValue.json(value)
    raise TypeError(f"unsupported metadata value {value!r} ({type(value).__name__})")


def metadata_values(values: Mapping[str, Any]) -> dict[str, dg.MetadataValue]:
    """The entries of ``values`` that :func:`metadata_value` keeps."""
    out: dict[str, dg.MetadataValue] = {}
    for label, value in values.items():
        converted = metadata_value(value)
        if converted is not None:
            out[label] = converted
    return out


def span_metadata(days: Sequence[date]) -> dict[str, dg.MetadataValue]:
    """The sessions a run covers: count, first and last."""
    return {
        "sessions": dg.MetadataValue.int(len(days)),
        "first_session": dg.MetadataValue.text(days[0].isoformat()),
        "last_session": dg.MetadataValue.text(days[-1].isoformat()),
    }


class SessionMetadata:
    """Collects per-session metadata of one run's assets (see the module doc).

    ``days`` defaults to the run's sessions (:func:`partition_dates`).  Record a session's
    values for an asset with :meth:`record` (several calls for the same session and asset
    merge); finish each asset with :meth:`output_metadata` for its ``MaterializeResult``.
    """

    def __init__(self, context: dg.AssetExecutionContext, days: Sequence[date] | None = None) -> None:
        self._context = context
        self.days: list[date] = list(days) if days is not None else partition_dates(context)
        if not self.days:
            raise ValueError("SessionMetadata: a run covers at least one session")
        self._pending: dict[dg.AssetKey, tuple[date, dict[str, dg.MetadataValue]]] = {}
        self.recorded: dict[dg.AssetKey, list[date]] = {}
        """Sessions whose values were put on their partition, per asset."""

    def record(self, day: date, asset_key: AssetKeyLike, values: Mapping[str, Any]) -> None:
        """The values of ``asset_key`` at session ``day`` (None and non-finite numbers dropped)."""
        if day not in self.days:
            raise ValueError(f"SessionMetadata: session {day} is not in this run")
        key = dg.AssetKey.from_coercible(asset_key)
        pending = self._pending.get(key)
        if pending is not None and pending[0] == day:
            pending[1].update(metadata_values(values))
            return
        self._flush(key)
        self._pending[key] = (day, metadata_values(values))

    def output_metadata(
        self, asset_key: AssetKeyLike, run_facts: Mapping[str, Any] | None = None
    ) -> dict[str, dg.MetadataValue]:
        """Metadata for the ``MaterializeResult`` of ``asset_key``: facts of the whole run.

        ``run_facts`` are true of the whole run (e.g. a count of sessions sent, a
        configuration flag); they appear as given on every partition of the run.  The
        sessions' own values were put on their partitions by :meth:`record`.
        """
        key = dg.AssetKey.from_coercible(asset_key)
        self._flush(key)
        meta = span_metadata(self.days)
        meta.update(metadata_values(run_facts or {}))
        return meta

    def _flush(self, key: dg.AssetKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        day, values = pending
        if not values:
            return
        self._context.add_asset_metadata(values, asset_key=key, partition_key=day.isoformat())
        self.recorded.setdefault(key, []).append(day)


def usd(value: float | None) -> dg.MetadataValue | None:
    """A dollar amount rounded to whole dollars (label it ``... ($)``); None if missing."""
    if value is None or not math.isfinite(float(value)):
        return None
    return dg.MetadataValue.int(round(float(value)))


def pct(ratio: float | None, digits: int = 2) -> dg.MetadataValue | None:
    """A ratio (0.0123) as a percentage (1.23; label it ``... (%)``); None if missing."""
    if ratio is None or not math.isfinite(float(ratio)):
        return None
    return dg.MetadataValue.float(round(100.0 * float(ratio), digits))
