"""Bitmaps of one bit per region, as the kernel's disk log lays them out:
bit ``r`` is bit ``r & 7`` of byte ``r >> 3``, padded to 64 bits.  Plain
bytes (a ``bytearray``, or a memoryview of the C buffers a log's state
lives in), so that C answers from the same buffers."""
from __future__ import annotations

import re
from typing import Union

__all__ = ["nbytes", "full", "test", "set_bit", "clear_bit", "next_zero", "popcount"]

#: a bitmap: a bytearray or a (writable, format "B") memoryview
Bits = Union[bytearray, memoryview]

_NOT_FF = re.compile(rb"[^\xff]")
_POPCOUNT = bytes(bin(i).count("1") for i in range(256))


def nbytes(bit_count: int) -> int:
    """Bytes of a bitmap of ``bit_count`` bits: rounded up to 64 bits."""
    return (bit_count + 63) // 64 * 8


def full(bit_count: int) -> bytearray:
    """A bitmap with its first ``bit_count`` bits set and the padding clear."""
    bits = bytearray(b"\xff") * (bit_count >> 3)
    if bit_count & 7:
        bits.append((1 << (bit_count & 7)) - 1)
    bits += bytes(nbytes(bit_count) - len(bits))   # in place: no second copy
    return bits


def test(bits: Bits, r: int) -> bool:
    """Bit ``r``."""
    return bool(bits[r >> 3] >> (r & 7) & 1)


def set_bit(bits: Bits, r: int) -> None:
    """Set bit ``r``."""
    bits[r >> 3] |= 1 << (r & 7)


def clear_bit(bits: Bits, r: int) -> None:
    """Clear bit ``r``."""
    bits[r >> 3] &= ~(1 << (r & 7)) & 0xFF


def next_zero(bits: Bits, start: int, limit: int) -> int:
    """The first zero bit at or after ``start``; ``limit`` if none before it."""
    i = start >> 3
    if i >= len(bits):
        return limit
    byte = bits[i] | ((1 << (start & 7)) - 1)
    if byte == 0xFF:
        m = _NOT_FF.search(bits, i + 1)  # the scan runs in C
        if m is None:
            return limit
        i = m.start()
        byte = bits[i]
    return min(i * 8 + ((~byte & (byte + 1)).bit_length() - 1), limit)


def popcount(bits: Bits) -> int:
    """The number of bits set."""
    # a byte-wise table, a piece at a time: no transient copy of the bitmap
    step = 16384
    return sum(sum(bytes(bits[i:i + step]).translate(_POPCOUNT))
               for i in range(0, len(bits), step))
