"""dmsetup's ``ls --tree``: the dependency tree of every dm device, drawn
as dmsetup draws it (pstree's marks, its truncation, its ``-o`` options).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..dm import DeviceInfo, block_name

__all__ = ["DeviceTree", "TREE_OPTIONS"]


@dataclasses.dataclass
class _Node:
    devnum: int
    name: str  # "" for a device that is not a dm device
    info: Optional[DeviceInfo]
    children: List["_Node"] = dataclasses.field(default_factory=list)
    parents: List["_Node"] = dataclasses.field(default_factory=list)


TREE_OPTIONS = ("device", "nodevice", "blkdevname", "active", "open", "rw", "uuid", "ascii",
                "utf", "inverted", "notrunc")

# (branch, vertical, last) drawings, as dmsetup's (pstree's) ascii and UTF-8 sets.
_ASCII = ("|-", "| ", "`-")
_UTF = ("\u251c\u2500", "\u2502 ", "\u2514\u2500")


class DeviceTree:
    """Every dm device and the devices its live table uses, as dmsetup's
    dependency tree: nodes in the order they are first met (device list
    order, then each device's dependencies in the kernel's order)."""

    def __init__(self, devices: Iterable[Tuple[DeviceInfo, Sequence[int]]]) -> None:
        self._nodes: Dict[int, _Node] = {}
        self._order: List[_Node] = []
        self.top: List[_Node] = []  # used by no dm device
        pending = list(devices)
        infos = {info.devnum: info for info, _ in pending}
        deps = {info.devnum: list(d) for info, d in pending}

        def add(devnum: int) -> _Node:
            node = self._nodes.get(devnum)
            if node is not None:
                return node
            info = infos.get(devnum)
            node = _Node(devnum, info.name if info else "", info)
            self._nodes[devnum] = node
            self._order.append(node)
            self.top.append(node)
            for dep in deps.get(devnum, ()):
                child = add(dep)
                if child not in node.children:
                    node.children.append(child)
                    child.parents.append(node)
                    if child in self.top:
                        self.top.remove(child)
            return node

        for info, _ in pending:
            add(info.devnum)

    def node(self, devnum: int) -> _Node:
        return self._nodes[devnum]

    def bottom(self) -> List[_Node]:
        """Nodes that use no device, in the order they were met."""
        return [n for n in self._order if not n.children]

    def parent_count(self, devnum: int) -> int:
        """dmsetup's device_ref_count: the dm devices using this one."""
        return len(self._nodes[devnum].parents)

    def render(self, options: Sequence[str] = (), *, utf: bool = False,
               width: int = 80) -> str:
        """``dmsetup ls --tree [-o OPTIONS]``: drawn with UTF-8 box characters
        when ``utf`` (dmsetup: in a UTF-8 locale) unless "ascii" is asked
        for; lines longer than ``width`` are cut to it and end in "..."
        unless "notrunc" (dmsetup's 80, or the terminal's width - 3)."""
        opts = set(options)
        device = "nodevice" not in opts
        inverted = "inverted" in opts
        if "utf" in opts or "ascii" in opts:
            utf = "utf" in opts and "ascii" not in opts
        marks = _UTF if utf else _ASCII
        attrs = [o for o in ("active", "rw", "open", "uuid") if o in opts]
        more: Dict[int, bool] = {}
        lines: List[str] = []

        def draw(node: _Node, depth: int, last: bool) -> None:
            if not node.name and not device and "blkdevname" not in opts:
                return
            more[depth] = not last
            prefix = ""
            for d in range(depth):
                prefix += " "
                if d == depth - 1:
                    prefix += marks[2] if not more[depth] else marks[0]
                else:
                    prefix += marks[1] if more[d + 1] else "  "
            text = prefix + node.name
            if "blkdevname" in opts:
                kname = block_name(node.devnum)
                if kname:
                    text += f" <{kname}>"
            if device:
                text += f" ({os.major(node.devnum)}:{os.minor(node.devnum)})"
            if attrs and node.info is not None:
                words = []
                for a in attrs:
                    if a == "active":
                        words.append("SUSPENDED" if node.info.suspended else "ACTIVE")
                    elif a == "rw":
                        words.append("RO" if node.info.read_only else "RW")
                    elif a == "open":
                        words.append(str(node.info.open_count))
                    else:
                        words.append(node.info.uuid)
                text += " [" + ", ".join(words) + "]"
            lines.append(text)

        def walk(nodes: List[_Node], depth: int) -> None:
            for i, child in enumerate(nodes):
                draw(child, depth, i == len(nodes) - 1)
                below = child.parents if inverted else child.children
                if below:
                    walk(below, depth + 1)

        walk(self.bottom() if inverted else self.top, 0)
        if "notrunc" not in opts:
            lines = [_cut(line, width) for line in lines]
        return "".join(line + "\n" for line in lines)


def _cut(line: str, width: int) -> str:
    """dmsetup's truncation: a line one character too long is printed
    whole (it keeps the last character back for that case), a longer one
    is cut to ``width`` characters and "..." (at once where the first
    character past the width is not ASCII)."""
    if len(line) <= width or (len(line) == width + 1 and line[width].isascii()):
        return line
    return line[:width] + "..."
