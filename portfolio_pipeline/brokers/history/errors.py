"""Errors of the trade history import; every message names the file and the row."""

from __future__ import annotations

from portfolio_pipeline.domain.errors import InvalidDataError

__all__ = ["ImportFormatError", "UnknownTransactionTypeError"]


class ImportFormatError(InvalidDataError):
    """A history file that cannot be imported as a whole (layout, row or value).

    Raised before anything is written: an import is all or nothing.
    """


class UnknownTransactionTypeError(ImportFormatError):
    """A broker transaction type/sub-type the importer has no mapping for."""
