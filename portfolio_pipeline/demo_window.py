"""Whether the configuration records only the demo broker, and the window it records.

The demo broker replays 2017-2018 market history; the demo record is the window
:data:`DEMO_START` .. :data:`DEMO_END` (what ``portfolio demo`` records).  On a demo-only
configuration the daily partitions end with that window, so the UI counts no sessions
the demo can never record and its plots over partitions end where the data ends; a
later session is skipped by the schedules (with a reason the UI shows) and refused by
``portfolio run`` with one line, instead of failing with a traceback.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

from portfolio_pipeline.config import PlatformConfig

DEMO_START = date(2017, 7, 3)
"""First session of the demo record (``portfolio demo``'s default window)."""
DEMO_END = date(2018, 6, 29)
"""Last session of the demo record."""


def demo_only(config: PlatformConfig) -> bool:
    """True when every configured account is on the demo broker."""
    accounts = config.accounts.book()
    return bool(accounts) and all(a.broker == "demo" for a in accounts)


def outside_demo_history(config: PlatformConfig, day: date) -> str | None:
    """Why ``day`` cannot be recorded on a demo-only configuration (None when it can)."""
    if not demo_only(config) or day <= DEMO_END:
        return None
    return (f"session {day}: only the demo broker is configured ({config.directory / 'accounts.yaml'}) and the "
            f"demo record ends {DEMO_END}; record the demo window with `portfolio demo`, or add a broker account")


def demo_partitions_end(directory: Path | None = None) -> date | None:
    """The day after :data:`DEMO_END` when only the demo broker is configured, else None.

    A configuration that does not load gives None (open-ended partitions); ``portfolio
    config check`` reports it.
    """
    from portfolio_pipeline.config import ConfigError, load_platform_config
    from portfolio_pipeline.paths import config_dir

    try:
        config = load_platform_config(directory or config_dir())
    except ConfigError:
        return None
    return DEMO_END + timedelta(days=1) if demo_only(config) else None
