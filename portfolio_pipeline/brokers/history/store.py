"""Where imported history is kept: the :class:`HistoryStore` this package needs.

The package parses files into :class:`~portfolio_pipeline.brokers.history.model.ImportBatch`
records; storing and reading them is the store's job.  The interface is declared here (the
package does not import ``storage``); :class:`portfolio_pipeline.storage.history.SqlHistoryStore`
implements it on the platform tables, and the composition root (the ``portfolio import``
command, the Dagster activity reader) passes one in.

A store's contract:

- ``import_history`` stores a batch in one transaction, insert-only and idempotent: a file
  whose sha256 was imported before changes nothing (``already_imported``); a row whose id
  (or an older parser's alias of it) is stored already is kept as it is and not counted
  as new; a batch that adds no row leaves no trace; on any error nothing is written;
- ``imported_batch_id`` names the batch that stored a file with this content hash (so a
  known file is not parsed again);
- ``load_executions`` / ``load_cash_flows`` return the stored records in time order,
  optionally of one broker and account.
"""

from __future__ import annotations

from typing import Protocol

from portfolio_pipeline.brokers.history.model import ImportBatch, ImportSummary
from portfolio_pipeline.domain.activity import CashFlow, Execution

__all__ = ["HistoryStore"]


class HistoryStore(Protocol):
    """Keeps imported executions and cash flows (see the module docstring)."""

    def imported_batch_id(self, sha256: str) -> int | None: ...

    def import_history(self, batch: ImportBatch) -> ImportSummary: ...

    def load_executions(
        self, *, broker: str | None = None, account_id: str | None = None
    ) -> list[Execution]: ...

    def load_cash_flows(
        self, *, broker: str | None = None, account_id: str | None = None
    ) -> list[CashFlow]: ...
