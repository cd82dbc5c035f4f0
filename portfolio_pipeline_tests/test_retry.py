"""The one retry policy: schedule, what is retried, what is not, and how it gives up.

No test sleeps: every call gets a fake ``sleep`` that records the waits.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from portfolio_pipeline.retry import (
    BROKER_HTTP,
    IBKR_RECONNECT,
    NOTIFICATION_SEND,
    BackoffPolicy,
    RetryGaveUpError,
)


class Transient(Exception):
    pass


class Permanent(Exception):
    pass


def flaky(failures: int, calls: list[int]) -> object:
    """Fails with :class:`Transient` ``failures`` times, then returns ``"ok"``."""

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise Transient(f"try {len(calls)} failed")
        return "ok"

    return fn


POLICY = BackoffPolicy("broker connect", max_attempts=4, initial=0.5, multiplier=3.0, maximum=4.0)


def test_schedule_is_exponential_and_capped() -> None:
    # 0.5, 0.5*3, 0.5*9 = 4.5 -> capped at 4
    assert [POLICY.delay(n) for n in (1, 2, 3, 4)] == [0.5, 1.5, 4.0, 4.0]
    assert [IBKR_RECONNECT.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert BackoffPolicy("x", initial=1.0, maximum=60.0).delay(5000) == 60.0  # no overflow


def test_transient_error_retried_with_the_stated_waits() -> None:
    calls: list[int] = []
    waits: list[float] = []
    result = POLICY.call(flaky(3, calls), retry_on=Transient, sleep=waits.append)  # type: ignore[arg-type]
    assert result == "ok"
    assert len(calls) == 4
    assert waits == [0.5, 1.5, 4.0]


def test_wait_hint_overrides_the_schedule() -> None:
    class Throttled(Transient):
        def __init__(self, after: float | None) -> None:
            super().__init__("429")
            self.after = after

    hints = iter([7.0, None, 30.0])
    waits: list[float] = []
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= 3:
            raise Throttled(next(hints))
        return "sent"

    got = POLICY.call(fn, retry_on=Transient, sleep=waits.append,
                      wait_hint=lambda e: getattr(e, "after", None))
    assert got == "sent"
    assert waits == [7.0, 1.5, 30.0]  # the server's wait where given, else the schedule


def test_permanent_error_is_not_retried() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise Permanent("bad credentials")

    with pytest.raises(Permanent, match="bad credentials"):
        POLICY.call(fn, retry_on=Transient, sleep=waits.append)
    assert calls == [1]
    assert waits == []


def test_gives_up_naming_the_operation() -> None:
    calls: list[int] = []
    waits: list[float] = []
    with pytest.raises(RetryGaveUpError, match=r"^broker connect: gave up after 4 attempt\(s\): try 4 failed") as info:
        POLICY.call(flaky(10, calls), retry_on=Transient, sleep=waits.append)  # type: ignore[arg-type]
    assert info.value.operation == "broker connect"
    assert info.value.attempts == 4
    assert isinstance(info.value.__cause__, Transient)
    assert len(calls) == 4
    assert waits == [0.5, 1.5, 4.0]


def test_predicate_decides_what_is_transient() -> None:
    waits: list[float] = []
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise OSError(111 if len(calls) < 3 else 13, "refused" if len(calls) < 3 else "denied")

    with pytest.raises(OSError, match="denied"):
        POLICY.call(fn, retry_on=lambda e: isinstance(e, OSError) and e.errno == 111, sleep=waits.append)
    assert len(calls) == 3
    assert waits == [0.5, 1.5]


def test_async_retry_and_reraise() -> None:
    waits: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def fn() -> str:
        calls.append(1)
        raise Transient(f"try {len(calls)}")

    with pytest.raises(Transient, match="try 3"):  # reraise: the last error itself
        asyncio.run(BROKER_HTTP.acall(fn, retry_on=Transient, sleep=sleep, reraise=True))
    assert waits == [0.25, 0.5]


def test_async_transient_result_retried_then_returned() -> None:
    waits: list[float] = []
    released: list[int] = []
    results = iter([503, 502, 200])

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def fn() -> int:
        return next(results)

    async def release(status: int) -> None:
        released.append(status)

    policy = dataclasses.replace(BROKER_HTTP, max_attempts=3)
    got = asyncio.run(policy.acall(fn, retry_on=Transient, retry_result=lambda s: s >= 500,
                                   on_retry_result=release, sleep=sleep))
    assert got == 200
    assert released == [503, 502]
    assert waits == [0.25, 0.5]
    # exhausted on results: the last result is handed back, not an error
    results = iter([503, 503, 503])
    assert asyncio.run(policy.acall(fn, retry_on=Transient, retry_result=lambda s: s >= 500,
                                    sleep=sleep)) == 503


def test_wait_first_reconnect_schedule() -> None:
    """A reconnect waits before its first try; the schedule is the policy's, unshifted."""
    waits: list[float] = []
    calls: list[int] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    async def connect() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise Transient("gateway down")
        return "connected"

    assert asyncio.run(IBKR_RECONNECT.acall(connect, retry_on=Transient, sleep=sleep,
                                            wait_first=True)) == "connected"
    assert waits == [1.0, 2.0, 4.0, 8.0]  # before tries 1..4
    assert len(calls) == 4


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_attempts": 0}, "max_attempts"), ({"multiplier": 0.5}, "multiplier"),
     ({"initial": -1.0}, "initial"), ({"maximum": float("nan")}, "maximum")],
)
def test_bad_parameters_named(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        BackoffPolicy("notification send", **kwargs)  # type: ignore[arg-type]


def test_defaults_are_the_documented_schedules() -> None:
    assert [NOTIFICATION_SEND.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 8.0, 16.0]
    assert [BROKER_HTTP.delay(n) for n in range(1, 5)] == [0.25, 0.5, 1.0, 2.0]
