"""The background reader of inference chunks: order, errors, early close."""

import threading
import time

import pytest

from abmilx.patches.data import prefetch


def test_items_come_in_order_and_are_produced_ahead():
    produced = []

    def items():
        for i in range(6):
            produced.append(i)
            yield i

    stream = prefetch(items(), depth=2)
    assert next(stream) == 0
    time.sleep(0.2)
    assert len(produced) >= 3  # the reader ran ahead of the consumer, up to the queue depth
    assert list(stream) == [1, 2, 3, 4, 5]


def test_a_reader_error_reaches_the_consumer_after_the_items_before_it():
    def items():
        yield 1
        yield 2
        raise ValueError("patch 7 of slide 's' is not a JPEG")

    seen = []
    with pytest.raises(ValueError, match="not a JPEG"):
        for item in prefetch(items()):
            seen.append(item)
    assert seen == [1, 2]


def test_closing_early_stops_the_reader():
    def items():
        i = 0
        while True:
            yield i
            i += 1

    before = threading.active_count()
    stream = prefetch(items(), depth=1)
    assert next(stream) == 0
    stream.close()
    deadline = time.monotonic() + 5
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before
