"""Account types and the option structures an account type may be forbidden to hold.

``config/risk_matrix.yaml`` ``structure_bans`` maps an account type (``accounts.yaml``
``account_type``) to banned structures; :func:`banned_structures` finds them among an
account's tagged strategies (``domain.strategies``: the one strategy tagging).

A *naked short call* is an open strategy tagged ``short_call`` (a short call not covered
by shares: covered ones are tagged ``covered_call``) or a short ``straddle`` /
``strangle`` (their calls are uncovered); a *naked short put* is a ``short_put`` (a short
put the account's cash does not secure: secured ones are ``cash_secured_put``) or the put
of a short straddle / strangle.  Spreads (verticals, condors, butterflies, calendars)
have a long leg protecting each short one and are never naked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal

__all__ = [
    "ACCOUNT_TYPES",
    "AccountType",
    "StructureBan",
    "StructureViolation",
    "banned_structures",
]

AccountType = Literal["margin", "portfolio_margin", "cash", "ira", "roth_ira"]
ACCOUNT_TYPES: Final[tuple[str, ...]] = ("margin", "portfolio_margin", "cash", "ira", "roth_ira")
StructureBan = Literal["naked_short_call", "naked_short_put"]


@dataclass(frozen=True, slots=True)
class TaggedLeg:
    """One leg of a tagged strategy: right (``C``/``P``, None for stock) and signed quantity."""

    right: str | None
    quantity: float


@dataclass(frozen=True, slots=True)
class StructureViolation:
    """A banned structure held by an account."""

    account_id: str
    ban: StructureBan
    strategy_id: str
    strategy_type: str
    underlying: str
    contracts: float
    """Number of naked short option contracts of that right in the strategy."""


def _naked(strategy_type: str, legs: Sequence[TaggedLeg], right: str) -> float:
    short = sum(-leg.quantity for leg in legs if leg.right == right and leg.quantity < 0)
    single = "short_call" if right == "C" else "short_put"
    if strategy_type == single:
        return short
    if strategy_type in ("straddle", "strangle") and all(
        leg.quantity < 0 for leg in legs if leg.right
    ):
        return short
    return 0.0


def banned_structures(
    account_id: str,
    bans: Iterable[StructureBan],
    strategies: Iterable[tuple[str, str, str, Sequence[TaggedLeg]]],
) -> list[StructureViolation]:
    """Violations of ``bans`` among ``strategies`` (open ones: strategy id, type,
    underlying, legs) of one account, in the order given."""
    wanted = set(bans)
    out: list[StructureViolation] = []
    for strategy_id, strategy_type, underlying, legs in strategies:
        for ban, right in (("naked_short_call", "C"), ("naked_short_put", "P")):
            if ban not in wanted:
                continue
            n = _naked(strategy_type, legs, right)
            if n > 0:
                out.append(
                    StructureViolation(account_id, ban, strategy_id, strategy_type, underlying, n)
                )
    return out
