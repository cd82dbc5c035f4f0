"""Per-session metadata of the daily assets, right on every partition.

A daily asset runs over one session (the schedule) or, under its single-run backfill
policy, over a range of sessions in ONE run.  Dagster records the run's single
``MaterializeResult`` once per partition of the range, every copy with the same metadata
(it cannot attach different metadata per partition to an output materialization:
dagster-io/dagster#18123).  Reporting the last session's numbers there would make every
partition of a backfill claim them, and the metadata plots over partitions flat.

:class:`SessionMetadata` is the one mechanism the assets use instead:

* :meth:`SessionMetadata.record` takes a session's values during the loop;
* a run over ONE session puts them on the materialization itself
  (:meth:`SessionMetadata.output_metadata`), so daily runs plot as before;
* a run over a RANGE logs each session's values as an ``AssetObservation`` of that
  session's partition, and the materialization carries only facts of the range
  (``sessions``, ``first_session``, ``last_session``, run facts the asset passes) plus the
  last session's values under ``last_session_<label>``; nothing on a partition claims
  another session's numbers.
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

LAST_SESSION_PREFIX = "last_session_"
"""Label prefix of the last session's values on a range materialization."""


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
        self._last: dict[dg.AssetKey, dict[str, dg.MetadataValue]] = {}
        self.observed: dict[dg.AssetKey, list[date]] = {}
        """Sessions logged as observations, per asset (range runs only)."""

    @property
    def single(self) -> bool:
        """Whether the run covers one session (its values go on the materialization)."""
        return len(self.days) == 1

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
        """Metadata for the ``MaterializeResult`` of ``asset_key``.

        ``run_facts`` are true of the whole run (e.g. a count of sessions sent, a
        configuration flag); they appear as given.  One session: its values as recorded.
        A range: the remaining observations are logged and the last session's values (only
        when recorded for the range's last session) appear as ``last_session_<label>``.
        """
        key = dg.AssetKey.from_coercible(asset_key)
        self._flush(key)
        meta = span_metadata(self.days)
        meta.update(metadata_values(run_facts or {}))
        last = self._last.get(key, {})
        if self.single:
            meta.update(last)
        else:
            meta.update({f"{LAST_SESSION_PREFIX}{label}": v for label, v in last.items()})
        return meta

    def _flush(self, key: dg.AssetKey) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        day, values = pending
        self._last[key] = values if day == self.days[-1] else {}
        if self.single or not values:
            return
        self._context.log_event(dg.AssetObservation(asset_key=key, partition=day.isoformat(), metadata=values))
        self.observed.setdefault(key, []).append(day)
