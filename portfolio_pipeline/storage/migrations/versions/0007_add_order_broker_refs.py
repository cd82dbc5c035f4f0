"""add order broker refs; widen orders.proposal_id to the breach event key's 255

Revision ID: 0007
Revises: '0006'
Create Date: 2026-12-04 17:30:00.000000+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    op.create_table(
        "order_broker_refs",
        sa.Column("order_id", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=True, comment="IBKR API client id that owns the order"),
        sa.Column("perm_id", sa.BigInteger(), nullable=True, comment="IBKR permanent order id once known"),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"], ["orders.order_id"], name=op.f("fk_order_broker_refs_order_id_orders")
        ),
        sa.PrimaryKeyConstraint("order_id", name=op.f("pk_order_broker_refs")),
        comment="Who owns a staged order at the broker (IBKR client id, permId).",
    )
    # a proposal id is its breach's event key (events.event_key is 255 wide); 64 refused
    # real keys on PostgreSQL ("limit_breach:<scope>:<metric>:<timestamp>")
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "proposal_id", existing_type=sa.String(length=64), type_=sa.String(length=255), existing_nullable=True,
            comment="the breach event key (events.event_key)",
        )


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("orders") as batch:
        batch.alter_column(
            "proposal_id", existing_type=sa.String(length=255), type_=sa.String(length=64), existing_nullable=True
        )
    op.drop_table("order_broker_refs")
