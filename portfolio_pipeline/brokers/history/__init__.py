"""Trade history import: IBKR Flex Query XML and Tastytrade transaction CSV.

Neither live broker API gives a full trade history, so users import the files they
download.  Parsers turn a file into an :class:`ImportBatch` of broker-faithful
:class:`~portfolio_pipeline.domain.activity.Execution` and
:class:`~portfolio_pipeline.domain.activity.CashFlow` records (validated, multipliers
checked against ``config/instruments.yaml``); a :class:`HistoryStore` (the interface
declared here; ``portfolio_pipeline.storage.history.SqlHistoryStore`` implements it)
stores a batch in one transaction, idempotently::

    batch = parse_ibkr_flex("flex_2018.xml", config.instruments)
    summary = store.import_history(batch)    # re-running: summary.new_rows == 0

Semantics (assignments, expiries, premium, costs): see :mod:`.model`.
"""

from portfolio_pipeline.brokers.history.errors import (
    ImportFormatError,
    UnknownTransactionTypeError,
)
from portfolio_pipeline.brokers.history.ibkr_flex import parse_flex_datetime, parse_ibkr_flex
from portfolio_pipeline.brokers.history.model import (
    ImportBatch,
    ImportSummary,
    positions_from_executions,
    stock_basis_with_premium,
)
from portfolio_pipeline.brokers.history.store import HistoryStore
from portfolio_pipeline.brokers.history.tastytrade_csv import parse_tastytrade_csv
from portfolio_pipeline.brokers.history.tastytrade_types import (
    CashFlowType,
    ExecutionType,
    classify_tastytrade_transaction,
)

__all__ = [
    "CashFlowType",
    "ExecutionType",
    "HistoryStore",
    "ImportBatch",
    "ImportFormatError",
    "ImportSummary",
    "UnknownTransactionTypeError",
    "classify_tastytrade_transaction",
    "parse_flex_datetime",
    "parse_ibkr_flex",
    "parse_tastytrade_csv",
    "positions_from_executions",
    "stock_basis_with_premium",
]
