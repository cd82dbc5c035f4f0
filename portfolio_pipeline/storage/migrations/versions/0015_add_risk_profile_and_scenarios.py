"""add risk_profile, risk_profile_summary and scenario_results

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 11:50:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SESSION = "exchange session (America/New_York)"
_PROFILE = "underlying, or '*' for the book beta-weighted to SPX"


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "risk_profile",
        sa.Column("session_date", sa.Date(), nullable=False, comment=_SESSION),
        sa.Column("profile", sa.String(32), nullable=False, comment=_PROFILE),
        sa.Column(
            "broker", sa.String(32), nullable=False, comment="'*' for the profile's whole book"
        ),
        sa.Column(
            "account_id", sa.String(64), nullable=False, comment="'*' for the profile's whole book"
        ),
        sa.Column(
            "strategy_id",
            sa.String(64),
            nullable=False,
            comment="'*' for every position of the profile",
        ),
        sa.Column(
            "horizon",
            sa.String(32),
            nullable=False,
            comment="'T+0', 'T+5' (sessions) or 'exp 2018-03-16'",
        ),
        sa.Column("point", sa.Integer(), nullable=False, comment="index along the price axis"),
        sa.Column("horizon_days", sa.Double(), nullable=False, comment="calendar days of decay"),
        sa.Column(
            "spot_move",
            sa.Double(),
            nullable=False,
            comment="simple return of the driver (underlying, or SPX)",
        ),
        sa.Column("price", sa.Double(), nullable=False, comment="driver price at the point"),
        sa.Column(
            "pnl", sa.Double(), nullable=False, comment="full revaluation against today's value"
        ),
        sa.PrimaryKeyConstraint(
            "session_date",
            "profile",
            "broker",
            "account_id",
            "strategy_id",
            "horizon",
            "point",
            name=op.f("pk_risk_profile"),
        ),
        comment="P&L vs underlying price (risk profile) at T+0, T+n sessions and each expiry.",
    )
    op.create_table(
        "risk_profile_summary",
        sa.Column("session_date", sa.Date(), nullable=False, comment=_SESSION),
        sa.Column("profile", sa.String(32), nullable=False, comment=_PROFILE),
        sa.Column("broker", sa.String(32), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("strategy_id", sa.String(64), nullable=False),
        sa.Column("horizon", sa.String(32), nullable=False),
        sa.Column("strategy_type", sa.String(32), nullable=True),
        sa.Column("driver", sa.String(32), nullable=False, comment="what the price axis is"),
        sa.Column("spot", sa.Double(), nullable=False, comment="driver price today"),
        sa.Column("horizon_days", sa.Double(), nullable=False, comment="calendar days of decay"),
        sa.Column(
            "vol_shift_points",
            sa.Double(),
            nullable=False,
            comment="ATM vol change applied to the curve",
        ),
        sa.Column(
            "atm_vol",
            sa.Double(),
            nullable=True,
            comment="ATM implied vol (decimal) of the expected move",
        ),
        sa.Column(
            "expected_move",
            sa.Double(),
            nullable=True,
            comment="S x ATM vol x sqrt(t), driver price units",
        ),
        sa.Column(
            "max_profit", sa.Double(), nullable=False, comment="largest P&L on the curve's range"
        ),
        sa.Column("max_profit_price", sa.Double(), nullable=False),
        sa.Column(
            "max_loss", sa.Double(), nullable=False, comment="smallest P&L on the curve's range"
        ),
        sa.Column("max_loss_price", sa.Double(), nullable=False),
        sa.Column("breakevens", sa.JSON(none_as_null=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "session_date",
            "profile",
            "broker",
            "account_id",
            "strategy_id",
            "horizon",
            name=op.f("pk_risk_profile_summary"),
        ),
        comment="Breakevens (driver prices), max profit/loss and expected move of each risk profile curve.",
    )
    op.create_table(
        "scenario_results",
        sa.Column(
            "name",
            sa.String(64),
            nullable=False,
            comment="the scenario's name (the last run of a name replaces it)",
        ),
        sa.Column("underlying", sa.String(32), nullable=False, comment="'*' for the whole book"),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "session_date",
            sa.Date(),
            nullable=False,
            comment="the stored session whose book was shocked",
        ),
        sa.Column("spec", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("spot", sa.Double(), nullable=False, comment="price today (SPX for '*')"),
        sa.Column("spot_after", sa.Double(), nullable=False, comment="price in the scenario"),
        sa.Column(
            "pnl",
            sa.Double(),
            nullable=False,
            comment="the book's P&L in the scenario (full revaluation)",
        ),
        sa.Column(
            "pnl_with_trades",
            sa.Double(),
            nullable=False,
            comment="the book plus the scenario's extra trades",
        ),
        sa.PrimaryKeyConstraint("name", "underlying", name=op.f("pk_scenario_results")),
        comment="Named what-if scenarios (scenario_job, portfolio scenario run); the last N names are kept.",
    )


def downgrade() -> None:
    """Downgrade the schema."""
    op.drop_table("scenario_results")
    op.drop_table("risk_profile_summary")
    op.drop_table("risk_profile")
