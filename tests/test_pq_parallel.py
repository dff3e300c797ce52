"""The ordered thread map that spreads PQ's images over threads."""

from __future__ import annotations

import threading
import time

import pytest

from oanet.parallel import ordered_thread_map


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name)]


@pytest.mark.parametrize("workers, chunk", [(1, 1), (2, 1), (3, 4), (8, 5)])
def test_values_come_in_the_order_of_the_items(workers, chunk):
    def slow_square(x: int) -> int:
        time.sleep(0.002 * (x % 3))  # later items often finish first
        return x * x

    assert list(ordered_thread_map(slow_square, range(23), workers, chunk, name="t-order")) == [x * x for x in range(23)]
    assert list(ordered_thread_map(slow_square, [], workers, chunk, name="t-order")) == []
    assert not _threads("t-order")


def test_the_first_failing_item_in_order_raises_and_work_stops():
    started = []

    def work(x: int) -> int:
        started.append(x)
        if x in (7, 3):
            time.sleep(0.05 if x == 3 else 0.0)  # 7 fails first in time, 3 is first in order
            raise ValueError(f"item {x}")
        time.sleep(0.002)
        return x

    values = []
    with pytest.raises(ValueError, match="item 3"):
        for value in ordered_thread_map(work, range(200), 2, 1, name="t-fail"):
            values.append(value)
    assert values == [0, 1, 2]
    assert max(started) < 100  # no item after the failing one started once it failed (all: 199)
    assert not _threads("t-fail")


def test_closing_the_generator_early_joins_the_threads():
    values = ordered_thread_map(lambda x: x, range(1000), 2, 3, name="t-close")
    assert next(values) == 0
    values.close()
    assert not _threads("t-close")
