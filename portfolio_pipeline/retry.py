"""The one retry policy of the platform: transient failures retried with exponential backoff.

Every place that waits and tries again (broker reconnects, the broker HTTP transport,
the streaming feed's start and polls, notification sends) uses a :class:`BackoffPolicy`
from this module; the attempts run under `tenacity <https://tenacity.readthedocs.io>`_.

- the delay after failed attempt ``n`` (1-based) is
  ``min(initial * multiplier ** (n - 1), maximum)`` (:meth:`BackoffPolicy.delay`), no
  jitter, so a schedule is reproducible;
- only what the caller names as transient is retried; any other error propagates at
  once, unchanged;
- after ``max_attempts`` failed tries :class:`RetryGaveUpError` names the operation,
  the number of attempts and the last error (its ``__cause__``); ``reraise=True`` lets
  the last error itself propagate (a wire-level transport whose caller maps error types);
- ``sleep`` is injected, so tests run a whole schedule without waiting.

The defaults of every operation are the constants below; ``config/notifications.yaml``
(``retry:``) tunes notification sends.  Dagster's own ``dagster.RetryPolicy`` on assets
(re-running a whole step) is a different mechanism and keeps its name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final, TypeVar

import tenacity

__all__ = [
    "BROKER_HTTP",
    "FEED_POLL",
    "FEED_START",
    "IBKR_RECONNECT",
    "NOTIFICATION_SEND",
    "BackoffPolicy",
    "RetryGaveUpError",
    "RetryOn",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

RetryOn = type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
"""What counts as transient: exception type(s), or a predicate on the exception."""

SyncSleep = Callable[[float], None]
AsyncSleep = Callable[[float], Awaitable[None]]


class RetryGaveUpError(RuntimeError):
    """A transient failure outlasted its policy; ``__cause__`` is the last error."""

    def __init__(self, operation: str, attempts: int, last: BaseException) -> None:
        super().__init__(f"{operation}: gave up after {attempts} attempt(s): {last}")
        self.operation = operation
        self.attempts = attempts
        self.last = last


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """How often and how patiently one operation is retried.

    Parameters
    ----------
    operation :
        Named in log lines and in :class:`RetryGaveUpError` (``"notification send"``).
    max_attempts :
        Tries in all, the first included; None: until the caller stops (reconnects).
    initial, multiplier, maximum :
        Seconds before the second try, growth factor, and the cap of any one wait.
    """

    operation: str
    max_attempts: int | None = 5
    initial: float = 1.0
    multiplier: float = 2.0
    maximum: float = 60.0

    def __post_init__(self) -> None:
        where = f"retry policy {self.operation!r}"
        if not self.operation:
            raise ValueError("retry policy: operation name is empty")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"{where}: max_attempts must be >= 1, got {self.max_attempts}")
        if not self.initial >= 0 or not self.maximum >= 0:
            raise ValueError(f"{where}: initial and maximum must be >= 0 seconds")
        if not self.multiplier >= 1:
            raise ValueError(f"{where}: multiplier must be >= 1, got {self.multiplier}")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        if attempt < 1:
            raise ValueError(f"retry policy {self.operation!r}: attempt must be >= 1, got {attempt}")
        try:
            grown = self.initial * self.multiplier ** (attempt - 1)
        except OverflowError:
            grown = self.maximum
        return float(min(grown, self.maximum))

    # ---------------------------------------------------------------- tenacity plumbing

    def _stop(self) -> tenacity.stop.stop_base:
        if self.max_attempts is None:
            return tenacity.stop_never
        return tenacity.stop_after_attempt(self.max_attempts)

    def _retry(
        self, retry_on: RetryOn, retry_result: Callable[[object], bool] | None
    ) -> tenacity.retry_base:
        if isinstance(retry_on, type | tuple):
            condition: tenacity.retry_base = tenacity.retry_if_exception_type(retry_on)
        else:
            condition = tenacity.retry_if_exception(retry_on)
        if retry_result is not None:
            condition = condition | tenacity.retry_if_result(retry_result)
        return condition

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None and outcome.failed else None
        reason = "transient result" if error is None else f"{type(error).__name__}: {error}"
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "%s failed (attempt %d of %s): %s; retrying in %.2fs",
            self.operation,
            state.attempt_number,
            self.max_attempts if self.max_attempts is not None else "unlimited",
            reason,
            wait,
        )

    def _give_up(self, state: tenacity.RetryCallState, *, reraise: bool) -> object:
        outcome = state.outcome
        assert outcome is not None  # tenacity calls this after an attempt
        if not outcome.failed:
            return outcome.result()  # a transient *result* is handed back as it is
        error = outcome.exception()
        assert error is not None
        logger.error("%s: gave up after %d attempt(s): %s: %s", self.operation, state.attempt_number,
                     type(error).__name__, error)
        if reraise:
            raise error
        raise RetryGaveUpError(self.operation, state.attempt_number, error) from error

    def call(
        self,
        fn: Callable[[], T],
        *,
        retry_on: RetryOn,
        sleep: SyncSleep = time.sleep,
        reraise: bool = False,
        wait_hint: Callable[[BaseException], float | None] | None = None,
    ) -> T:
        """``fn()`` retried on ``retry_on`` errors per this policy (blocking).

        ``wait_hint(error)``: a wait the other side asked for (HTTP ``Retry-After``),
        used instead of the schedule's when it is not None.
        """

        def wait(state: tenacity.RetryCallState) -> float:
            outcome = state.outcome
            error = outcome.exception() if outcome is not None and outcome.failed else None
            hinted = wait_hint(error) if wait_hint is not None and error is not None else None
            return self.delay(state.attempt_number) if hinted is None else float(hinted)

        retrying = tenacity.Retrying(
            stop=self._stop(),
            wait=wait,
            retry=self._retry(retry_on, None),
            sleep=sleep,
            before_sleep=self._log_retry,
            retry_error_callback=lambda s: self._give_up(s, reraise=reraise),
        )
        return retrying(fn)

    async def acall(
        self,
        fn: Callable[[], Awaitable[T]],
        *,
        retry_on: RetryOn,
        retry_result: Callable[[T], bool] | None = None,
        on_retry_result: Callable[[T], Awaitable[None]] | None = None,
        sleep: AsyncSleep = asyncio.sleep,
        reraise: bool = False,
        wait_first: bool = False,
    ) -> T:
        """``await fn()`` retried on ``retry_on`` errors (and on results for which
        ``retry_result`` is true; ``on_retry_result`` releases such a result before the
        next try, and the last one is returned as it is).

        ``wait_first``: wait ``delay(1)`` before the first try too, and ``delay(n + 1)``
        after failed try ``n`` (a reconnect: the peer has just gone away).
        """
        shift = 1 if wait_first else 0

        def wait(state: tenacity.RetryCallState) -> float:
            return self.delay(state.attempt_number + shift)

        async def before_sleep(state: tenacity.RetryCallState) -> None:
            self._log_retry(state)
            outcome = state.outcome
            if on_retry_result is not None and outcome is not None and not outcome.failed:
                await on_retry_result(outcome.result())

        retrying = tenacity.AsyncRetrying(
            stop=self._stop(),
            wait=wait,
            retry=self._retry(retry_on, retry_result),  # type: ignore[arg-type]
            sleep=sleep,
            before_sleep=before_sleep,
            retry_error_callback=lambda s: self._give_up(s, reraise=reraise),
        )
        if wait_first:
            await sleep(self.delay(1))
        result: T = await retrying(fn)
        return result


#: IBKR Gateway/TWS reconnects after a lost connection: until the adapter is closed.
IBKR_RECONNECT: Final = BackoffPolicy("ibkr reconnect", max_attempts=None, initial=1.0, maximum=60.0)
#: Tastytrade HTTP requests at the wire (only requests safe to repeat are retried).
BROKER_HTTP: Final = BackoffPolicy("tastytrade request", max_attempts=3, initial=0.25, maximum=2.0)
#: The streaming feed's starting book (connect, positions, balances, quotes).
FEED_START: Final = BackoffPolicy("broker feed start", max_attempts=5, initial=1.0, maximum=30.0)
#: The streaming feed's polls: failed polls wait longer and longer, the feed never stops.
FEED_POLL: Final = BackoffPolicy("broker feed poll", max_attempts=None, initial=1.0, maximum=30.0)
#: Notification sends in one run (``config/notifications.yaml`` ``retry:`` overrides);
#: the durable outbox reuses the schedule between runs.
NOTIFICATION_SEND: Final = BackoffPolicy("notification send", max_attempts=5, initial=1.0, maximum=60.0)
