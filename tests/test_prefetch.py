import threading

import pytest

from corpusfilter.prefetch import prefetch


def test_items_in_order_and_errors_where_they_happened() -> None:
    def gen():  # type: ignore[no-untyped-def]
        yield 1
        yield 2
        raise ValueError("bad shard")

    it = prefetch(gen())
    assert next(it) == 1 and next(it) == 2
    with pytest.raises(ValueError, match="bad shard"):
        next(it)


def test_stopping_early_stops_the_producer() -> None:
    produced = []

    def gen():  # type: ignore[no-untyped-def]
        for i in range(1000):
            produced.append(i)
            yield i

    it = prefetch(gen(), depth=2)
    assert next(it) == 0
    it.close()
    assert len(produced) < 10
    assert not any(t.name == "corpusfilter-prefetch" and t.is_alive() for t in threading.enumerate())
