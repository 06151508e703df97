""":class:`DeviceMapper`: the verbs (create, load, remove, table, ...).

Each verb checks its arguments, names the device in the header (by name
or uuid, see :mod:`loopcore.dm.names`), makes one or a few
:meth:`Channel.call`s and turns the reply into a record.  The framing is
:mod:`.ioctl`'s, the table model :mod:`.table`'s, the nodes :mod:`.nodes`'.
"""
from __future__ import annotations

import dataclasses
import errno
import time
from typing import Any, Callable, List, Optional, Tuple, TypeVar

from .. import errors
from .._log import get_logger
from .ioctl import DM_MAX_TYPE_NAME, TARGET_MSG, Channel, Cmd, Flag, Reply, wipe
from .names import (
    DevIdArg,
    DmUuid,
    KernelName,
    as_name,
    as_uuid,
    check_mode,
    decode,
    encode,
    unmangle,
)
from .nodes import CONTROL_PATH, DEV_DIR, add_node, node_path, remove_node, sync_nodes
from .records import (
    DeviceEntry,
    DeviceInfo,
    Status,
    StatusLine,
    TargetVersion,
    parse_deps,
    parse_name_list,
    parse_versions,
)
from .table import (
    Table,
    TableArg,
    Target,
    as_table,
    has_keys,
    mask_keys,
    pack_targets,
    unpack_specs,
)
from .targets import error as error_target
from .targets import sectors as check_sectors
from .udev import UDEV_COOKIE, UDEV_MODES, UDEV_TIMEOUT, UeventWaiter, use_udev

__all__ = ["DeviceMapper", "REMOVE_RETRIES", "REMOVE_RETRY_DELAY"]

log = get_logger("dm")

# EBUSY on remove: libdevmapper's 25 tries, 200 ms apart.
REMOVE_RETRIES = 25
REMOVE_RETRY_DELAY = 0.2

F = TypeVar("F", bound=Callable[..., Any])


def _api(func: F) -> F:
    """A public verb: builtin OSErrors (from os.* calls on nodes), ValueErrors
    and TypeErrors leave it as loopcore's device-mapper errors."""
    return errors.translate(func, dm=True)


def _only_name(name: str, what: str) -> None:
    if isinstance(name, DmUuid):
        raise errors.TypeError(f"{what} must be a name, not a DmUuid")


class DeviceMapper:
    """A connection to the kernel's device-mapper (``/dev/mapper/control``).

    Methods find a device by name (a ``str`` or :class:`DmName`) or by uuid
    (a :class:`DmUuid`, e.g. ``DevId.uuid("MYAPP-data")``); every name and
    uuid is checked before any ioctl (ValueError).  A missing device raises
    an OSError with ENXIO; other kernel errors their errno (EBUSY as
    :class:`~loopcore.errors.DmBusyError`, a :class:`DeviceBusyError`), with
    ``filename`` set to the device's node, ``/dev/mapper/<name>`` (the
    mangled name), or ``uuid <uuid>``.  Every exception is a
    :class:`loopcore.errors.Error`.

    ``manage_nodes`` (default True) makes the library create and remove
    ``/dev/mapper/<name>`` block nodes itself, as libdevmapper does
    without udev.

    ``udev`` says whether to cooperate with udev (see :mod:`.udev`): with
    "auto" (the default) when systemd-udevd runs and ``DM_DISABLE_UDEV``
    is not set, "wait" always, "off" never.  Cooperating, create (with a
    table), resume, rename and remove return only once udev has processed
    the device's event, so its ``/dev/mapper`` and ``/dev/disk/by-id``
    links exist (or are gone); the wait is bounded by ``udev_timeout``
    seconds, after which, or where udev made no node (no dm rules), the
    library makes the node itself as without udev.  :attr:`udev_sync`
    says which way this client went.

    ``name_mangling`` is dmsetup's ``--manglename`` (see :func:`mangle`):
    with "auto" (the default) and "hex", names and uuids are mangled on the
    way to the kernel and unmangled on the way back, so that a name with a
    space or non-ASCII characters reads the same here and in dmsetup and
    ``/dev/mapper/<mangled name>`` is the node udev would make.  "none"
    passes them through as stored.  A :class:`KernelName` (from
    ``DeviceEntry.kernel_name``) always addresses the device as stored, and
    a :class:`DmName` or :class:`DmUuid` as it was made.
    """

    @_api
    def __init__(self, control: str = CONTROL_PATH, *, dev_dir: str = DEV_DIR,
                 manage_nodes: bool = True, name_mangling: str = "auto", udev: str = "auto",
                 udev_timeout: float = UDEV_TIMEOUT) -> None:
        self._channel = Channel(-1, control)  # closed until open() succeeds
        self.name_mangling = check_mode(name_mangling)
        if udev not in UDEV_MODES:
            raise errors.ValueError(f"udev must be one of {', '.join(UDEV_MODES)}, "
                                    f"got {udev!r}")
        if isinstance(udev_timeout, bool) or not isinstance(udev_timeout, (int, float)) \
                or not udev_timeout > 0:
            raise errors.ValueError(f"udev_timeout must be a number > 0, got {udev_timeout!r}")
        self.udev_timeout = float(udev_timeout)
        # Decided once: the udev-less path pays nothing per call.
        self.udev_sync = use_udev(udev)
        self._udev_mode = udev
        self.control = control
        self.dev_dir = dev_dir
        self.manage_nodes = manage_nodes
        self._channel = Channel.open(control)

    # -- plumbing --

    def fileno(self) -> int:
        """The control fd, for poll() after :meth:`arm_poll`."""
        if self._channel.closed:
            raise errors.ValueError("DeviceMapper is closed")
        return self._channel.fd

    @property
    def closed(self) -> bool:
        return self._channel.closed

    @_api
    def close(self) -> None:
        """Close the control fd (again: nothing)."""
        self._channel.close()

    def __enter__(self) -> "DeviceMapper":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self._channel.closed else f"fd={self._channel.fd}"
        return f"<DeviceMapper {self.control} {state}>"

    def _address(self, dev: DevIdArg) -> Tuple[bytes, bytes, str]:
        """(name, uuid, filename for errors) of the header that finds ``dev``."""
        if isinstance(dev, DmUuid):
            return b"", dev.raw, f"uuid {dev}"
        raw = as_name(dev, self.name_mangling).raw
        return raw, b"", node_path(decode(raw), self.dev_dir)

    def _call(self, cmd: Cmd, dev: DevIdArg, **kwargs: Any) -> Reply:
        name, uuid, filename = self._address(dev)
        return self._channel.call(cmd, name=name, uuid=uuid, filename=filename, **kwargs)

    def _stored_name(self, dev: DevIdArg) -> bytes:
        """The kernel name of ``dev``: for a uuid, asked of the kernel (DEV_RENAME
        finds devices by name only)."""
        if isinstance(dev, DmUuid):
            return encode(self._call(Cmd.DEV_STATUS, dev).kernel_name)
        return as_name(dev, self.name_mangling).raw

    def _unmangle(self, stored: str) -> str:
        return unmangle(stored, self.name_mangling) if stored else stored

    def _info(self, reply: Reply) -> DeviceInfo:
        return DeviceInfo(self._unmangle(reply.kernel_name), self._unmangle(reply.kernel_uuid),
                          reply.dev, reply.open_count, reply.event_nr, reply.target_count,
                          reply.flags, KernelName.stored(reply.kernel_name))

    # -- nodes: named after the stored (mangled) name, as udev names them --

    def _add_node(self, kernel_name: str, devnum: int) -> None:
        if self.manage_nodes:
            add_node(self.dev_dir, kernel_name, devnum)

    def _remove_node(self, kernel_name: str) -> None:
        if self.manage_nodes and kernel_name:
            remove_node(self.dev_dir, kernel_name)

    def _waiter(self) -> Optional[UeventWaiter]:
        """A udev event listener, opened before the ioctl, when cooperating."""
        return UeventWaiter() if self.udev_sync else None

    def _wait_udev(self, waiter: UeventWaiter, devnum: int, action: str) -> None:
        """Wait for udev's processed event.  In "auto" mode a wait that runs
        out stops the waiting for the rest of this client's life: a udevd
        whose events cannot reach us (a container with its own network
        namespace but the host's /run/udev) would otherwise cost the full
        timeout on every call."""
        if not waiter.wait(devnum, action, self.udev_timeout) and self._udev_mode == "auto":
            log.warning("no event from udev within %g s: this client makes /dev/mapper "
                        "nodes itself from now on (udev=\"wait\" keeps waiting)",
                        self.udev_timeout)
            self.udev_sync = False

    def _settle(self, waiter: UeventWaiter, reply: Reply, devnum: int, action: str,
                kernel_name: str) -> None:
        """After an ioctl that sent a uevent: wait for udev to process it,
        then make (or remove) the node if udev did not."""
        if reply.flags & Flag.UEVENT_GENERATED:
            self._wait_udev(waiter, devnum, action)
        if action == "remove":
            self._remove_node(kernel_name)
        else:
            self._add_node(kernel_name, devnum)  # nothing when udev's link is there

    @_api
    def mknodes(self, name: Optional[DevIdArg] = None) -> None:
        """Make ``/dev/mapper`` match the kernel (``dmsetup mknodes``): create
        missing nodes, fix wrong ones, and, without ``name``, remove block
        nodes of devices that are gone (after a deferred remove, say)."""
        if name is not None:
            info = self.info(name)
            self._add_node(info.kernel_name, info.devnum)
            return
        devices = {d.kernel_name: d.devnum for d in self.list_devices()}
        if self.manage_nodes:
            sync_nodes(self.dev_dir, devices)

    # -- the interface --

    @_api
    def version(self) -> Tuple[int, int, int]:
        """The kernel's dm ioctl interface version, e.g. (4, 47, 0)."""
        return self._channel.call(Cmd.VERSION).version

    @_api
    def list_devices(self) -> List[DeviceEntry]:
        """Every device: name, uuid, devnum, event_nr (kernel order); names
        and uuids unmangled, ``kernel_name`` as stored."""
        # UUID asks kernels >= 4.46 to add each uuid (and say when there is none)
        reply = self._channel.call(Cmd.LIST_DEVICES, flags=Flag.UUID, out=True)
        return parse_name_list(reply.payload, self._unmangle)

    @_api
    def info(self, name: DevIdArg) -> DeviceInfo:
        """The device's state (DEV_STATUS).  ENXIO if it does not exist."""
        return self._info(self._call(Cmd.DEV_STATUS, name))

    @_api
    def exists(self, name: DevIdArg) -> bool:
        """Whether the device exists."""
        try:
            self.info(name)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return False
            raise
        return True

    @_api
    def create(self, name: str, *, uuid: Optional[str] = None,
               table: Optional[TableArg] = None, read_only: bool = False) -> DeviceInfo:
        """Create a device and, given a table, load it and resume.

        Without a table the device stays suspended with no table (like
        ``dmsetup create --notable``).  If loading or resuming fails the
        device is removed again and the error raised.  ``/dev/mapper/<name>``
        is created (``<name>`` mangled).  A table with keys goes to the
        kernel with SECURE_DATA and loopcore's copy is wiped after.  Returns
        the device's state.
        """
        _only_name(name, "the name of a new device")
        dm_name = as_name(name, self.name_mangling)
        dm_uuid = as_uuid(uuid, self.name_mangling) if uuid is not None else None
        payload, count, secure = bytearray(), 0, False
        if table is not None:
            targets = as_table(table)
            payload, count = pack_targets(targets)
            secure = has_keys(targets)
        ro = Flag.READONLY if read_only else Flag(0)
        kernel_name = decode(dm_name.raw)
        filename = node_path(kernel_name, self.dev_dir)
        # udev makes the node on the resume's change event; a device
        # without a table gets no link from udev, so loopcore's node.
        waiter = self._waiter() if table is not None else None
        try:
            reply = self._channel.call(Cmd.DEV_CREATE, name=dm_name.raw,
                                       uuid=dm_uuid.raw if dm_uuid is not None else b"",
                                       flags=ro, filename=filename)
            try:
                if waiter is None:
                    self._add_node(kernel_name, reply.dev)
                if table is not None:
                    self._channel.call(Cmd.TABLE_LOAD, name=dm_name.raw, flags=ro,
                                       payload=payload, target_count=count, secure=secure,
                                       filename=filename)
                    reply = self._channel.call(Cmd.DEV_SUSPEND, name=dm_name.raw,
                                               filename=filename,
                                               event_nr=UDEV_COOKIE if waiter else 0)
                    if waiter is not None:
                        self._settle(waiter, reply, reply.dev, "change", kernel_name)
            except BaseException as exc:
                log.debug("create %s failed (%r): removing it again", kernel_name, exc)
                try:
                    self._remove(dm_name, deferred=False, retries=REMOVE_RETRIES,
                                 retry_delay=0.05)
                except OSError:
                    pass
                raise
        finally:
            if secure:
                wipe(payload)
            if waiter is not None:
                waiter.close()
        return self._info(reply)

    @_api
    def load(self, name: DevIdArg, table: TableArg, *, read_only: bool = False) -> DeviceInfo:
        """Load ``table`` as the device's inactive table (resume swaps it in).
        A table with keys goes with SECURE_DATA, as in :meth:`create`."""
        raw, uuid, filename = self._address(name)
        targets = as_table(table)
        payload, count = pack_targets(targets)
        secure = has_keys(targets)
        try:
            return self._info(self._channel.call(
                Cmd.TABLE_LOAD, name=raw, uuid=uuid, filename=filename,
                flags=Flag.READONLY if read_only else 0, payload=payload, target_count=count,
                secure=secure))
        finally:
            if secure:
                wipe(payload)

    @_api
    def clear(self, name: DevIdArg) -> DeviceInfo:
        """Drop the device's inactive table."""
        return self._info(self._call(Cmd.TABLE_CLEAR, name))

    @_api
    def wipe_table(self, name: DevIdArg) -> DeviceInfo:
        """Replace the live table with one error target of the same size and
        resume (``dmsetup wipe_table``): I/O in flight completes, new I/O
        fails, and the devices the old table used are let go."""
        size = sum(line.length for line in self.status(name))
        if not size:
            raise errors.error_from_errno(errno.ENXIO, self._address(name)[2],
                                          "the device has no live table", dm=True)
        self.load(name, [error_target(0, size)])
        return self.resume(name)

    @_api
    def suspend(self, name: DevIdArg, *, noflush: bool = False,
                skip_lockfs: bool = False) -> DeviceInfo:
        """Suspend the device (``noflush`` keeps queued I/O; ``skip_lockfs``
        does not freeze a file system on it)."""
        flags = Flag.SUSPEND
        if noflush:
            flags |= Flag.NOFLUSH
        if skip_lockfs:
            flags |= Flag.SKIP_LOCKFS
        return self._info(self._call(Cmd.DEV_SUSPEND, name, flags=flags))

    @_api
    def resume(self, name: DevIdArg) -> DeviceInfo:
        """Resume the device, making a loaded inactive table live (cooperating
        with udev, once udev has processed the change)."""
        waiter = self._waiter()
        if waiter is None:
            return self._info(self._call(Cmd.DEV_SUSPEND, name))
        with waiter:
            reply = self._call(Cmd.DEV_SUSPEND, name, event_nr=UDEV_COOKIE)
            self._settle(waiter, reply, reply.dev, "change", reply.kernel_name)
        return self._info(reply)

    def _remove(self, dev: DevIdArg, *, deferred: bool, retries: int,
                retry_delay: float) -> bool:
        name, uuid, filename = self._address(dev)
        flags = Flag.DEFERRED_REMOVE if deferred else Flag(0)
        # The remove reply carries no device number: udev's event is
        # matched by the one asked for first.
        devnum = self._call(Cmd.DEV_STATUS, dev).dev if self.udev_sync else 0
        waiter = self._waiter()
        try:
            attempt = 0
            while True:
                try:
                    reply = self._channel.call(Cmd.DEV_REMOVE, name=name, uuid=uuid,
                                               flags=flags, filename=filename,
                                               event_nr=UDEV_COOKIE if waiter else 0)
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or attempt >= retries:
                        raise
                attempt += 1
                log.debug("DM_DEV_REMOVE %s: EBUSY, retry %d of %d in %g s", filename,
                          attempt, retries, retry_delay)
                time.sleep(retry_delay)
            if deferred and reply.flags & Flag.DEFERRED_REMOVE:
                log.debug("%s still open: removed on last close", filename)
                return False
            # By uuid, the kernel's reply names the device (it fills in both).
            kernel_name = decode(name) if name else reply.kernel_name
            if waiter is not None:
                self._settle(waiter, reply, devnum, "remove", kernel_name)
            else:
                self._remove_node(kernel_name)
        finally:
            if waiter is not None:
                waiter.close()
        return True

    @_api
    def remove(self, name: DevIdArg, *, deferred: bool = False, retries: int = REMOVE_RETRIES,
               retry_delay: float = REMOVE_RETRY_DELAY) -> bool:
        """Remove the device and its ``/dev/mapper`` node.

        EBUSY (the device is open) is retried ``retries`` times,
        ``retry_delay`` seconds apart, as libdevmapper does; then
        :class:`~loopcore.errors.DmBusyError` (a ``DeviceBusyError``).  With
        ``deferred`` an open device is instead marked for removal on last
        close: returns False then (the node stays until :meth:`mknodes`),
        True when it was removed now.
        """
        if retries < 0 or retry_delay < 0:
            raise errors.ValueError("retries and retry_delay must be >= 0")
        return self._remove(name, deferred=deferred, retries=0 if deferred else retries,
                            retry_delay=retry_delay)

    @_api
    def remove_all(self, *, deferred: bool = False) -> List[str]:
        """Remove every device that is not open (REMOVE_ALL); with
        ``deferred`` open ones go on last close.  Returns the removed names."""
        before = {d.kernel_name: d.name for d in self.list_devices()}
        self._channel.call(Cmd.REMOVE_ALL, flags=Flag.DEFERRED_REMOVE if deferred else 0)
        after = {d.kernel_name for d in self.list_devices()}
        gone = [k for k in before if k not in after]
        for k in gone:
            self._remove_node(k)
        return [before[k] for k in gone]

    @_api
    def rename(self, name: DevIdArg, new_name: str) -> DeviceInfo:
        """Rename the device (and its node); both names are mangled."""
        _only_name(new_name, "the new name")
        new_raw = as_name(new_name, self.name_mangling).raw
        raw = self._stored_name(name)
        new_kernel = decode(new_raw)
        waiter = self._waiter()
        try:
            reply = self._channel.call(Cmd.DEV_RENAME, name=raw, payload=new_raw + b"\0",
                                       filename=node_path(decode(raw), self.dev_dir),
                                       event_nr=UDEV_COOKIE if waiter else 0)
            if waiter is not None and reply.flags & Flag.UEVENT_GENERATED:
                self._wait_udev(waiter, reply.dev, "change")
        finally:
            if waiter is not None:
                waiter.close()
        self._remove_node(decode(raw))
        self._add_node(new_kernel, reply.dev)
        return dataclasses.replace(self._info(reply), name=self._unmangle(new_kernel),
                                   kernel_name=KernelName.stored(new_kernel))

    @_api
    def set_uuid(self, name: DevIdArg, uuid: str) -> DeviceInfo:
        """Give a device without a uuid one (the kernel refuses to change a set uuid)."""
        new_uuid = as_uuid(uuid, self.name_mangling)
        raw = self._stored_name(name)
        reply = self._channel.call(Cmd.DEV_RENAME, name=raw, flags=Flag.UUID,
                                   payload=new_uuid.raw + b"\0",
                                   filename=node_path(decode(raw), self.dev_dir))
        return dataclasses.replace(self._info(reply), uuid=self._unmangle(decode(new_uuid.raw)))

    @_api
    def table(self, name: DevIdArg, *, inactive: bool = False, showkeys: bool = False) -> Table:
        """The live (or the inactive) table, as the kernel reports it, with
        dm-crypt and dm-integrity keys replaced by zeros unless ``showkeys``
        (as ``dmsetup table [--showkeys]``; see :func:`mask_keys`).

        The read is a SECURE_DATA ioctl (the kernel wipes its copy; a table
        may hold keys) and loopcore's ioctl buffer is wiped after it."""
        flags = Flag.STATUS_TABLE | (Flag.QUERY_INACTIVE_TABLE if inactive else 0)
        reply = self._call(Cmd.TABLE_STATUS, name, flags=flags, out=True, secure=True)
        table = Table(Target(*spec) for spec in unpack_specs(reply.payload,
                                                             reply.target_count))
        return table if showkeys else mask_keys(table)

    @_api
    def status(self, name: DevIdArg, *, inactive: bool = False,
               noflush: bool = False) -> Status:
        """Each target's status line (``str()`` reads like ``dmsetup status``).
        Status lines, not a table: they cannot be loaded."""
        flags = (Flag.QUERY_INACTIVE_TABLE if inactive else 0) | (Flag.NOFLUSH if noflush else 0)
        reply = self._call(Cmd.TABLE_STATUS, name, flags=flags, out=True)
        return Status(StatusLine(*spec) for spec in unpack_specs(reply.payload,
                                                                 reply.target_count))

    @_api
    def deps(self, name: DevIdArg, *, inactive: bool = False) -> List[int]:
        """Devnums of the devices the table uses."""
        flags = Flag.QUERY_INACTIVE_TABLE if inactive else 0
        return parse_deps(self._call(Cmd.TABLE_DEPS, name, flags=flags, out=True).payload)

    @_api
    def wait(self, name: DevIdArg, event_nr: int) -> DeviceInfo:
        """Block until the device's event number differs from ``event_nr``
        (pass ``info(name).event_nr``); returns the new state.  The GIL is
        released while waiting; EINTR is retried after signal handlers run."""
        if not isinstance(event_nr, int) or isinstance(event_nr, bool) \
                or not 0 <= event_nr < 1 << 32:
            raise errors.ValueError(f"event_nr must be a 32-bit unsigned int, got {event_nr!r}")
        # Not grown on BUFFER_FULL: a second DEV_WAIT would wait for yet
        # another event, and the status it returns is not used.
        return self._info(self._call(Cmd.DEV_WAIT, name, event_nr=event_nr, out=True,
                                     grow=False))

    @_api
    def arm_poll(self) -> None:
        """Arm poll() on :meth:`fileno` for the next device event anywhere
        (POLLIN then; re-arm after each wakeup).  Interface 4.37+."""
        self._channel.call(Cmd.DEV_ARM_POLL)

    @_api
    def target_versions(self) -> List[TargetVersion]:
        """The target types loaded in the kernel (``dmsetup targets``)."""
        return parse_versions(self._channel.call(Cmd.LIST_VERSIONS, out=True).payload)

    @_api
    def target_version(self, target_type: str) -> TargetVersion:
        """One target type's version, loading its module if needed.
        Unknown types raise OSError (EINVAL, the kernel's answer)."""
        if not isinstance(target_type, str) or not target_type \
                or len(encode(target_type)) >= DM_MAX_TYPE_NAME or "/" in target_type:
            raise errors.ValueError(f"bad target type {target_type!r}")
        if not self._channel.supports(Cmd.GET_TARGET_VERSION):
            for tv in self.target_versions():
                if tv.name == target_type:
                    return tv
            raise self._unknown_target(target_type)
        try:
            data = self._channel.call(Cmd.GET_TARGET_VERSION, name=encode(target_type),
                                      out=True).payload
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise self._unknown_target(target_type) from None
            raise
        found = parse_versions(data)
        if not found:
            raise self._unknown_target(target_type)
        return found[0]

    def _unknown_target(self, target_type: str) -> OSError:
        return errors.error_from_errno(errno.EINVAL, self.control,
                                       f"unknown target type {target_type!r}", dm=True)

    @_api
    def message(self, name: DevIdArg, sector: int, text: str) -> Optional[str]:
        """Send a target message (``@...`` messages go to dm core); returns
        the target's reply, or None when it sends none."""
        raw, uuid, filename = self._address(name)
        check_sectors("sector", sector)
        if not isinstance(text, str) or not text.strip() or "\0" in text:
            raise errors.ValueError(f"message must be a non-empty str without NUL, "
                                    f"got {text!r}")
        payload = TARGET_MSG.pack(sector) + encode(text) + b"\0"
        reply = self._channel.call(Cmd.TARGET_MSG, name=raw, uuid=uuid, filename=filename,
                                   payload=payload, out=True)
        if reply.flags & Flag.DATA_OUT:
            return decode(reply.payload)
        return None

    @_api
    def set_geometry(self, name: DevIdArg, cylinders: int, heads: int, sectors: int,
                     start: int) -> DeviceInfo:
        """Set the device's CHS geometry as HDIO_GETGEO reports it."""
        raw, uuid, filename = self._address(name)
        for label, value in (("cylinders", cylinders), ("heads", heads),
                             ("sectors", sectors), ("start", start)):
            check_sectors(label, value)
        if heads > 255 or sectors > 255 or cylinders > 0xFFFF:
            raise errors.ValueError("geometry out of range (heads, sectors <= 255; "
                                    "cylinders <= 65535)")
        text = f"{cylinders} {heads} {sectors} {start}"
        return self._info(self._channel.call(Cmd.DEV_SET_GEOMETRY, name=raw, uuid=uuid,
                                             filename=filename, payload=encode(text) + b"\0"))
