"""An address bitmap over offsets [0, size) with a 64-ary "word is full" summary tree.

Level 0 holds one bit per offset (1 = taken). Level k+1 holds one bit per word of level k,
set when that word is full. Searching for a free offset therefore never scans runs of full
words: it climbs until a summary word shows a non-full child, then descends, so "first free
offset at or after N" costs O(log64 size) whatever the fill. Memory is size/8 bytes plus
~1/63 of that for the summaries: a /10 (4 Mi offsets) is 512 KiB + 8 KiB.

Padding bits past the end of each level are kept set, so the last, partial word looks full
when all its real bits are taken and no search ever returns an offset >= size.

Offsets, not addresses: the caller maps an address to `int(addr) - int(base)`, which keeps the
same structure usable for an IPv6 allocation window later.
"""

from __future__ import annotations

from array import array

WORD = 64
FULL = (1 << WORD) - 1


def _lowest_zero(word: int) -> int:
    inverted = ~word & FULL
    return (inverted & -inverted).bit_length() - 1


class Bitmap:
    __slots__ = ("count", "levels", "size")

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError("bitmap size must be positive")
        self.size = size
        self.count = 0  # taken offsets (padding not included)
        self.levels: list[array[int]] = []  # [0]: a bit per offset; [k+1]: full words of [k]
        bits = size
        while True:
            words = -(-bits // WORD)
            level = array("Q", bytes(8 * words))
            tail = bits % WORD
            if tail:
                level[-1] = FULL & ~((1 << tail) - 1)  # padding past the end reads as taken
            self.levels.append(level)
            if words == 1:
                break
            bits = words

    def is_set(self, offset: int) -> bool:
        self._check(offset)
        return bool(self.levels[0][offset >> 6] >> (offset & 63) & 1)

    def set(self, offset: int) -> bool:
        """Mark `offset` taken; returns False if it already was."""
        self._check(offset)
        index = offset
        for level in self.levels:
            word_index, bit = index >> 6, 1 << (index & 63)
            word = level[word_index]
            if word & bit:
                if level is self.levels[0]:
                    return False
                break
            word |= bit
            level[word_index] = word
            if level is self.levels[0]:
                self.count += 1
            if word != FULL:
                break  # the parent's "full" bit is unchanged
            index = word_index
        return True

    def clear(self, offset: int) -> bool:
        """Mark `offset` free; returns False if it already was."""
        self._check(offset)
        index = offset
        for level in self.levels:
            word_index, bit = index >> 6, 1 << (index & 63)
            word = level[word_index]
            if not word & bit:
                if level is self.levels[0]:
                    return False
                break
            level[word_index] = word & ~bit
            if level is self.levels[0]:
                self.count -= 1
            if word != FULL:
                break  # it was not full before, so the parent's bit was already clear
            index = word_index
        return True

    def first_free(self, start: int = 0) -> int | None:
        """The lowest free offset >= start, or None. O(levels)."""
        if start >= self.size:
            return None
        index = max(start, 0)
        depth = 0
        # Climb: at each level look in the current word above `index`; if nothing is free
        # there, continue with the next word, one level up.
        while True:
            level = self.levels[depth]
            word_index = index >> 6
            if word_index >= len(level):
                return None
            word = level[word_index] | ((1 << (index & 63)) - 1)
            if word != FULL:
                index = (word_index << 6) + _lowest_zero(word)
                break
            if depth + 1 == len(self.levels):
                return None
            index = word_index + 1
            depth += 1
        # Descend: a clear bit at level d names a non-full word at level d-1.
        while depth > 0:
            depth -= 1
            index = (index << 6) + _lowest_zero(self.levels[depth][index])
        return index

    def next_free(self, start: int, low: int = 0, high: int | None = None) -> int | None:
        """The first free offset in [low, high) at or after `start`, wrapping to `low`."""
        high = self.size if high is None else high
        if not 0 <= low < high <= self.size:
            raise ValueError(f"bad window [{low}, {high}) for size {self.size}")
        if not low <= start < high:
            start = low
        found = self.first_free(start)
        if found is not None and found < high:
            return found
        found = self.first_free(low)
        if found is not None and found < high:
            return found
        return None

    def take_all(self) -> None:
        """Mark every offset taken, word at a time: cluster mode then frees only the offsets
        of the blocks this host owns (ipam.cluster)."""
        for level in self.levels:
            level[:] = array("Q", [FULL]) * len(level)
        self.count = self.size

    def _check(self, offset: int) -> None:
        if not 0 <= offset < self.size:
            raise IndexError(f"offset {offset} outside [0, {self.size})")
