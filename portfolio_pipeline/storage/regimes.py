"""THE session regime: classified once per session with hysteresis, stored in
``session_regime``, read by the limits (``margin_history``) and by Monte Carlo.

The hysteresis input is the stored regime of the previous exchange session (none stored:
no hysteresis, as for the first session of the record).  ``margin_history`` classifies
(``recompute=True``, it runs on the session's fresh market snapshot); Monte Carlo runs
after it and reads the stored row, classifying only when none is stored yet.
"""

from __future__ import annotations

import logging
from datetime import date

from sqlalchemy import Connection, select

from portfolio_pipeline.domain.regime import RegimeService, RegimeState
from portfolio_pipeline.storage.tables import session_regime
from portfolio_pipeline.storage.writes import replace_partition

__all__ = ["read_session_regime", "session_regime_state"]

logger = logging.getLogger(__name__)


def read_session_regime(conn: Connection, day: date) -> dict[str, object] | None:
    """The stored ``session_regime`` row of ``day``, or None."""
    row = conn.execute(select(session_regime).where(session_regime.c.session_date == day)).mappings().first()
    return dict(row) if row is not None else None


def session_regime_state(
    conn: Connection,
    service: RegimeService,
    day: date,
    previous_session: date | None,
    vix: float,
    vix3m: float | None,
    *,
    recompute: bool = False,
) -> RegimeState:
    """The regime of ``day``: the stored one, or (missing, or ``recompute``) classified from
    ``vix``/``vix3m`` with the previous session's stored regime as hysteresis input and
    stored, in the caller's transaction."""
    if not recompute:
        row = read_session_regime(conn, day)
        if row is not None:
            vix3m_stored = row["vix3m"]
            return service.stored(str(row["regime"]), float(row["vix"]),  # type: ignore[arg-type]
                                  None if vix3m_stored is None else float(vix3m_stored))  # type: ignore[arg-type]
    prev = read_session_regime(conn, previous_session) if previous_session is not None else None
    previous = str(prev["regime"]) if prev is not None else None
    state = service.classify(vix, vix3m, previous=previous)
    replace_partition(conn, session_regime, {"session_date": day}, [{
        "session_date": day, "regime": state.name, "vix": state.vix, "vix3m": state.vix3m,
        "previous_regime": previous}])
    logger.info("session=%s regime=%s vix=%.2f previous=%s", day, state.name, vix, previous)
    return state
