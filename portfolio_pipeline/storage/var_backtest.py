"""Reader of the stored VaR exceedance rows (``var_exceedances``, written by the
``var_backtest`` asset; see :mod:`portfolio_pipeline.analytics.var_backtest`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import pandas as pd
from sqlalchemy import Connection, and_, select
from sqlalchemy.sql.elements import ColumnElement

from portfolio_pipeline.storage.tables import var_exceedances
from portfolio_pipeline.storage.writes import dict_rows

__all__ = ["read_var_exceedances"]


def read_var_exceedances(
    conn: Connection,
    start: date | None = None,
    end: date | None = None,
    *,
    models: Sequence[str] | None = None,
    exceeded_only: bool = False,
) -> pd.DataFrame:
    """Stored ``var_exceedances`` rows (``start <= session_date <= end``), ordered by session,
    model and level; ``exceeded_only`` keeps the sessions whose loss exceeded the VaR."""
    t = var_exceedances
    clauses: list[ColumnElement[bool]] = []
    if start is not None:
        clauses.append(t.c.session_date >= start)
    if end is not None:
        clauses.append(t.c.session_date <= end)
    if models is not None:
        clauses.append(t.c.model.in_(list(models)))
    if exceeded_only:
        clauses.append(t.c.exceeded.is_(True))
    stmt = select(t).order_by(t.c.session_date, t.c.model, t.c.level)
    if clauses:
        stmt = stmt.where(and_(*clauses))
    return pd.DataFrame(dict_rows(conn.execute(stmt)), columns=list(t.c.keys()))
