"""Whether the configuration records only the demo broker, and where its history ends.

The demo broker replays 2017-2018 market history: a session after that history has
nothing to record, so the EOD schedule skips it (with a reason the UI shows) and
``portfolio run`` refuses it with one line, instead of failing with a traceback.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from portfolio_pipeline.config import PlatformConfig


def demo_only(config: PlatformConfig) -> bool:
    """True when every configured account is on the demo broker."""
    accounts = config.accounts.accounts
    return bool(accounts) and all(a.broker == "demo" for a in accounts)


def demo_history_end() -> date:
    """The last session the demo broker can price (the end of its S&P 500 and VIX history)."""
    from portfolio_pipeline.marketdata import MarketHistory

    history = MarketHistory()
    last = min(history.spx_close().index[-1], history.vix().index[-1])
    return date(last.year, last.month, last.day)


def outside_demo_history(config: PlatformConfig, day: date) -> str | None:
    """Why ``day`` cannot be recorded on a demo-only configuration (None when it can)."""
    if not demo_only(config):
        return None
    end = demo_history_end()
    if day <= end:
        return None
    return (f"session {day}: only the demo broker is configured ({config.directory / 'accounts.yaml'}) and its "
            f"market history ends {end}; record the demo window with `portfolio demo`, or add a broker account")


def demo_partitions_end(directory: Path | None = None) -> date | None:
    """The day after the demo history when only the demo broker is configured, else None.

    Daily partitions end there, so the UI of a demo setup does not count years of
    "missing" sessions the demo broker can never record.  A configuration that does not
    load gives None (open-ended partitions); ``portfolio config check`` reports it.
    """
    from portfolio_pipeline.config import ConfigError, load_platform_config
    from portfolio_pipeline.paths import config_dir

    try:
        config = load_platform_config(directory or config_dir())
    except ConfigError:
        return None
    return demo_history_end() + timedelta(days=1) if demo_only(config) else None
