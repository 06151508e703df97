"""Targets, typed: one declaration per target type, from which its checks,
its parameter string, the parser of that string and of its status follow.

A parameter class (:class:`LinearParams`, :class:`ThinPoolParams` ...) is
a frozen dataclass that checks its fields when made (ValueError/TypeError
before any ioctl, as the kernel would refuse them only after a device was
made), writes the kernel's parameter string (``str(params)``), and reads
the kernel's own ``table`` output back (``XParams.parse(text)``), so that
``XParams.parse(str(p)) == p`` and, for the text the kernel writes,
``str(XParams.parse(text)) == text``.  ``params.target(start, length)`` is
the table line; :func:`parse_params` (or :meth:`Target.parsed`) reads any
known target's parameters, :func:`parse_status` (or
:meth:`StatusLine.parsed <loopcore.dm.StatusLine.parsed>`) its status.
Devices are strings as :func:`device_arg` writes them: "major:minor" (what
the kernel reports) or a path.

The builders (:func:`linear`, :func:`striped`, :func:`zero`, :func:`error`,
:func:`mirror`) take devices in any form :func:`device_arg` does and are
thin calls into the parameter classes, whose rules they share.

One module per family (:mod:`.basic`, :mod:`.crypt`, :mod:`.verity`,
:mod:`.snapshot`, :mod:`.thin`, :mod:`.mirror`, :mod:`.integrity`); the
declaration language is :mod:`.kinds`, :mod:`.declaration`,
:mod:`.status` and :mod:`.base`; key masking is :mod:`.keys`.  Adding a
target type: a module declaring its parameter (and status) classes, and
its import line below, which is the registry (a declared class registers
itself with :func:`parse_params` and :func:`parse_status`); if its
parameters hold a key, a masking rule in :mod:`.keys`.
"""
from .base import PARAMS_TYPES, STATUS_TYPES, Target, TargetParams, parse_params, parse_status
from .basic import (
    ErrorParams,
    LinearParams,
    StripedParams,
    StripedStatus,
    ZeroParams,
    error,
    linear,
    striped,
    zero,
)
from .crypt import CryptParams
from .integrity import IntegrityParams, IntegrityStatus
from .keys import has_keys, mask_params
from .kinds import DeviceArg, device_arg, sectors
from .mirror import MIRROR_LOG_TYPES, MirrorParams, MirrorStatus, mirror
from .snapshot import SnapshotOriginParams, SnapshotParams, SnapshotStatus
from .status import DeviceHealth, EmptyStatus, TargetStatus, UnavailableStatus
from .thin import (
    THIN_BLOCK_MAX,
    THIN_BLOCK_MIN,
    THIN_DEV_ID_MAX,
    ThinParams,
    ThinPoolParams,
    ThinPoolStatus,
    ThinStatus,
)
from .verity import VerityParams, VerityStatus

__all__ = [
    "Target", "DeviceArg", "device_arg", "sectors", "TargetParams", "PARAMS_TYPES",
    "parse_params", "LinearParams", "StripedParams", "ZeroParams", "ErrorParams",
    "CryptParams", "VerityParams", "SnapshotOriginParams", "SnapshotParams", "ThinPoolParams",
    "ThinParams", "MirrorParams", "IntegrityParams", "linear", "striped", "zero", "error",
    "mirror", "MIRROR_LOG_TYPES", "THIN_BLOCK_MIN", "THIN_BLOCK_MAX", "THIN_DEV_ID_MAX",
    "TargetStatus", "STATUS_TYPES", "parse_status", "DeviceHealth", "EmptyStatus",
    "UnavailableStatus", "StripedStatus", "ThinPoolStatus", "ThinStatus", "SnapshotStatus",
    "VerityStatus", "MirrorStatus", "IntegrityStatus", "mask_params", "has_keys",
]
