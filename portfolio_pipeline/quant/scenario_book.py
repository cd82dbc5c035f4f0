"""The book of the scenario engine: unique contracts and position units per group.

A *book* is a set of unique contracts (many positions share one contract) plus a matrix
of position units ``qty x multiplier`` per contract and group (account, underlying,
strategy...), so the expensive part, pricing, is done once per unique contract and
scenario and the P&L of every group is one matrix product
(:func:`portfolio_pipeline.quant.revaluation.revalue`):

.. math::

    \\mathrm{PnL}_{s,g} = \\sum_c \\bigl(V_c(\\text{scenario } s) - V_c(\\text{today})\\bigr)\\,U_{c,g},
    \\qquad U_{c,g} = \\sum_{p \\in g,\\ p \\text{ on } c} \\mathrm{qty}_p\\,\\mathrm{mult}_p .

``V`` is per unit of underlying (the pricing kernel's unit); linear contracts
(stock, index, futures) have ``V = S``.  Pure numpy, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from portfolio_pipeline.quant._typing import BoolArray, Float64Array, IntArray

__all__ = ["Book", "ContractSet"]


@dataclass(frozen=True, slots=True)
class ContractSet:
    """Unique contracts to revalue, one element per contract (per-unit values).

    Parameters
    ----------
    factor : int array
        Index of the underlying / risk factor each contract moves with.
    is_option, is_call, black76 : bool arrays
        Option or linear (stock/index/future: ``V = S``); call or put; Black-76
        (futures option) or BSM.
    american : bool array
        American exercise (BSM options only: equity/ETF options); revalued with
        :func:`~portfolio_pipeline.quant.pricing.american_price`.  False for linear
        contracts, index options and futures options (European).
    spot : float array
        Today's price of what the contract is valued on (the spot, or the future).
    strike, T, r, q, vol : float arrays
        Option inputs (ignored for linear contracts; use any finite value there).
    """

    factor: IntArray
    is_option: BoolArray
    is_call: BoolArray
    black76: BoolArray
    spot: Float64Array
    strike: Float64Array
    T: Float64Array
    r: Float64Array
    q: Float64Array
    vol: Float64Array
    american: BoolArray

    def __post_init__(self) -> None:
        n = self.factor.shape
        for name in (
            "is_option", "is_call", "black76", "spot", "strike", "T", "r", "q", "vol", "american"
        ):
            if getattr(self, name).shape != n:
                raise ValueError(
                    f"ContractSet.{name} has shape {getattr(self, name).shape}, expected {n}"
                )
        if n[0] and self.factor.min() < 0:
            raise ValueError("ContractSet.factor has a negative index")
        bad_spot = ~(self.spot > 0.0) | ~np.isfinite(self.spot)
        if bad_spot.any():
            raise ValueError(
                f"ContractSet.spot must be positive and finite (contract {int(np.argmax(bad_spot))})"
            )
        opt = self.is_option
        for name in ("strike", "T", "r", "q", "vol"):
            v = getattr(self, name)[opt]
            if not np.all(np.isfinite(v)):
                raise ValueError(f"ContractSet.{name} is not finite for an option")
        if np.any(self.strike[opt] <= 0) or np.any(self.T[opt] < 0) or np.any(self.vol[opt] < 0):
            raise ValueError("ContractSet: options need strike > 0, T >= 0 and vol >= 0")
        bad_am = self.american & (~opt | self.black76)
        if bad_am.any():
            raise ValueError(
                f"ContractSet.american is set for contract {int(np.argmax(bad_am))}, which is "
                "not a BSM option (American exercise applies to equity/ETF options only)"
            )

    @property
    def size(self) -> int:
        return int(self.factor.shape[0])

    @classmethod
    def build(
        cls,
        *,
        factor: npt.ArrayLike,
        is_option: npt.ArrayLike,
        is_call: npt.ArrayLike,
        black76: npt.ArrayLike,
        spot: npt.ArrayLike,
        strike: npt.ArrayLike,
        T: npt.ArrayLike,
        r: npt.ArrayLike,
        q: npt.ArrayLike,
        vol: npt.ArrayLike,
        american: npt.ArrayLike = False,
    ) -> ContractSet:
        """Build from array-likes (broadcast to the length of ``factor``); ``american``
        is cleared for linear contracts."""
        f = np.asarray(factor, dtype=np.intp).reshape(-1)
        n = f.shape

        def fl(x: npt.ArrayLike) -> Float64Array:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.float64), n))

        def bl(x: npt.ArrayLike) -> BoolArray:
            return np.ascontiguousarray(np.broadcast_to(np.asarray(x, dtype=np.bool_), n))

        return cls(
            factor=f,
            is_option=bl(is_option),
            is_call=bl(is_call),
            black76=bl(black76),
            spot=fl(spot),
            strike=np.where(bl(is_option), fl(strike), np.nan),
            T=fl(T),
            r=fl(r),
            q=fl(q),
            vol=fl(vol),
            american=bl(american) & bl(is_option),
        )


@dataclass(frozen=True, slots=True)
class Book:
    """Unique contracts plus position units per (contract, group).

    ``units[c, g]`` is the sum of ``qty x multiplier`` of the positions of group ``g``
    in contract ``c`` (0 where the group does not hold it).  ``factors`` names the
    risk factors (underlyings) indexed by ``contracts.factor``.
    """

    contracts: ContractSet
    units: Float64Array
    groups: tuple[str, ...]
    factors: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.units.shape != (self.contracts.size, len(self.groups)):
            raise ValueError(
                f"Book.units has shape {self.units.shape}, expected "
                f"({self.contracts.size}, {len(self.groups)})"
            )
        if not np.all(np.isfinite(self.units)):
            raise ValueError("Book.units must be finite")
        if self.contracts.size and int(self.contracts.factor.max()) >= len(self.factors):
            raise ValueError("ContractSet.factor indexes past Book.factors")

    @property
    def n_factors(self) -> int:
        return len(self.factors)

