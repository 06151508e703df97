"""Cooperating with udev: wait until udev has handled a device's uevent.

Where systemd-udevd runs with device-mapper's rules (55-dm.rules,
60-persistent-storage-dm.rules), udev makes ``/dev/mapper/<name>`` and
``/dev/disk/by-id/dm-name-<name>`` on the change event of a resume and
removes them on the remove event.  A caller that uses the device right
after ``create`` returns needs those to exist (or, after ``remove``, to be
gone), so the client waits for udev's "processed" copy of the event: udevd
re-broadcasts every event it has finished (rules run, links made) on the
uevent netlink's group 2, in libudev's framing.  :class:`UeventWaiter`
listens there from before the ioctl (so the event cannot be missed) and
matches the device number, the action and a sequence number newer than
the ioctl.

libdevmapper does the same with a SysV semaphore ("cookie") that 95-dm-notify
decrements by running ``dmsetup udevcomplete``: that hangs until a timeout
when the rules are missing, and leaves semaphores behind when the waiter
dies.  The netlink wait needs no rule of ours and returns as soon as udev
is done, rules or not; the cookie is still sent, with flags only (its low
16 bits zero: ``dmsetup udevcomplete`` then returns at once without a
semaphore), because 55-dm.rules needs DM_UDEV_PRIMARY_SOURCE_FLAG on the
event to run the disk rules (by-id links) at all.  The wait is bounded;
when it times out, or udev made no node (rules missing), the client makes
the node itself as it does without udev.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import time
from typing import Dict, Optional

from .. import _c, _sysfs
from .._log import get_logger
from .._uevents import UDEV_GROUP, UeventSocket

__all__ = ["DM_DISABLE_UDEV", "UDEV_COOKIE", "UDEV_MODES", "UDEV_TIMEOUT", "UeventWaiter",
           "parse_udev_message", "udev_running", "use_udev"]

log = get_logger("dm")

UDEV_MODES = ("auto", "wait", "off")
UDEV_TIMEOUT = 20.0  # seconds; udev in a software-emulated guest takes ~0.5 s
DM_DISABLE_UDEV = "DM_DISABLE_UDEV"
UDEV_CONTROL = "/run/udev/control"  # exists while systemd-udevd runs (libudev's test)


# libdevmapper's udev flags (libdevmapper.h), sent in the upper 16 bits of
# the ioctl's event_nr and read back by `dmsetup udevflags` in 55-dm.rules.
DM_UDEV_FLAGS_SHIFT = 16
DM_UDEV_DISABLE_LIBRARY_FALLBACK = 0x0020  # udev makes the nodes, not the library
DM_UDEV_PRIMARY_SOURCE_FLAG = 0x0040       # a real activation: run every dm rule
UDEV_COOKIE = (DM_UDEV_PRIMARY_SOURCE_FLAG | DM_UDEV_DISABLE_LIBRARY_FALLBACK) \
    << DM_UDEV_FLAGS_SHIFT
# Without the wait no cookie at all: udev then runs none of the dm or disk
# rules for the event (no /dev/mapper symlink over the client's node, no
# by-id links).  libdevmapper's no-sync flags (dm and subsystem rules off,
# primary source) were tried: with them the disk rules probe every device
# (blkid holds it open for a moment: open counts, a remove's EBUSY, reads
# an integrity device counts), which a caller that turned udev off did not
# ask for.

# struct udev_monitor_netlink_header (libudev): "libudev\0", magic (big
# endian), header size, properties offset and length, then filter hashes.
# libudev's, not the kernel's: no C header of ours or the kernel's declares
# it, so its fields are written here, once.
_LIBUDEV_PREFIX = b"libudev\0"
_LIBUDEV_MAGIC = 0xFEEDCAFE
_HEADER = struct.Struct("=8sIIII")
_CRED = _c.struct_view("struct lc_ucred").struct  # pid, uid, gid


def udev_running() -> bool:
    """Whether systemd-udevd runs here (its control socket exists)."""
    return os.path.exists(UDEV_CONTROL)


def use_udev(mode: str) -> bool:
    """Whether a client in udev ``mode`` waits for udev: "off" never;
    "wait" always; "auto" when udev runs and ``DM_DISABLE_UDEV`` is not
    set (libdevmapper's rule)."""
    if mode == "off":
        return False
    if mode == "wait":
        return True
    return not os.environ.get(DM_DISABLE_UDEV) and udev_running()


def parse_udev_message(data: bytes) -> Optional[Dict[str, str]]:
    """The properties of a libudev-framed netlink message, None for anything
    else (a kernel message, a short or foreign one)."""
    if len(data) < _HEADER.size or not data.startswith(_LIBUDEV_PREFIX):
        return None
    _prefix, magic, _size, off, length = _HEADER.unpack_from(data)
    if socket.ntohl(magic) != _LIBUDEV_MAGIC or off + length > len(data):
        return None
    props: Dict[str, str] = {}
    for item in data[off:off + length].split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            props[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
    return props


class UeventWaiter(UeventSocket):
    """Listens for udev's processed events from now on; :meth:`wait` finds
    the one for a device and action.  Make it before the ioctl, close it
    after (a context manager).  If the socket cannot be opened (no netlink
    here, not root) :meth:`wait` returns False at once."""

    def __init__(self) -> None:
        super().__init__(UDEV_GROUP, passcred=True)
        if self._sock is None:
            return  # no netlink here, or not root: not waiting for udev
        # Events up to this one were sent before our ioctl: not ours.
        self.seqnum = _sysfs.uevent_seqnum()

    def wait(self, devnum: int, action: str, timeout: float = UDEV_TIMEOUT) -> bool:
        """Block until udev has processed an ``action`` ("add", "change",
        "remove") event of block device ``devnum`` sent after this waiter
        was made; False after ``timeout`` seconds (or without a socket)."""
        sock = self._sock
        if sock is None:
            return False
        major, minor = str(os.major(devnum)), str(os.minor(devnum))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                # udev is slow, stuck, or in another network namespace: the
                # caller goes on without it (and makes the node itself)
                log.warning("udev did not report the %s event of device %s:%s within %g s",
                            action, major, minor, timeout)
                return False
            sock.settimeout(left)
            try:
                data, ancdata, _flags, _addr = sock.recvmsg(
                    64 * 1024, socket.CMSG_SPACE(_CRED.size))
            except socket.timeout:
                continue
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:  # overflowed: events lost, ours maybe
                    log.debug("udev: uevent socket overflowed, still waiting")
                    continue
                raise
            if not _from_root(ancdata):
                continue  # only root (udevd) may speak for udev
            props = parse_udev_message(data)
            if props is None or props.get("SUBSYSTEM") != "block":
                continue
            if props.get("MAJOR") != major or props.get("MINOR") != minor:
                continue
            try:
                seqnum = int(props.get("SEQNUM", "0"))
            except ValueError:
                continue
            if seqnum <= self.seqnum:
                continue
            if props.get("ACTION") == action:
                log.debug("udev: processed %s of %s:%s (seqnum %d)", props.get("ACTION"),
                          major, minor, seqnum)
                return True


def _from_root(ancdata: list) -> bool:  # type: ignore[type-arg]
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS \
                and len(payload) >= _CRED.size:
            uid: int = _CRED.unpack_from(payload)[1]
            return uid == 0
    return False
