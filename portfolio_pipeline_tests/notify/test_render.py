"""Daily summary / weekly digest renderers: content, HTML escaping, Telegram length."""

from __future__ import annotations

from datetime import UTC, date, datetime

from portfolio_pipeline.notify import (
    AlertType,
    DailySummaryData,
    ExitSignal,
    GreekAttribution,
    GreeksSnapshot,
    NamedPnl,
    StagedOrderSummary,
    WeeklyDigestData,
    daily_summary_alert,
    render_daily_summary,
    render_weekly_digest,
    weekly_digest_alert,
)
from portfolio_pipeline.notify.channels import TELEGRAM_MAX_CHARS, truncate_text


def daily(**kw: object) -> DailySummaryData:
    base: dict[str, object] = {
        "session_date": date(2018, 2, 5),
        "pnl": -12_345.678,
        "attribution": GreekAttribution(
            delta=-15_000.0, gamma=-2_500.0, theta=1_200.0, vega=4_000.0, unexplained=-45.678
        ),
        "greeks": GreeksSnapshot(
            dollar_delta=-48_000, dollar_gamma=-9_000, theta=1_150, vega=-2_400
        ),
        "previous_greeks": GreeksSnapshot(
            dollar_delta=-20_000, dollar_gamma=-6_000, theta=1_000, vega=-2_000
        ),
        "regime": "crisis",
        "vix": 37.32,
        "var_95": 18_000.0,
        "var_99": 31_500.5,
        "exit_signals": (ExitSignal("SPY 2018-03-16 250P <short>", "loss > 2x credit & DTE 39"),),
        "staged_orders": (
            StagedOrderSummary(
                "ord-7",
                "BUY 2 SPY 2018-03-16 240P",
                "staged",
                expires_at=datetime(2018, 2, 5, 20, 30, tzinfo=UTC),
            ),
        ),
        "nlv": 250_000.0,
    }
    base.update(kw)
    return DailySummaryData(**base)  # type: ignore[arg-type]


def test_daily_summary_text_has_every_section() -> None:
    text, html = render_daily_summary(daily())
    assert text.splitlines()[0] == "Daily summary 2018-02-05 (Mon)"
    assert "P&L: -$12,345.68 (NLV $250,000.00)" in text
    assert "delta -$15,000.00 | gamma -$2,500.00 | theta +$1,200.00 | vega +$4,000.00" in text
    assert "unexplained -$45.68" in text
    assert "Regime: crisis (VIX 37.3)" in text
    assert "VaR 1d: 95% $18,000.00 | 99% $31,500.50" in text
    assert "dollar delta: -20,000 -> -48,000 (-28,000)" in text
    assert "SPY 2018-03-16 250P <short>: loss > 2x credit & DTE 39" in text
    assert "ord-7 BUY 2 SPY 2018-03-16 240P [staged, expires 2018-02-05 15:30 EST]" in text
    assert "<html>" in html and "37.3" in html


def test_html_is_escaped() -> None:
    _, html = render_daily_summary(daily(regime="<b>crisis</b>"))
    assert "<short>" not in html and "&lt;short&gt;" in html
    assert "loss &gt; 2x credit &amp; DTE 39" in html
    assert "<b>crisis</b>" not in html and "&lt;b&gt;crisis&lt;/b&gt;" in html


def test_telegram_text_is_truncated_with_a_note() -> None:
    many = tuple(ExitSignal(f"position {i:04d} " + "x" * 40, "21 DTE") for i in range(400))
    text, html = render_daily_summary(daily(exit_signals=many))
    assert len(text.encode("utf-16-le")) // 2 <= TELEGRAM_MAX_CHARS
    assert "(truncated," in text.splitlines()[-1]
    assert "position 0399" in html  # email gets everything
    emoji = truncate_text("📈" * 5000)
    assert len(emoji.encode("utf-16-le")) // 2 <= TELEGRAM_MAX_CHARS


def test_missing_values_and_no_previous_greeks() -> None:
    text, _ = render_daily_summary(
        daily(previous_greeks=None, var_99=float("nan"), exit_signals=(), staged_orders=())
    )
    assert "99% n/a" in text
    assert "dollar delta: n/a -> -48,000 (n/a)" in text
    assert "Exit signals: none" in text and "Staged orders: none" in text


def test_weekly_digest() -> None:
    data = WeeklyDigestData(
        week_ending=date(2018, 2, 9),
        pnl=-30_000.0,
        sharpe=-1.234,
        max_drawdown=0.084,
        current_drawdown=0.05,
        strategy_attribution=(NamedPnl("short puts", -35_000), NamedPnl("iron condor", 5_000)),
        best_positions=(NamedPnl("VIX call <hedge>", 9_000),),
        worst_positions=(NamedPnl("SPY 250P", -22_000),),
    )
    text, html = render_weekly_digest(data)
    assert text.splitlines()[0] == "Weekly digest, week ending 2018-02-09"
    assert "Sharpe: -1.23 | max drawdown 8.4%, current 5.0%" in text
    assert "short puts: -$35,000.00" in text and "+ VIX call <hedge>: +$9,000.00" in text
    assert "&lt;hedge&gt;" in html and "<hedge>" not in html
    alert = weekly_digest_alert(data)
    assert alert.key == "weekly_digest:2018-02-09" and alert.type is AlertType.WEEKLY_DIGEST
    assert alert.html == html and alert.severity is None


def test_daily_summary_alert_is_keyed_by_session() -> None:
    alert = daily_summary_alert(daily())
    assert alert.key == "daily_summary:2018-02-05"
    assert alert.type is AlertType.DAILY_SUMMARY and alert.regime == "crisis"
    assert alert.title == "Daily summary 2018-02-05 (Mon)"
