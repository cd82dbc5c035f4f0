"""Breach detection: limit checks -> breach / cleared events, with debounce, hysteresis
and cooldown, so a limit hovering at its edge fires once and clears once.

Per (scope, metric) the detector is a small state machine on market time:

* idle: ``debounce_ticks`` consecutive evaluations with utilisation > 1 spanning at
  least ``debounce_seconds`` fire a ``limit_breach`` (unless within the cooldown after
  the last clear, in which case it fires when the cooldown ends if still breached);
* active: ``debounce_ticks`` consecutive evaluations below ``1 - hysteresis`` clear it
  (``limit_cleared``) and start the cooldown.

Each event carries the VIX, VIX3M, regime, limit, value and utilisation that produced
it.  Event keys derive from the scope, metric and market timestamp, so replaying the
same ticks yields the same keys (the events table is idempotent on them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal

from portfolio_pipeline.config.streaming import BreachSettings
from portfolio_pipeline.domain.limits import LimitCheck
from portfolio_pipeline.domain.regime import RegimeService

__all__ = ["BREACH_CLEARED", "LIMIT_BREACH", "BreachDetector", "BreachSignal"]

logger = logging.getLogger(__name__)

LIMIT_BREACH: Final = "limit_breach"
BREACH_CLEARED: Final = "limit_cleared"
_SEVERITY_RANK: Final = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True, slots=True)
class BreachSignal:
    """A breach that fired or cleared, with the check that produced it."""

    kind: Literal["limit_breach", "limit_cleared"]
    ts: datetime
    check: LimitCheck
    severity: str

    @property
    def event_key(self) -> str:
        return f"{self.kind}:{self.check.scope}:{self.check.metric}:{self.ts.isoformat()}"

    def payload(self, **context: Any) -> dict[str, Any]:
        c = self.check
        return {
            "scope": c.scope,
            "metric": c.metric,
            "value": c.value,
            "limit": c.limit,
            "utilisation": c.utilisation,
            "regime": c.regime,
            "vix": c.vix,
            "vix3m": c.vix3m,
            "ts": self.ts.isoformat(),
            **context,
        }


@dataclass(slots=True)
class _State:
    active: bool = False
    over: int = 0
    over_since: datetime | None = None
    under: int = 0
    cooled_until: datetime | None = None
    suppressed_logged: bool = False


class BreachDetector:
    """Turns a stream of limit checks into breach / cleared signals (see module docstring)."""

    def __init__(self, settings: BreachSettings, regimes: RegimeService | None = None) -> None:
        self._s = settings
        self._cooldown = timedelta(seconds=settings.cooldown_seconds)
        self._debounce = timedelta(seconds=settings.debounce_seconds)
        self._states: dict[tuple[str, str], _State] = {}
        self._regime_severity = (
            {r.name: r.severity for r in regimes.matrix.regimes} if regimes is not None else {}
        )

    def active(self) -> list[tuple[str, str]]:
        """(scope, metric) pairs currently in breach."""
        return [k for k, s in self._states.items() if s.active]

    def _severity(self, regime: str) -> str:
        sev = self._regime_severity.get(regime, "warning")
        return sev if _SEVERITY_RANK.get(sev, 0) >= _SEVERITY_RANK["warning"] else "warning"

    def update(self, ts: datetime, checks: tuple[LimitCheck, ...] | list[LimitCheck]) -> list[BreachSignal]:
        out: list[BreachSignal] = []
        clear_below = 1.0 - self._s.hysteresis
        for check in checks:
            key = (check.scope, check.metric)
            st = self._states.get(key)
            if st is None:
                st = self._states[key] = _State()
            u = check.utilisation
            if not st.active:
                if u > 1.0:
                    if st.over == 0:
                        st.over_since = ts
                    st.over += 1
                    ready = st.over >= self._s.debounce_ticks and (
                        st.over_since is None or ts - st.over_since >= self._debounce
                    )
                    if ready and st.cooled_until is not None and ts < st.cooled_until:
                        if not st.suppressed_logged:
                            logger.info(
                                "breach suppressed by cooldown metric=%s until=%s", check.metric, st.cooled_until
                            )
                            st.suppressed_logged = True
                        continue
                    if ready:
                        st.active, st.over, st.under, st.suppressed_logged = True, 0, 0, False
                        out.append(BreachSignal(LIMIT_BREACH, ts, check, self._severity(check.regime)))
                else:
                    st.over, st.over_since = 0, None
            elif u < clear_below:
                st.under += 1
                if st.under >= self._s.debounce_ticks:
                    st.active, st.under, st.over = False, 0, 0
                    st.cooled_until = ts + self._cooldown
                    out.append(BreachSignal(BREACH_CLEARED, ts, check, "info"))
            else:
                st.under = 0
        return out
