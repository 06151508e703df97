"""``/dev/mapper`` nodes as loopcore makes them without udev
(:func:`loopcore.dm.nodes.add_node`, :func:`remove_node`), in a scratch
directory: what is there already decides what is done."""
from __future__ import annotations

import os
import stat

import pytest

from loopcore._devnodes import NODE_MODE, node_gid
from loopcore.dm.nodes import add_node, remove_node

pytestmark = pytest.mark.root

DEVNUM = os.makedev(253, 4001)  # never opened: only the node's number matters
OTHER = os.makedev(253, 4002)


def _is_node(path, devnum=DEVNUM):
    st = os.lstat(path)
    return (stat.S_ISBLK(st.st_mode) and st.st_rdev == devnum
            and stat.S_IMODE(st.st_mode) == NODE_MODE and st.st_gid == node_gid())


def test_missing_node_is_made(tmp_path):
    add_node(str(tmp_path), "a", DEVNUM)
    assert _is_node(tmp_path / "a")


def test_missing_directory_is_made(tmp_path):
    add_node(str(tmp_path / "mapper"), "a", DEVNUM)
    assert _is_node(tmp_path / "mapper" / "a")


def test_right_node_is_kept(tmp_path):
    add_node(str(tmp_path), "a", DEVNUM)
    inode = os.lstat(tmp_path / "a").st_ino
    add_node(str(tmp_path), "a", DEVNUM)
    assert os.lstat(tmp_path / "a").st_ino == inode


@pytest.mark.parametrize("what", ["wrong node", "file", "dangling symlink"])
def test_anything_else_is_replaced(tmp_path, what):
    path = tmp_path / "a"
    if what == "wrong node":
        add_node(str(tmp_path), "a", OTHER)
    elif what == "file":
        path.write_text("x")
    else:
        path.symlink_to(tmp_path / "gone")
    add_node(str(tmp_path), "a", DEVNUM)
    assert _is_node(path)


def test_symlink_to_the_device_is_left_to_udev(tmp_path):
    add_node(str(tmp_path), "dm-9", DEVNUM)
    (tmp_path / "a").symlink_to("dm-9")
    add_node(str(tmp_path), "a", DEVNUM)
    assert (tmp_path / "a").is_symlink()
    remove_node(str(tmp_path), "a")  # a live symlink is udev's to remove
    assert (tmp_path / "a").is_symlink()


def test_remove_node(tmp_path):
    add_node(str(tmp_path), "a", DEVNUM)
    remove_node(str(tmp_path), "a")
    remove_node(str(tmp_path), "a")  # gone already: nothing
    assert not os.path.lexists(tmp_path / "a")
