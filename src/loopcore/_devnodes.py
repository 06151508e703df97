"""Block device nodes loopcore makes itself (where neither devtmpfs nor
udev made one: a container's static /dev, device-mapper without udev), made
as udev and libdevmapper make them: mode 0660, owner root, group ``disk``
(root's where there is no such group), whatever the umask."""
from __future__ import annotations

import functools
import grp
import os
import stat

__all__ = ["NODE_MODE", "NODE_GROUP", "node_gid", "make_block_node"]

NODE_MODE = 0o660
NODE_GROUP = "disk"


@functools.lru_cache(maxsize=None)
def node_gid() -> int:
    """The gid of group ``disk``, looked up once; root's where there is none."""
    try:
        return grp.getgrnam(NODE_GROUP).gr_gid
    except KeyError:
        return 0


def make_block_node(path: str, devnum: int) -> None:
    """mknod ``path`` as block device ``devnum``, 0660 root:disk; nothing
    is left behind if the owner or mode cannot be set."""
    os.mknod(path, stat.S_IFBLK | NODE_MODE, devnum)
    try:
        os.chown(path, 0, node_gid())
        os.chmod(path, NODE_MODE)  # mknod's mode went through the umask
    except BaseException:
        os.unlink(path)
        raise
