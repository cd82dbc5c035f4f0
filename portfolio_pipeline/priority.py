"""CPU priority of batch work: the EOD run yields the CPU to the live monitor.

On a small machine the streaming service and an EOD run compete for the same cores;
the service's tick-to-event latency then depends on the scheduler handing it a CPU
quickly.  The run launcher (``portfolio run`` / ``portfolio demo``) therefore lowers
its own priority before the run starts (threads started afterwards inherit it), to
the niceness in ``PORTFOLIO_EOD_NICE`` (default 10; 0 keeps the priority as is).
Niceness only rises here: an unprivileged process cannot lower it, and a run started
under ``nice -n 15`` stays at 15.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Final

__all__ = ["DEFAULT_EOD_NICE", "EOD_NICE_ENV", "eod_niceness", "lower_priority"]

logger = logging.getLogger(__name__)

EOD_NICE_ENV: Final = "PORTFOLIO_EOD_NICE"
DEFAULT_EOD_NICE: Final = 10


def eod_niceness(environ: Mapping[str, str]) -> int:
    """The niceness an EOD run asks for (``PORTFOLIO_EOD_NICE``, 0..19)."""
    raw = environ.get(EOD_NICE_ENV, "").strip()
    if not raw:
        return DEFAULT_EOD_NICE
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{EOD_NICE_ENV} must be an integer 0..19, got {raw!r}") from None
    if not 0 <= value <= 19:
        raise ValueError(f"{EOD_NICE_ENV} must be an integer 0..19, got {raw!r}")
    return value


def lower_priority(niceness: int) -> int:
    """Raise this process's niceness to ``niceness`` (never lower it); returns the niceness now.

    ``os.setpriority`` on the process id sets the calling thread on Linux, so call it
    before the run starts its worker threads and processes (they inherit it).
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness > current:
        os.setpriority(os.PRIO_PROCESS, 0, niceness)
        logger.info("run priority lowered niceness=%s (was %s)", niceness, current)
    return max(current, niceness)
