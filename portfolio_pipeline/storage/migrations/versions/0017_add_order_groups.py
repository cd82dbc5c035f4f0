"""add order groups (bracket, OCO), their legs, and order schedules

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-05 11:40:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "order_groups",
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.String(length=16),
            nullable=False,
            comment="bracket or oco (domain.order_groups)",
        ),
        sa.Column("broker", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "broker_group_id",
            sa.String(length=64),
            nullable=True,
            comment="Tastytrade complex order id",
        ),
        sa.PrimaryKeyConstraint("group_id", name=op.f("pk_order_groups")),
        comment="Order groups (bracket, OCO); the group's status is derived from its legs.",
    )
    op.create_table(
        "order_group_legs",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("group_id", sa.String(length=64), nullable=False),
        sa.Column(
            "role", sa.String(length=16), nullable=False, comment="entry, take_profit or stop_loss"
        ),
        sa.Column(
            "position", sa.Integer(), nullable=False, comment="placement order within the group"
        ),
        sa.Column("bounds", sa.JSON(none_as_null=True), nullable=True),
        sa.Column(
            "working_quantity",
            sa.Integer(),
            nullable=True,
            comment="resized by the reconciler (bracket children)",
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["order_groups.group_id"],
            name=op.f("fk_order_group_legs_group_id_order_groups"),
        ),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_order_group_legs_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_group_legs")),
        comment="The legs of an order group and the confirmation bounds of each.",
    )
    with op.batch_alter_table("order_group_legs") as batch:
        batch.create_index(batch.f("ix_order_group_legs_group_id"), ["group_id"], unique=False)
    op.create_table(
        "order_schedules",
        sa.Column("schedule_id", sa.String(length=64), nullable=False),
        sa.Column(
            "kind",
            sa.String(length=16),
            nullable=False,
            comment="roll, trail (orders.schedules) or slicer (orders.slicer)",
        ),
        sa.Column("broker", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.String(length=16),
            nullable=False,
            comment="pending, staged, running, done, stopped, cancelled, failed",
        ),
        sa.Column(
            "run_at", sa.DateTime(timezone=True), nullable=True, comment="when it is due (UTC)"
        ),
        sa.Column("spec", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("standing", sa.JSON(none_as_null=True), nullable=True),
        sa.Column(
            "standing_by",
            sa.String(length=64),
            nullable=True,
            comment="who gave the standing confirmation",
        ),
        sa.Column(
            "order_id", sa.String(length=64), nullable=True, comment="the order it staged last"
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detail", sa.JSON(none_as_null=True), nullable=True),
        sa.PrimaryKeyConstraint("schedule_id", name=op.f("pk_order_schedules")),
        comment="Scheduled rolls and platform-side trailing stops; what they staged and why.",
    )
    with op.batch_alter_table("order_schedules") as batch:
        batch.create_index(batch.f("ix_order_schedules_status"), ["status"], unique=False)


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("order_schedules") as batch:
        batch.drop_index(batch.f("ix_order_schedules_status"))
    op.drop_table("order_schedules")
    with op.batch_alter_table("order_group_legs") as batch:
        batch.drop_index(batch.f("ix_order_group_legs_group_id"))
    op.drop_table("order_group_legs")
    op.drop_table("order_groups")
