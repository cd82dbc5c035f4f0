"""Issue 13.7: no VIX/VIX3M (no CBOE index subscription) degrades the regime to a stated
fallback with a data-quality warning instead of recording nothing.

Oracle: DAY1 is recorded with VIX 17.31; DAY2's broker refuses the index quotes, so
DAY2's regime is classified on 17.31 (the last known VIX), the session is still recorded,
and the warning names the fallback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from portfolio_pipeline.brokers.base import BrokerError
from portfolio_pipeline.defs import resources as resources_module
from portfolio_pipeline.domain.regime import RegimeService
from portfolio_pipeline_tests.defs.risk.book import (
    CLOSE2,
    DAY1,
    DAY2,
    DatedBroker,
    materialize,
    rows,
)
from portfolio_pipeline_tests.stubs import platform_config


class NoIndexData(DatedBroker):
    """From DAY2 on, IBKR-like error 354 for VIX and VIX3M."""

    async def quotes(self, contracts: Any) -> list[Any]:
        wants_index = any(c.sec_type == "IND" and c.underlying.startswith("VIX") for c in contracts)
        if wants_index and self._clock() >= CLOSE2:
            raise BrokerError("ibkr: VIX|IND: IBKR error 354: Requested market data is not subscribed")
        return await super().quotes(contracts)


def test_missing_vix_falls_back_to_the_last_known_vix_with_a_warning(
    db_url: str, portfolio_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(resources_module, "adapters_for",
                        lambda accounts, instruments, clock, *a, **k: [(NoIndexData(clock), ["A1"])])
    with dg.instance_for_test() as instance:
        assert materialize(db_url, instance, DAY1).success
        second = materialize(db_url, instance, DAY2)
        logged = " ".join(entry.user_message for entry in instance.all_logs(second.run_id))
    assert second.success
    stored = rows(db_url)
    book = [r for r in stored["margin_history"] if r["session_date"] == DAY2 and r["broker"] == "*"]
    assert len(book) == 1 and book[0]["vix"] == pytest.approx(17.31)
    expected = RegimeService(platform_config().risk_matrix).classify(17.31, None).name
    assert book[0]["regime"] == expected
    assert "regime FALLBACK" in logged and "last known VIX 17.31" in logged
    assert "CBOE index market data subscription" in logged
