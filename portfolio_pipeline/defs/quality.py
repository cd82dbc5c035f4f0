"""Great Expectations suites run directly from asset checks (no dagster-ge).

great_expectations takes seconds to import, so it is imported inside
:func:`validate_frame` only, with analytics and progress bars off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd


@dataclass(frozen=True, slots=True)
class ExpectationOutcome:
    expectation: str
    column: str
    success: bool
    unexpected_count: int
    examples: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SuiteOutcome:
    name: str
    rows: int
    outcomes: tuple[ExpectationOutcome, ...]

    @property
    def success(self) -> bool:
        return all(o.success for o in self.outcomes)

    def failures(self) -> list[ExpectationOutcome]:
        return [o for o in self.outcomes if not o.success]

    def summary(self) -> str:
        if self.success:
            return f"{self.name}: {len(self.outcomes)} expectations passed on {self.rows} rows"
        parts = [
            f"{o.expectation}({o.column}): {o.unexpected_count} unexpected, e.g. {', '.join(o.examples)}"
            for o in self.failures()
        ]
        return f"{self.name}: " + "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Expect:
    """A GE expectation by class name with its keyword arguments."""

    kind: str
    kwargs: dict[str, Any]

    @property
    def column(self) -> str:
        return str(self.kwargs.get("column") or self.kwargs.get("column_A") or "")


def not_null(column: str) -> Expect:
    return Expect("ExpectColumnValuesToNotBeNull", {"column": column})


def between(column: str, min_value: float | None = None, max_value: float | None = None,
            *, strict_min: bool = False) -> Expect:
    return Expect(
        "ExpectColumnValuesToBeBetween",
        {"column": column, "min_value": min_value, "max_value": max_value, "strict_min": strict_min},
    )


def not_in(column: str, values: Sequence[Any]) -> Expect:
    return Expect("ExpectColumnValuesToNotBeInSet", {"column": column, "value_set": list(values)})


def in_set(column: str, values: Sequence[Any]) -> Expect:
    return Expect("ExpectColumnValuesToBeInSet", {"column": column, "value_set": list(values)})


def a_ge_b(column_a: str, column_b: str) -> Expect:
    return Expect(
        "ExpectColumnPairValuesAToBeGreaterThanB",
        {"column_A": column_a, "column_B": column_b, "or_equal": True, "ignore_row_if": "either_value_is_missing"},
    )


def unique_compound(columns: Sequence[str]) -> Expect:
    return Expect("ExpectCompoundColumnsToBeUnique", {"column_list": list(columns)})


def validate_frame(name: str, frame: pd.DataFrame, expectations: Sequence[Expect]) -> SuiteOutcome:
    """Run ``expectations`` on ``frame`` with an ephemeral GE context."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    context_config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(),
        progress_bars=ProgressBarsConfig(globally=False),
        analytics_enabled=False,
    )
    context = gx.get_context(project_config=context_config, mode="ephemeral")
    batch = (
        context.data_sources.add_pandas(f"{name}_source")
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe("whole")
        .get_batch(batch_parameters={"dataframe": frame})
    )
    suite = gx.ExpectationSuite(
        name=name,
        expectations=[getattr(gx.expectations, e.kind)(**e.kwargs) for e in expectations],
    )
    result = batch.validate(suite)
    outcomes = []
    for res in result.results:  # GE does not keep the suite's order: read each result's config
        expectation = res.expectation_config
        kwargs = dict(expectation.kwargs) if expectation is not None else {}
        details = res.result or {}
        examples = tuple(repr(x) for x in (details.get("partial_unexpected_list") or [])[:3])
        column = kwargs.get("column") or kwargs.get("column_A") or ",".join(kwargs.get("column_list", []))
        if "column_B" in kwargs:
            column = f"{column},{kwargs['column_B']}"
        outcomes.append(
            ExpectationOutcome(
                expectation=expectation.type if expectation is not None else "?",
                column=str(column),
                success=bool(res.success),
                unexpected_count=int(details.get("unexpected_count") or 0),
                examples=examples,
            )
        )
    return SuiteOutcome(name=name, rows=len(frame), outcomes=tuple(outcomes))


def suite_check_result(
    spec: dg.AssetCheckSpec,
    outcome: SuiteOutcome,
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    metadata: dict[str, dg.MetadataValue] | None = None,
) -> dg.AssetCheckResult:
    """The asset check result of a GE suite (the one place this conversion lives)."""
    return dg.AssetCheckResult(
        check_name=spec.name,
        asset_key=spec.asset_key,
        passed=outcome.success,
        severity=severity,
        description=outcome.summary(),
        metadata={
            "rows": dg.MetadataValue.int(outcome.rows),
            "failed_expectations": dg.MetadataValue.int(len(outcome.failures())),
            **(metadata or {}),
        },
    )


def problems_check_result(
    spec: dg.AssetCheckSpec,
    problems: Sequence[str],
    *,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR,
    **metadata: float,
) -> dg.AssetCheckResult:
    """The asset check result of a hand-written check: passed when ``problems`` is empty."""
    shown = "; ".join(problems[:10]) + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else "")
    return dg.AssetCheckResult(
        check_name=spec.name,
        asset_key=spec.asset_key,
        passed=not problems,
        severity=severity,
        description=shown if problems else "ok",
        metadata={
            "problems": dg.MetadataValue.int(len(problems)),
            **{k: dg.MetadataValue.float(float(v)) for k, v in metadata.items()},
        },
    )
