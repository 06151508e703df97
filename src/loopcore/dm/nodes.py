"""``/dev/mapper``: the control node and the device nodes.

Without udev nobody makes ``/dev/mapper/<name>``, so loopcore creates and
removes the block nodes itself, as libdevmapper does, named after the
stored (mangled) name as udev names them, with the mode and group udev's
rules (and Debian's libdevmapper) give them: 0660, group ``disk``.  Where
udev made a symlink to the right device, it is left alone.
"""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import warnings
from typing import Dict

from .. import _sysfs, errors
from .._devnodes import make_block_node
from .._log import DEBUG, get_logger

__all__ = ["CONTROL_PATH", "DEV_DIR", "MISC_MAJOR", "add_node", "ensure_control",
           "node_path", "remove_node", "sync_nodes"]

CONTROL_PATH = "/dev/mapper/control"
DEV_DIR = "/dev/mapper"
MISC_MAJOR = 10  # the control node is a misc character device ...
MISC_NAME = "device-mapper"  # ... listed under this name in /proc/misc

log = get_logger("dm")


def node_path(kernel_name: str, dev_dir: str = DEV_DIR) -> str:
    """``/dev/mapper/<name>`` for a name as the kernel stores it."""
    return os.path.join(dev_dir, kernel_name)


def ensure_control(path: str) -> None:
    """Create the control node (misc 10:<minor> from /proc/misc), loading
    dm-mod first if the kernel has no device-mapper misc device yet.
    FileNotFoundError if there is no device-mapper to be had."""
    try:
        _ensure_control(path)
    except OSError as e:
        raise errors.converted(e, dm=True) from None


def _ensure_control(path: str) -> None:
    minor = _sysfs.misc_minor(MISC_NAME)
    if minor is None:
        log.debug("no device-mapper misc device: modprobe dm-mod")
        try:
            subprocess.run(["modprobe", "dm-mod"], check=False, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
        minor = _sysfs.misc_minor(MISC_NAME)
        if minor is None:
            raise errors.error_from_errno(
                errno.ENOENT, path, "device-mapper is not available (no dm-mod in this kernel)",
                dm=True)
    want = os.makedev(MISC_MAJOR, minor)
    try:
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == want:
            return
        os.unlink(path)
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", mode=0o755, exist_ok=True)
    log.debug("mknod %s c %d:%d", path, MISC_MAJOR, minor)
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, want)
    except FileExistsError:
        pass  # created by udev or another process meanwhile


def add_node(dev_dir: str, kernel_name: str, devnum: int) -> None:
    """Make ``dev_dir/<kernel_name>`` a block node for ``devnum``, replacing
    a wrong node or a dangling symlink."""
    path = node_path(kernel_name, dev_dir)
    debug = log.isEnabledFor(DEBUG)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        # nothing there (the usual case: stat then mknod, as libdevmapper
        # does), or a dangling symlink, which mknod's EEXIST finds below
        pass
    else:
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum:
            return  # ours already, or udev's symlink to the right device
        if debug:
            log.debug("%s is not block %d:%d: replaced", path, os.major(devnum),
                      os.minor(devnum))
        os.unlink(path)
    if debug:
        log.debug("mknod %s b %d:%d", path, os.major(devnum), os.minor(devnum))
    try:
        make_block_node(path, devnum)
    except FileNotFoundError:
        os.makedirs(dev_dir, mode=0o755, exist_ok=True)
        make_block_node(path, devnum)
    except FileExistsError:
        try:
            st = os.stat(path)
        except FileNotFoundError:  # a dangling symlink
            os.unlink(path)
            make_block_node(path, devnum)
            return
        if not (stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum):
            raise  # something else made meanwhile


def remove_node(dev_dir: str, kernel_name: str) -> None:
    """Remove ``dev_dir/<kernel_name>``; udev's symlink to a live device
    stays (udev removes it).  A failure is a RuntimeWarning, not an error:
    the device itself is gone by then."""
    path = node_path(kernel_name, dev_dir)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode) and os.path.exists(path):
        return
    log.debug("unlink %s", path)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        warnings.warn(f"could not remove {path}: {exc}", RuntimeWarning, stacklevel=4)


def sync_nodes(dev_dir: str, devices: Dict[str, int]) -> None:
    """Make ``dev_dir`` match ``devices`` (kernel name -> devnum): create
    missing nodes, fix wrong ones, remove block nodes and dangling symlinks
    of devices that are gone (``dmsetup mknodes``)."""
    for kernel_name, devnum in devices.items():
        add_node(dev_dir, kernel_name, devnum)
    try:
        entries = os.listdir(dev_dir)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry == "control" or entry in devices:
            continue
        path = node_path(entry, dev_dir)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISBLK(st.st_mode) or (stat.S_ISLNK(st.st_mode) and not os.path.exists(path)):
            remove_node(dev_dir, entry)
