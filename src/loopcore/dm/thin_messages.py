"""The thin-pool's target messages, as strings for
:meth:`DeviceMapper.message <loopcore.dm.DeviceMapper.message>` (sector 0
of the pool device), checked before they are sent.

>>> mapper.message(pool, 0, thin_messages.create_thin(0))
>>> mapper.message(pool, 0, thin_messages.create_snap(1, origin_id=0))

A thin volume's origin should be suspended while a snapshot of it is
taken (else writes in flight may miss the snapshot).
"""
from __future__ import annotations

from .._validate import U64_MAX, check_int
from .targets.thin import THIN_DEV_ID_MAX

__all__ = ["create_thin", "create_snap", "delete", "set_transaction_id",
           "reserve_metadata_snap", "release_metadata_snap"]


def _dev_id(name: str, value: int) -> int:
    """A thin device id: 24 bits."""
    return check_int(name, value, maximum=THIN_DEV_ID_MAX)


def create_thin(dev_id: int) -> str:
    """Make a new, empty thin volume ``dev_id`` in the pool."""
    return f"create_thin {_dev_id('dev_id', dev_id)}"


def create_snap(dev_id: int, origin_id: int) -> str:
    """Make thin volume ``dev_id`` a snapshot of volume ``origin_id``
    (sharing its blocks until either is written)."""
    return f"create_snap {_dev_id('dev_id', dev_id)} {_dev_id('origin_id', origin_id)}"


def delete(dev_id: int) -> str:
    """Delete thin volume ``dev_id`` (not active) and free its blocks."""
    return f"delete {_dev_id('dev_id', dev_id)}"


def set_transaction_id(current: int, new: int) -> str:
    """Change the pool's user transaction id from ``current`` (checked by
    the kernel) to ``new``."""
    return (f"set_transaction_id {check_int('current', current, maximum=U64_MAX)} "
            f"{check_int('new', new, maximum=U64_MAX)}")


def reserve_metadata_snap() -> str:
    """Take a snapshot of the metadata for userspace tools (its root shows
    as the status's ``held_metadata_root``)."""
    return "reserve_metadata_snap"


def release_metadata_snap() -> str:
    """Drop the metadata snapshot again."""
    return "release_metadata_snap"
