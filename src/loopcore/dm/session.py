"""What every :class:`~loopcore.dm.DeviceMapper` verb stands on: the
client's settings and control channel, addressing a device (by name or
uuid, see :mod:`.names`), the record made from a reply, and the
``/dev/mapper`` nodes made or removed after an ioctl, with or without
udev (see :mod:`.udev`).  The verbs themselves are :mod:`.queries`',
:mod:`.lifecycle`'s and :mod:`.client`'s.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Tuple, TypeVar

from .. import errors
from .._log import get_logger
from .._validate import check_timeout
from .ioctl import F_UEVENT_GENERATED, Channel, Cmd, Flag, Reply
from .names import (
    DevIdArg,
    DmName,
    DmUuid,
    KernelName,
    as_name,
    check_mode,
    decode,
    encode,
    unmangle,
)
from .nodes import CONTROL_PATH, DEV_DIR, add_node, node_path, remove_node
from .records import DeviceInfo
from .udev import UDEV_MODES, UDEV_TIMEOUT, UeventWaiter, use_udev

__all__ = ["Session", "api", "only_name"]

log = get_logger("dm")

F = TypeVar("F", bound=Callable[..., Any])

S = TypeVar("S", bound="Session")



@functools.lru_cache(maxsize=1024)
def _plain_name(name: str, mangling: str, dev_dir: str) -> Tuple[bytes, str, str]:
    """Session._name of a plain str, checked once per name, mangling mode
    and node directory (a name that fails its check raises every time)."""
    raw = DmName(name, mangling).raw
    kernel_name = decode(raw)
    return raw, kernel_name, node_path(kernel_name, dev_dir)


def api(func: F) -> F:
    """A public verb: builtin OSErrors (from os.* calls on nodes), ValueErrors
    and TypeErrors leave it as loopcore's device-mapper errors."""
    return errors.translate(func, dm=True)


def only_name(name: str, what: str) -> None:
    """TypeError if ``name`` is a uuid where only a name will do."""
    if isinstance(name, DmUuid):
        raise errors.TypeError(f"{what} must be a name, not a DmUuid")


class Session:
    """The state a :class:`~loopcore.dm.DeviceMapper` carries (its
    arguments are documented there) and the helpers every verb uses."""

    @api
    def __init__(self, control: str = CONTROL_PATH, *, dev_dir: str = DEV_DIR,
                 manage_nodes: bool = True, name_mangling: str = "auto", udev: str = "auto",
                 udev_timeout: float = UDEV_TIMEOUT) -> None:
        self._channel = Channel(-1, control)  # closed until open() succeeds
        self.name_mangling = check_mode(name_mangling)
        if udev not in UDEV_MODES:
            raise errors.ValueError(f"udev must be one of {', '.join(UDEV_MODES)}, "
                                    f"got {udev!r}")
        check_timeout(udev_timeout, "udev_timeout")
        if not udev_timeout:  # None or 0: a wait that cannot succeed
            raise errors.ValueError(f"udev_timeout must be a number > 0, got {udev_timeout!r}")
        self.udev_timeout = float(udev_timeout)
        # Decided once: the udev-less path pays nothing per call.
        self.udev_sync = use_udev(udev)
        self._udev_mode = udev
        self.control = control
        self.dev_dir = dev_dir
        self.manage_nodes = manage_nodes
        self._channel = Channel.open(control)

    # -- the control fd --

    def fileno(self) -> int:
        """The control fd, for poll() after :meth:`arm_poll`."""
        if self._channel.closed:
            raise errors.ValueError("DeviceMapper is closed")
        return self._channel.fd

    @property
    def closed(self) -> bool:
        return self._channel.closed

    @api
    def close(self) -> None:
        """Close the control fd (again: nothing)."""
        self._channel.close()

    def __enter__(self: "S") -> "S":
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

    # -- addressing a device, reading a reply --

    def _address(self, dev: DevIdArg) -> Tuple[bytes, bytes, str]:
        """(name, uuid, filename for errors) of the header that finds ``dev``:
        a name is checked (and mangled) here, once per verb."""
        if isinstance(dev, DmUuid):
            return b"", dev.raw, f"uuid {dev}"
        raw, _, filename = self._name(dev)
        return raw, b"", filename

    def _name(self, name: str) -> Tuple[bytes, str, str]:
        """(raw, kernel name, node path) of a device name: a :class:`DmName`
        as it was made, a plain str checked and mangled per this client
        (remembered: create's name is the next verb's)."""
        if type(name) is str:
            return _plain_name(name, self.name_mangling, self.dev_dir)
        raw = as_name(name, self.name_mangling).raw
        kernel_name = decode(raw)
        return raw, kernel_name, node_path(kernel_name, self.dev_dir)

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
        # no backslash: nothing mangled, in every mode (unmangle's own test)
        return unmangle(stored, self.name_mangling) if "\\" in stored else stored

    def _info(self, reply: Reply) -> DeviceInfo:
        kernel_name = reply.kernel_name
        return DeviceInfo(self._unmangle(kernel_name), self._unmangle(reply.kernel_uuid),
                          reply.dev, reply.open_count, reply.event_nr, reply.target_count,
                          Flag(reply.flags), KernelName.stored(kernel_name))

    # -- nodes: named after the stored (mangled) name, as udev names them --

    def _add_node(self, kernel_name: str, devnum: int) -> None:
        if self.manage_nodes:
            add_node(self.dev_dir, kernel_name, devnum)

    def _remove_node(self, kernel_name: str) -> None:
        if self.manage_nodes and kernel_name:
            remove_node(self.dev_dir, kernel_name)

    # -- udev --

    def _waiter(self) -> Optional[UeventWaiter]:
        """A udev event listener, opened before the ioctl, when cooperating."""
        return UeventWaiter() if self.udev_sync else None

    def _wait_udev(self, waiter: UeventWaiter, reply: Reply, devnum: int, action: str) -> None:
        """Wait for udev's processed event, if the ioctl sent one.  In "auto"
        mode a wait that runs out stops the waiting for the rest of this
        client's life: a udevd whose events cannot reach us (a container
        with its own network namespace but the host's /run/udev) would
        otherwise cost the full timeout on every call."""
        if not reply.flags & F_UEVENT_GENERATED:
            return
        if not waiter.wait(devnum, action, self.udev_timeout) and self._udev_mode == "auto":
            log.warning("no event from udev within %g s: this client makes /dev/mapper "
                        "nodes itself from now on (udev=\"wait\" keeps waiting)",
                        self.udev_timeout)
            self.udev_sync = False

    def _settle(self, waiter: UeventWaiter, reply: Reply, devnum: int, action: str,
                kernel_name: str) -> None:
        """After an ioctl that sent a uevent: wait for udev to process it,
        then make (or remove) the node if udev did not."""
        self._wait_udev(waiter, reply, devnum, action)
        if action == "remove":
            self._remove_node(kernel_name)
        else:
            self._add_node(kernel_name, devnum)  # nothing when udev's link is there

