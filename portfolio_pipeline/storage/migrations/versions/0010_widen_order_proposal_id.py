"""widen orders.proposal_id to hold a breach event key

The proposal id of a hedge is the breach's event key
(``limit_breach:<account>:beta_weighted_delta:<ISO timestamp>``, 68 characters for the
demo account), longer than the 64 the column allowed: on PostgreSQL the proposal
insert failed ("value too long"), so a delta breach had no proposal.  SQLite never
enforced the length.

Revision ID: 0010
Revises: '0006'
Create Date: 2026-12-04 17:40:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("proposal_id", existing_type=sa.String(length=64), type_=sa.String(length=255),
                           existing_nullable=True)


def downgrade() -> None:
    """Downgrade the schema."""
    with op.batch_alter_table("orders") as batch:
        batch.alter_column("proposal_id", existing_type=sa.String(length=255), type_=sa.String(length=64),
                           existing_nullable=True)
