"""verity (dm-verity): parameters and status."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from ... import errors
from .base import TargetParams
from .declaration import Opt
from .kinds import DEVICE, FLAG, SECTORS, Choice, Hex, Uint, Word
from .status import TargetStatus, WordBool

__all__ = ["VerityParams", "VerityStatus"]

_BLOCK_SIZE = Uint(512, 1 << 30, power_of_two=True)


@dataclasses.dataclass(frozen=True)
class VerityStatus(TargetStatus):
    """``V`` (verified so far) or ``C`` (a corrupted block was found);
    later kernels (6.4+) add the blocks corrected by forward error
    correction, or ``-`` without it (``fec_corrected`` None then, and on
    kernels that do not report it)."""

    corrupted: Annotated[bool, WordBool("C", "V")]
    fec_corrected: Annotated[Optional[int], Uint(dash=True)] = None


@dataclasses.dataclass(frozen=True)
class VerityParams(TargetParams, target_type="verity", status=VerityStatus):
    """``<version> <data dev> <hash dev> <data block size> <hash block size>
    <#data blocks> <hash start block> <algorithm> <root digest> <salt|->
    [<#opt> <opt>...]``.

    ``salt`` is hex ("" for none, written ``-``); ``mode`` is None (EIO on
    corruption) or ignore/restart/panic_on_corruption, ``error_mode`` None
    or restart/panic_on_error (I/O errors, Linux 6.12+); the forward error
    correction device comes with all four ``fec_*`` fields.  Options are
    written in the kernel's order.
    """

    version: Annotated[int, Uint(0, 1)]
    data_device: Annotated[str, DEVICE]
    hash_device: Annotated[str, DEVICE]
    data_block_size: Annotated[int, _BLOCK_SIZE]
    hash_block_size: Annotated[int, _BLOCK_SIZE]
    data_blocks: Annotated[int, SECTORS]
    hash_start_block: Annotated[int, SECTORS]
    algorithm: Annotated[str, Word()]
    root_digest: Annotated[str, Hex()]
    salt: Annotated[str, Hex(empty=True)] = ""
    mode: Annotated[Optional[str], Opt(Choice("ignore_corruption", "restart_on_corruption",
                                              "panic_on_corruption"), "value")] = None
    error_mode: Annotated[Optional[str], Opt(Choice("restart_on_error", "panic_on_error"),
                                             "value")] = None
    ignore_zero_blocks: Annotated[bool, Opt(FLAG)] = False
    check_at_most_once: Annotated[bool, Opt(FLAG)] = False
    try_verify_in_tasklet: Annotated[bool, Opt(FLAG)] = False
    fec_device: Annotated[Optional[str], Opt(DEVICE, "pair", "use_fec_from_device")] = None
    fec_blocks: Annotated[Optional[int], Opt(SECTORS, "pair")] = None
    fec_start: Annotated[Optional[int], Opt(SECTORS, "pair")] = None
    fec_roots: Annotated[Optional[int], Opt(Uint(2, 24), "pair")] = None
    root_hash_sig_key_desc: Annotated[Optional[str], Opt(Word(), "pair")] = None

    def check(self) -> None:
        fec = (self.fec_device, self.fec_blocks, self.fec_start, self.fec_roots)
        if any(f is not None for f in fec) and any(f is None for f in fec):
            raise errors.ValueError("forward error correction needs fec_device, "
                                    "fec_blocks, fec_start and fec_roots")
