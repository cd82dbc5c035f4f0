"""Option chain snapshots: one underlying's listed contracts in a window, with quotes,
volume, open interest, implied vol and Greeks, one row per contract (columnar arrays).

The capability is optional: a broker that can snapshot chains implements
:class:`ChainSnapshotSource` (the demo broker's simulated chain; IBKR and Tastytrade
adapters when they add it). :meth:`ChainSnapshot.flow_chain` hands the snapshot to
:mod:`portfolio_pipeline.quant.flow`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.brokers.base import BrokerAdapter, BrokerDataError, BrokerError
from portfolio_pipeline.domain.positions import require_aware
from portfolio_pipeline.quant import flow
from portfolio_pipeline.quant._typing import BoolArray, Float64Array, Model

__all__ = ["ChainSnapshot", "ChainSnapshotSource", "ChainWindow", "chain_source", "collect_chains"]

logger = logging.getLogger(__name__)

_ARRAYS = (
    "strike",
    "T",
    "bid",
    "ask",
    "last",
    "volume",
    "open_interest",
    "iv",
    "delta",
    "gamma",
    "vega",
    "theta",
    "quote_epoch",
)


@dataclass(frozen=True, slots=True)
class ChainWindow:
    """Which listed contracts a snapshot covers: expiries settling within ``max_days``
    calendar days after the snapshot, strikes within ``spot x (1 -/+ moneyness)``."""

    max_days: int = 35
    moneyness: float = 0.06

    def __post_init__(self) -> None:
        if self.max_days < 0:
            raise ValueError(f"chain window: max_days must be >= 0, got {self.max_days}")
        if not 0 < self.moneyness < 1:
            raise ValueError(f"chain window: moneyness must be in (0, 1), got {self.moneyness}")


@dataclass(frozen=True, slots=True)
class ChainSnapshot:
    """One underlying's chain at ``as_of`` (rows = contracts; arrays of equal length).

    ``T`` is years to each contract's settlement (``domain.settlement``); ``iv`` and the
    Greeks are per share in project units (vega per vol point, theta per calendar day),
    NaN where the source has none; ``volume`` and ``open_interest`` are contracts (NaN
    where the source sent none); ``quote_epoch`` is each quote's time in epoch seconds
    (NaN unknown). ``simulated`` marks the demo's model chain: label it wherever shown.
    """

    underlying: str
    as_of: datetime
    spot: float
    multiplier: float
    rate: float
    dividend_yield: float
    source: str
    simulated: bool
    trading_class: npt.NDArray[np.str_]
    expiry: npt.NDArray[np.datetime64]
    is_call: BoolArray
    strike: Float64Array
    T: Float64Array
    bid: Float64Array
    ask: Float64Array
    last: Float64Array
    volume: Float64Array
    open_interest: Float64Array
    iv: Float64Array
    delta: Float64Array
    gamma: Float64Array
    vega: Float64Array
    theta: Float64Array
    quote_epoch: Float64Array
    model: Model = "bsm"

    def __post_init__(self) -> None:
        require_aware(self.as_of, "as_of", f"chain snapshot {self.underlying}")
        n = np.asarray(self.is_call).size
        for name in (*_ARRAYS, "trading_class", "expiry"):
            size = np.asarray(getattr(self, name)).size
            if size != n:
                raise ValueError(
                    f"chain snapshot {self.underlying}: {name} has {size} rows, expected {n}"
                )

    @property
    def size(self) -> int:
        return int(self.is_call.size)

    def flow_chain(self) -> flow.Chain:
        """The contracts with a vol and a settlement ahead, as :class:`quant.flow.Chain`
        (missing volume / open interest count as 0)."""
        keep = np.isfinite(self.iv) & (self.T > 0)
        return flow.Chain(
            spot=self.spot,
            is_call=self.is_call[keep],
            strike=self.strike[keep],
            expiry=self.expiry[keep],
            T=self.T[keep],
            iv=self.iv[keep],
            open_interest=np.nan_to_num(self.open_interest[keep]),
            volume=np.nan_to_num(self.volume[keep]),
            multiplier=self.multiplier,
            rate=self.rate,
            dividend_yield=self.dividend_yield,
            model=self.model,
        )


@runtime_checkable
class ChainSnapshotSource(Protocol):
    """A broker that snapshots option chains (as of its clock's "now")."""

    async def option_chain_snapshot(
        self, underlying: str, window: ChainWindow
    ) -> ChainSnapshot: ...


def chain_source(adapters: Sequence[BrokerAdapter]) -> BrokerAdapter | None:
    """The adapter that snapshots chains: the first live broker that can, else the demo."""
    able = [a for a in adapters if isinstance(a, ChainSnapshotSource)]
    live = [a for a in able if a.name != "demo"]
    if live:
        return live[0]
    return able[0] if able else None


async def collect_chains(
    adapter: BrokerAdapter, underlyings: Sequence[str], window: ChainWindow
) -> tuple[list[ChainSnapshot], list[str]]:
    """One snapshot per underlying from ``adapter`` (connected for the duration); an
    underlying the broker cannot serve is a note naming it, never a guessed chain."""
    if not isinstance(adapter, ChainSnapshotSource):
        raise TypeError(f"{adapter.name}: the broker cannot snapshot option chains")
    snapshots: list[ChainSnapshot] = []
    notes: list[str] = []
    async with adapter:
        for underlying in underlyings:
            try:
                snapshots.append(await adapter.option_chain_snapshot(underlying, window))
            except (BrokerDataError, BrokerError) as exc:
                logger.warning("option chain of %s unavailable: %s", underlying, exc)
                notes.append(f"{underlying}: {exc}")
    return snapshots, notes
