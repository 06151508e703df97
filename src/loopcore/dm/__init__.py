"""Device-mapper through ``/dev/mapper/control``: no libdevmapper, no dmsetup.

>>> from loopcore import dm
>>> with dm.DeviceMapper() as mapper:
...     mapper.create("scratch", table=dm.Table([dm.zero(0, 2048)]))
...     print(mapper.table("scratch"))           # 0 2048 zero
...     mapper.remove("scratch")

One module per job; this one only gathers their public names:

- :mod:`.client`: :class:`DeviceMapper`, built from :mod:`.session` (its
  state, addressing, nodes, udev cooperation), :mod:`.queries` (info,
  list, table, status, deps, versions) and :mod:`.lifecycle` (create,
  load, suspend, resume, rename, remove), with events and messages;
- :mod:`.targets`: :class:`Target`, and one module per target family
  declaring its typed parameters (:class:`LinearParams` ...
  :class:`ThinPoolParams`, :class:`MirrorParams`, :func:`parse_params`),
  its typed status (:class:`ThinPoolStatus` ..., :func:`parse_status`) and
  builders (``linear``, ``striped``, ``mirror`` ...): a new target type
  goes there;
- :mod:`.thin_messages`: the thin-pool's messages (``create_thin`` ...);
- :mod:`.table`: :class:`Table`, its wire form, key masking;
- :mod:`.records`: what the kernel reports (:class:`DeviceInfo`,
  :class:`DeviceEntry`, :class:`TargetVersion`, :class:`StatusLine`);
- :mod:`.names`: :class:`DmName`, :class:`DmUuid`, :class:`DevId`, mangling;
- :mod:`.ioctl`: the kernel's structs (views of ``csrc/lc_dm.h``),
  commands, flags, and the one ioctl call (valid flags and minimum
  interface version per command, buffer growth and reuse);
- :mod:`.nodes`: ``/dev/mapper`` nodes and the control node;
- :mod:`.udev`: waiting for udev to process a device's events;
- :mod:`.kpartx`: kpartx's verbs (add, list, update, delete partition
  maps), planned by :mod:`.partmaps` (names, uuids, tables); imported on
  its own (``from loopcore.dm import kpartx``), as it needs the loop side.

dmsetup's output formats are the command line's (``loopcore.cli.dm_report``).
"""
from .._sysfs import block_name
from .._sysfs import read_ahead_sectors as read_ahead
from . import thin_messages
from .client import REMOVE_RETRIES, REMOVE_RETRY_DELAY, DeviceMapper
from .ioctl import DM_MAX_TYPE_NAME, HEADER_SIZE, Cmd, Flag
from .names import (
    DM_NAME_LEN,
    DM_UUID_LEN,
    MANGLING_MODES,
    DevId,
    DevIdArg,
    DmName,
    DmUuid,
    KernelName,
    mangle,
    unmangle,
    validate_name,
    validate_uuid,
)
from .nodes import CONTROL_PATH, DEV_DIR, MISC_MAJOR
from .records import DeviceEntry, DeviceInfo, Status, StatusLine, TargetVersion
from .table import Table, TableArg, mask_keys
from .targets import (
    MIRROR_LOG_TYPES,
    PARAMS_TYPES,
    STATUS_TYPES,
    CryptParams,
    DeviceArg,
    DeviceHealth,
    EmptyStatus,
    ErrorParams,
    IntegrityParams,
    IntegrityStatus,
    LinearParams,
    MirrorParams,
    MirrorStatus,
    SnapshotOriginParams,
    SnapshotParams,
    SnapshotStatus,
    StripedParams,
    StripedStatus,
    Target,
    TargetParams,
    TargetStatus,
    ThinParams,
    ThinPoolParams,
    ThinPoolStatus,
    ThinStatus,
    UnavailableStatus,
    VerityParams,
    VerityStatus,
    ZeroParams,
    device_arg,
    error,
    linear,
    mirror,
    parse_params,
    parse_status,
    striped,
    zero,
)
from .udev import UDEV_MODES, UDEV_TIMEOUT

__all__ = [
    "DeviceMapper",
    "DeviceInfo",
    "DeviceEntry",
    "Flag",
    "Cmd",
    "Target",
    "Table",
    "TableArg",
    "TargetVersion",
    "Status",
    "StatusLine",
    "linear",
    "striped",
    "zero",
    "error",
    "mirror",
    "MIRROR_LOG_TYPES",
    "TargetParams",
    "PARAMS_TYPES",
    "parse_params",
    "LinearParams",
    "StripedParams",
    "ZeroParams",
    "ErrorParams",
    "CryptParams",
    "VerityParams",
    "SnapshotOriginParams",
    "SnapshotParams",
    "ThinPoolParams",
    "ThinParams",
    "MirrorParams",
    "IntegrityParams",
    "TargetStatus",
    "STATUS_TYPES",
    "parse_status",
    "DeviceHealth",
    "EmptyStatus",
    "UnavailableStatus",
    "StripedStatus",
    "ThinPoolStatus",
    "ThinStatus",
    "SnapshotStatus",
    "VerityStatus",
    "MirrorStatus",
    "IntegrityStatus",
    "thin_messages",
    "DeviceArg",
    "device_arg",
    "DmName",
    "DmUuid",
    "DevId",
    "DevIdArg",
    "KernelName",
    "validate_name",
    "validate_uuid",
    "MANGLING_MODES",
    "mangle",
    "unmangle",
    "mask_keys",
    "read_ahead",
    "block_name",
    "CONTROL_PATH",
    "DEV_DIR",
    "MISC_MAJOR",
    "HEADER_SIZE",
    "DM_NAME_LEN",
    "DM_UUID_LEN",
    "DM_MAX_TYPE_NAME",
    "REMOVE_RETRIES",
    "REMOVE_RETRY_DELAY",
    "UDEV_MODES",
    "UDEV_TIMEOUT",
]
