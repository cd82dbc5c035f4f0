"""add VaR backtest and session regime tables

Revision ID: 0008
Revises: '0007'
Create Date: 2026-12-04 17:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "var_exceedances",
        sa.Column(
            "session_date", sa.Date(), nullable=False, comment="exchange session (America/New_York)"
        ),
        sa.Column(
            "model",
            sa.String(length=48),
            nullable=False,
            comment="e.g. historical_full, garch_t_full, monte_carlo_1d",
        ),
        sa.Column("level", sa.Double(), nullable=False, comment="VaR confidence, e.g. 0.99"),
        sa.Column(
            "var_session_date",
            sa.Date(),
            nullable=False,
            comment="session whose close VaR is tested",
        ),
        sa.Column(
            "var_usd",
            sa.Double(),
            nullable=False,
            comment="1-day VaR at var_session_date close, positive loss",
        ),
        sa.Column(
            "pnl_usd",
            sa.Double(),
            nullable=False,
            comment="book P&L of session_date (portfolio_returns)",
        ),
        sa.Column("exceeded", sa.Boolean(), nullable=False, comment="-pnl_usd > var_usd"),
        sa.PrimaryKeyConstraint("session_date", "model", "level", name=op.f("pk_var_exceedances")),
        comment="Per session, model and level: the previous close's VaR against this session's "
        "book P&L (read with storage.var_backtest.read_var_exceedances).",
    )
    op.create_table(
        "var_backtest",
        sa.Column(
            "session_date", sa.Date(), nullable=False, comment="exchange session (America/New_York)"
        ),
        sa.Column("model", sa.String(length=48), nullable=False),
        sa.Column("level", sa.Double(), nullable=False),
        sa.Column(
            "observations", sa.Integer(), nullable=False, comment="trailing window, at most 250"
        ),
        sa.Column("exceedances", sa.Integer(), nullable=False),
        sa.Column("expected", sa.Double(), nullable=False, comment="observations * (1 - level)"),
        sa.Column("kupiec_lr", sa.Double(), nullable=True),
        sa.Column("kupiec_p", sa.Double(), nullable=True),
        sa.Column("christoffersen_lr", sa.Double(), nullable=True),
        sa.Column("christoffersen_p", sa.Double(), nullable=True),
        sa.Column(
            "zone", sa.String(length=8), nullable=False, comment="Basel traffic light: green|yellow|red"
        ),
        sa.PrimaryKeyConstraint("session_date", "model", "level", name=op.f("pk_var_backtest")),
        comment="VaR backtest to the session per model and level (Kupiec POF, Christoffersen "
        "independence, Basel zone) over the trailing exceedance rows.",
    )
    op.create_table(
        "session_regime",
        sa.Column(
            "session_date", sa.Date(), nullable=False, comment="exchange session (America/New_York)"
        ),
        sa.Column(
            "regime",
            sa.String(length=32),
            nullable=False,
            comment="config/risk_matrix.yaml regime name",
        ),
        sa.Column(
            "vix", sa.Double(), nullable=False, comment="VIX close of the session (market_snapshot)"
        ),
        sa.Column("vix3m", sa.Double(), nullable=True),
        sa.Column(
            "previous_regime",
            sa.String(length=32),
            nullable=True,
            comment="regime of the previous session (hysteresis input); NULL: none stored",
        ),
        sa.PrimaryKeyConstraint("session_date", name=op.f("pk_session_regime")),
        comment="THE regime of each session, classified once with hysteresis (storage.regimes); "
        "limits (margin_history) and Monte Carlo read it.",
    )


def downgrade() -> None:
    """Revert :func:`upgrade`."""
    op.drop_table("session_regime")
    op.drop_table("var_backtest")
    op.drop_table("var_exceedances")
