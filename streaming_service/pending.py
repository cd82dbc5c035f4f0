"""Hedge proposals waiting for the database, queued durably on disk.

A breach that fires while the database is down still gets its proposal: the
:class:`~streaming_service.staging.HedgeDesk` writes the breach moment (the signal, the
risk and the market captured at the breach) here, and proposes it when the database
returns, also after a restart.  Like the event buffer (:mod:`.buffer`) the file is JSON
lines, mode 0600, in the private buffer directory, appended with ``fsync`` and
rewritten atomically (temp file + rename); one line per breach event key.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any, Final

from portfolio_pipeline.domain.limits import LimitCheck, RiskSnapshot
from streaming_service.breach import BreachSignal
from streaming_service.durable import append_lines, rewrite_lines
from streaming_service.staging import Moment

__all__ = ["PENDING_FILE", "PendingProposals", "moment_from_json", "moment_to_json"]

logger = logging.getLogger(__name__)

PENDING_FILE: Final = "pending_proposals.jsonl"


def moment_to_json(moment: Moment) -> str:
    s = moment.signal
    doc: dict[str, Any] = {
        "signal": {"kind": s.kind, "ts": s.ts.isoformat(), "severity": s.severity, "check": asdict(s.check)},
        "risk": asdict(moment.risk),
        "market": {
            "root": moment.root, "spot": moment.spot, "vol": moment.vol, "rate": moment.rate,
            "dividend_yield": moment.dividend_yield, "beta": moment.beta,
        },
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


def moment_from_json(line: str) -> Moment:
    doc = json.loads(line)
    sig = doc["signal"]
    signal = BreachSignal(
        kind=sig["kind"], ts=datetime.fromisoformat(sig["ts"]), severity=sig["severity"],
        check=LimitCheck(**sig["check"]),
    )
    market = doc["market"]
    return Moment(
        signal=signal, risk=RiskSnapshot(**doc["risk"]), root=market["root"], spot=market["spot"],
        vol=market["vol"], rate=market["rate"], dividend_yield=market["dividend_yield"], beta=market["beta"],
    )


class PendingProposals:
    """Breach moments whose proposal waits for the database (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self._path = directory / PENDING_FILE

    @property
    def path(self) -> Path:
        return self._path

    def _lines(self) -> list[str]:
        if not self._path.exists():
            return []
        with self._path.open("r", encoding="utf-8") as fh:
            return [line for line in fh if line.strip()]

    def load(self) -> list[Moment]:
        """Every queued moment, oldest first (an unreadable line is logged and skipped)."""
        out: list[Moment] = []
        for line in self._lines():
            try:
                out.append(moment_from_json(line))
            except (ValueError, KeyError, TypeError) as exc:
                logger.error("pending proposals: unreadable line skipped error=%s", exc)
        return out

    def __len__(self) -> int:
        return len(self._lines())

    def add(self, moment: Moment) -> bool:
        """Queue ``moment`` (durably); False when its breach is queued already."""
        key = moment.signal.event_key
        if any(m.signal.event_key == key for m in self.load()):
            return False
        append_lines(self._path, moment_to_json(moment) + "\n")
        return True

    def remove(self, event_key: str) -> None:
        """Drop the moment of ``event_key`` (atomically: temp file + rename)."""
        keep = [line for line in self._lines() if _key(line) != event_key]
        if not keep:
            self._path.unlink(missing_ok=True)
            return
        rewrite_lines(self._path, keep)


def _key(line: str) -> str | None:
    try:
        return moment_from_json(line).signal.event_key
    except (ValueError, KeyError, TypeError):
        return None
