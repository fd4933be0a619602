"""Allocator states for tests and benchmarks: a bitmap or pool filled to a fraction at once.

Filling bit by bit through the allocator would take seconds for a /10; this writes whole
words, then rebuilds the summaries as Bitmap keeps them (ipam/bitmap.py).
"""

from __future__ import annotations

from array import array
from fractions import Fraction
from math import lcm

from ipam.bitmap import FULL, WORD, Bitmap
from ipam.pools import Pool


def fill_bitmap(bitmap: Bitmap, fraction: float) -> None:
    """Overwrite every bit so `fraction` of the offsets are taken, spread evenly."""
    ratio = Fraction(fraction).limit_denominator(1000)
    period = lcm(ratio.denominator, WORD)
    taken, free = ratio.numerator, ratio.denominator
    pattern = array("Q", bytes(8 * (period // WORD)))
    for bit in range(period):
        # Bresenham: bit i is taken when floor((i+1)*f) steps past floor(i*f).
        if ((bit + 1) * taken) // free != (bit * taken) // free:
            pattern[bit >> 6] |= 1 << (bit & 63)
    base = bitmap.levels[0]
    words = len(base)
    tiled = pattern * (-(-words // len(pattern)))
    base[:] = tiled[:words]
    tail = bitmap.size % WORD
    if tail:
        base[-1] &= (1 << tail) - 1
    bitmap.count = sum(word.bit_count() for word in base)
    if tail:
        base[-1] |= FULL & ~((1 << tail) - 1)
    for depth in range(1, len(bitmap.levels)):
        below, level = bitmap.levels[depth - 1], bitmap.levels[depth]
        for index in range(len(level)):
            level[index] = 0
        tail = len(below) % WORD
        if tail:
            level[-1] = FULL & ~((1 << tail) - 1)
        for index, word in enumerate(below):
            if word == FULL:
                level[index >> 6] |= 1 << (index & 63)


def fill_pool(pool: Pool, fraction: float) -> None:
    """Mark `fraction` of the pool's bitmap taken, without leases; reserved offsets stay taken."""
    fill_bitmap(pool.bitmap, fraction)
    for offset in pool.reserved:
        pool.mark(offset)


def bitmap_bytes(bitmap: Bitmap) -> int:
    """The memory of the bitmap's levels."""
    return sum(level.itemsize * len(level) for level in bitmap.levels)
