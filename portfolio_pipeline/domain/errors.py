"""Domain errors. Every message names the item and where it came from."""

from __future__ import annotations


class DomainError(ValueError):
    """Base class for invalid domain data (a ValueError, so callers may catch either)."""


class UnknownInstrumentError(DomainError):
    """A symbol or trading class that ``config/instruments.yaml`` does not define."""


class MultiplierMismatchError(DomainError):
    """A broker's contract multiplier disagrees with the instrument table."""


class InvalidDataError(DomainError):
    """A non-finite, missing or out-of-range value in broker or user data."""


class IllegalTransitionError(DomainError):
    """An order status change that the transition table forbids."""
