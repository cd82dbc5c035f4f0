r"""Position sizing: fractional Kelly from realised trade statistics.

The Kelly fraction of a bet won with probability :math:`p` paying :math:`b` per unit
risked (the payoff ratio average win / average loss) is

.. math:: f^* = p - \frac{1 - p}{b}

Small samples overstate an edge, so the estimate is shrunk toward zero with a
credibility weight :math:`w = n / (n + n_0)` and then scaled by the chosen Kelly
fraction and capped:

.. math:: f = \min(\mathrm{cap}, \max(0, \lambda\, w\, f^*))

Below ``min_trades`` closed trades nothing is recommended (``f = 0``).  Every number
(``\lambda``, ``n_0``, ``min_trades``, the cap) is an argument: sizing never comes from
constants in code.

Examples
--------
>>> round(kelly_fraction(0.6, 1.0), 6)
0.2
>>> r = kelly_from_trades([100.0, 100.0, 100.0, -100.0, -100.0], fraction=0.5, min_trades=5,
...                       shrinkage_trades=5.0, cap=0.25)
>>> round(r.full_kelly, 6), round(r.shrunk_kelly, 6), round(r.recommended, 6)
(0.2, 0.1, 0.05)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["KellyResult", "SizingStatus", "kelly_fraction", "kelly_from_trades", "trade_stats"]

SizingStatus = Literal["ok", "insufficient_sample", "no_edge", "no_trades"]


def kelly_fraction(p: float, b: float) -> float:
    """Full Kelly ``f* = p - (1 - p) / b`` (``b = inf``: ``p``; ``b = 0``: ``-inf`` unless p=1)."""
    if not 0.0 <= p <= 1.0 or math.isnan(b) or b < 0:
        raise ValueError(f"kelly_fraction: need 0 <= p <= 1 and b >= 0, got p={p!r}, b={b!r}")
    if p == 1.0:
        return 1.0
    if b == 0.0:
        return -math.inf
    return p - (1.0 - p) / b


@dataclass(frozen=True, slots=True)
class TradeStats:
    trades: int
    wins: int
    losses: int
    win_rate: float
    avg_win: float
    avg_loss: float
    """Positive: the mean size of a losing trade."""
    expectancy: float
    profit_factor: float
    """Gross wins / gross losses (inf without losses, nan without trades)."""
    total: float


def trade_stats(pnls: Sequence[float]) -> TradeStats:
    """Win rate, average win/loss, expectancy and profit factor of closed trades.

    A trade with P&L > 0 is a win, < 0 a loss; P&L == 0 counts as a trade (in the win
    rate's denominator and the expectancy) but as neither.
    """
    x = np.asarray(pnls, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError("trade_stats: P&L values must be finite")
    n = int(x.size)
    wins, losses = x[x > 0], x[x < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    return TradeStats(
        trades=n,
        wins=int(wins.size),
        losses=int(losses.size),
        win_rate=wins.size / n if n else math.nan,
        avg_win=float(wins.mean()) if wins.size else 0.0,
        avg_loss=float(-losses.mean()) if losses.size else 0.0,
        expectancy=float(x.mean()) if n else math.nan,
        profit_factor=(gross_win / gross_loss if gross_loss > 0 else (math.inf if gross_win > 0 else math.nan)),
        total=float(x.sum()),
    )


@dataclass(frozen=True, slots=True)
class KellyResult:
    stats: TradeStats
    payoff_ratio: float
    full_kelly: float
    shrinkage: float
    shrunk_kelly: float
    recommended: float
    capped: bool
    status: SizingStatus


def kelly_from_trades(
    pnls: Sequence[float],
    *,
    fraction: float,
    min_trades: int,
    shrinkage_trades: float,
    cap: float,
) -> KellyResult:
    """Fractional, shrunk and capped Kelly from the P&L of closed trades.

    Parameters
    ----------
    pnls
        Final P&L of each closed trade (strategy), account currency.
    fraction
        Multiplier of full Kelly (0.25 = quarter Kelly).
    min_trades
        Fewer closed trades recommend 0 (``insufficient_sample``).
    shrinkage_trades
        :math:`n_0` of the credibility weight ``n / (n + n_0)``.
    cap
        Upper bound of the recommended fraction.
    """
    if not 0 < fraction <= 1 or min_trades < 1 or shrinkage_trades < 0 or not 0 < cap <= 1:
        raise ValueError(
            f"kelly_from_trades: fraction in (0, 1], min_trades >= 1, shrinkage_trades >= 0 and "
            f"cap in (0, 1] required, got {fraction=}, {min_trades=}, {shrinkage_trades=}, {cap=}"
        )
    stats = trade_stats(pnls)
    if stats.trades == 0:
        return KellyResult(stats, math.nan, math.nan, 0.0, math.nan, 0.0, False, "no_trades")
    b = stats.avg_win / stats.avg_loss if stats.avg_loss > 0 else math.inf
    full = kelly_fraction(stats.win_rate, b)
    weight = stats.trades / (stats.trades + shrinkage_trades)
    shrunk = full * weight if math.isfinite(full) else -math.inf
    raw = fraction * shrunk
    capped = raw > cap
    if stats.trades < min_trades:
        return KellyResult(stats, b, full, weight, shrunk, 0.0, False, "insufficient_sample")
    if raw <= 0:
        return KellyResult(stats, b, full, weight, shrunk, 0.0, False, "no_edge")
    return KellyResult(stats, b, full, weight, shrunk, min(raw, cap), capped, "ok")
