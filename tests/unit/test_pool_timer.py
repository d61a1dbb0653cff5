"""The shard timer (adapters/postgres/pool_threads.Timer): its thread is woken only when a new
alarm is due before it would wake anyway, and never sleeps past a pending alarm."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from simplu_grpc.adapters.postgres.pool_threads import Timer


@pytest.fixture
def timer() -> Iterator[Timer]:
    made = Timer("test-timer")
    yield made
    made.stop()


def test_an_alarm_due_before_the_pending_ones_fires_at_its_time(timer: Timer) -> None:
    far = timer.arm(time.monotonic() + 3600, lambda: None)
    fired = threading.Event()
    timer.arm(time.monotonic() + 0.05, fired.set)
    assert fired.wait(10)
    assert not far.fired


def test_an_alarm_due_after_the_pending_one_fires_once_that_one_is_cancelled(timer: Timer) -> None:
    first = threading.Event()
    early = timer.arm(time.monotonic() + 0.2, first.set)
    second = threading.Event()
    timer.arm(time.monotonic() + 0.3, second.set)
    early.cancel()
    assert second.wait(10)
    assert not first.is_set()


def test_alarms_armed_while_the_thread_waits_for_work_fire(timer: Timer) -> None:
    # The heap empties (every alarm cancelled): the thread then waits for a notify.
    for _ in range(3):
        timer.arm(time.monotonic() + 0.01, lambda: None).cancel()
    time.sleep(0.1)
    fired = threading.Event()
    timer.arm(time.monotonic() + 0.01, fired.set)
    assert fired.wait(10)
    assert timer.pending() == 0
