"""The address bitmap against a plain-set model, plus its size and search-cost guarantees."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipam.bitmap import Bitmap
from testkit.ipam import bitmap_bytes, fill_bitmap


def model_next_free(taken: set[int], start: int, low: int, high: int) -> int | None:
    if not low <= start < high:
        start = low
    for offset in [*range(start, high), *range(low, start)]:
        if offset not in taken:
            return offset
    return None


@settings(max_examples=200, deadline=None)
@given(
    size=st.sampled_from([1, 2, 63, 64, 65, 200, 4096, 4097, 64 * 64 * 3 + 5]),
    ops=st.lists(st.tuples(st.booleans(), st.integers(min_value=0)), max_size=300),
    probes=st.lists(st.integers(min_value=0), max_size=20),
)
def test_bitmap_matches_a_set_model(size, ops, probes):
    bitmap, taken = Bitmap(size), set()
    for is_set, raw in ops:
        offset = raw % size
        if is_set:
            assert bitmap.set(offset) == (offset not in taken)
            taken.add(offset)
        else:
            assert bitmap.clear(offset) == (offset in taken)
            taken.discard(offset)
    assert bitmap.count == len(taken)
    for raw in probes:
        start = raw % size
        expected = min((o for o in range(start, size) if o not in taken), default=None)
        assert bitmap.first_free(start) == expected
        low = raw % size
        high = low + 1 + (raw // size) % (size - low)
        assert bitmap.next_free(start, low, high) == model_next_free(taken, start, low, high)


def test_full_bitmap_has_no_free_offset_and_padding_never_leaks():
    bitmap = Bitmap(130)  # 3 words at level 0, last one mostly padding
    for offset in range(130):
        bitmap.set(offset)
    assert bitmap.first_free(0) is None
    assert bitmap.next_free(77) is None
    bitmap.clear(129)
    assert bitmap.first_free(0) == 129
    assert bitmap.next_free(5, 0, 129) is None


def test_search_across_full_words_crosses_summary_levels():
    size = 64**3
    bitmap = Bitmap(size)
    fill_bitmap(bitmap, 1.0)
    assert bitmap.count == size
    bitmap.clear(size - 1)
    bitmap.clear(7)
    assert bitmap.first_free(8) == size - 1
    assert bitmap.next_free(8) == size - 1
    bitmap.set(size - 1)
    assert bitmap.next_free(8) == 7  # wraps
    bitmap.clear(7)
    assert bitmap.set(7)
    assert bitmap.first_free(0) is None


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.99, 1.0])
def test_fill_takes_the_requested_fraction_evenly(fraction):
    bitmap = Bitmap(10_000)
    fill_bitmap(bitmap, fraction)
    assert bitmap.count == sum(bitmap.is_set(o) for o in range(10_000))
    assert abs(bitmap.count - fraction * 10_000) <= 64
    # Evenly spread: every window of 1000 has about the same fill.
    for start in range(0, 10_000, 1000):
        taken = sum(bitmap.is_set(o) for o in range(start, start + 1000))
        assert abs(taken - fraction * 1000) <= 10
    # The summaries agree with the bits after a bulk fill.
    free = [o for o in range(10_000) if not bitmap.is_set(o)]
    assert bitmap.first_free(0) == (free[0] if free else None)


def test_a_slash_10_stays_under_one_mebibyte():
    bitmap = Bitmap(1 << 22)
    assert bitmap_bytes(bitmap) < 600 * 1024


class CountingArray:
    """Wraps a level array and counts word reads, to show search cost does not grow with fill."""

    def __init__(self, inner, counter):
        self.inner, self.counter = inner, counter

    def __getitem__(self, index):
        self.counter[0] += 1
        return self.inner[index]

    def __len__(self):
        return len(self.inner)


def words_read_for_search(size: int, fraction: float) -> int:
    bitmap = Bitmap(size)
    fill_bitmap(bitmap, fraction)
    counter = [0]
    bitmap.levels = [CountingArray(level, counter) for level in bitmap.levels]
    # Worst case: search from just past the only free area.
    bitmap.first_free(1)
    bitmap.next_free(size - 1)
    return counter[0]


def test_search_reads_a_bounded_number_of_words_whatever_the_fill():
    for size in (256, 1 << 16, 1 << 22):
        reads = [words_read_for_search(size, f) for f in (0.0, 0.5, 0.99, 1.0)]
        assert max(reads) <= 4 * 4  # two searches of at most 2 * levels reads each, levels <= 4
    # Completely full but for the last offset: still bounded.
    bitmap = Bitmap(1 << 22)
    fill_bitmap(bitmap, 1.0)
    bitmap.clear((1 << 22) - 1)
    counter = [0]
    bitmap.levels = [CountingArray(level, counter) for level in bitmap.levels]
    assert bitmap.first_free(0) == (1 << 22) - 1
    assert counter[0] <= 8


def test_out_of_range_offsets_are_refused():
    bitmap = Bitmap(10)
    with pytest.raises(IndexError):
        bitmap.set(10)
    with pytest.raises(IndexError):
        bitmap.clear(-1)
    with pytest.raises(ValueError):
        Bitmap(0)
    with pytest.raises(ValueError):
        bitmap.next_free(0, 5, 5)
