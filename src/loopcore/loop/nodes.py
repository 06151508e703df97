"""Device nodes where no devtmpfs makes them: a container whose ``/dev``
is a static tmpfs has ``/dev/loop-control`` passed in, but the kernel's
new ``loopN`` (and its partitions ``loopNpM``) get no node there.

Without the opt-in that is a one-line error naming the missing node
(``control.missing_node_error``); with ``make_nodes=True``, ``--make-nodes``
or ``LOOPCORE_MAKE_NODES=1`` the nodes are made from the numbers in
sysfs (block, mode 0660, group ``disk`` where it exists, as udev would
make them), and the partition nodes made are removed again at detach.
"""
from __future__ import annotations

import builtins
import errno
import os
import stat
from typing import Iterable, List, Optional, Tuple

from .. import _sysfs
from .._devnodes import make_block_node
from .._log import get_logger
from ..errors import error_from_errno
from .control import MAKE_NODES_ENV, LoopControl, control, get_free
from .info import partition_path

__all__ = ["MAKE_NODES_ENV"]

log = get_logger("loop")

_from_env: Optional[bool] = None


def wanted(make_nodes: bool) -> bool:
    """``make_nodes``, or LOOPCORE_MAKE_NODES=1 in the environment (read
    at the first call: a lookup costs a share of an attach)."""
    global _from_env
    if make_nodes:
        return True
    if _from_env is None:
        _from_env = os.environ.get(MAKE_NODES_ENV, "") not in ("", "0")
    return _from_env


def loop_number_of_path(path: object) -> Optional[int]:
    """N of a ``/dev/loopN`` path, None for anything else."""
    if isinstance(path, str) and path.startswith("/dev/loop") and path[9:].isdigit():
        return int(path[9:])
    return None


def make_node(name: str) -> bool:
    """Make ``/dev/NAME`` for block device ``name`` from its number in
    sysfs if there is none; True if it was made.  A file of that name that
    is not that device is left alone (FileExistsError)."""
    path = f"/dev/{name}"
    devnum = _sysfs.block_dev(name)
    if devnum is None:
        raise error_from_errno(errno.ENODEV, path, f"the kernel has no {name}")
    try:
        st = os.lstat(path)
    except builtins.FileNotFoundError:
        pass
    else:
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum:
            return False
        raise error_from_errno(errno.EEXIST, path, f"exists and is not {name}")
    make_block_node(path, devnum)
    log.debug("%s: made the node (%d:%d)", path, os.major(devnum), os.minor(devnum))
    return True


def prepare(number: Optional[int]) -> bool:
    """Before an attach: make the node of the device it will take (the
    chosen ``number``, made with LOOP_CTL_ADD if the kernel lacks it, or
    GET_FREE's); True if this call made the device itself.  Before the
    process's first attach, GET_FREE's too: the LOOP_CONFIGURE probe opens it."""
    if number is None or control.configure_supported is None:
        make_node(f"loop{get_free(control.fd())}")
    if number is None:
        return False
    if _sysfs.block_dev(f"loop{number}") is None:
        with LoopControl() as ctl:
            ctl.add(number)
            try:
                make_node(f"loop{number}")
            except BaseException:
                ctl.remove(number)
                raise
        return True
    make_node(f"loop{number}")
    return False


def make_partition_nodes(number: int) -> Tuple[str, ...]:
    """Make the missing nodes of ``loopN``'s partitions; the paths made."""
    made: List[str] = []
    try:
        for pno in _sysfs.loop_partition_numbers(number) or ():
            if make_node(f"loop{number}p{pno}"):
                made.append(partition_path(number, pno))
    except BaseException:
        remove_nodes(made)
        raise
    return tuple(made)


def remove_nodes(paths: Iterable[str]) -> None:
    """Remove nodes :func:`make_partition_nodes` made (gone already: fine)."""
    for path in paths:
        try:
            os.unlink(path)
        except builtins.FileNotFoundError:
            pass
