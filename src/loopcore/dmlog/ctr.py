"""The CTR string of a userspace log: parsed and checked, and its log
device resolved to a path to open."""
from __future__ import annotations

import os
import re
from typing import NamedTuple, Optional

from .. import _sysfs, errors

__all__ = ["LogArgs", "parse_ctr", "resolve_device", "MAX_REGIONS"]

#: Largest region count accepted (256 MiB per bitmap; a petabyte mirror of
#: 512 KiB regions).  The CTR string comes from the kernel, but a garbage
#: one must not make the server allocate without bound.
MAX_REGIONS = 1 << 31

_SYNC_WORDS = ("sync", "nosync")


class LogArgs(NamedTuple):
    """A parsed CTR string: ``<len> clustered-core <region_size> [sync|nosync]
    [block_on_error]`` or ``<len> clustered-disk <dev> <region_size> ...``."""

    length: int           # target length in sectors (the kernel prepends it)
    kind: str             # "clustered-core" or "clustered-disk"
    device: Optional[str]  # the log device as written in the table
    region_size: int      # sectors
    sync: str             # "default", "sync" or "nosync"
    block_on_error: bool  # a pre-2.6.22 leftover, accepted and ignored
    text: str             # the string without its NUL: what a duplicate CTR repeats

    @property
    def region_count(self) -> int:
        """``ceil(len / region_size)``, the kernel's formula."""
        return -(-self.length // self.region_size)


def _decimal(what: str, word: str) -> int:
    """The number ``word`` writes in decimal digits, as the kernel's %llu
    does (the text is ASCII by now): not int()'s "+8" or "1_024", which
    would make a duplicate CTR look like other arguments."""
    if not word.isdigit() or len(word) > 20:
        raise errors.ValueError(f"{what} {word[:40]!r} is not a number")
    return int(word)


def parse_ctr(data: bytes) -> LogArgs:
    """The CTR payload, checked (errors.ValueError saying what is wrong).

    The first CTR of a table load has no terminating NUL; the one the kernel
    sends when it reconnects to a restarted server has one: both parse the
    same.  The region size must be a power of two from 2 to the target
    length: dm-region-hash uses it as a shift and the userspace log does not
    check it itself.
    """
    raw = data[:-1] if data.endswith(b"\0") else data
    if b"\0" in raw:
        raise errors.ValueError("CTR string contains NUL")
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise errors.ValueError("CTR string is not ASCII") from None
    words = text.split()
    if len(words) < 3:
        raise errors.ValueError(f"CTR needs '<len> <type> <args>', got {text!r}")
    length = _decimal("CTR length", words[0])
    kind = words[1]
    if kind == "clustered-core":
        device, rest = None, words[2:]
    elif kind == "clustered-disk":
        if len(words) < 4:
            raise errors.ValueError(f"clustered-disk needs <dev> <region_size>: {text!r}")
        device, rest = words[2], words[3:]
    else:
        raise errors.ValueError(f"unknown log type {kind!r} (clustered-core or clustered-disk)")
    region_size = _decimal("region size", rest[0])
    sync, block_on_error = "default", False
    for word in rest[1:]:
        if word in _SYNC_WORDS and sync == "default":
            sync = word
        elif word == "block_on_error" and not block_on_error:
            block_on_error = True
        else:
            raise errors.ValueError(f"unexpected log argument {word!r} in {text!r}")
    if length < 1:
        raise errors.ValueError(f"target length {length} must be positive")
    if region_size < 2 or region_size & (region_size - 1) or region_size > length:
        raise errors.ValueError(f"region size {region_size} must be a power of two "
                                f"from 2 to the target length {length}")
    args = LogArgs(length, kind, device, region_size, sync, block_on_error, " ".join(words))
    if args.region_count > MAX_REGIONS:
        raise errors.ValueError(f"{args.region_count} regions (at most {MAX_REGIONS})")
    return args


def resolve_device(device: str) -> str:
    """A path to open for the table's log device: a path as is, ``MAJ:MIN``
    through its kernel name (``/dev/loop2``) or ``/dev/block/MAJ:MIN``."""
    m = re.fullmatch(r"(\d+):(\d+)", device)
    if not m:
        return device
    name = _sysfs.block_name(os.makedev(int(m[1]), int(m[2])))
    if name is not None:
        path = "/dev/" + name.replace("!", "/")  # sysfs writes a '/' in a name as '!'
        if os.path.exists(path):
            return path
    return f"/dev/block/{m[1]}:{m[2]}"
