""":class:`DeviceMapper`: the verbs (create, load, remove, table, ...).

Each verb checks its arguments, names the device in the header (by name
or uuid, see :mod:`loopcore.dm.names`), makes one or a few
:meth:`Channel.call`s and turns the reply into a record.  One home per
job: the client's state, addressing, nodes and udev cooperation are
:mod:`.session`'s; the reading verbs :mod:`.queries`'; the verbs that
make, change and end devices :mod:`.lifecycle`'s; waiting for events and
talking to targets (messages, geometry) are here.  The framing is
:mod:`.ioctl`'s, the table model :mod:`.table`'s, the nodes :mod:`.nodes`'.
"""
from __future__ import annotations

from typing import Optional

from .. import errors
from .._validate import U64_MAX, check_int
from .ioctl import F_DATA_OUT, TARGET_MSG, Cmd
from .lifecycle import REMOVE_RETRIES, REMOVE_RETRY_DELAY, Lifecycle
from .names import DevIdArg, decode, encode
from .records import DeviceInfo
from .session import api

__all__ = ["DeviceMapper", "REMOVE_RETRIES", "REMOVE_RETRY_DELAY"]

_U32_MAX = (1 << 32) - 1  # event_nr is a __u32 of struct dm_ioctl


class DeviceMapper(Lifecycle):
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

    # -- events --

    @api
    def wait(self, name: DevIdArg, event_nr: int) -> DeviceInfo:
        """Block until the device's event number differs from ``event_nr``
        (pass ``info(name).event_nr``); returns the new state.  The GIL is
        released while waiting; EINTR is retried after signal handlers run."""
        check_int("event_nr", event_nr, maximum=_U32_MAX)
        # Not grown on BUFFER_FULL: a second DEV_WAIT would wait for yet
        # another event, and the status it returns is not used.
        return self._info(self._call(Cmd.DEV_WAIT, name, event_nr=event_nr, out=True,
                                     grow=False))

    @api
    def arm_poll(self) -> None:
        """Arm poll() on :meth:`fileno` for the next device event anywhere
        (POLLIN then; re-arm after each wakeup).  Interface 4.37+."""
        self._channel.call(Cmd.DEV_ARM_POLL)

    # -- talking to targets --

    @api
    def message(self, name: DevIdArg, sector: int, text: str) -> Optional[str]:
        """Send a target message (``@...`` messages go to dm core); returns
        the target's reply, or None when it sends none."""
        raw, uuid, filename = self._address(name)
        check_int("sector", sector, maximum=U64_MAX)
        if not isinstance(text, str):
            raise errors.TypeError(f"message must be a str, not {type(text).__name__}")
        if not text.strip() or "\0" in text:
            raise errors.ValueError(f"message must be a non-empty str without NUL, "
                                    f"got {text!r}")
        payload = TARGET_MSG.pack(sector) + encode(text) + b"\0"
        reply = self._channel.call(Cmd.TARGET_MSG, name=raw, uuid=uuid, filename=filename,
                                   payload=payload, out=True)
        if reply.flags & F_DATA_OUT:
            return decode(reply.payload)
        return None

    @api
    def set_geometry(self, name: DevIdArg, cylinders: int, heads: int, sectors: int,
                     start: int) -> DeviceInfo:
        """Set the device's CHS geometry as HDIO_GETGEO reports it."""
        raw, uuid, filename = self._address(name)
        # HDIO_GETGEO's struct hd_geometry: u8 heads and sectors, u16 cylinders
        check_int("cylinders", cylinders, maximum=0xFFFF)
        check_int("heads", heads, maximum=0xFF)
        check_int("sectors", sectors, maximum=0xFF)
        check_int("start", start, maximum=U64_MAX)
        text = f"{cylinders} {heads} {sectors} {start}"
        return self._info(self._channel.call(Cmd.DEV_SET_GEOMETRY, name=raw, uuid=uuid,
                                             filename=filename, payload=encode(text) + b"\0"))
