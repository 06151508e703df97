"""integrity (dm-integrity): parameters and status."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from .base import TargetParams
from .declaration import Opt
from .kinds import DEVICE, FLAG, SECTORS, Choice, Uint, Word
from .status import TargetStatus

__all__ = ["IntegrityParams", "IntegrityStatus"]

# "<algorithm>[:<hex key>]"
_ALG = Opt(Word(r"[^:]+(?::(?:[0-9a-fA-F]{2})*)?", "'<algorithm>[:<hex key>]'"), "colon")
_NUMBER = Opt(SECTORS, "colon")
_FLAG = Opt(FLAG)


@dataclasses.dataclass(frozen=True)
class IntegrityStatus(TargetStatus):
    """``<mismatches> <provided data sectors> <recalculating sector|->``:
    integrity mismatches seen, sectors the device offers above its tags
    and journal, and how far a recalculation got (None when none runs)."""

    mismatches: Annotated[int, SECTORS]
    provided_data_sectors: Annotated[int, SECTORS]
    recalculating_sector: Annotated[Optional[int], Uint(dash=True)]


@dataclasses.dataclass(frozen=True)
class IntegrityParams(TargetParams, target_type="integrity", status=IntegrityStatus,
                      options_always=True):
    """``<device> <offset> <tag size> <J|B|D|R> <#opt> <opt>...``.

    ``mode``: J (journal), B (bitmap), D (direct, no journal), R (recovery,
    read-only, no checks).  Options are None/False when not given, and
    written in the kernel's order (dm-integrity's status function);
    ``internal_hash``, ``journal_crypt``, ``journal_mac`` are
    ``"<algorithm>"`` or ``"<algorithm>:<hex key>"`` (the key is shown as
    zeros in the kernel's table output, and hidden by ``repr()``).
    """

    device: Annotated[str, DEVICE]
    offset: Annotated[int, SECTORS]
    tag_size: Annotated[int, Uint(0, (1 << 32) - 1)]
    mode: Annotated[str, Choice("J", "B", "D", "R")] = "J"
    meta_device: Annotated[Optional[str], Opt(DEVICE, "colon")] = None
    block_size: Annotated[Optional[int], Opt(Uint(512, 4096, power_of_two=True),
                                             "colon")] = None
    recalculate: Annotated[bool, _FLAG] = False
    reset_recalculate: Annotated[bool, _FLAG] = False
    allow_discards: Annotated[bool, _FLAG] = False
    journal_sectors: Annotated[Optional[int], _NUMBER] = None
    interleave_sectors: Annotated[Optional[int], _NUMBER] = None
    buffer_sectors: Annotated[Optional[int], _NUMBER] = None
    journal_watermark: Annotated[Optional[int], _NUMBER] = None
    commit_time: Annotated[Optional[int], _NUMBER] = None
    sectors_per_bit: Annotated[Optional[int], _NUMBER] = None
    bitmap_flush_interval: Annotated[Optional[int], _NUMBER] = None
    fix_padding: Annotated[bool, _FLAG] = False
    fix_hmac: Annotated[bool, _FLAG] = False
    legacy_recalculate: Annotated[bool, _FLAG] = False
    internal_hash: Annotated[Optional[str], _ALG] = dataclasses.field(default=None, repr=False)
    journal_crypt: Annotated[Optional[str], _ALG] = dataclasses.field(default=None, repr=False)
    journal_mac: Annotated[Optional[str], _ALG] = dataclasses.field(default=None, repr=False)
