"""Old import path: discovery lives in :mod:`loopcore.loop.discovery`."""
from __future__ import annotations

from .loop.discovery import (
    DELETED_SUFFIX,
    find,
    list_devices,
    partitions,
    scan,
    strip_deleted,
    wait_for_partitions,
)

__all__ = ["DELETED_SUFFIX", "find", "list_devices", "partitions", "scan", "strip_deleted",
           "wait_for_partitions"]
