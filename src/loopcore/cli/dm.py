"""``loopcore dm ...``: a dmsetup-like command line over :mod:`loopcore.dm`.

:func:`loopcore.cli.build_parser` calls :func:`add_parser` with its
subparsers object only when ``dm`` (or the help) is asked for, so the loop
commands do not import device-mapper.  Every leaf parser sets ``func`` to
a handler taking the parsed args and returning the exit status, under the
rules of :mod:`._rules` (the loop commands' too): names and uuids typed on
the command line are checked, and argument combinations, before
``/dev/mapper/control`` is opened, and a bad one is a :class:`UsageError`
(exit status 2); failures are raised (OSError, ValueError) for
:func:`loopcore.cli.main` to print as one line.  Output follows dmsetup's;
``--json`` prints structured data instead.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Callable, List, Optional, Tuple, TypeVar, cast

from .. import dm
from ._rules import UsageError, write_text

__all__ = ["add_parser"]

Handler = Callable[[argparse.Namespace], int]
_P = TypeVar("_P", bound=argparse.ArgumentParser)


def _mangling(args: argparse.Namespace) -> str:
    return cast(str, getattr(args, "manglename", "auto"))


def _check_name(args: argparse.Namespace, name: str) -> None:
    """A device name from the command line: an invalid one is a usage error."""
    try:
        dm.validate_name(name, _mangling(args))
    except ValueError as e:
        raise UsageError(str(e)) from e


def _check_uuid(args: argparse.Namespace, uuid: str) -> None:
    """A uuid from the command line: an invalid one is a usage error."""
    try:
        dm.validate_uuid(uuid, _mangling(args))
    except ValueError as e:
        raise UsageError(str(e)) from e


def _mapper(args: argparse.Namespace, *names: Optional[str]) -> dm.DeviceMapper:
    """Open the control node after checking every name (bad names are
    usage errors, reported before device-mapper is touched)."""
    for name in names:
        if name is not None:
            _check_name(args, name)
    return dm.DeviceMapper(name_mangling=_mangling(args))


def _out(text: str) -> None:
    write_text(text)  # bytes as they are, and a failed write fails the command


def _dump(obj: object) -> None:
    _out(json.dumps(obj, indent=2) + "\n")


def _read_table(args: argparse.Namespace) -> dm.Table:
    """The table from --table TEXT, a file argument, or stdin."""
    if getattr(args, "table", None) is not None:
        text = args.table
    elif getattr(args, "table_file", None):
        with open(args.table_file) as f:
            text = f.read()
    else:
        text = sys.stdin.read()
    table = dm.Table.parse(text)
    if not table:
        raise ValueError("the table is empty (give --table, a table file, or a table on stdin)")
    return table


def _dev_label(devnum: int, style: str) -> str:
    major, minor = os.major(devnum), os.minor(devnum)
    if style == "blkdevname":
        name = dm.block_name(devnum)
        if name:
            return name
    return f"{major}:{minor}" if style == "ls" else f"{major}, {minor}"


# --- handlers -------------------------------------------------------------------

def _ls(args: argparse.Namespace) -> int:
    with _mapper(args) as m:
        devices = m.list_devices()
    if args.json:
        _dump([{"name": d.name, "kernel_name": d.kernel_name, "uuid": d.uuid or None,
                "major": d.major, "minor": d.minor, "event_nr": d.event_nr} for d in devices])
        return 0
    if not devices:
        _out("No devices found\n")
        return 0
    for d in devices:
        label = dm.block_name(d.devnum) if args.output == "blkdevname" else None
        _out(f"{d.name}\t({label or f'{d.major}:{d.minor}'})\n")
    return 0


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


def _names(m: dm.DeviceMapper, names: List[str]) -> List[Tuple[str, str]]:
    """(label, name to call with) for the named devices, or for all: those
    are addressed by their stored name, which unmangling may not give back."""
    if names:
        return [(n, n) for n in names]
    return [(d.name, d.kernel_name) for d in m.list_devices()]


def _info(args: argparse.Namespace) -> int:
    with _mapper(args, *args.names) as m:
        infos = [m.info(n) for _label, n in _names(m, args.names)]
    if args.json:
        _dump([dict(i.as_dict(), read_ahead=dm.read_ahead(i.devnum)) for i in infos])
        return 0
    if not infos:
        _out("No devices found\n")
    for i in infos:
        _out(_info_text(i, dm.read_ahead(i.devnum)))
    return 0


def _lines(m: dm.DeviceMapper, name: str, args: argparse.Namespace,
           status: bool) -> List[Tuple[int, int, str, str]]:
    """(start, length, type, params) per target: status lines or table lines."""
    if status:
        return [(s.start, s.length, s.target_type, s.params)
                for s in m.status(name, inactive=args.inactive)]
    return [(t.start, t.length, t.type, t.params)
            for t in m.table(name, inactive=args.inactive, showkeys=args.showkeys)]


def _table_like(args: argparse.Namespace, status: bool) -> int:
    with _mapper(args, *args.names) as m:
        names = _names(m, args.names)
        tables = [(label, _lines(m, n, args, status)) for label, n in names]
    if args.json:
        _dump({n: [{"start": start, "length": length, "type": ttype, "params": params}
                   for start, length, ttype, params in table] for n, table in tables})
        return 0
    if not tables:
        _out("No devices found\n")
    prefix = len(tables) > 1 or not args.names
    for n, table in tables:
        lead = f"{n}: " if prefix else ""
        if not table:
            _out(f"{lead}\n")  # dmsetup prints an empty line for no table
        for start, length, ttype, params in table:
            _out(f"{lead}{start} {length} {ttype} {params}\n")
    return 0


def _table(args: argparse.Namespace) -> int:
    return _table_like(args, status=False)


def _status(args: argparse.Namespace) -> int:
    return _table_like(args, status=True)


def _deps(args: argparse.Namespace) -> int:
    with _mapper(args, *args.names) as m:
        names = _names(m, args.names)
        found = [(label, m.deps(n)) for label, n in names]
    if args.json:
        _dump({n: [{"major": os.major(d), "minor": os.minor(d), "name": dm.block_name(d)}
                   for d in devs] for n, devs in found})
        return 0
    prefix = len(found) > 1 or not args.names
    for n, devs in found:
        labels = "".join(f" ({_dev_label(d, args.output)})" for d in devs)
        _out(f"{n + ': ' if prefix else ''}{len(devs)} dependencies\t:{labels}\n")
    return 0


def _targets(args: argparse.Namespace) -> int:
    with _mapper(args) as m:
        versions = m.target_versions()
    if args.json:
        _dump([{"name": v.name, "version": ".".join(map(str, v.version))} for v in versions])
        return 0
    for v in versions:
        _out(f"{v}\n")
    return 0


def _version(args: argparse.Namespace) -> int:
    with _mapper(args) as m:
        v = m.version()
    _out(f"Driver version:    {v[0]}.{v[1]}.{v[2]}\n")
    return 0


def _create(args: argparse.Namespace) -> int:
    _check_name(args, args.name)
    if args.uuid is not None:
        _check_uuid(args, args.uuid)  # before the control node, like the name
    table = None if args.notable else _read_table(args)
    with _mapper(args) as m:
        info = m.create(args.name, uuid=args.uuid, table=table, read_only=args.readonly)
    if args.json:
        _dump(info.as_dict())
    return 0


def _load(args: argparse.Namespace) -> int:
    _check_name(args, args.name)
    table = _read_table(args)
    with _mapper(args) as m:
        m.load(args.name, table, read_only=args.readonly)
    return 0


def _remove(args: argparse.Namespace) -> int:
    # Argument checks before _mapper(): they must not wait on device-mapper.
    if args.all and args.names:
        raise UsageError("remove --all takes no device names")
    if not args.all and not args.names:
        raise UsageError("no device specified")
    with _mapper(args, *args.names) as m:
        if args.all:
            m.remove_all(deferred=args.deferred)
            return 0
        retries = dm.REMOVE_RETRIES if args.retry else 0
        for n in args.names:
            m.remove(n, deferred=args.deferred, retries=retries)
    return 0


def _rename(args: argparse.Namespace) -> int:
    # Argument checks before _mapper(): they must not wait on device-mapper.
    if args.setuuid is not None:
        if args.new_name is not None:
            raise UsageError("give a new name or --setuuid, not both")
        _check_uuid(args, args.setuuid)
    elif args.new_name is None:
        raise UsageError("no new name given")
    with _mapper(args, args.name, args.new_name) as m:
        if args.setuuid is not None:
            m.set_uuid(args.name, args.setuuid)
        else:
            m.rename(args.name, cast(str, args.new_name))  # not None: checked above
    return 0


def _suspend(args: argparse.Namespace) -> int:
    with _mapper(args, *args.names) as m:
        for n in args.names:
            m.suspend(n, noflush=args.noflush, skip_lockfs=args.nolockfs)
    return 0


def _resume(args: argparse.Namespace) -> int:
    with _mapper(args, *args.names) as m:
        for n in args.names:
            m.resume(n)
    return 0


def _clear(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        m.clear(args.name)
    return 0


def _message(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        reply = m.message(args.name, args.sector, " ".join(args.message))
    if reply:
        _out(reply if reply.endswith("\n") else reply + "\n")
    return 0


def _wait(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        info = m.wait(args.name, args.event_nr)
    if args.json:
        _dump(info.as_dict())
    return 0


def _mknodes(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        m.mknodes(args.name)
    return 0


# --- parser ---------------------------------------------------------------------

def _uint(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def add_parser(subparsers: "argparse._SubParsersAction[_P]") -> None:
    """Add ``dm`` and its subcommands to ``subparsers``."""
    top = subparsers.add_parser("dm", help="device-mapper devices (like dmsetup)",
                                description="Device-mapper through /dev/mapper/control, "
                                            "with dmsetup's output formats.")
    sub = top.add_subparsers(dest="dm_command", metavar="COMMAND")
    sub.required = True

    def leaf(name: str, func: Handler, help_: str, json_: bool = False,
             names: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        if json_:
            p.add_argument("--json", action="store_true", help="print JSON")
        if names:
            p.add_argument("--manglename", choices=dm.MANGLING_MODES, default="auto",
                           help="name and uuid mangling, as dmsetup's: 'auto' (default) "
                                "stores characters udev does not allow as \\xNN and shows "
                                "them decoded; 'none' uses names as stored")
        p.set_defaults(func=func)
        return p

    def table_source(p: argparse.ArgumentParser) -> None:
        p.add_argument("--table", metavar="TABLE",
                       help="the table text ('start length type params' per line)")
        p.add_argument("table_file", nargs="?", metavar="TABLE_FILE",
                       help="read the table from this file (default: stdin)")
        p.add_argument("-r", "--readonly", action="store_true", help="read-only table")

    p = leaf("ls", _ls, "list devices: name (major:minor)", json_=True)
    p.add_argument("-o", "--output", choices=["devno", "blkdevname"], default="devno")

    p = leaf("create", _create, "create a device, load its table and resume it", json_=True)
    p.add_argument("name")
    p.add_argument("-u", "--uuid")
    p.add_argument("--notable", action="store_true", help="create without a table (suspended)")
    table_source(p)

    p = leaf("load", _load, "load an inactive table (resume makes it live)")
    p.add_argument("name")
    table_source(p)

    p = leaf("remove", _remove, "remove devices")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--deferred", action="store_true", help="remove on last close if open")
    p.add_argument("--retry", action="store_true",
                   help="retry EBUSY 25 times, 200 ms apart (libdevmapper's policy)")
    p.add_argument("--all", action="store_true", help="remove every device not in use")

    p = leaf("rename", _rename, "rename a device, or set its uuid with --setuuid")
    p.add_argument("name")
    p.add_argument("new_name", nargs="?")
    p.add_argument("--setuuid", metavar="UUID")

    p = leaf("suspend", _suspend, "suspend devices")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("--noflush", action="store_true", help="do not flush queued I/O")
    p.add_argument("--nolockfs", action="store_true", help="do not freeze a file system")

    p = leaf("resume", _resume, "resume devices (swapping in a loaded table)")
    p.add_argument("names", nargs="+", metavar="NAME")

    p = leaf("clear", _clear, "drop a device's inactive table")
    p.add_argument("name")

    for name, func, what in (("table", _table, "the table"), ("status", _status, "the status")):
        p = leaf(name, func, f"print {what} of devices (all without names)", json_=True)
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("--inactive", action="store_true", help="the inactive table")
        if name == "table":
            p.add_argument("--showkeys", action="store_true",
                           help="print dm-crypt and dm-integrity keys (default: zeros)")

    p = leaf("info", _info, "print device information (all without names)", json_=True)
    p.add_argument("names", nargs="*", metavar="NAME")

    p = leaf("deps", _deps, "print the devices a device uses", json_=True)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", choices=["devno", "blkdevname"], default="devno")

    p = leaf("message", _message, "send a message to a target (or '@...' to dm core)")
    p.add_argument("name")
    p.add_argument("sector", type=_uint)
    p.add_argument("message", nargs="+")

    p = leaf("wait", _wait, "wait until the device's event number moves past EVENT_NR",
             json_=True)
    p.add_argument("name")
    p.add_argument("event_nr", type=_uint, nargs="?", default=0)

    leaf("targets", _targets, "list the kernel's target types and versions", json_=True,
         names=False)
    leaf("version", _version, "print the kernel's device-mapper interface version",
         names=False)
    p = leaf("mknodes", _mknodes, "make /dev/mapper match the kernel's devices")
    p.add_argument("name", nargs="?")

