"""Properties of the partition table reader (hypothesis): on arbitrary
bytes and on mutated valid tables (bad CRCs, overlapping and out-of-disk
entries, loops in extended chains, huge counts, 512- and 4096-byte
sectors) it returns a table or None or raises PartitionTableError, nothing
else; every partition it returns lies inside the device and has a number
the kernel's parsers would give (1 to 255); it reads a bounded amount."""
from __future__ import annotations

import struct
import zlib

from hypothesis import event, given
from hypothesis import strategies as st

from fuzz_targets import check_reading
from partition_images import MBR_ENTRY, Image, ebr_chain_image, gpt_image, mbr_sector
from properties import examples

SECTORS = st.sampled_from([512, 4096])


@examples(300)
@given(st.binary(min_size=0, max_size=4096), SECTORS, st.integers(0, 1 << 40))
def test_arbitrary_bytes(image, sector, size):
    event(check_reading(image, sector, size))


MBR_ENTRIES = st.lists(st.tuples(st.sampled_from([0, 0x80]) | st.integers(0, 255),
                                 st.sampled_from([0x83, 0x05, 0x0F, 0x85, 0xEE]) |
                                 st.integers(0, 255),
                                 st.integers(0, 2 ** 32 - 1), st.integers(0, 2 ** 32 - 1)),
                       max_size=4)


@examples(300)
@given(MBR_ENTRIES, st.binary(max_size=2048), SECTORS, st.integers(0, 1 << 44))
def test_arbitrary_mbr_entries(entries, rest, sector, size):
    # an MBR of arbitrary entries, then arbitrary bytes (EBRs, GPT headers)
    event(check_reading(mbr_sector(entries) + rest, sector, size))


def _refresh_crcs(image: bytearray, sector: int) -> None:
    """Recompute the primary header's CRCs after a mutation of its fields,
    so that the mutation is what the reader sees (not just a bad CRC)."""
    at = sector
    header = bytearray(image[at:at + 92])
    count, entry_size = struct.unpack_from("<II", header, 80)
    entries_lba = struct.unpack_from("<Q", header, 72)[0]
    start = entries_lba * sector
    array = image[start:start + count * entry_size] if count * entry_size < 1 << 22 else b""
    struct.pack_into("<I", header, 88, zlib.crc32(array))
    struct.pack_into("<I", header, 16, 0)
    struct.pack_into("<I", header, 16, zlib.crc32(header[:92]))
    image[at:at + 92] = header


GPT_FIELDS = [(24, "Q"), (32, "Q"), (40, "Q"), (48, "Q"), (72, "Q"), (80, "I"), (84, "I"),
              (12, "I")]


@st.composite
def mutated_gpt(draw: st.DrawFn):
    sector = draw(SECTORS)
    size = sector * draw(st.integers(64, 2048))
    last = size // sector - 1
    entries = draw(st.lists(st.tuples(st.integers(0, 127), st.integers(0, last + 50),
                                      st.integers(0, last + 50)), max_size=6))
    image = gpt_image(size, entries, sector=sector, backup=draw(st.booleans()))
    for _ in range(draw(st.integers(0, 4))):
        what = draw(st.sampled_from(["field", "byte", "pmbr"]))
        if what == "field":
            offset, fmt = draw(st.sampled_from(GPT_FIELDS))
            value = draw(st.one_of(st.integers(0, 2 ** (8 * struct.calcsize(fmt)) - 1),
                                   st.sampled_from([0, 1, 2, 127, 128, 256, 257, last,
                                                    last + 1, 2 ** 32 - 1])))
            struct.pack_into("<" + fmt, image, sector + offset, value % 2 ** (
                8 * struct.calcsize(fmt)))
            if draw(st.booleans()):
                _refresh_crcs(image, sector)
        elif what == "byte":
            at = draw(st.integers(0, min(len(image), 40 * sector) - 1))
            image[at] = draw(st.integers(0, 255))  # a bad CRC, most likely
        else:
            image[446:462] = MBR_ENTRY.pack(0, b"", 0xEE, b"", draw(st.integers(0, 3)),
                                            draw(st.integers(0, 2 ** 32 - 1)))
    return Image(image), sector, draw(st.sampled_from([size, size // 2, size + sector]))


@examples(300)
@given(mutated_gpt())
def test_mutated_gpt(case):
    image, sector, size = case
    event(check_reading(image, sector, size))


@st.composite
def mutated_mbr(draw: st.DrawFn):
    sector = draw(SECTORS)
    image = ebr_chain_image(draw(st.integers(1, 8)), sector=sector)
    primaries = draw(st.lists(st.tuples(st.sampled_from([0, 0x80, 0x7f]),
                                        st.sampled_from([0x83, 0x05, 0x0F, 0x85, 0x07, 0]),
                                        st.integers(0, 2 ** 32 - 1),
                                        st.integers(0, 2 ** 32 - 1)), max_size=3))
    head = bytearray(image[:512])
    for slot, entry in enumerate(primaries, 1):
        MBR_ENTRY.pack_into(head, 446 + 16 * slot, entry[0], b"", entry[1], b"", entry[2],
                            entry[3])
    image[:512] = head
    # EBR links anywhere: back to an earlier record (a loop), past the end
    for _ in range(draw(st.integers(0, 4))):
        n = draw(st.integers(0, 7))
        at = (2048 + 2 * n) * sector
        if at + 512 > len(image):
            continue
        link = draw(st.integers(0, 40)) if draw(st.booleans()) else draw(
            st.integers(0, 2 ** 32 - 1))
        image[at:at + 512] = mbr_sector([(0, 0x83, draw(st.integers(0, 4)),
                                          draw(st.integers(0, 2 ** 32 - 1))),
                                         (0, draw(st.sampled_from([0x05, 0x0F, 0x85])), link,
                                          draw(st.integers(0, 2 ** 32 - 1)))])
    size = len(image) if draw(st.booleans()) else draw(st.integers(0, 1 << 44))
    return Image(image), sector, size


@examples(300)
@given(mutated_mbr())
def test_mutated_mbr_and_extended_chains(case):
    image, sector, size = case
    event(check_reading(image, sector, size))


def test_a_chain_of_ebrs_looping_on_itself_ends():
    # each EBR links back to the first: the walk stops (seen records)
    image = ebr_chain_image(2)
    at = (2048 + 2) * 512
    image[at:at + 512] = mbr_sector([(0, 0x83, 1, 1), (0, 0x05, 0, 2)])
    assert check_reading(image, 512, len(image)) == "dos with some partitions"
