"""The ``loopcore dm`` commands that print: ls, info, table, status, deps,
splitname, targets, target-version, version.

Output is dmsetup's, byte for byte (the VM tests diff it against dmsetup);
``--json`` prints structured data instead.  Each handler takes the parsed
arguments and returns the exit status (see :mod:`.dm` for the table of
commands).
"""
from __future__ import annotations

import argparse
import locale
import os
import re
import sys
from typing import Dict, List, Optional, Sequence, Tuple

from .. import _sysfs, dm
from . import dm_report
from ._rules import UsageError, write_json, write_text
from .dm_arguments import explicit, mapper, named
from .dm_tree import TREE_OPTIONS, DeviceTree

__all__ = ["ls", "info", "table", "status", "deps", "splitname", "targets", "target_version",
           "version"]


def _no_devices() -> None:
    write_text("No devices found\n")


# --- ls ------------------------------------------------------------------------------

def _terminal_width() -> int:
    """dmsetup's tree width: 80, or the terminal's width - 3."""
    try:
        columns = os.get_terminal_size(sys.stdout.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return 80
    return columns - 3 if columns > 3 else 80


def _tree_options(text: Optional[str]) -> List[str]:
    options = [o.strip() for o in (text or "").split(",") if o.strip()]
    for o in options:
        if o not in TREE_OPTIONS:
            raise UsageError(f"tree option {o!r} is not supported (supported: "
                             f"{', '.join(TREE_OPTIONS)})")
    return options


def _whole_tree(m: dm.DeviceMapper) -> DeviceTree:
    return DeviceTree((i, m.deps(i.kernel_name))
                      for i in (m.info(e.kernel_name) for e in m.list_devices()))


def _ls_tree(args: argparse.Namespace) -> int:
    options = _tree_options(args.output)
    with mapper(args) as m:
        tree = _whole_tree(m)
    if not tree.top:
        _no_devices()
        return 0
    write_text(tree.render(options, utf=locale.nl_langinfo(locale.CODESET) == "UTF-8",
                           width=_terminal_width()))
    return 0


def ls(args: argparse.Namespace) -> int:
    """``ls [--tree] [-o ...] [--target TYPE]``: name (major:minor) per
    device, or the tree."""
    if args.tree and args.target is None:
        return _ls_tree(args)
    output = args.output or "devno"
    if not args.tree and output not in DEVICE_LABELS:
        raise UsageError("ls -o takes devno, devname or blkdevname "
                         "(tree options need --tree)")
    with mapper(args) as m:
        devices = shown = m.list_devices()
        if args.target is not None:
            # dmsetup's ls --target: the devices with a target of that type
            # (in their status), as NAME\t(MAJOR, MINOR) whatever -o says
            shown = [d for d in devices
                     if any(s.target_type == args.target for s in m.status(d.name))]
    if args.json:
        write_json([{"name": d.name, "kernel_name": d.kernel_name, "uuid": d.uuid or None,
                     "major": d.major, "minor": d.minor, "event_nr": d.event_nr}
                    for d in shown])
        return 0
    if not devices:
        _no_devices()
    for d in shown:
        label = f"{d.major}, {d.minor}" if args.target is not None \
            else _dev_label(d.devnum, output, ":")
        write_text(f"{d.name}\t({label})\n")
    return 0


# --- info, info -c, splitname ----------------------------------------------------------

def _info_text(info: dm.DeviceInfo, read_ahead: Optional[int]) -> str:
    state = "SUSPENDED" if info.suspended else "ACTIVE"
    if info.read_only:
        state += " (READ-ONLY)"
    if info.deferred_remove:
        state += " (DEFERRED REMOVE)"
    lines = [f"Name:              {info.name}", f"State:             {state}"]
    if read_ahead is not None:
        lines.append(f"Read Ahead:        {read_ahead}")
    if not info.active and not info.inactive_table:
        lines.append("Tables present:    None")
    else:
        both = " & " if info.active and info.inactive_table else ""
        lines.append(f"Tables present:    {'LIVE' if info.active else ''}{both}"
                     f"{'INACTIVE' if info.inactive_table else ''}")
    lines += [f"Open count:        {info.open_count}",
              f"Event number:      {info.event_nr}",
              f"Major, minor:      {info.major}, {info.minor}",
              f"Number of targets: {info.target_count}"]
    if info.uuid:
        lines.append(f"UUID: {info.uuid}")
    return "\n".join(lines) + "\n\n"


def info(args: argparse.Namespace) -> int:
    """``info [-c] [NAME...]``: dmsetup's info blocks, or its column report."""
    if args.columns:
        return _info_columns(args)
    with mapper(args, *args.names) as m:
        infos = [m.info(n) for _label, n in named(args, m)]
    if args.json:
        write_json([dict(i.as_dict(), read_ahead=dm.read_ahead(i.devnum)) for i in infos])
        return 0
    if not infos:
        _no_devices()
    for i in infos:
        write_text(_info_text(i, dm.read_ahead(i.devnum)))
    return 0


def _fields(args: argparse.Namespace, default: Sequence[str]) -> List[str]:
    """``-o`` (and ``-O``: unknown sort fields are usage errors too)."""
    try:
        fields = dm_report.parse_fields(args.options, default)
        if args.sort:
            dm_report.sort_rows([], args.sort)
    except ValueError as e:
        raise UsageError(str(e)) from e
    return fields


def _write_report(args: argparse.Namespace, fields: List[str],
                  rows: List[Dict[str, str]]) -> None:
    if args.sort:
        rows = dm_report.sort_rows(rows, args.sort)
    write_text(dm_report.format_report(fields, rows, headings=not args.noheadings,
                                       separator=args.separator,
                                       nameprefixes=args.nameprefixes,
                                       quoted=not args.unquoted))


def _info_columns(args: argparse.Namespace) -> int:
    """``info -c``: dmsetup's column report."""
    fields = _fields(args, dm_report.DEFAULT_FIELDS)
    with mapper(args, *args.names) as m:
        infos = [m.info(n) for _label, n in named(args, m)]
        failed: List[OSError] = []
        rows = dm_report.device_rows(infos, fields, lambda i: m.deps(i.kernel_name),
                                     lambda: _whole_tree(m), failed)
    _write_report(args, fields, rows)
    if failed:
        raise failed[0]  # after the other rows, as dmsetup
    return 0


def splitname(args: argparse.Namespace) -> int:
    """``splitname NAME [SUBSYSTEM]``: LVM's VG, LV and layer of a name."""
    fields = _fields(args, dm_report.SPLITNAME_FIELDS)
    for f in fields:
        if f not in dm_report.FIELD_GROUPS["splitname_all"]:
            raise UsageError(f"Unrecognised field: {f}")
    values = dm_report.split_name_values(args.name, args.subsystem)
    _write_report(args, fields, [{f: values[f] for f in fields}])
    return 0


# --- table, status, deps --------------------------------------------------------------

Line = Tuple[int, int, str, str]  # start, length, target type, params


def _table_lines(args: argparse.Namespace, m: dm.DeviceMapper, dev: dm.DevIdArg) -> List[Line]:
    return [(t.start, t.length, t.target_type, t.params)
            for t in m.table(dev, inactive=args.inactive, showkeys=args.showkeys)]


def _status_lines(args: argparse.Namespace, m: dm.DeviceMapper,
                  dev: dm.DevIdArg) -> List[Line]:
    return [(s.start, s.length, s.target_type, s.params)
            for s in m.status(dev, inactive=args.inactive)]


def _of_target(args: argparse.Namespace, lines: List[Line]) -> Optional[List[Line]]:
    """--target TYPE: only that type's lines, None for a device without
    one (it prints nothing); all lines without --target."""
    if args.target is None:
        return lines
    return [line for line in lines if line[2] == args.target] or None


def _concise_quoted(text: str) -> str:
    """``text`` with ``,`` ``;`` and ``\\`` escaped by a backslash (they
    separate the fields, the targets and the devices of --concise)."""
    return re.sub(r"([,;\\])", r"\\\1", text)


def _print_concise(args: argparse.Namespace,
                   devices: List[Tuple[dm.DeviceInfo, List[Line]]]) -> int:
    """``table --concise``: every device on one line, as ``NAME,UUID,MINOR,
    rw|ro,TARGET[,TARGET...]`` joined by ``;`` (dmsetup create --concise
    reads it back)."""
    found = []
    for info, all_lines in devices:
        lines = _of_target(args, all_lines)
        if lines is None:
            continue
        found.append(",".join([
            _concise_quoted(info.name), _concise_quoted(info.uuid), str(info.minor),
            "ro" if info.read_only else "rw",
            *(f"{start} {length} {ttype} {_concise_quoted(params)}"
              for start, length, ttype, params in lines)]))
    if not devices:
        _no_devices()
    if found:
        write_text(";".join(found) + "\n")
    return 0


def _print_lines(args: argparse.Namespace, tables: List[Tuple[str, List[Line]]]) -> int:
    # (the "NAME: " prefix and "No devices found" go by the devices, not by
    # the devices --target leaves)
    prefix = len(tables) > 1 or not explicit(args)
    if not tables and not args.json:
        _no_devices()
    shown = [(n, lines) for n, all_lines in tables
             for lines in [_of_target(args, all_lines)] if lines is not None]
    if args.json:
        write_json({n: [{"start": start, "length": length, "type": ttype, "params": params}
                        for start, length, ttype, params in lines] for n, lines in shown})
        return 0
    for n, lines in shown:
        lead = f"{n}: " if prefix else ""
        if not lines:
            write_text(f"{lead}\n")  # dmsetup prints an empty line for no table
        for start, length, ttype, params in lines:
            write_text(f"{lead}{start} {length} {ttype} {params}\n")
    return 0


def table(args: argparse.Namespace) -> int:
    """``table [--inactive] [--showkeys] [--target TYPE] [--concise] [NAME...]``."""
    with mapper(args, *args.names) as m:
        devices = named(args, m)
        tables = [(label, _table_lines(args, m, n)) for label, n in devices]
        if args.concise and not args.json:
            infos = [m.info(n) for _label, n in devices]
            return _print_concise(args, [(i, lines) for i, (_n, lines) in zip(infos, tables)])
    return _print_lines(args, tables)


def status(args: argparse.Namespace) -> int:
    """``status [--inactive] [--target TYPE] [NAME...]``."""
    with mapper(args, *args.names) as m:
        tables = [(label, _status_lines(args, m, n)) for label, n in named(args, m)]
    return _print_lines(args, tables)


#: how ls and deps name a device (dmsetup's -o): its number, its name
#: (a dm device's own, else the kernel's), or the kernel's name
DEVICE_LABELS = ("devno", "devname", "blkdevname")


def _dev_label(devnum: int, style: str, separator: str) -> str:
    """``devnum`` as ``-o style`` shows it; the number, ``MAJOR{separator}MINOR``,
    where there is no name (as dmsetup)."""
    name = None
    if style == "devname":
        name = _sysfs.dm_name(devnum) or dm.block_name(devnum)
    elif style == "blkdevname":
        name = dm.block_name(devnum)
    return name or f"{os.major(devnum)}{separator}{os.minor(devnum)}"


def deps(args: argparse.Namespace) -> int:
    """``deps [-o devno|devname|blkdevname] [NAME...]``."""
    with mapper(args, *args.names) as m:
        found = [(label, m.deps(n)) for label, n in named(args, m)]
    if args.json:
        write_json({n: [{"major": os.major(d), "minor": os.minor(d), "name": dm.block_name(d)}
                        for d in devs] for n, devs in found})
        return 0
    prefix = len(found) > 1 or not explicit(args)
    for n, devs in found:
        labels = "".join(f" ({_dev_label(d, args.output, ', ')})" for d in devs)
        write_text(f"{n + ': ' if prefix else ''}{len(devs)} dependencies\t:{labels}\n")
    return 0


# --- the kernel's side -------------------------------------------------------------------

def targets(args: argparse.Namespace) -> int:
    """``targets``: the kernel's target types and their versions."""
    with mapper(args) as m:
        versions = m.target_versions()
    if args.json:
        write_json([{"name": v.name, "version": ".".join(map(str, v.version))}
                    for v in versions])
        return 0
    write_text("".join(f"{v}\n" for v in versions))
    return 0


def target_version(args: argparse.Namespace) -> int:
    """``target-version TARGET...``."""
    with mapper(args) as m:
        versions = [m.target_version(t) for t in args.targets]
    write_text("".join(f"{v}\n" for v in versions))
    return 0


def version(args: argparse.Namespace) -> int:
    """``version``: the kernel's device-mapper interface version."""
    with mapper(args) as m:
        v = m.version()
    write_text(f"Driver version:    {v[0]}.{v[1]}.{v[2]}\n")
    return 0
