"""The one base of every configuration schema (pydantic), so all files share its rules.

- unknown keys are errors (``extra="forbid"``), models are immutable;
- non-finite numbers are rejected everywhere (``allow_inf_nan=False``): ``.inf``,
  ``.nan``, ``"nan"`` and ``1e400`` (which overflows to inf) in any float field.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["StrictModel"]


class StrictModel(BaseModel):
    """Base model of the configuration schemas."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
