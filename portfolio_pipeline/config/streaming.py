"""Schema of ``config/streaming.yaml``: the streaming service's knobs.

Pure pydantic in the pipeline's configuration layer: the loader registers it in
``CONFIG_FILES`` (``streaming.example.yaml`` shares the schema), the pipeline's sensors
read it, and ``streaming_service`` imports it from here (the pipeline never imports the
service).  The file is optional: without it :data:`DEFAULT_STREAMING` applies.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from portfolio_pipeline.domain.schema import StrictModel

__all__ = [
    "DEFAULT_STREAMING",
    "BreachSettings",
    "BufferSettings",
    "FeedSettings",
    "HedgeSettings",
    "StagingSettings",
    "StreamingConfig",
]

HedgeMetric = Literal["beta_weighted_delta", "vega", "short_gamma", "theta", "margin_utilisation"]


def _default_metrics() -> list[HedgeMetric]:
    return ["beta_weighted_delta"]


class _Strict(StrictModel):
    """This module's schemas share the project-wide rules of :class:`StrictModel`."""


class BreachSettings(_Strict):
    """When a limit check becomes an event.

    A metric fires after ``debounce_ticks`` consecutive evaluations above its limit
    (utilisation > 1) spanning at least ``debounce_seconds``; it clears once
    utilisation falls below ``1 - hysteresis`` (for ``debounce_ticks`` evaluations);
    after clearing, it cannot fire again for ``cooldown_seconds``.
    """

    debounce_ticks: int = Field(default=3, ge=1)
    debounce_seconds: float = Field(default=0.0, ge=0, description="market time")
    hysteresis: float = Field(default=0.05, ge=0, lt=1, description="fraction of the limit")
    cooldown_seconds: float = Field(default=900.0, ge=0, description="market time")


class HedgeSettings(_Strict):
    """Hedge candidates for a breach (distances are FRACTIONS of spot: 0.02 = 2 %)."""

    wing_otm_pct: float = Field(
        default=0.03, gt=0, lt=0.5,
        description="short (far) strike of the vertical: spot * (1 - x) for puts, (1 + x) calls",
    )
    wing_width_pct: float = Field(
        default=0.02, gt=0, lt=0.5,
        description="distance between the two strikes as a fraction of spot",
    )
    target_dte: int = Field(default=45, ge=1, description="calendar days to the hedge expiry")
    min_dte: int = Field(default=14, ge=0)
    calendar_far_dte: int = Field(default=30, ge=1, description="extra days of the far leg")
    target_utilisation: float = Field(
        default=0.8, gt=0, le=1, description="size the hedge to bring the metric to this share of the limit"
    )
    max_contracts: int = Field(default=50, ge=1)
    vega_structure: Literal["calendar", "long_options"] = "long_options"
    trading_classes: dict[str, str] = Field(
        default_factory=lambda: {"SPX": "SPX", "NDX": "NDX"},
        description="underlying root -> option trading class used for hedges",
    )
    hedge_underlying: str = Field(default="SPX", description="root hedging beta-weighted delta and vega")

    @model_validator(mode="after")
    def _dte(self) -> HedgeSettings:
        if self.min_dte > self.target_dte:
            raise ValueError("min_dte must not exceed target_dte")
        return self


class FeedSettings(_Strict):
    stale_after_seconds: float = Field(default=10.0, gt=0, description="wall-clock seconds without a tick")
    demo_speed: float = Field(default=600.0, gt=0, description="market seconds replayed per wall second")
    demo_tick_seconds: float = Field(default=5.0, gt=0, description="market seconds between demo ticks")
    demo_session: str = Field(default="2018-02-05", description="session the demo feed replays")
    risk_snapshot_seconds: float = Field(
        default=300.0, gt=0, description="market seconds between recorded intraday risk snapshots"
    )
    batch_max_ticks: int = Field(
        default=256, ge=1,
        description="most queued ticks coalesced into one evaluation (1 = evaluate every tick)",
    )
    batch_window_seconds: float = Field(
        default=0.001, ge=0,
        description="market-time span of the ticks coalesced into one evaluation (0 = same timestamp only)",
    )
    queue_max_ticks: int = Field(
        default=10_000, ge=1, description="ticks read ahead of the engine before the feed is paused"
    )


class BufferSettings(_Strict):
    max_events: int = Field(default=100_000, ge=10, description="bound of the on-disk buffer")
    batch_size: int = Field(default=500, ge=1)
    flush_interval_seconds: float = Field(default=0.05, gt=0)
    retry_seconds: float = Field(default=2.0, gt=0, description="wait between reconnect attempts")


class StagingSettings(_Strict):
    """A proposal becomes a staged order only by one of these rules, or by a person's request."""

    auto_stage: bool = Field(default=False, description="stage proposals matching the rules below")
    auto_stage_metrics: list[HedgeMetric] = Field(default_factory=lambda: _default_metrics())
    auto_stage_regimes: list[str] = Field(
        default_factory=list, description="only in these regimes (empty = any)"
    )
    max_auto_staged: int = Field(default=3, ge=0, description="open staged orders allowed at once")
    staged_ttl_minutes: float = Field(default=60.0, gt=0, description="wall clock; then expired")
    remind_after_minutes: float = Field(default=10.0, gt=0, description="staged-order reminders")


class StreamingConfig(_Strict):
    """Schema of ``config/streaming.yaml``."""

    breach: BreachSettings = BreachSettings()
    hedge: HedgeSettings = HedgeSettings()
    feed: FeedSettings = FeedSettings()
    buffer: BufferSettings = BufferSettings()
    staging: StagingSettings = StagingSettings()


DEFAULT_STREAMING = StreamingConfig()
"""Used when ``config/streaming.yaml`` is absent."""
