"""add monte_carlo_distribution

Revision ID: 0013
Revises: '0012'
Create Date: 2026-12-04 18:10:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "monte_carlo_distribution",
        sa.Column(
            "session_date", sa.Date(), nullable=False, comment="exchange session (America/New_York)"
        ),
        sa.Column("horizon_days", sa.Integer(), nullable=False, comment="trading days"),
        sa.Column("bin", sa.Integer(), nullable=False, comment="0 = the largest loss"),
        sa.Column("pnl_from", sa.Double(), nullable=False, comment="book P&L, lower edge"),
        sa.Column("pnl_to", sa.Double(), nullable=False, comment="book P&L, upper edge"),
        sa.Column("scenarios", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("session_date", "horizon_days", "bin"),
        comment="Histogram of the whole book's Monte Carlo P&L per horizon (the risk pack's chart).",
    )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_table("monte_carlo_distribution")
