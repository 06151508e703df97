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
from .._lazy import export

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .._sysfs import block_name as block_name
    from .._sysfs import read_ahead_sectors
    from . import thin_messages as thin_messages
    from .client import REMOVE_RETRIES as REMOVE_RETRIES
    from .client import REMOVE_RETRY_DELAY as REMOVE_RETRY_DELAY
    from .client import DeviceMapper as DeviceMapper
    from .ioctl import DM_MAX_TYPE_NAME as DM_MAX_TYPE_NAME
    from .ioctl import HEADER_SIZE as HEADER_SIZE
    from .ioctl import Cmd as Cmd
    from .ioctl import Flag as Flag
    from .names import DM_NAME_LEN as DM_NAME_LEN
    from .names import DM_UUID_LEN as DM_UUID_LEN
    from .names import MANGLING_MODES as MANGLING_MODES
    from .names import DevId as DevId
    from .names import DevIdArg as DevIdArg
    from .names import DmName as DmName
    from .names import DmUuid as DmUuid
    from .names import KernelName as KernelName
    from .names import mangle as mangle
    from .names import unmangle as unmangle
    from .names import validate_name as validate_name
    from .names import validate_uuid as validate_uuid
    from .nodes import CONTROL_PATH as CONTROL_PATH
    from .nodes import DEV_DIR as DEV_DIR
    from .nodes import MISC_MAJOR as MISC_MAJOR
    from .records import DeviceEntry as DeviceEntry
    from .records import DeviceInfo as DeviceInfo
    from .records import Status as Status
    from .records import StatusLine as StatusLine
    from .records import TargetVersion as TargetVersion
    from .table import Table as Table
    from .table import TableArg as TableArg
    from .table import mask_keys as mask_keys
    from .targets import MIRROR_LOG_TYPES as MIRROR_LOG_TYPES
    from .targets import PARAMS_TYPES as PARAMS_TYPES
    from .targets import STATUS_TYPES as STATUS_TYPES
    from .targets import CryptParams as CryptParams
    from .targets import DeviceArg as DeviceArg
    from .targets import DeviceHealth as DeviceHealth
    from .targets import EmptyStatus as EmptyStatus
    from .targets import ErrorParams as ErrorParams
    from .targets import IntegrityParams as IntegrityParams
    from .targets import IntegrityStatus as IntegrityStatus
    from .targets import LinearParams as LinearParams
    from .targets import MirrorParams as MirrorParams
    from .targets import MirrorStatus as MirrorStatus
    from .targets import SnapshotOriginParams as SnapshotOriginParams
    from .targets import SnapshotParams as SnapshotParams
    from .targets import SnapshotStatus as SnapshotStatus
    from .targets import StripedParams as StripedParams
    from .targets import StripedStatus as StripedStatus
    from .targets import Target as Target
    from .targets import TargetParams as TargetParams
    from .targets import TargetStatus as TargetStatus
    from .targets import ThinParams as ThinParams
    from .targets import ThinPoolParams as ThinPoolParams
    from .targets import ThinPoolStatus as ThinPoolStatus
    from .targets import ThinStatus as ThinStatus
    from .targets import UnavailableStatus as UnavailableStatus
    from .targets import VerityParams as VerityParams
    from .targets import VerityStatus as VerityStatus
    from .targets import ZeroParams as ZeroParams
    from .targets import device_arg as device_arg
    from .targets import error as error
    from .targets import linear as linear
    from .targets import parse_params as parse_params
    from .targets import parse_status as parse_status
    from .targets import striped as striped
    from .targets import zero as zero
    from .targets.mirror import mirror as mirror  # the function, not the module
    from .udev import UDEV_MODES as UDEV_MODES
    from .udev import UDEV_TIMEOUT as UDEV_TIMEOUT

    read_ahead = read_ahead_sectors

__all__ = export(__name__, {
    ".": ("thin_messages",),
    ".client": (
        "DeviceMapper", "REMOVE_RETRIES", "REMOVE_RETRY_DELAY",
    ),
    ".records": (
        "DeviceInfo", "DeviceEntry", "TargetVersion", "Status", "StatusLine",
    ),
    ".ioctl": (
        "Flag", "Cmd", "HEADER_SIZE", "DM_MAX_TYPE_NAME",
    ),
    ".targets": (
        "Target", "linear", "striped", "zero", "error", "mirror", "MIRROR_LOG_TYPES",
        "TargetParams", "PARAMS_TYPES", "parse_params", "LinearParams", "StripedParams",
        "ZeroParams", "ErrorParams", "CryptParams", "VerityParams",
        "SnapshotOriginParams", "SnapshotParams", "ThinPoolParams", "ThinParams",
        "MirrorParams", "IntegrityParams", "TargetStatus", "STATUS_TYPES", "parse_status",
        "DeviceHealth", "EmptyStatus", "UnavailableStatus", "StripedStatus",
        "ThinPoolStatus", "ThinStatus", "SnapshotStatus", "VerityStatus", "MirrorStatus",
        "IntegrityStatus", "DeviceArg", "device_arg",
    ),
    ".table": (
        "Table", "TableArg", "mask_keys",
    ),
    ".names": (
        "DmName", "DmUuid", "DevId", "DevIdArg", "KernelName", "validate_name",
        "validate_uuid", "MANGLING_MODES", "mangle", "unmangle", "DM_NAME_LEN",
        "DM_UUID_LEN",
    ),
    ".._sysfs": (
        "read_ahead=read_ahead_sectors", "block_name",
    ),
    ".nodes": (
        "CONTROL_PATH", "DEV_DIR", "MISC_MAJOR",
    ),
    ".udev": (
        "UDEV_MODES", "UDEV_TIMEOUT",
    ),
})
