"""Shared array and literal type aliases for :mod:`portfolio_pipeline.quant`."""

from __future__ import annotations

from typing import Literal, TypeAlias

import numpy as np
import numpy.typing as npt

Float64Array: TypeAlias = npt.NDArray[np.float64]
BoolArray: TypeAlias = npt.NDArray[np.bool_]
Int8Array: TypeAlias = npt.NDArray[np.int8]
FloatLike: TypeAlias = float | npt.ArrayLike
"""A scalar or anything :func:`numpy.asarray` turns into a float array."""

OptionKind: TypeAlias = Literal["call", "put", "C", "P", "c", "p", "CALL", "PUT", "Call", "Put"]
"""Accepted option-kind spellings (matching is case-insensitive for any str)."""
KindLike: TypeAlias = str | bool | npt.ArrayLike
"""A kind string, a bool ``is_call``, or an array of either (or of 0/1 ints)."""
Model: TypeAlias = Literal["bsm", "black76"]
Exercise: TypeAlias = Literal["european", "american"]

__all__ = [
    "BoolArray",
    "Exercise",
    "Float64Array",
    "FloatLike",
    "Int8Array",
    "KindLike",
    "Model",
    "OptionKind",
]
