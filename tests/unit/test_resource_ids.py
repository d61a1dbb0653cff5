"""Unit tests: server-generated resource ids are time-sortable, unique and valid ids."""

from __future__ import annotations

import threading

from simplu_grpc.domain.resources.ids import (
    ID_LENGTH,
    ID_PATTERN,
    IdGenerator,
    id_timestamp_ms,
    new_resource_id,
)


def test_ids_are_valid_resource_ids_of_fixed_length() -> None:
    """A generated id has 26 Crockford base32 characters and passes the id rule of DESIGN §4."""
    resource_id = new_resource_id()
    assert len(resource_id) == ID_LENGTH
    assert ID_PATTERN.fullmatch(resource_id)


def test_ids_sort_in_creation_order_across_milliseconds() -> None:
    """Ids from later milliseconds sort after earlier ones, and encode their timestamp."""
    now = [1_700_000_000_000]
    generator = IdGenerator(clock=lambda: now[0])
    first = generator.new_id()
    now[0] += 1
    second = generator.new_id()
    assert first < second
    assert id_timestamp_ms(first) == 1_700_000_000_000
    assert id_timestamp_ms(second) == 1_700_000_000_001


def test_ids_within_one_millisecond_are_strictly_increasing() -> None:
    """Many ids in the same millisecond (and a clock stepping back) still increase strictly."""
    ticks = iter([5_000] * 500 + [4_000] * 10)
    generator = IdGenerator(clock=lambda: next(ticks))
    ids = [generator.new_id() for _ in range(510)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_ids_are_unique_across_threads() -> None:
    """Concurrent generation from 8 threads produces no duplicate."""
    found: list[str] = []
    lock = threading.Lock()

    def work() -> None:
        batch = [new_resource_id() for _ in range(2_000)]
        with lock:
            found.extend(batch)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(found)) == 16_000


def test_random_part_overflow_moves_to_the_next_millisecond() -> None:
    """When the random part would overflow, the id borrows the next millisecond instead of wrapping."""
    generator = IdGenerator(clock=lambda: 10, randbits=lambda bits: (1 << bits) - 1)
    first = generator.new_id()
    generator._last_random = (1 << 80) - 1  # force the overflow path
    second = generator.new_id()
    assert first < second
    assert id_timestamp_ms(second) == 11
