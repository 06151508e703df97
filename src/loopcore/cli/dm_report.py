"""dmsetup's column reports, in its exact output format: the fields of
``info -c`` and ``splitname`` (:func:`device_rows`, :func:`format_report`)
and LVM's name splitting (:func:`split_lvm_name`).

Image builders parse this output (``dmsetup info -c -o major,minor,open
--noheadings --separator :``), so layout follows libdevmapper's report
code: each field has a heading, a minimum width and a kind (numbers are
right-aligned); aligned output pads every column, the last one too;
``--noheadings`` switches to ":"-separated unaligned output, an explicit
``--separator`` to unaligned output; ``--nameprefixes`` prints
``DM_FIELD='value'``.  The tree fields come from :mod:`.dm_tree`.
"""
from __future__ import annotations

import errno
import os
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from .. import errors
from ..dm import DeviceInfo, block_name, mangle, read_ahead
from .dm_tree import DeviceTree

__all__ = ["DEFAULT_FIELDS", "FIELDS", "FIELD_GROUPS", "SPLITNAME_FIELDS", "Field",
           "device_rows", "format_report", "parse_fields", "sort_rows", "split_lvm_name",
           "split_name_values"]


class Field(NamedTuple):
    """A report column: heading, minimum width, whether it is a number."""

    heading: str
    width: int
    number: bool = False


FIELDS: Dict[str, Field] = {
    "name": Field("Name", 16),
    "mangled_name": Field("MangledName", 16),
    "unmangled_name": Field("UnmangledName", 16),
    "uuid": Field("UUID", 32),
    "mangled_uuid": Field("MangledUUID", 32),
    "unmangled_uuid": Field("UnmangledUUID", 32),
    "read_ahead": Field("RAhead", 6, True),
    "blkdevname": Field("BlkDevName", 16),
    "attr": Field("Stat", 4),
    "tables_loaded": Field("Tables", 6),
    "suspended": Field("Suspended", 9),
    "readonly": Field("Read-only", 9),
    "devno": Field("DevNo", 5),
    "major": Field("Maj", 3, True),
    "minor": Field("Min", 3, True),
    "open": Field("Open", 4, True),
    "segments": Field("Targ", 4, True),
    "events": Field("Event", 6, True),
    "device_count": Field("#Devs", 5, True),
    "devs_used": Field("DevNamesUsed", 16),
    "devnos_used": Field("DevNosUsed", 16),
    "blkdevs_used": Field("BlkDevNamesUsed", 16),
    "device_ref_count": Field("#Refs", 5, True),
    "names_using_dev": Field("RefNames", 8),
    "devnos_using_dev": Field("RefDevNos", 9),
    "subsystem": Field("Subsys", 6),
    "vg_name": Field("VG", 4),
    "lv_name": Field("LV", 4),
    "lv_layer": Field("LVLayer", 7),
}

# dmsetup's "<type>_all" names, in its order.
FIELD_GROUPS: Dict[str, Tuple[str, ...]] = {
    "name_all": ("name", "mangled_name", "unmangled_name", "uuid", "mangled_uuid",
                 "unmangled_uuid", "read_ahead"),
    "info_all": ("blkdevname", "attr", "tables_loaded", "suspended", "readonly", "devno",
                 "major", "minor", "open", "segments", "events"),
    # the dependency fields only: devs_used and the *_using_dev ones are
    # dmsetup's tree fields, which no group names
    "deps_all": ("device_count", "devnos_used", "blkdevs_used"),
    "splitname_all": ("subsystem", "vg_name", "lv_name", "lv_layer"),
}

DEFAULT_FIELDS = ("name", "major", "minor", "attr", "open", "segments", "events", "uuid")
SPLITNAME_FIELDS = ("vg_name", "lv_name", "lv_layer")
_DEPS_FIELDS = {"device_count", "devnos_used", "blkdevs_used"}
_TREE_FIELDS = {"devs_used", "device_ref_count", "names_using_dev", "devnos_using_dev"}


def parse_fields(spec: Optional[str], default: Sequence[str]) -> List[str]:
    """The field names of ``-o SPEC`` ("+a,b" adds to ``default``);
    ValueError naming the first unknown field."""
    if not spec:
        return list(default)
    names = list(default) if spec.startswith("+") else []
    for item in spec.lstrip("+").split(","):
        item = item.strip()
        if item in FIELD_GROUPS:
            names.extend(FIELD_GROUPS[item])
        elif item in FIELDS:
            names.append(item)
        else:
            raise errors.ValueError(f"Unrecognised field: {item}")
    return names


def split_lvm_name(name: str) -> Tuple[str, str, str]:
    """LVM's VG-LV-layer split of a device name: a single '-' ends a part,
    "--" stands for a '-' in it; a '-' as the very last character is kept
    (libdevmapper's rule).  Text after the layer's end is dropped."""
    def part(text: str) -> Tuple[str, str]:
        out: List[str] = []
        i = 0
        while i < len(text):
            if text[i] == "-" and i + 1 < len(text):
                if text[i + 1] != "-":
                    return "".join(out), text[i + 1:]
                i += 1
            out.append(text[i])
            i += 1
        return "".join(out), ""

    vg, rest = part(name)
    lv, rest = part(rest)
    layer, _ = part(rest)
    return vg, lv, layer


def split_name_values(name: str, subsystem: str) -> Dict[str, str]:
    """The splitname fields: VG, LV and layer only for subsystem "LVM"."""
    vg, lv, layer = split_lvm_name(name) if subsystem == "LVM" else ("", "", "")
    return {"subsystem": subsystem, "vg_name": vg, "lv_name": lv, "lv_layer": layer}


def _list(items: Iterable[str]) -> str:
    return ",".join(items)


def _devno(devnum: int) -> str:
    return f"{os.major(devnum)}:{os.minor(devnum)}"


def _block_name(devnum: int) -> str:
    """The kernel's name of a block device; an error, as in dmsetup, where
    it has none (a dm device without a table is not a disk yet)."""
    name = block_name(devnum)
    if name is None:
        raise errors.error_from_errno(errno.ENXIO, _devno(devnum),
                                      "Could not resolve block device name", dm=True)
    return name


def _attr(info: DeviceInfo) -> str:
    return "".join((("L" if info.live_table else "-"), ("I" if info.inactive_table else "-"),
                    ("s" if info.suspended else "-"), ("r" if info.read_only else "w")))


def _tables(info: DeviceInfo) -> str:
    if info.live_table:
        return "Both" if info.inactive_table else "Live"
    return "Inactive" if info.inactive_table else "None"


def _info_value(field: str, info: DeviceInfo) -> str:
    """A field that DEV_STATUS (and sysfs) answers."""
    simple: Dict[str, Callable[[DeviceInfo], str]] = {
        "name": lambda i: i.name,
        "mangled_name": lambda i: i.kernel_name or i.name,
        "unmangled_name": lambda i: i.name,
        "uuid": lambda i: i.uuid,
        "mangled_uuid": lambda i: mangle(i.uuid) if i.uuid else "",
        "unmangled_uuid": lambda i: i.uuid,
        "read_ahead": lambda i: str(read_ahead(i.devnum) or 0),
        "blkdevname": lambda i: _block_name(i.devnum),
        "attr": _attr,
        "tables_loaded": _tables,
        "suspended": lambda i: "Suspended" if i.suspended else "Active",
        "readonly": lambda i: "Read-only" if i.read_only else "Writeable",
        "devno": lambda i: _devno(i.devnum),
        "major": lambda i: str(i.major),
        "minor": lambda i: str(i.minor),
        "open": lambda i: str(i.open_count),
        "segments": lambda i: str(i.target_count),
        "events": lambda i: str(i.event_nr),
    }
    return simple[field](info)


def _deps_value(field: str, used: Sequence[int]) -> str:
    """A field from the device's dependencies (TABLE_DEPS)."""
    if field == "device_count":
        return str(len(used))
    if field == "devnos_used":
        return _list(_devno(d) for d in used)
    return _list(_block_name(d) for d in used)  # blkdevs_used


def _tree_value(field: str, tree: DeviceTree, devnum: int) -> str:
    """A field from the whole dependency tree (who uses whom)."""
    node = tree.node(devnum)
    if field == "devs_used":
        return _list(c.name for c in node.children if c.name)
    if field == "device_ref_count":
        return str(tree.parent_count(devnum))
    if field == "names_using_dev":
        return _list(p.name for p in node.parents if p.name)
    return _list(_devno(p.devnum) for p in node.parents)  # devnos_using_dev


def device_rows(infos: Sequence[DeviceInfo], fields: Sequence[str],
                deps: Callable[[DeviceInfo], Sequence[int]],
                tree: Callable[[], DeviceTree],
                failed: Optional[List[OSError]] = None) -> List[Dict[str, str]]:
    """One row (field -> text) per device.  ``deps`` gives a device's
    dependencies and ``tree`` the whole dependency tree: each is called
    only when a field needs it.  With a ``failed`` list, a device whose
    row cannot be made is left out and its error added there (dmsetup
    prints the other rows, then fails)."""
    want = set(fields)
    whole = tree() if want & _TREE_FIELDS else None
    rows = []
    for info in infos:
        used = deps(info) if want & _DEPS_FIELDS else ()
        subsystem = info.uuid.split("-", 1)[0] if "-" in info.uuid else ""
        split = split_name_values(info.name, subsystem)
        row: Dict[str, str] = {}
        try:
            for f in fields:
                if f in split:
                    row[f] = split[f]
                elif f in _DEPS_FIELDS:
                    row[f] = _deps_value(f, used)
                elif f in _TREE_FIELDS:
                    assert whole is not None
                    row[f] = _tree_value(f, whole, info.devnum)
                else:
                    row[f] = _info_value(f, info)
        except OSError as exc:
            if failed is None:
                raise
            failed.append(exc)
            continue
        rows.append(row)
    return rows


def sort_rows(rows: List[Dict[str, str]], keys: str) -> List[Dict[str, str]]:
    """``--sort KEYS``: comma-separated fields, "-" before one for
    descending order; numbers compare as numbers."""
    ordered = list(rows)
    for key in reversed([k.strip() for k in keys.split(",") if k.strip()]):
        descending = key.startswith("-")
        name = key.lstrip("+-")
        if name not in FIELDS:
            raise errors.ValueError(f"Unrecognised field: {name}")
        if FIELDS[name].number:
            ordered.sort(key=lambda r: int(r.get(name, "0") or 0), reverse=descending)
        else:
            ordered.sort(key=lambda r: r.get(name, ""), reverse=descending)
    return ordered


def format_report(fields: Sequence[str], rows: Sequence[Dict[str, str]], *,
                  headings: bool = True, separator: Optional[str] = None,
                  nameprefixes: bool = False, quoted: bool = True) -> str:
    """The report text: aligned columns unless ``separator`` is given (or
    ``nameprefixes``); ``headings`` off also means ":"-separated and
    unaligned (dmsetup's old behaviour).  No rows, no text."""
    aligned = True
    sep = " "
    if not headings:
        sep, aligned = ":", False
    if nameprefixes:
        aligned = False
    if separator is not None:
        sep, aligned = separator, False
    if not rows:
        return ""  # dmsetup prints its headings with the first row
    specs = [FIELDS[f] for f in fields]
    widths = [max([s.width, len(s.heading)] + [len(r[f]) for r in rows])
              for f, s in zip(fields, specs)]
    out = []
    if headings:
        if aligned:
            out.append(sep.join(s.heading.ljust(w) for s, w in zip(specs, widths)))
        else:
            out.append(sep.join(s.heading for s in specs))
    for row in rows:
        cells = []
        for f, s, w in zip(fields, specs, widths):
            value = row[f]
            if nameprefixes:
                value = f"DM_{f.upper()}=" + (f"'{value}'" if quoted else value)
            elif aligned:
                value = value.rjust(w) if s.number else value.ljust(w)
            cells.append(value)
        out.append(sep.join(cells))
    return "".join(line + "\n" for line in out)
