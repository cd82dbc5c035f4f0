"""add option flow tables

Revision ID: 0014
Revises: '0013'
Create Date: 2026-12-05 12:00:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SESSION = "exchange session (America/New_York)"


def _session() -> sa.Column[date]:
    return sa.Column("session_date", sa.Date(), nullable=False, comment=_SESSION)


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "option_chain_snapshots",
        _session(),
        sa.Column("underlying", sa.String(32), nullable=False),
        sa.Column("trading_class", sa.String(32), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("strike", sa.Double(), nullable=False),
        sa.Column("right", sa.String(1), nullable=False, comment="C or P"),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False, comment="snapshot time"),
        sa.Column("bid", sa.Double(), nullable=True),
        sa.Column("ask", sa.Double(), nullable=True),
        sa.Column("last", sa.Double(), nullable=True),
        sa.Column("volume", sa.Double(), nullable=True, comment="contracts traded in the session"),
        sa.Column("open_interest", sa.Double(), nullable=True, comment="contracts"),
        sa.Column("iv", sa.Double(), nullable=True, comment="implied vol, decimal"),
        sa.Column("delta", sa.Double(), nullable=True),
        sa.Column("gamma", sa.Double(), nullable=True),
        sa.Column("vega", sa.Double(), nullable=True, comment="per vol point"),
        sa.Column("theta", sa.Double(), nullable=True, comment="per calendar day"),
        sa.Column("quote_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(48), nullable=False, comment="broker, or 'demo (simulated)'"),
        sa.PrimaryKeyConstraint(
            "session_date", "underlying", "trading_class", "expiry", "strike", "right"
        ),
        comment="Option chain of each configured underlying per session, one row per contract.",
    )
    op.create_table(
        "option_flow_metrics",
        _session(),
        sa.Column("underlying", sa.String(32), nullable=False),
        sa.Column(
            "metric",
            sa.String(48),
            nullable=False,
            comment="e.g. total_gex, zero_gamma, gex, vanna, charm, put_call_oi",
        ),
        sa.Column(
            "scope",
            sa.String(32),
            nullable=False,
            comment="all, an expiry (YYYY-MM-DD) or a days-to-expiry bucket",
        ),
        sa.Column("value", sa.Double(), nullable=True),
        sa.Column(
            "unit",
            sa.String(32),
            nullable=False,
            comment="e.g. $ per 1% move, $ delta per vol point",
        ),
        sa.Column(
            "positioning", sa.String(48), nullable=False, comment="dealer positioning assumption"
        ),
        sa.Column("simulated", sa.Boolean(), nullable=False, comment="the demo's simulated chain"),
        sa.PrimaryKeyConstraint("session_date", "underlying", "metric", "scope"),
        comment="Options flow figures per session and underlying (GEX, zero gamma, vanna, charm, "
        "put/call, max pain, pinning).",
    )
    op.create_table(
        "option_flow_strikes",
        _session(),
        sa.Column("underlying", sa.String(32), nullable=False),
        sa.Column("strike", sa.Double(), nullable=False),
        sa.Column(
            "call_gex", sa.Double(), nullable=False, comment="dealer $ gamma per 1% move, calls"
        ),
        sa.Column(
            "put_gex", sa.Double(), nullable=False, comment="dealer $ gamma per 1% move, puts"
        ),
        sa.Column("call_oi", sa.Double(), nullable=False, comment="contracts"),
        sa.Column("put_oi", sa.Double(), nullable=False, comment="contracts"),
        sa.PrimaryKeyConstraint("session_date", "underlying", "strike"),
        comment="Dealer gamma exposure and open interest per strike (all expiries of the snapshot).",
    )
    op.create_table(
        "option_flow_unusual",
        _session(),
        sa.Column("underlying", sa.String(32), nullable=False),
        sa.Column("trading_class", sa.String(32), nullable=False),
        sa.Column("expiry", sa.Date(), nullable=False),
        sa.Column("strike", sa.Double(), nullable=False),
        sa.Column("right", sa.String(1), nullable=False, comment="C or P"),
        sa.Column("volume", sa.Double(), nullable=False, comment="contracts"),
        sa.Column("open_interest", sa.Double(), nullable=False, comment="contracts"),
        sa.Column(
            "average_volume",
            sa.Double(),
            nullable=True,
            comment="the contract's average daily volume before",
        ),
        sa.Column("reasons", sa.String(96), nullable=False, comment="comma-separated"),
        sa.PrimaryKeyConstraint(
            "session_date", "underlying", "trading_class", "expiry", "strike", "right"
        ),
        comment="Contracts with unusual volume per session (volume/OI, size vs average, far OTM).",
    )


def downgrade() -> None:
    """Downgrade the schema."""
    for table in (
        "option_flow_unusual",
        "option_flow_strikes",
        "option_flow_metrics",
        "option_chain_snapshots",
    ):
        op.drop_table(table)
