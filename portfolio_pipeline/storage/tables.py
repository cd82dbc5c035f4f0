"""SQLAlchemy Core tables of the platform, all on one :data:`metadata`.

Conventions (every table follows them; new tables should too):

- timestamps are :class:`UtcDateTime` (``TIMESTAMP WITH TIME ZONE``): naive datetimes are
  rejected, values are stored and returned as aware UTC on PostgreSQL *and* SQLite;
- trading days are ``Date`` (the exchange session date, America/New_York);
- money, prices, quantities and Greeks are ``Double`` (float64); per-unit/per-share
  values are stated in the column comment;
- daily tables are keyed by ``session_date`` first, so a partition re-run replaces
  exactly one day (:func:`portfolio_pipeline.storage.writes.replace_partition`);
- constraint names come from :data:`NAMING_CONVENTION`, so migrations are stable.

Adding a table: define it below on ``metadata``, then run
``python -m portfolio_pipeline.storage.migrations revision -m "add <table>"``, review the
generated file under ``storage/migrations/versions/`` and check it in.  A test fails
when a table exists here without a migration.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, Final

from sqlalchemy import (
    CHAR,
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    Dialect,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
)

from portfolio_pipeline.clock import to_utc

__all__ = [
    "NAMING_CONVENTION",
    "SEC_TYPES",
    "UtcDateTime",
    "account_snapshot",
    "events",
    "market_snapshot",
    "metadata",
    "option_chain_snapshots",
    "option_flow_metrics",
    "option_flow_strikes",
    "option_flow_unusual",
    "order_audit",
    "orders",
    "positions_snapshot",
]

NAMING_CONVENTION: Final = MappingProxyType(
    {
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

SEC_TYPES: Final = ("STK", "OPT", "FUT", "FOP", "IND")
"""Security types the snapshots accept (IBKR's vocabulary; Tastytrade is mapped to it)."""

metadata = MetaData(naming_convention=NAMING_CONVENTION)
"""The one schema registry; every platform table (and every later analytics table) lives here."""


class UtcDateTime(TypeDecorator[datetime]):
    """``TIMESTAMP WITH TIME ZONE`` that only accepts aware datetimes and returns UTC.

    On SQLite (no time zone support) the value is stored as naive UTC text and the UTC
    zone is re-attached on read, so both backends hand back identical aware datetimes.

    Parameters
    ----------
    column_name:
        The column this type belongs to, named in the error for a naive datetime.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def __init__(self, column_name: str = "?") -> None:
        super().__init__()
        self.column_name = column_name

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        utc = to_utc(value, self.column_name)
        if dialect.name == "sqlite":
            return utc.replace(tzinfo=None)
        return utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def copy(self, **kw: Any) -> UtcDateTime:
        return UtcDateTime(self.column_name)


def _utc(name: str, *, nullable: bool = False, comment: str | None = None) -> Column[datetime]:
    return Column(name, UtcDateTime(name), nullable=nullable, comment=comment)


def _session_date() -> Column[date]:
    return Column(
        "session_date",
        Date,
        primary_key=True,
        nullable=False,
        comment="exchange session (America/New_York)",
    )


def _money(name: str, *, nullable: bool = False, comment: str | None = None) -> Column[float]:
    return Column(name, Double, nullable=nullable, comment=comment)


def _json(name: str, *, nullable: bool = False) -> Column[Any]:
    # none_as_null: Python None is SQL NULL (never the JSON literal 'null').
    return Column(name, JSON(none_as_null=True), nullable=nullable)


_SEC_TYPE_CHECK: Final = "sec_type IN ({})".format(", ".join(f"'{s}'" for s in SEC_TYPES))
_RIGHT_CHECK: Final = "\"right\" IS NULL OR \"right\" IN ('C', 'P')"
_OPTION_FIELDS_CHECK: Final = (
    "sec_type NOT IN ('OPT', 'FOP') OR "
    '(expiry IS NOT NULL AND strike IS NOT NULL AND "right" IS NOT NULL)'
)


def _contract_columns() -> list[Column[Any]]:
    """Instrument description shared by position and market snapshots."""
    return [
        Column("underlying", String(32), nullable=False),
        Column("sec_type", String(3), nullable=False),
        Column("expiry", Date, nullable=True),
        _money("strike", nullable=True),
        Column("right", CHAR(1), nullable=True, comment="'C' or 'P' for options"),
    ]


def _contract_checks() -> list[CheckConstraint]:
    return [
        CheckConstraint(_SEC_TYPE_CHECK, name="sec_type"),
        CheckConstraint(_RIGHT_CHECK, name="right"),
        CheckConstraint(_OPTION_FIELDS_CHECK, name="option_fields"),
    ]


positions_snapshot = Table(
    "positions_snapshot",
    metadata,
    _session_date(),
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("position_key", String(255), primary_key=True, comment="stable position id"),
    *_contract_columns(),
    _money("multiplier", comment="contract multiplier from config/instruments.yaml"),
    Column("trading_class", String(32), nullable=True),
    Column("currency", String(3), nullable=False),
    _money("quantity", comment="signed: long > 0, short < 0"),
    _money("avg_price", comment="average cost per unit/share"),
    _money("mark", comment="mark per unit/share"),
    _money("market_value", comment="quantity * multiplier * mark"),
    _money("underlying_price", nullable=True),
    _utc("as_of", comment="when the broker reported the position"),
    *_contract_checks(),
    comment="Daily position snapshot per broker account.",
)

account_snapshot = Table(
    "account_snapshot",
    metadata,
    _session_date(),
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("currency", String(3), nullable=False),
    _money("nlv", comment="net liquidation value"),
    _money("cash"),
    _money("init_margin"),
    _money("maint_margin"),
    _money("excess_liquidity"),
    _money("buying_power"),
    _money("broker_daily_pnl", nullable=True, comment="the broker's own day P&L"),
    _utc("as_of"),
    comment="Daily account balances and margin per broker account.",
)

market_snapshot = Table(
    "market_snapshot",
    metadata,
    _session_date(),
    Column("source", String(32), primary_key=True, comment="broker the quote came from"),
    Column("instrument_key", String(255), primary_key=True),
    *_contract_columns(),
    _money("bid", comment="per unit/share"),
    _money("ask", comment="per unit/share"),
    _money("last", nullable=True),
    _money("mark", comment="per unit/share"),
    _money("underlying_price", nullable=True),
    _money("iv", nullable=True, comment="implied volatility, annualised decimal"),
    _money("delta", nullable=True, comment="broker Greek, per share"),
    _money("gamma", nullable=True, comment="broker Greek, per share"),
    _money("vega", nullable=True, comment="broker Greek, per vol point per share"),
    _money("theta", nullable=True, comment="broker Greek, per calendar day per share"),
    _utc("as_of"),
    *_contract_checks(),
    comment="Daily quotes and broker Greeks per instrument.",
)

_BIGINT_ID: Final = BigInteger().with_variant(Integer(), "sqlite")
"""BIGINT on PostgreSQL; INTEGER on SQLite, where only INTEGER PRIMARY KEY autoincrements."""

events = Table(
    "events",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
    Column("event_key", String(255), nullable=False, comment="idempotency key"),
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),
    _utc("ts"),
    Column("account_id", String(64), nullable=True),
    _json("payload"),
    Index(None, "event_key", unique=True),
    Index(None, "kind"),
    comment="Append-only event log (breaches, proposals, ...); consumers read by id.",
)

orders = Table(
    "orders",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("broker", String(32), nullable=False),
    Column("account_id", String(64), nullable=False),
    _utc("created_at"),
    _utc("updated_at"),
    Column("proposal_id", String(255), nullable=True, comment="the breach event key (events.event_key)"),
    _json("legs"),
    _json("whatif", nullable=True),
    Column("broker_order_id", String(64), nullable=True),
    Column("confirmation_token_hash", String(128), nullable=True),
    _utc("expires_at", nullable=True),
    Index(None, "status"),
    comment="Staged orders; status changes follow domain.orders' transition table.",
)

order_audit = Table(
    "order_audit",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
    Column("order_id", String(64), ForeignKey(orders.c.order_id), nullable=False),
    _utc("ts"),
    Column("actor", String(64), nullable=False),
    Column("from_status", String(32), nullable=True),
    Column("to_status", String(32), nullable=False),
    _json("detail"),
    Index(None, "order_id"),
    comment="Every order status change, who made it and why.",
)

# ---------------------------------------------------------------------------------------
# Notifications (portfolio_pipeline.notify): alert acknowledgement state and the
# exactly-once delivery ledger, keyed (alert_key, channel).
# ---------------------------------------------------------------------------------------

NOTIFICATION_SEVERITIES: Final = ("info", "warning", "critical")
DELIVERY_STATUSES: Final = (
    "pending", "held", "sending", "delivered", "failed", "dropped", "retrying"
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_key", String(255), primary_key=True, comment="idempotency key of the alert"),
    Column("type", String(32), nullable=False, comment="breach, exit_signal, fill, ..."),
    Column("severity", String(16), nullable=False),
    Column("regime", String(32), nullable=True, comment="market regime when raised"),
    Column("title", String(255), nullable=False),
    Column("body", String(), nullable=False, comment="plain text"),
    Column("body_html", String(), nullable=True, comment="HTML for email, escaped"),
    _utc("created_at"),
    _utc("acknowledged_at", nullable=True),
    Column("acknowledged_by", String(64), nullable=True),
    _utc("escalated_at", nullable=True, comment="last escalation step"),
    Column("escalation_level", Integer, nullable=False, comment="escalation steps taken"),
    CheckConstraint(
        "severity IN ({})".format(", ".join(f"'{s}'" for s in NOTIFICATION_SEVERITIES)),
        name="severity",
    ),
    Index(None, "type"),
    Index(None, "created_at"),
    comment="Alerts raised to people; acknowledgement and escalation state.",
)

notification_deliveries = Table(
    "notification_deliveries",
    metadata,
    Column(
        "alert_key",
        String(255),
        ForeignKey(alerts.c.alert_key),
        primary_key=True,
    ),
    Column("channel", String(64), primary_key=True, comment="channel name in notifications.yaml"),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", String(), nullable=True, comment="redacted"),
    Column("claim_token", String(32), nullable=True, comment="sender that claimed the row"),
    _utc("created_at"),
    _utc("updated_at"),
    _utc("hold_until", nullable=True, comment="held in quiet hours until"),
    _utc("delivered_at", nullable=True),
    _utc("next_attempt_at", nullable=True, comment="outbox: when a failed delivery is retried"),
    _utc("expires_at", nullable=True, comment="outbox: retries stop (final failure) after this"),
    CheckConstraint(
        "status IN ({})".format(", ".join(f"'{s}'" for s in DELIVERY_STATUSES)),
        name="status",
    ),
    Index(None, "status"),
    comment="One row per alert per channel: claimed before sending, so sent at most once.",
)

# ---------------------------------------------------------------------------------------
# Trade history import (portfolio_pipeline.brokers.history): broker-faithful executions
# and cash flows from IBKR Flex / Tastytrade files, and the batches that brought them.
# Rows are insert-only (ON CONFLICT DO NOTHING on the primary key), so a re-import of
# the same file or of overlapping exports changes nothing.
# ---------------------------------------------------------------------------------------

EXECUTION_KINDS: Final = ("trade", "assignment", "exercise", "expiry")
"""Mirror of ``domain.activity.ExecutionKind`` (a test keeps them equal)."""
CASH_FLOW_KINDS: Final = (
    "deposit",
    "withdrawal",
    "dividend",
    "interest",
    "fee",
    "tax",
    "transfer",
    "other",
)
"""Mirror of ``domain.activity.CashFlowKind`` (a test keeps them equal)."""

import_batches = Table(
    "import_batches",
    metadata,
    Column("id", _BIGINT_ID, primary_key=True, autoincrement=True),
    Column("broker", String(32), nullable=False),
    Column("source_name", String(255), nullable=False, comment="file name as imported"),
    Column("sha256", CHAR(64), nullable=False, comment="hex digest of the file content"),
    _utc("imported_at"),
    Column("executions_in_file", Integer, nullable=False),
    Column("cash_flows_in_file", Integer, nullable=False),
    Column("executions_new", Integer, nullable=False, comment="rows not stored before"),
    Column("cash_flows_new", Integer, nullable=False, comment="rows not stored before"),
    Index(None, "sha256", unique=True),
    comment="One row per imported history file that added rows.",
)

executions = Table(
    "executions",
    metadata,
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("exec_id", String(128), primary_key=True, comment="broker's trade/transaction id"),
    Column("contract_key", String(255), nullable=False, comment="domain Contract.key"),
    *_contract_columns(),
    Column("trading_class", String(32), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("underlying_expiry", Date, nullable=True, comment="futures options: the future's"),
    _utc("ts"),
    _money("quantity", comment="signed: + bought, - sold"),
    _money("price", comment="per unit/share, as reported (0 for expiries)"),
    _money("multiplier", comment="contract multiplier from config/instruments.yaml"),
    _money("commission", comment="cost >= 0, account currency"),
    _money("fees", comment="regulatory/clearing/exchange fees >= 0 where reported apart"),
    Column("kind", String(16), nullable=False),
    Column("order_ref", String(64), nullable=True),
    Column("import_batch", _BIGINT_ID, ForeignKey(import_batches.c.id), nullable=True),
    CheckConstraint(
        "kind IN ({})".format(", ".join(f"'{k}'" for k in EXECUTION_KINDS)), name="kind"
    ),
    *_contract_checks(),
    Index(None, "ts"),
    Index(None, "contract_key"),
    comment="Executions (trades, assignments, exercises, expiries), broker-faithful.",
)

cash_flows = Table(
    "cash_flows",
    metadata,
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("flow_id", String(128), primary_key=True),
    _utc("ts"),
    Column("kind", String(16), nullable=False),
    _money("amount", comment="signed: + money into the account"),
    Column("currency", String(3), nullable=False),
    Column("description", String(), nullable=False),
    Column("import_batch", _BIGINT_ID, ForeignKey(import_batches.c.id), nullable=True),
    CheckConstraint(
        "kind IN ({})".format(", ".join(f"'{k}'" for k in CASH_FLOW_KINDS)), name="kind"
    ),
    Index(None, "ts"),
    comment="Deposits, withdrawals, dividends, interest, fees: signed amounts.",
)

# ---------------------------------------------------------------------------------------
# Stress tests and Monte Carlo (portfolio_pipeline.defs.stress): one row per scenario cell
# / path step / horizon, per (broker, account, group); '*' in broker/account_id/group_key
# is the aggregate over that column.  group_key is the underlying until strategies exist;
# strategy_id is filled by strategy tagging later.  P&L in account currency.
# ---------------------------------------------------------------------------------------

stress_shock_grid = Table(
    "stress_shock_grid",
    metadata,
    _session_date(),
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("group_key", String(64), primary_key=True, comment="underlying, or '*'"),
    Column("spot_shock", Double, primary_key=True,
           comment="simple return of the reference index, -0.3 = -30%"),
    Column("vol_scenario", String(32), primary_key=True, comment="'+5pt' or 'VIX 40'"),
    Column("horizon_days", Integer, primary_key=True, comment="calendar days of decay"),
    Column("strategy_id", String(64), nullable=True),
    _money("pnl", comment="full revaluation"),
    _money("pnl_greeks", comment="delta-gamma-vega-theta approximation"),
    comment="Spot x implied-vol x horizon stress grid P&L (full revaluation and Greeks).",
)

stress_historical = Table(
    "stress_historical",
    metadata,
    _session_date(),
    Column("scenario", String(64), primary_key=True),
    Column("step", Integer, primary_key=True, comment="session index in the window"),
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("step_date", Date, nullable=False),
    _money("spx", comment="S&P 500 level driving the step"),
    _money("vix", comment="VIX level driving the step"),
    Column("spx_source", String(24), nullable=False, comment="published|interpolated"),
    Column("vix_source", String(24), nullable=False,
           comment="published|interpolated|realised_vol_proxy"),
    _money("pnl", comment="full revaluation of today's book"),
    _money("pnl_greeks"),
    comment="Historical replay of market windows against the session's book.",
)

monte_carlo_var = Table(
    "monte_carlo_var",
    metadata,
    _session_date(),
    Column("horizon_days", Integer, primary_key=True, comment="trading days"),
    Column("broker", String(32), primary_key=True),
    Column("account_id", String(64), primary_key=True),
    Column("group_key", String(64), primary_key=True, comment="underlying, or '*'"),
    Column("strategy_id", String(64), nullable=True),
    _money("var_95", comment="standalone VaR, positive loss"),
    _money("cvar_95"),
    _money("var_99"),
    _money("cvar_99"),
    _money("contribution_95", comment="mean loss in the portfolio's 5% worst scenarios"),
    _money("contribution_99", comment="mean loss in the portfolio's 1% worst scenarios"),
    _money("mean_pnl"),
    _money("std_pnl"),
    Column("n_scenarios", Integer, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("regime", String(32), nullable=False),
    _money("vol_multiplier", comment="regime multiplier applied to simulated shocks"),
    comment="Monte Carlo VaR/CVaR by full revaluation, with tail contributions.",
)

correlation_stress = Table(
    "correlation_stress",
    metadata,
    _session_date(),
    Column("matrix_name", String(32), primary_key=True, comment="historical|crisis"),
    Column("horizon_days", Integer, primary_key=True),
    _money("var_95"),
    _money("cvar_95"),
    _money("var_99"),
    _money("cvar_99"),
    _money("min_eigenvalue"),
    Column("repair_iterations", Integer, nullable=True),
    _json("factors"),
    _json("matrix"),
    comment="Monte Carlo VaR under the estimated and the crisis correlation matrix.",
)

# ---------------------------------------------------------------------------------------
# EOD analytics (portfolio_pipeline.defs.{greeks,risk,reporting}): position and portfolio
# Greeks, cash-flow-adjusted returns, Greeks P&L attribution, risk metrics, margin and
# limit history.  '*' in broker/account_id/underlying/position_key is the aggregate over
# that column.  Per-share Greeks are in pricing units (vega per vol point, theta per
# calendar day); position Greeks are scaled once by domain.greeks.position_greeks.
# ---------------------------------------------------------------------------------------


def _key(name: str, length: int = 64, comment: str | None = None) -> Column[str]:
    return Column(name, String(length), primary_key=True, comment=comment)


def _position_greek_columns() -> list[Column[Any]]:
    return [
        _money("share_delta", comment="delta * qty * mult (underlying units)"),
        _money("dollar_delta"),
        _money("gamma_shares", comment="gamma * qty * mult (delta change per $1)"),
        _money("dollar_gamma_1pct", comment="gamma * qty * mult * S^2 / 100"),
        _money("theta_per_day", comment="$ per calendar day"),
        _money("vega_per_point", comment="$ per vol point"),
        _money("vanna_per_point", comment="share-delta change per vol point"),
        _money("volga_per_point", comment="$ vega change per vol point"),
        _money("rho_per_pct", comment="$ per 1% rate"),
        _money("beta_weighted_delta", nullable=True, comment="in reference-index units"),
        _money("beta_weighted_dollar_delta"),
    ]


position_greeks = Table(
    "position_greeks",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("position_key", 255),
    Column("underlying", String(32), nullable=False),
    Column("sec_type", String(3), nullable=False),
    _money("quantity"),
    _money("multiplier"),
    _money("mark", comment="per unit/share"),
    _money("market_value"),
    _money("spot", comment="underlying price delta is taken against (the future for FOPs)"),
    _money("model_price", nullable=True, comment="model value per share at `vol`"),
    Column("model", String(8), nullable=False, comment="bsm|black76|linear"),
    Column("exercise", String(8), nullable=False, comment="european|american|none"),
    _money("time_to_expiry", nullable=True, comment="years, ACT/365 to settlement"),
    _money("rate", nullable=True),
    _money("dividend_yield", nullable=True),
    _money("vol", nullable=True, comment="annualised decimal used for the model Greeks"),
    Column("vol_source", String(10), nullable=False, comment="broker|implied|intrinsic|none"),
    _money("delta", comment="model, per share"),
    _money("gamma", comment="model, per share"),
    _money("vega", comment="model, per vol point per share"),
    _money("theta", comment="model, per calendar day per share"),
    _money("rho", comment="model, per 1% per share"),
    _money("vanna", comment="model, delta change per vol point per share"),
    _money("volga", comment="model, vega change per vol point per share"),
    _money("broker_iv", nullable=True),
    _money("broker_delta", nullable=True, comment="broker, per share"),
    _money("broker_gamma", nullable=True),
    _money("broker_vega", nullable=True),
    _money("broker_theta", nullable=True),
    _money("broker_share_delta", nullable=True),
    _money("broker_theta_per_day", nullable=True),
    _money("broker_vega_per_point", nullable=True),
    _money("beta"),
    _money("reference_price", nullable=True, comment="reference index close (beta weighting)"),
    *_position_greek_columns(),
    _money("value_per_share", nullable=True,
           comment="valuation at the mark: quote mid, else last inside the spread, else model price"),
    Column("value_source", String(8), nullable=True, comment="mid|last|model (options); mark (others)"),
    comment="Model and broker Greeks per position at the session close.",
)

portfolio_greeks = Table(
    "portfolio_greeks",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("underlying", 32),
    Column("positions", Integer, nullable=False),
    _money("market_value"),
    *_position_greek_columns(),
    comment="Position Greeks summed per account, per underlying and across accounts ('*').",
)

portfolio_returns = Table(
    "portfolio_returns",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _money("nlv"),
    _money("prev_nlv", nullable=True, comment="NULL on the inception day"),
    _money("external_flow", comment="deposits/withdrawals/transfers, + in (at the close)"),
    _money("income", comment="dividends, interest, fees, taxes: performance, not flows"),
    _money("pnl", comment="nlv - prev_nlv - external_flow (0 on inception)"),
    _money("twr", comment="pnl / prev_nlv: daily time-weighted return (0 on inception)"),
    _money("growth_index", comment="prod(1 + twr) since inception"),
    _money("high_water_mark", comment="max growth_index so far"),
    _money("drawdown", comment="growth_index / high_water_mark - 1"),
    _money("broker_daily_pnl", nullable=True, comment="the broker's own day P&L"),
    comment="EOD NLV, external flows and time-weighted returns per account and consolidated.",
)

pnl_attribution = Table(
    "pnl_attribution",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("position_key", 255),
    Column("underlying", String(32), nullable=False),
    Column("bucket", String(8), nullable=False, comment="held|new|closed|total"),
    _money("dS", nullable=True),
    _money("dsigma_points", nullable=True),
    _money("dt_days"),
    _money("actual"),
    _money("delta_pnl"),
    _money("gamma_pnl"),
    _money("theta_pnl"),
    _money("vega_pnl"),
    _money("vanna_pnl"),
    _money("volga_pnl"),
    _money("explained"),
    _money("unexplained", comment="actual - explained (exact identity)"),
    Column("large_unexplained", Boolean, nullable=False),
    comment="Daily P&L split into prior-close Greeks terms per position and in total.",
)

risk_metrics = Table(
    "risk_metrics",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("window", 16, comment="full|rolling_<n>"),
    _key("metric", comment="e.g. var_99_historical, sharpe, max_drawdown"),
    _money("value", nullable=True, comment="fraction (VaR/CVaR: positive loss) or ratio"),
    _money("value_usd", nullable=True, comment="value * NLV for VaR/CVaR/drawdown"),
    Column("observations", Integer, nullable=False),
    comment="VaR/CVaR and performance metrics of the daily return series to the session.",
)

margin_history = Table(
    "margin_history",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _money("nlv"),
    _money("maint_margin"),
    _money("init_margin"),
    _money("excess_liquidity"),
    _money("margin_utilisation", comment="maint_margin / nlv"),
    Column("regime", String(32), nullable=False),
    _money("vix"),
    _money("vix3m", nullable=True),
    _money("term_ratio", nullable=True),
    Column("backwardation", Boolean, nullable=False),
    Column("breaches", Integer, nullable=False),
    Column("breached_metrics", String(255), nullable=False, comment="comma-separated"),
    comment="Margin utilisation, regime and limit breaches per account and in total.",
)

limit_checks = Table(
    "limit_checks",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("metric", 32),
    _money("value", comment="fraction of NLV"),
    _money("limit_value"),
    _money("utilisation", comment="> 1 is a breach"),
    Column("breached", Boolean, nullable=False),
    Column("regime", String(32), nullable=False),
    _money("vix"),
    _money("vix3m", nullable=True),
    comment="Every limit of the regime in force, evaluated at the session close.",
)

# ---------------------------------------------------------------------------------------
# Strategies and position lifecycle (portfolio_pipeline.defs.strategies): strategy
# groups with persistent ids, per-strategy P&L/Greeks/attribution, trade statistics,
# exit-rule status, Kelly sizing, liquidity flags and theta/vega history.  Strategy
# ids are stable across sessions (domain.strategies.identity.strategy_id_for); '*' in
# account_id is the aggregate over accounts.  strategy_overrides is written by
# `portfolio strategies tag` (manual names/types; auto-tagging never overwrites them).
# ---------------------------------------------------------------------------------------

strategy_groups = Table(
    "strategy_groups",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("strategy_id"),
    Column("underlying", String(32), nullable=False),
    Column("strategy_type", String(32), nullable=False),
    Column("detail", String(64), nullable=False, comment="e.g. 'put credit', 'short'"),
    Column("name", String(128), nullable=True, comment="manual name"),
    Column("source", String(8), nullable=False, comment="auto|manual"),
    Column("status", String(8), nullable=False, comment="open|closed (closed this session)"),
    Column("opened_on", Date, nullable=False),
    Column("closed_on", Date, nullable=True),
    Column("parent_id", String(64), nullable=True, comment="the strategy this one rolled from"),
    _json("legs"),
    _json("open_refs"),
    comment="Strategies per account at the session close: legs, type, identity, roll parent.",
)

strategy_performance = Table(
    "strategy_performance",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("strategy_id"),
    Column("underlying", String(32), nullable=False),
    Column("strategy_type", String(32), nullable=False),
    Column("status", String(8), nullable=False, comment="open|closed"),
    Column("opened_on", Date, nullable=False),
    _money("daily_pnl", comment="commissions included"),
    _money("cumulative_pnl", comment="since opened_on"),
    _money("realized_pnl", comment="closed quantity vs entry, minus costs"),
    _money("unrealized_pnl", comment="cumulative - realized"),
    _money("commissions", comment="cumulative commissions and fees"),
    _money("max_adverse_excursion", comment="lowest cumulative P&L so far (<= 0)"),
    _money("market_value"),
    _money("share_delta"),
    _money("dollar_delta"),
    _money("dollar_gamma_1pct"),
    _money("theta_per_day"),
    _money("vega_per_point"),
    Column("greeks_source", String(16), nullable=False, comment="position_greeks|market|none"),
    _money("delta_pnl", nullable=True, comment="sum of pnl_attribution components"),
    _money("gamma_pnl", nullable=True),
    _money("theta_pnl", nullable=True),
    _money("vega_pnl", nullable=True),
    _money("other_pnl", nullable=True, comment="vanna + volga"),
    _money("unexplained_pnl", nullable=True),
    _json("entry_prices"),
    comment="Per strategy: P&L (realized/unrealized, commissions), Greeks and attribution.",
)

strategy_stats = Table(
    "strategy_stats",
    metadata,
    _session_date(),
    _key("dimension", 16, comment="strategy_type|underlying|account|all"),
    _key("group_key"),
    Column("trades", Integer, nullable=False, comment="closed strategies to date"),
    Column("open_strategies", Integer, nullable=False),
    _money("win_rate", nullable=True),
    _money("avg_win", nullable=True),
    _money("avg_loss", nullable=True, comment="positive"),
    _money("expectancy", nullable=True),
    _money("profit_factor", nullable=True, comment="NULL when there is no loss"),
    _money("realized_total", comment="P&L of closed strategies"),
    _money("open_pnl", comment="cumulative P&L of open strategies"),
    _money("daily_pnl"),
    _money("worst_mae", comment="worst max adverse excursion of closed strategies"),
    comment="Trade statistics of closed strategies by type, underlying and account.",
)

position_lifecycle = Table(
    "position_lifecycle",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("strategy_id"),
    Column("strategy_type", String(32), nullable=False),
    Column("underlying", String(32), nullable=False),
    Column("days_in_trade", Integer, nullable=False),
    Column("dte", Integer, nullable=True),
    _money("credit", comment="+ received, - paid, at entry"),
    _money("max_profit", nullable=True, comment="NULL = unlimited or undefined"),
    _money("max_loss", nullable=True, comment="NULL = unlimited or undefined"),
    Column("defined_risk", Boolean, nullable=False),
    _money("pct_max_profit", nullable=True),
    _money("pct_max_loss", nullable=True),
    _money("loss_credit_multiple", nullable=True),
    _money("pnl", comment="cumulative"),
    _money("pnl_per_day"),
    _money("delta_per_lot", nullable=True),
    Column("status", String(8), nullable=False, comment="green|yellow|red"),
    Column("rule", String(16), nullable=True, comment="the rule that set the status"),
    Column("red_rules", String(64), nullable=False, comment="comma-separated"),
    Column("message", String(255), nullable=False),
    comment="Aging, DTE, % of max profit/loss and exit-rule status per open strategy.",
)

kelly_sizing = Table(
    "kelly_sizing",
    metadata,
    _session_date(),
    _key("strategy_type", 32),
    Column("trades", Integer, nullable=False),
    _money("win_rate", nullable=True),
    _money("payoff_ratio", nullable=True),
    _money("full_kelly", nullable=True),
    _money("shrinkage"),
    _money("shrunk_kelly", nullable=True),
    _money("recommended_fraction", comment="of NLV at risk per trade"),
    Column("capped", Boolean, nullable=False),
    Column("status", String(24), nullable=False),
    comment="Fractional Kelly per strategy type from realised statistics.",
)

liquidity_flags = Table(
    "liquidity_flags",
    metadata,
    _session_date(),
    _key("broker", 32),
    _key("account_id"),
    _key("position_key", 255),
    Column("strategy_id", String(64), nullable=True),
    _money("bid", nullable=True),
    _money("ask", nullable=True),
    _money("mid", nullable=True),
    _money("spread_pct", nullable=True, comment="(ask - bid) / mid"),
    Column("illiquid", Boolean, nullable=False),
    _money("liquidity_score", comment="0 (no market) .. 1 (no spread)"),
    _money("days_to_exit", nullable=True, comment="NULL: no volume/open interest data"),
    Column("reason", String(64), nullable=False),
    comment="Bid/ask spread flags, liquidity score and days-to-exit per position.",
)

theta_vega_history = Table(
    "theta_vega_history",
    metadata,
    _session_date(),
    _key("account_id"),
    _money("theta_per_day"),
    _money("vega_per_point"),
    _money("ratio", nullable=True, comment="|theta| / |vega|"),
    Column("in_band", Boolean, nullable=False),
    _money("daily_pnl"),
    _money("rolling_corr", nullable=True, comment="corr(ratio[t-1], pnl[t]) over the window"),
    comment="Theta/vega ratio vs its target band and its relation to next-day P&L.",
)

strategy_overrides = Table(
    "strategy_overrides",
    metadata,
    Column("account_id", String(64), primary_key=True),
    Column("strategy_id", String(64), primary_key=True),
    Column("name", String(128), nullable=True),
    Column("strategy_type", String(32), nullable=True),
    _json("legs", nullable=True),
    _utc("updated_at"),
    comment="Manual strategy names/types/groupings from `portfolio strategies tag`.",
)

var_exceedances = Table(
    "var_exceedances",
    metadata,
    _session_date(),
    _key("model", 48, comment="e.g. historical_full, garch_t_full, monte_carlo_1d"),
    Column("level", Double, primary_key=True, comment="VaR confidence, e.g. 0.99"),
    Column("var_session_date", Date, nullable=False, comment="session whose close VaR is tested"),
    _money("var_usd", comment="1-day VaR at var_session_date close, positive loss"),
    _money("pnl_usd", comment="book P&L of session_date (portfolio_returns)"),
    Column("exceeded", Boolean, nullable=False, comment="-pnl_usd > var_usd"),
    comment="Per session, model and level: the previous close's VaR against this session's "
    "book P&L (read with storage.var_backtest.read_var_exceedances).",
)

var_backtest = Table(
    "var_backtest",
    metadata,
    _session_date(),
    _key("model", 48),
    Column("level", Double, primary_key=True),
    Column("observations", Integer, nullable=False, comment="trailing window, at most 250"),
    Column("exceedances", Integer, nullable=False),
    _money("expected", comment="observations * (1 - level)"),
    _money("kupiec_lr", nullable=True),
    _money("kupiec_p", nullable=True),
    _money("christoffersen_lr", nullable=True),
    _money("christoffersen_p", nullable=True),
    Column("zone", String(8), nullable=False, comment="Basel traffic light: green|yellow|red"),
    comment="VaR backtest to the session per model and level (Kupiec POF, Christoffersen "
    "independence, Basel zone) over the trailing exceedance rows.",
)

session_regime = Table(
    "session_regime",
    metadata,
    _session_date(),
    Column("regime", String(32), nullable=False, comment="config/risk_matrix.yaml regime name"),
    _money("vix", comment="VIX close of the session (market_snapshot)"),
    _money("vix3m", nullable=True),
    Column("previous_regime", String(32), nullable=True,
           comment="regime of the previous session (hysteresis input); NULL: none stored"),
    comment="THE regime of each session, classified once with hysteresis (storage.regimes); "
    "limits (margin_history) and Monte Carlo read it.",
)

market_history = Table(
    "market_history",
    metadata,
    _session_date(),
    _key("symbol", 32, comment="underlying root or index (SPX, VIX, VIX3M, AAPL, ES...)"),
    _money("open", nullable=True),
    _money("high", nullable=True),
    _money("low", nullable=True),
    _money("close", comment="session close (index points / price per share)"),
    _money("volume", nullable=True),
    Column("source", String(48), nullable=False, comment="ibkr:TRADES|tastytrade:candle|demo:..."),
    _utc("fetched_at"),
    comment="Daily bars of the book's underlyings and the indices, as the broker sent them.",
)

order_broker_refs = Table(
    "order_broker_refs",
    metadata,
    Column("order_id", String(64), ForeignKey(orders.c.order_id), primary_key=True),
    Column("client_id", Integer, nullable=True, comment="IBKR API client id that owns the order"),
    Column("perm_id", BigInteger, nullable=True, comment="IBKR permanent order id once known"),
    _utc("updated_at"),
    comment="Who owns a staged order at the broker (IBKR client id, permId).",
)

order_groups = Table(
    "order_groups",
    metadata,
    Column("group_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False, comment="bracket or oco (domain.order_groups)"),
    Column("broker", String(32), nullable=False),
    Column("account_id", String(64), nullable=False),
    _utc("created_at"),
    _utc("updated_at"),
    Column("broker_group_id", String(64), nullable=True, comment="Tastytrade complex order id"),
    comment="Order groups (bracket, OCO); the group's status is derived from its legs.",
)

order_group_legs = Table(
    "order_group_legs",
    metadata,
    Column("order_id", String(64), ForeignKey(orders.c.order_id), primary_key=True),
    Column("group_id", String(64), ForeignKey(order_groups.c.group_id), nullable=False),
    Column("role", String(16), nullable=False, comment="entry, take_profit or stop_loss"),
    Column("position", Integer, nullable=False, comment="placement order within the group"),
    _json("bounds", nullable=True),
    Column("working_quantity", Integer, nullable=True, comment="resized by the reconciler (bracket children)"),
    Index(None, "group_id"),
    comment="The legs of an order group and the confirmation bounds of each.",
)

order_schedules = Table(
    "order_schedules",
    metadata,
    Column("schedule_id", String(64), primary_key=True),
    Column("kind", String(16), nullable=False, comment="roll, trail (orders.schedules) or slicer (orders.slicer)"),
    Column("broker", String(32), nullable=False),
    Column("account_id", String(64), nullable=False),
    Column("status", String(16), nullable=False, comment="pending, staged, running, done, stopped, cancelled, failed"),
    _utc("run_at", nullable=True, comment="when it is due (UTC)"),
    _json("spec"),
    _json("standing", nullable=True),
    Column("standing_by", String(64), nullable=True, comment="who gave the standing confirmation"),
    Column("order_id", String(64), nullable=True, comment="the order it staged last"),
    _utc("created_at"),
    _utc("updated_at"),
    _json("detail", nullable=True),
    Index(None, "status"),
    comment="Scheduled rolls and platform-side trailing stops; what they staged and why.",
)

monte_carlo_distribution = Table(
    "monte_carlo_distribution",
    metadata,
    _session_date(),
    Column("horizon_days", Integer, primary_key=True, comment="trading days"),
    Column("bin", Integer, primary_key=True, comment="0 = the largest loss"),
    _money("pnl_from", comment="book P&L, lower edge"),
    _money("pnl_to", comment="book P&L, upper edge"),
    Column("scenarios", Integer, nullable=False),
    comment="Histogram of the whole book's Monte Carlo P&L per horizon (the risk pack's chart).",
)

risk_profile = Table(
    "risk_profile",
    metadata,
    _session_date(),
    _key("profile", 32, comment="underlying, or '*' for the book beta-weighted to SPX"),
    _key("broker", 32, comment="'*' for the profile's whole book"),
    _key("account_id", comment="'*' for the profile's whole book"),
    _key("strategy_id", comment="'*' for every position of the profile"),
    _key("horizon", 32, comment="'T+0', 'T+5' (sessions) or 'exp 2018-03-16'"),
    Column("point", Integer, primary_key=True, comment="index along the price axis"),
    _money("horizon_days", comment="calendar days of decay"),
    _money("spot_move", comment="simple return of the driver (underlying, or SPX)"),
    _money("price", comment="driver price at the point"),
    _money("pnl", comment="full revaluation against today's value"),
    comment="P&L vs underlying price (risk profile) at T+0, T+n sessions and each expiry.",
)

risk_profile_summary = Table(
    "risk_profile_summary",
    metadata,
    _session_date(),
    _key("profile", 32, comment="underlying, or '*' for the book beta-weighted to SPX"),
    _key("broker", 32),
    _key("account_id"),
    _key("strategy_id"),
    _key("horizon", 32),
    Column("strategy_type", String(32), nullable=True),
    Column("driver", String(32), nullable=False, comment="what the price axis is"),
    _money("spot", comment="driver price today"),
    _money("horizon_days", comment="calendar days of decay"),
    _money("vol_shift_points", comment="ATM vol change applied to the curve"),
    _money("atm_vol", nullable=True, comment="ATM implied vol (decimal) of the expected move"),
    _money("expected_move", nullable=True, comment="S x ATM vol x sqrt(t), driver price units"),
    _money("max_profit", comment="largest P&L on the curve's range"),
    _money("max_profit_price"),
    _money("max_loss", comment="smallest P&L on the curve's range"),
    _money("max_loss_price"),
    _json("breakevens"),
    comment="Breakevens (driver prices), max profit/loss and expected move of each risk profile curve.",
)

scenario_results = Table(
    "scenario_results",
    metadata,
    _key("name", 64, comment="the scenario's name (the last run of a name replaces it)"),
    _key("underlying", 32, comment="'*' for the whole book"),
    _utc("created_at"),
    Column("session_date", Date, nullable=False, comment="the stored session whose book was shocked"),
    _json("spec"),
    _money("spot", comment="price today (SPX for '*')"),
    _money("spot_after", comment="price in the scenario"),
    _money("pnl", comment="the book's P&L in the scenario (full revaluation)"),
    _money("pnl_with_trades", comment="the book plus the scenario's extra trades"),
    comment="Named what-if scenarios (scenario_job, portfolio scenario run); the last N names are kept.",
)

option_chain_snapshots = Table(
    "option_chain_snapshots",
    metadata,
    _session_date(),
    _key("underlying", 32),
    _key("trading_class", 32),
    Column("expiry", Date, primary_key=True),
    Column("strike", Double, primary_key=True),
    _key("right", 1, comment="C or P"),
    _utc("as_of", comment="snapshot time"),
    _money("bid", nullable=True),
    _money("ask", nullable=True),
    _money("last", nullable=True),
    _money("volume", nullable=True, comment="contracts traded in the session"),
    _money("open_interest", nullable=True, comment="contracts"),
    _money("iv", nullable=True, comment="implied vol, decimal"),
    _money("delta", nullable=True),
    _money("gamma", nullable=True),
    _money("vega", nullable=True, comment="per vol point"),
    _money("theta", nullable=True, comment="per calendar day"),
    _utc("quote_time", nullable=True),
    Column("source", String(48), nullable=False, comment="broker, or 'demo (simulated)'"),
    comment="Option chain of each configured underlying per session, one row per contract.",
)

option_flow_metrics = Table(
    "option_flow_metrics",
    metadata,
    _session_date(),
    _key("underlying", 32),
    _key("metric", 48, comment="e.g. total_gex, zero_gamma, gex, vanna, charm, put_call_oi"),
    _key("scope", 32, comment="all, an expiry (YYYY-MM-DD) or a days-to-expiry bucket"),
    _money("value", nullable=True),
    Column("unit", String(32), nullable=False, comment="e.g. $ per 1% move, $ delta per vol point"),
    Column("positioning", String(48), nullable=False, comment="dealer positioning assumption"),
    Column("simulated", Boolean, nullable=False, comment="the demo's simulated chain"),
    comment="Options flow figures per session and underlying (GEX, zero gamma, vanna, charm, "
    "put/call, max pain, pinning).",
)

option_flow_strikes = Table(
    "option_flow_strikes",
    metadata,
    _session_date(),
    _key("underlying", 32),
    Column("strike", Double, primary_key=True),
    _money("call_gex", comment="dealer $ gamma per 1% move, calls"),
    _money("put_gex", comment="dealer $ gamma per 1% move, puts"),
    _money("call_oi", comment="contracts"),
    _money("put_oi", comment="contracts"),
    comment="Dealer gamma exposure and open interest per strike (all expiries of the snapshot).",
)

option_flow_unusual = Table(
    "option_flow_unusual",
    metadata,
    _session_date(),
    _key("underlying", 32),
    _key("trading_class", 32),
    Column("expiry", Date, primary_key=True),
    Column("strike", Double, primary_key=True),
    _key("right", 1, comment="C or P"),
    _money("volume", comment="contracts"),
    _money("open_interest", comment="contracts"),
    _money("average_volume", nullable=True, comment="the contract's average daily volume before"),
    Column("reasons", String(96), nullable=False, comment="comma-separated"),
    comment="Contracts with unusual volume per session (volume/OI, size vs average, far OTM).",
)
