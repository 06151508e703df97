"""thin-pool and thin (dm-thin): parameters and status.  The pool's
messages are :mod:`loopcore.dm.thin_messages`."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from .base import TargetParams
from .declaration import Opt
from .kinds import DEVICE, FLAG, SECTORS, Choice, Uint
from .status import CARRIED, Fraction, TargetStatus, WordBool

__all__ = ["ThinPoolParams", "ThinParams", "ThinPoolStatus", "ThinStatus",
           "THIN_BLOCK_MIN", "THIN_BLOCK_MAX", "THIN_DEV_ID_MAX"]

# The pool's data block size: 64 KiB to 1 GiB, a multiple of 64 KiB.
THIN_BLOCK_MIN, THIN_BLOCK_MAX = 128, 2097152
# Thin device ids are 24 bits.
THIN_DEV_ID_MAX = (1 << 24) - 1


@dataclasses.dataclass(frozen=True)
class ThinPoolStatus(TargetStatus, states=("Fail", "Error")):
    """``<transaction id> <used>/<total metadata blocks> <used>/<total data
    blocks> <held metadata root|-> <rw|ro|out_of_data_space>
    <discard_passdown|no_discard_passdown|ignore_discard>
    <error_if_no_space|queue_if_no_space> <needs_check|->
    [<metadata low watermark>]``.

    Metadata blocks are 4 KiB; data blocks are the pool's block size.
    ``metadata_low_watermark`` (metadata blocks; kernels from 4.19) is None
    when the kernel does not report it.
    """

    transaction_id: Annotated[int, SECTORS]
    used_metadata_blocks: Annotated[int, Fraction("total_metadata_blocks")]
    total_metadata_blocks: Annotated[int, CARRIED]
    used_data_blocks: Annotated[int, Fraction("total_data_blocks")]
    total_data_blocks: Annotated[int, CARRIED]
    held_metadata_root: Annotated[Optional[int], Uint(dash=True)]
    mode: Annotated[str, Choice("rw", "ro", "out_of_data_space")]
    discard: Annotated[str, Choice("discard_passdown", "no_discard_passdown",
                                   "ignore_discard")]
    no_space: Annotated[str, Choice("error_if_no_space", "queue_if_no_space")]
    needs_check: Annotated[bool, WordBool("needs_check", "-")]
    metadata_low_watermark: Annotated[Optional[int], SECTORS] = None

    @property
    def read_only(self) -> bool:
        return self.mode != "rw"

    @property
    def free_data_blocks(self) -> int:
        return self.total_data_blocks - self.used_data_blocks

    @property
    def free_metadata_blocks(self) -> int:
        return self.total_metadata_blocks - self.used_metadata_blocks


@dataclasses.dataclass(frozen=True)
class ThinPoolParams(TargetParams, target_type="thin-pool", status=ThinPoolStatus,
                     options_always=True):
    """``<metadata dev> <data dev> <block sectors> <low water mark>
    <#feat> <feat>...``.

    ``low_water_blocks``: when free data blocks fall to this, the pool
    raises a device event.  The kernel writes the features with a space
    after each (and after the count), so its text ends in a space; ``str()``
    writes the same.
    """

    metadata_device: Annotated[str, DEVICE]
    data_device: Annotated[str, DEVICE]
    block_sectors: Annotated[int, Uint(THIN_BLOCK_MIN, THIN_BLOCK_MAX, multiple=THIN_BLOCK_MIN)]
    low_water_blocks: Annotated[int, SECTORS]
    skip_block_zeroing: Annotated[bool, Opt(FLAG)] = False
    ignore_discard: Annotated[bool, Opt(FLAG)] = False
    no_discard_passdown: Annotated[bool, Opt(FLAG)] = False
    read_only: Annotated[bool, Opt(FLAG)] = False
    error_if_no_space: Annotated[bool, Opt(FLAG)] = False

    def __str__(self) -> str:
        return " ".join(self.words()) + " "


@dataclasses.dataclass(frozen=True)
class ThinStatus(TargetStatus, states=("Fail", "Error", "-")):
    """``<mapped sectors> <highest mapped sector|->``: sectors with a data
    block behind them (whole pool blocks), and the last sector of the
    highest mapped block (None when nothing is mapped)."""

    mapped_sectors: Annotated[int, SECTORS]
    highest_mapped_sector: Annotated[Optional[int], Uint(dash=True)]


@dataclasses.dataclass(frozen=True)
class ThinParams(TargetParams, target_type="thin", status=ThinStatus):
    """``<pool dev> <dev id> [<external origin dev>]``: the thin volume
    ``dev_id`` of a pool (made first with the pool message
    ``create_thin``/``create_snap``, see :mod:`loopcore.dm.thin_messages`)."""

    pool_device: Annotated[str, DEVICE]
    dev_id: Annotated[int, Uint(0, THIN_DEV_ID_MAX)]
    external_origin: Annotated[Optional[str], DEVICE] = None
