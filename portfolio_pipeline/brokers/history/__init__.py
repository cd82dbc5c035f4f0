"""Trade history import: IBKR Flex Query XML and Tastytrade transaction CSV.

Neither live broker API gives a full trade history, so users import the files they
download.  Parsers turn a file into an :class:`ImportBatch` of broker-faithful
:class:`~portfolio_pipeline.domain.activity.Execution` and
:class:`~portfolio_pipeline.domain.activity.CashFlow` records (validated, multipliers
checked against ``config/instruments.yaml``); :func:`import_history` stores a batch in
one transaction, idempotently::

    batch = parse_ibkr_flex("flex_2018.xml", config.instruments)
    summary = import_history(db, batch)      # re-running: summary.new_rows == 0

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
from portfolio_pipeline.brokers.history.store import (
    import_history,
    imported_batch_id,
    load_cash_flows,
    load_executions,
)
from portfolio_pipeline.brokers.history.tastytrade_csv import parse_tastytrade_csv
from portfolio_pipeline.brokers.history.tastytrade_types import (
    CashFlowType,
    ExecutionType,
    classify_tastytrade_transaction,
)

__all__ = [
    "CashFlowType",
    "ExecutionType",
    "ImportBatch",
    "ImportFormatError",
    "ImportSummary",
    "UnknownTransactionTypeError",
    "classify_tastytrade_transaction",
    "import_history",
    "imported_batch_id",
    "load_cash_flows",
    "load_executions",
    "parse_flex_datetime",
    "parse_ibkr_flex",
    "parse_tastytrade_csv",
    "positions_from_executions",
    "stock_basis_with_premium",
]
