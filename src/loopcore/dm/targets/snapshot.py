"""snapshot-origin, snapshot and snapshot-merge: parameters and status."""
from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Dict, List, Tuple

from ... import errors
from .base import TargetParams
from .declaration import Opt
from .kinds import DEVICE, FLAG, SECTORS, Uint, Words
from .status import CARRIED, EmptyStatus, Fraction, TargetStatus

__all__ = ["SnapshotOriginParams", "SnapshotParams", "SnapshotStatus"]


@dataclasses.dataclass(frozen=True)
class SnapshotOriginParams(TargetParams, target_type="snapshot-origin", status=EmptyStatus):
    """``<origin device>``: the origin that its snapshots copy from on write."""

    device: Annotated[str, DEVICE]


_MERGE_FAILED = "Merge failed"


@dataclasses.dataclass(frozen=True)
class SnapshotStatus(TargetStatus, states=("Invalid", "Overflow", _MERGE_FAILED, "Unknown")):
    """``<allocated>/<total sectors> <metadata sectors>`` of the COW store
    (allocated includes the metadata).  ``Merge failed`` is a state only a
    snapshot-merge target reports (only a merge can fail)."""

    allocated_sectors: Annotated[int, Fraction("total_sectors")]
    total_sectors: Annotated[int, CARRIED]
    metadata_sectors: Annotated[int, SECTORS]

    @classmethod
    def states_of(cls, target_type: str) -> Tuple[str, ...]:
        if target_type == "snapshot-merge":
            return cls.states
        return tuple(state for state in cls.states if state != _MERGE_FAILED)


_STORES = {"P": (True, False), "PO": (True, True), "N": (False, False)}


@dataclasses.dataclass(frozen=True)
class SnapshotParams(TargetParams, target_type="snapshot", status=SnapshotStatus,
                     aliases=("snapshot-merge",)):
    """``<origin> <COW device> <P|PO|N> <chunk sectors> [<#feat> <feat>...]``.

    ``persistent``: the exception store survives a reboot (P) or not (N);
    ``overflow`` (PO, persistent only) makes a full snapshot report
    Overflow and refuse writes instead of being invalidated.  snapshot-merge
    takes the same parameters.
    """

    origin: Annotated[str, DEVICE]
    cow_device: Annotated[str, DEVICE]
    chunk_sectors: Annotated[int, Uint(1, 1 << 31, power_of_two=True)]
    persistent: Annotated[bool, FLAG] = True
    overflow: Annotated[bool, FLAG] = False
    discard_zeroes_cow: Annotated[bool, Opt(FLAG)] = False
    discard_passdown_origin: Annotated[bool, Opt(FLAG)] = False

    def check(self) -> None:
        if self.overflow and not self.persistent:
            raise errors.ValueError("overflow (PO) needs a persistent snapshot")
        if self.discard_passdown_origin and not self.discard_zeroes_cow:
            raise errors.ValueError("discard_passdown_origin needs discard_zeroes_cow")

    # persistent and overflow are one word, before the chunk size
    def head_words(self) -> List[str]:
        store = next(k for k, v in _STORES.items() if v == (self.persistent, self.overflow))
        return [self.origin, self.cow_device, store, str(self.chunk_sectors)]

    @classmethod
    def read_head(cls, words: Words) -> Dict[str, Any]:
        origin, cow = words.word("origin"), words.word("cow_device")
        store = words.word("persistence").upper()
        if store not in _STORES:
            raise words.fail(f"persistence must be P, PO or N, got {store!r}")
        persistent, overflow = _STORES[store]
        return {"origin": origin, "cow_device": cow, "chunk_sectors": words.int("chunk_sectors"),
                "persistent": persistent, "overflow": overflow}
