"""Shared array and literal type aliases for :mod:`portfolio_pipeline.quant` (and the
float64 array conversion its kernels share)."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Float64Array: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Int8Array: TypeAlias = npt.NDArray[np.int8]
IntArray: TypeAlias = npt.NDArray[np.intp]
FloatLike: TypeAlias = float | npt.ArrayLike
"""A scalar or anything :func:`numpy.asarray` turns into a float array."""

OptionKind: TypeAlias = Literal["call", "put", "C", "P", "c", "p", "CALL", "PUT", "Call", "Put"]
"""Accepted option-kind spellings (matching is case-insensitive for any str)."""
KindLike: TypeAlias = str | bool | npt.ArrayLike
"""A kind string, a bool ``is_call``, or an array of either (or of 0/1 ints)."""
Model: TypeAlias = Literal["bsm", "black76"]
Exercise: TypeAlias = Literal["european", "american"]
SkewRule: TypeAlias = Literal["sticky_strike", "sticky_moneyness"]
"""How a fixed strike's implied vol moves with spot in a scenario
(:mod:`portfolio_pipeline.quant.revaluation`)."""
Innovations: TypeAlias = Literal["t", "normal"]
"""Daily shocks of the Monte Carlo factor model (:mod:`portfolio_pipeline.quant.monte_carlo`)."""
ScenarioAmericanMethod: TypeAlias = Literal["lr", "bs2002", "interp_lr"]
"""American pricers of the scenario engine: the two of
:func:`~portfolio_pipeline.quant.pricing.american_price` plus ``"interp_lr"`` (tree
premium interpolated on a grid, see :mod:`portfolio_pipeline.quant.revaluation`)."""

__all__ = [
    "BoolArray",
    "Exercise",
    "Float64Array",
    "FloatLike",
    "Innovations",
    "Int8Array",
    "IntArray",
    "KindLike",
    "Model",
    "OptionKind",
    "ScenarioAmericanMethod",
    "SkewRule",
    "as_float64",
]


def as_float64(x: npt.ArrayLike, name: str, ndim: int | None = None) -> Float64Array:
    """``x`` as a float64 array; with ``ndim``, a ValueError naming ``name`` unless it has
    that many dimensions."""
    arr = np.asarray(x, dtype=np.float64)
    if ndim is not None and arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, got shape {arr.shape}")
    return arr
