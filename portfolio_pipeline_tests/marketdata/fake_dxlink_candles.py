"""Daily candles on the fake DXLink server: a subclass of the shared :class:`FakeDXLink`
that serves ``Candle`` subscriptions one event per pump period, newest first as dxfeed
sends a snapshot, the last one flagged SNAPSHOT_END (unless ``end_flag`` is off: a
snapshot that never completes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from portfolio_pipeline.exchange_calendar import NEW_YORK
from portfolio_pipeline_tests.brokers.tastytrade.fake_tasty import FakeDXLink

SNAPSHOT_BEGIN = 0x04
SNAPSHOT_END = 0x08


class _Row(dict[str, Any]):
    def __missing__(self, key: str) -> None:
        return None


@dataclass
class CandleDXLink(FakeDXLink):
    candles: dict[str, list[tuple[date, float, float, float, float, float]]] = field(default_factory=dict)
    """Plain symbol -> (session, open, high, low, close, volume), oldest first."""
    end_flag: bool = True
    _cursor: dict[str, int] = field(default_factory=dict)

    def _values(self, event_type: str, symbol: str) -> dict[str, Any] | None:
        if event_type != "Candle":
            return super()._values(event_type, symbol)
        plain = symbol.split("{", 1)[0]
        rows = list(reversed(self.candles.get(plain, [])))  # newest first
        i = self._cursor.get(symbol, 0)
        if i >= len(rows):
            return None
        self._cursor[symbol] = i + 1
        day, o, h, lo, c, v = rows[i]
        flags = (SNAPSHOT_BEGIN if i == 0 else 0) | (SNAPSHOT_END if i == len(rows) - 1 and self.end_flag else 0)
        stamp = int(datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).timestamp() * 1000)
        return _Row({"eventSymbol": symbol, "eventTime": 0, "eventFlags": flags, "index": stamp << 22,
                     "time": stamp, "sequence": 0, "count": 1, "open": o, "high": h, "low": lo,
                     "close": c, "volume": v})
