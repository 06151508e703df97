"""crypt (dm-crypt): parameters; its status is empty."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Optional

from ... import errors
from .base import TargetParams
from .declaration import Opt
from .kinds import DEVICE, FLAG, SECTORS, Uint, Word
from .status import EmptyStatus

__all__ = ["CryptParams"]

_KEY = Word(r"-|[0-9a-fA-F]+|:[0-9]+:(?:logon|user|encrypted|trusted):\S+",
            "hex digits, '-' or a keyring reference ':<size>:<type>:<description>'")


@dataclasses.dataclass(frozen=True)
class CryptParams(TargetParams, target_type="crypt", status=EmptyStatus):
    """``<cipher> <key> <iv_offset> <device> <offset> [<#opt> <opt>...]``.

    ``key``: hex digits, ``"-"`` for none (``cipher_null``), or a kernel
    keyring reference ``:<size>:<logon|user|encrypted|trusted>:<description>``.
    ``repr()`` hides the key; ``str()`` holds it (that is what gets loaded),
    and the kernel's ``table`` output shows it as zeros unless asked to show
    keys.  ``integrity``: ``"<tag bytes>:<aead|hmac(...)>"``.
    """

    cipher: Annotated[str, Word()]
    # hex digits of any count: the kernel's masked output writes a "-" key as "0" too
    key: Annotated[str, _KEY] = dataclasses.field(repr=False)
    iv_offset: Annotated[int, SECTORS]
    device: Annotated[str, DEVICE]
    offset: Annotated[int, SECTORS]
    allow_discards: Annotated[bool, Opt(FLAG)] = False
    same_cpu_crypt: Annotated[bool, Opt(FLAG)] = False
    submit_from_crypt_cpus: Annotated[bool, Opt(FLAG)] = False
    no_read_workqueue: Annotated[bool, Opt(FLAG)] = False
    no_write_workqueue: Annotated[bool, Opt(FLAG)] = False
    integrity: Annotated[Optional[str], Opt(Word(r"[0-9]+:\S+", "'<tag bytes>:<type>'"),
                                            "colon")] = None
    sector_size: Annotated[int, Opt(Uint(512, 4096, power_of_two=True), "colon")] = 512
    iv_large_sectors: Annotated[bool, Opt(FLAG)] = False

    def check(self) -> None:
        if self.iv_offset % (self.sector_size // 512):
            raise errors.ValueError(f"iv_offset must be a multiple of sector_size "
                                    f"({self.sector_size // 512} sectors)")
