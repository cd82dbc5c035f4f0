"""notification outbox: retry schedule and expiry of failed deliveries

Revision ID: 0012
Revises: '0011'
Create Date: 2026-12-04 17:30:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD = ("pending", "held", "sending", "delivered", "failed", "dropped")
_NEW = (*_OLD, "retrying")
_CHECK = "ck_notification_deliveries_status"


def _status_check(statuses: Sequence[str]) -> str:
    return "status IN ({})".format(", ".join(f"'{s}'" for s in statuses))


def upgrade() -> None:
    """Upgrade the schema."""
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "next_attempt_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="outbox: when a failed delivery is retried",
            )
        )
        batch_op.add_column(
            sa.Column(
                "expires_at",
                sa.DateTime(timezone=True),
                nullable=True,
                comment="outbox: retries stop (final failure) after this",
            )
        )
        batch_op.drop_constraint(batch_op.f(_CHECK), type_="check")
        batch_op.create_check_constraint(batch_op.f(_CHECK), sa.text(_status_check(_NEW)))


def downgrade() -> None:
    """Revert :func:`upgrade` (rows waiting for a retry become failures)."""
    op.execute(
        sa.text(
            "UPDATE notification_deliveries SET status = 'failed' WHERE status = 'retrying'"
        )
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f(_CHECK), type_="check")
        batch_op.create_check_constraint(batch_op.f(_CHECK), sa.text(_status_check(_OLD)))
        batch_op.drop_column("expires_at")
        batch_op.drop_column("next_attempt_at")
