"""Market history loaders: published series, the labelled proxies and the index convention."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from portfolio_pipeline.marketdata import (
    NDX_ANCHOR_CLOSE,
    NDX_ANCHOR_DATE,
    MarketHistory,
    realised_vol,
)


@pytest.fixture(scope="module")
def history() -> MarketHistory:
    return MarketHistory()


def _session_indexed(obj: pd.Series | pd.DataFrame) -> None:
    idx = obj.index
    assert isinstance(idx, pd.DatetimeIndex) and idx.tz is None and idx.name == "session"
    assert (idx == idx.normalize()).all() and idx.is_monotonic_increasing and idx.is_unique


def test_published_series(history: MarketHistory) -> None:
    spx, vix = history.spx_close(), history.vix()
    for s in (spx, vix, history.nasdaq_close(), history.spx_open()):
        _session_indexed(s)
    assert spx.index[0] == pd.Timestamp("1999-01-04") and spx.index[-1] == pd.Timestamp("2018-12-31")
    assert spx.loc["2018-02-05"] == pytest.approx(2648.94, abs=0.01)
    assert vix.loc["2018-02-02"] == pytest.approx(17.31) and vix.loc["2018-02-05"] == pytest.approx(37.32)
    assert vix.index[0] == pd.Timestamp("2014-01-03") and not vix.isna().any()
    assert pd.Timestamp("2018-03-30") not in vix.index  # Good Friday holiday row dropped


def test_accessors_return_copies(history: MarketHistory) -> None:
    s = history.spx_close()
    s.iloc[0] = -1.0
    assert history.spx_close().iloc[0] > 0


def test_ndx_proxy_is_anchored_and_follows_nasdaq_returns(history: MarketHistory) -> None:
    ndx, nasdaq = history.ndx_proxy_close(), history.nasdaq_close()
    assert ndx.loc[pd.Timestamp(NDX_ANCHOR_DATE)] == pytest.approx(NDX_ANCHOR_CLOSE)
    np.testing.assert_allclose(ndx.pct_change().dropna(), nasdaq.pct_change().dropna(), rtol=0, atol=1e-12)


def test_model_vix3m_term_structure(history: MarketHistory) -> None:
    vix, vix3m = history.vix(), history.vix3m_model()
    assert vix3m.loc["2018-02-05"] == pytest.approx(19 + (37.32 - 19) * 0.6)
    assert vix3m.loc["2018-02-05"] < vix.loc["2018-02-05"]  # backwardation in the spike
    assert vix3m.loc["2017-11-01"] > vix.loc["2017-11-01"]  # contango when calm
    other = MarketHistory(vix3m_long_run=20.0, vix3m_reversion=0.5).vix3m_model()
    assert other.loc["2018-02-05"] == pytest.approx(20 + (37.32 - 20) * 0.5)
    with pytest.raises(ValueError, match="vix3m_reversion"):
        MarketHistory(vix3m_reversion=1.5)


def test_daily_frame(history: MarketHistory) -> None:
    frame = history.daily_frame()
    _session_indexed(frame)
    assert list(frame.columns) == ["spx_open", "spx_close", "ndx_open", "ndx_close", "spx_rv", "ndx_rv", "vix", "vix3m"]
    assert frame.index[0] == pd.Timestamp("2014-01-03") and frame.index[-1] == pd.Timestamp("2018-12-31")
    assert not frame.isna().any().any()
    assert frame.loc["2018-02-05", "spx_rv"] > frame.loc["2018-01-02", "spx_rv"]


def test_crisis_anchor_closes(history: MarketHistory, tmp_path: Path) -> None:
    crisis = history.crisis_anchor_closes()
    assert len(crisis) == 7 and list(crisis.columns) == ["spx_close", "vix_close", "note"]
    assert crisis.loc["2020-03-16", "vix_close"] == pytest.approx(82.69)
    bad = tmp_path / "bad.csv"
    bad.write_text("day,close\n2020-01-01,1\n")
    with pytest.raises(ValueError, match="expected columns"):
        MarketHistory(crisis_csv=bad)


def test_realised_vol() -> None:
    idx = pd.date_range("2020-01-01", periods=60, freq="B")
    rets = np.tile([0.01, -0.01], 30)
    close = pd.Series(100 * np.exp(np.cumsum(rets)), index=idx)
    rv = realised_vol(close, 21)
    assert rv.iloc[:21].isna().all()
    assert rv.iloc[-1] == pytest.approx(np.std(rets[-21:], ddof=1) * np.sqrt(252), rel=1e-9)


def test_packaged_csv_matches_shared_copy() -> None:
    pkg = Path(__file__).resolve().parents[2] / "portfolio_pipeline" / "data" / "crisis_anchor_closes.csv"
    assert pkg.is_file() and date(2020, 3, 23).isoformat() in pkg.read_text()
