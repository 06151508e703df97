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
import errno
import json
import locale
import os
import sys
from typing import Callable, List, Optional, Tuple, TypeVar, cast

from .. import dm
from .. import errors as dm_errors
from ..dm import report
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
    _check_selector(args)
    udev = "off" if getattr(args, "noudevsync", False) else "auto"
    return dm.DeviceMapper(name_mangling=_mangling(args), udev=udev)


# --- -u UUID, -j MAJOR -m MINOR: dmsetup's other ways to name the device ----------

def _has_selector(args: argparse.Namespace) -> bool:
    return getattr(args, "select_uuid", None) is not None \
        or getattr(args, "major", None) is not None or getattr(args, "minor", None) is not None


def _check_selector(args: argparse.Namespace) -> None:
    if not _has_selector(args):
        return
    if args.select_uuid is not None:
        if args.major is not None or args.minor is not None:
            raise UsageError("give -u or -j/-m, not both")
        _check_uuid(args, args.select_uuid)
    elif args.major is None or args.minor is None:
        raise UsageError("-j MAJOR and -m MINOR go together")
    if getattr(args, "names", None):
        raise UsageError("give a device name or -u/-j/-m, not both")


def _selected(args: argparse.Namespace, m: dm.DeviceMapper) -> dm.DevIdArg:
    """The device -u or -j/-m names: by uuid, or the name of the device with
    that number (ENXIO if there is none)."""
    if args.select_uuid is not None:
        return dm.DevId.uuid(args.select_uuid, _mangling(args))
    want = os.makedev(args.major, args.minor)
    for d in m.list_devices():
        if d.devnum == want:
            return d.kernel_name
    raise dm_errors.error_from_errno(errno.ENXIO, f"{args.major}:{args.minor}",
                                     "No such device-mapper device", dm=True)


def _one(args: argparse.Namespace, m: dm.DeviceMapper, name: Optional[str]) -> dm.DevIdArg:
    """The one device a command acts on: NAME, or -u/-j/-m."""
    if _has_selector(args):
        return _selected(args, m)
    if name is None:
        raise UsageError("no device specified")
    return name


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
        if o not in report.TREE_OPTIONS:
            raise UsageError(f"tree option {o!r} is not supported (supported: "
                             f"{', '.join(report.TREE_OPTIONS)})")
    return options


def _ls(args: argparse.Namespace) -> int:
    if args.tree:
        options = _tree_options(args.output)
        with _mapper(args) as m:
            infos = [m.info(e.kernel_name) for e in m.list_devices()]
            tree = report.DeviceTree((i, m.deps(i.kernel_name)) for i in infos)
        if not infos:
            _out("No devices found\n")
            return 0
        _out(tree.render(options, utf=locale.nl_langinfo(locale.CODESET) == "UTF-8",
                         width=_terminal_width()))
        return 0
    if args.output is None:
        args.output = "devno"
    if args.output not in ("devno", "blkdevname"):
        raise UsageError("ls -o takes devno or blkdevname (tree options need --tree)")
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


def _names(m: dm.DeviceMapper, names: List[str],
           args: Optional[argparse.Namespace] = None) -> List[Tuple[str, dm.DevIdArg]]:
    """(label, device to call with) for the named devices (or the one -u or
    -j/-m selects), or for all: those are addressed by their stored name,
    which unmangling may not give back."""
    if args is not None and _has_selector(args):
        dev = _selected(args, m)
        return [(str(dev), dev)]
    if names:
        return [(n, n) for n in names]
    return [(d.name, d.kernel_name) for d in m.list_devices()]


def _explicit(args: argparse.Namespace) -> bool:
    """Devices were named (no "name: " prefix on their lines then)."""
    return bool(args.names) or _has_selector(args)


def _info(args: argparse.Namespace) -> int:
    if args.columns:
        return _info_columns(args)
    with _mapper(args, *args.names) as m:
        infos = [m.info(n) for _label, n in _names(m, args.names, args)]
    if args.json:
        _dump([dict(i.as_dict(), read_ahead=dm.read_ahead(i.devnum)) for i in infos])
        return 0
    if not infos:
        _out("No devices found\n")
    for i in infos:
        _out(_info_text(i, dm.read_ahead(i.devnum)))
    return 0


def _report_format(args: argparse.Namespace, fields: List[str],
                   rows: List[dict]) -> str:  # type: ignore[type-arg]
    if args.sort:
        rows = report.sort_rows(rows, args.sort)
    return report.format_report(fields, rows, headings=not args.noheadings,
                                separator=args.separator, nameprefixes=args.nameprefixes,
                                quoted=not args.unquoted)


def _fields(args: argparse.Namespace, default: Tuple[str, ...]) -> List[str]:
    try:
        fields = report.parse_fields(args.options, default)
        if args.sort:
            report.sort_rows([], args.sort)  # unknown sort fields: a usage error too
    except ValueError as e:
        raise UsageError(str(e)) from e
    return fields


def _info_columns(args: argparse.Namespace) -> int:
    """``info -c``: dmsetup's column report."""
    fields = _fields(args, report.DEFAULT_FIELDS)
    with _mapper(args, *args.names) as m:
        infos = [m.info(n) for _label, n in _names(m, args.names, args)]

        def tree() -> report.DeviceTree:
            return report.DeviceTree((d, m.deps(d.kernel_name))
                                     for d in (m.info(e.kernel_name) for e in m.list_devices()))
        failed: List[OSError] = []
        rows = report.device_rows(infos, fields, lambda i: m.deps(i.kernel_name), tree,
                                  failed)
    _out(_report_format(args, fields, rows))
    if failed:
        raise failed[0]  # after the other rows, as dmsetup
    return 0


def _splitname(args: argparse.Namespace) -> int:
    """``splitname NAME [SUBSYSTEM]``: LVM's VG, LV and layer of a name."""
    fields = _fields(args, report.SPLITNAME_FIELDS)
    for f in fields:
        if f not in report.FIELD_GROUPS["splitname_all"]:
            raise UsageError(f"Unrecognised field: {f}")
    values = report.split_name_values(args.name, args.subsystem)
    _out(_report_format(args, fields, [{f: values[f] for f in fields}]))
    return 0


def _lines(m: dm.DeviceMapper, name: dm.DevIdArg, args: argparse.Namespace,
           status: bool) -> List[Tuple[int, int, str, str]]:
    """(start, length, type, params) per target: status lines or table lines."""
    if status:
        return [(s.start, s.length, s.target_type, s.params)
                for s in m.status(name, inactive=args.inactive)]
    return [(t.start, t.length, t.type, t.params)
            for t in m.table(name, inactive=args.inactive, showkeys=args.showkeys)]


def _table_like(args: argparse.Namespace, status: bool) -> int:
    with _mapper(args, *args.names) as m:
        names = _names(m, args.names, args)
        tables = [(label, _lines(m, n, args, status)) for label, n in names]
    if args.json:
        _dump({n: [{"start": start, "length": length, "type": ttype, "params": params}
                   for start, length, ttype, params in table] for n, table in tables})
        return 0
    if not tables:
        _out("No devices found\n")
    prefix = len(tables) > 1 or not _explicit(args)
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
        names = _names(m, args.names, args)
        found = [(label, m.deps(n)) for label, n in names]
    if args.json:
        _dump({n: [{"major": os.major(d), "minor": os.minor(d), "name": dm.block_name(d)}
                   for d in devs] for n, devs in found})
        return 0
    prefix = len(found) > 1 or not _explicit(args)
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


def _target_version(args: argparse.Namespace) -> int:
    with _mapper(args) as m:
        versions = [m.target_version(t) for t in args.targets]
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
    if _has_selector(args) and args.name is not None:
        if args.table_file is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        args.table_file, args.name = args.name, None  # `reload -u UUID TABLE_FILE`
    if args.name is not None:
        _check_name(args, args.name)
    elif not _has_selector(args):
        raise UsageError("no device specified")
    table = _read_table(args)
    with _mapper(args) as m:
        m.load(_one(args, m, args.name), table, read_only=args.readonly)
    return 0


def _on_each_device(args: argparse.Namespace,
                    action: Callable[[dm.DeviceMapper, dm.DevIdArg], object]) -> int:
    """``action(mapper, device)`` for each device the command line names."""
    _need_device(args)
    with _mapper(args, *args.names) as m:
        for _label, n in _names(m, args.names, args):
            action(m, n)
    return 0


def _wipe_table(args: argparse.Namespace) -> int:
    return _on_each_device(args, lambda m, n: m.wipe_table(n))


def _remove(args: argparse.Namespace) -> int:
    # Argument checks before _mapper(): they must not wait on device-mapper.
    if args.all and (args.names or _has_selector(args)):
        raise UsageError("remove --all takes no device names")
    if not args.all and not _explicit(args):
        raise UsageError("no device specified")
    with _mapper(args, *args.names) as m:
        if args.all:
            m.remove_all(deferred=args.deferred)
            return 0
        retries = dm.REMOVE_RETRIES if args.retry else 0
        for _label, n in _names(m, args.names, args):
            if args.force and m.info(n).open_count > 0:
                # dmsetup's --force: an open device gets an error table
                # first, so that its users fail and let go
                m.wipe_table(n)
            m.remove(n, deferred=args.deferred, retries=retries)
    return 0


def _rename(args: argparse.Namespace) -> int:
    # Argument checks before _mapper(): they must not wait on device-mapper.
    if _has_selector(args):
        if args.new_name is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        args.new_name, args.name = args.name, None  # `rename -u UUID NEW_NAME`
    if args.setuuid is not None:
        if args.new_name is not None:
            raise UsageError("give a new name or --setuuid, not both")
        _check_uuid(args, args.setuuid)
    elif args.new_name is None:
        raise UsageError("no new name given")
    with _mapper(args, args.name, args.new_name) as m:
        dev = _one(args, m, args.name)
        if args.setuuid is not None:
            m.set_uuid(dev, args.setuuid)
        else:
            m.rename(dev, cast(str, args.new_name))  # not None: checked above
    return 0


def _need_device(args: argparse.Namespace) -> None:
    if not _explicit(args):
        raise UsageError("no device specified")


def _suspend(args: argparse.Namespace) -> int:
    return _on_each_device(args, lambda m, n: m.suspend(n, noflush=args.noflush,
                                                         skip_lockfs=args.nolockfs))


def _resume(args: argparse.Namespace) -> int:
    return _on_each_device(args, lambda m, n: m.resume(n))


def _clear(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        m.clear(_one(args, m, args.name))
    return 0


def _message(args: argparse.Namespace) -> int:
    # [NAME] SECTOR MESSAGE...: without -u/-j/-m the first word is the name
    words = list(args.words)
    name = None if _has_selector(args) else (words.pop(0) if words else None)
    if len(words) < 2:
        raise UsageError("give the sector and the message")
    try:
        sector = _uint(words[0])
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"bad sector {words[0]!r}") from e
    with _mapper(args, name) as m:
        reply = m.message(_one(args, m, name), sector, " ".join(words[1:]))
    if reply:
        _out(reply if reply.endswith("\n") else reply + "\n")
    return 0


def _wait(args: argparse.Namespace) -> int:
    name, event_nr = args.name, args.event_nr
    if _has_selector(args) and name is not None:
        if event_nr is not None:
            raise UsageError("give a device name or -u/-j/-m, not both")
        name, event_nr = None, name  # `wait -u UUID EVENT_NR`
    try:
        event = _uint(event_nr) if event_nr is not None else 0
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"bad event number {event_nr!r}") from e
    with _mapper(args, name) as m:
        info = m.wait(_one(args, m, name), event)
    if args.json:
        _dump(info.as_dict())
    return 0


def _mknodes(args: argparse.Namespace) -> int:
    with _mapper(args, args.name) as m:
        m.mknodes(_one(args, m, args.name) if args.name or _has_selector(args) else None)
    return 0


def _setgeometry(args: argparse.Namespace) -> int:
    # [NAME] CYLINDERS HEADS SECTORS START
    words = list(args.words)
    name = None if _has_selector(args) else (words.pop(0) if len(words) == 5 else None)
    if len(words) != 4:
        raise UsageError("give the device, then cylinders, heads, sectors and start")
    try:
        numbers = [_uint(w) for w in words]
    except (ValueError, argparse.ArgumentTypeError) as e:
        raise UsageError(f"bad geometry {' '.join(words)!r}") from e
    with _mapper(args, name) as m:
        m.set_geometry(_one(args, m, name), *numbers)
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
    top.add_argument("--noudevsync", action="store_true",
                     help="do not wait for udev (make /dev/mapper nodes directly)")
    sub = top.add_subparsers(dest="dm_command", metavar="COMMAND")
    sub.required = True

    def leaf(name: str, func: Handler, help_: str, json_: bool = False,
             names: bool = True, aliases: Tuple[str, ...] = ()) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, aliases=list(aliases))
        if json_:
            p.add_argument("--json", action="store_true", help="print JSON")
        if names:
            p.add_argument("--manglename", choices=dm.MANGLING_MODES, default="auto",
                           help="name and uuid mangling, as dmsetup's: 'auto' (default) "
                                "stores characters udev does not allow as \\xNN and shows "
                                "them decoded; 'none' uses names as stored")
        # after the command too, as dmsetup takes it anywhere; SUPPRESS keeps
        # `dm --noudevsync COMMAND` from being reset by this default
        p.add_argument("--noudevsync", action="store_true", default=argparse.SUPPRESS,
                       help="do not wait for udev (make /dev/mapper nodes directly)")
        p.set_defaults(func=func)
        return p

    def selectors(p: argparse.ArgumentParser) -> None:
        p.add_argument("-u", "--uuid", dest="select_uuid", metavar="UUID",
                       help="the device with this uuid")
        p.add_argument("-j", "--major", type=_uint, help="the device with this major ...")
        p.add_argument("-m", "--minor", type=_uint, help="... and this minor number")

    def columns(p: argparse.ArgumentParser) -> None:
        p.add_argument("-o", "--options", metavar="FIELDS",
                       help="comma-separated fields ('+F' adds to the default ones)")
        p.add_argument("--noheadings", action="store_true",
                       help="no heading line (and ':'-separated, as dmsetup)")
        p.add_argument("--separator", metavar="SEP", help="separate fields with SEP")
        p.add_argument("--nameprefixes", action="store_true", help="print DM_FIELD='value'")
        p.add_argument("--unquoted", action="store_true", help="with --nameprefixes: no quotes")
        p.add_argument("-O", "--sort", metavar="FIELDS",
                       help="sort by these fields ('-F' descending)")

    def table_source(p: argparse.ArgumentParser) -> None:
        p.add_argument("--table", metavar="TABLE",
                       help="the table text ('start length type params' per line)")
        p.add_argument("table_file", nargs="?", metavar="TABLE_FILE",
                       help="read the table from this file (default: stdin)")
        p.add_argument("-r", "--readonly", action="store_true", help="read-only table")

    p = leaf("ls", _ls, "list devices: name (major:minor)", json_=True)
    p.add_argument("-o", "--output",
                   help="devno (default) or blkdevname; with --tree, tree options: "
                        + ",".join(report.TREE_OPTIONS))
    p.add_argument("--tree", action="store_true", help="draw the dependency tree")

    p = leaf("create", _create, "create a device, load its table and resume it", json_=True)
    p.add_argument("name")
    p.add_argument("-u", "--uuid")
    p.add_argument("--notable", action="store_true", help="create without a table (suspended)")
    table_source(p)

    p = leaf("load", _load, "load an inactive table (resume makes it live)",
             aliases=("reload",))
    p.add_argument("name", nargs="?")
    table_source(p)
    selectors(p)

    p = leaf("wipe_table", _wipe_table,
             "replace the table with an error target of the same size, and resume")
    p.add_argument("names", nargs="*", metavar="NAME")
    selectors(p)

    p = leaf("remove", _remove, "remove devices")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--deferred", action="store_true", help="remove on last close if open")
    p.add_argument("--retry", action="store_true",
                   help="retry EBUSY 25 times, 200 ms apart (libdevmapper's policy)")
    p.add_argument("-f", "--force", action="store_true",
                   help="give an open device an error table first (wipe_table)")
    p.add_argument("--all", action="store_true", help="remove every device not in use")
    selectors(p)

    p = leaf("rename", _rename, "rename a device, or set its uuid with --setuuid")
    p.add_argument("name", nargs="?")
    p.add_argument("new_name", nargs="?")
    p.add_argument("--setuuid", metavar="UUID")
    selectors(p)

    p = leaf("suspend", _suspend, "suspend devices")
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("--noflush", action="store_true", help="do not flush queued I/O")
    p.add_argument("--nolockfs", action="store_true", help="do not freeze a file system")
    selectors(p)

    p = leaf("resume", _resume, "resume devices (swapping in a loaded table)")
    p.add_argument("names", nargs="*", metavar="NAME")
    selectors(p)

    p = leaf("clear", _clear, "drop a device's inactive table")
    p.add_argument("name", nargs="?")
    selectors(p)

    for name, func, what in (("table", _table, "the table"), ("status", _status, "the status")):
        p = leaf(name, func, f"print {what} of devices (all without names)", json_=True)
        p.add_argument("names", nargs="*", metavar="NAME")
        p.add_argument("--inactive", action="store_true", help="the inactive table")
        if name == "table":
            p.add_argument("--showkeys", action="store_true",
                           help="print dm-crypt and dm-integrity keys (default: zeros)")
        selectors(p)

    p = leaf("info", _info, "print device information (all without names)", json_=True)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-c", "-C", "--columns", action="store_true",
                   help="one line per device, in columns (-o picks them)")
    columns(p)
    selectors(p)

    p = leaf("splitname", _splitname, "split an LVM device name into VG, LV and layer",
             names=False)
    p.add_argument("name")
    p.add_argument("subsystem", nargs="?", default="LVM")
    p.add_argument("-c", "-C", "--columns", action="store_true", help="(the only format)")
    columns(p)

    p = leaf("deps", _deps, "print the devices a device uses", json_=True)
    p.add_argument("names", nargs="*", metavar="NAME")
    p.add_argument("-o", "--output", choices=["devno", "blkdevname"], default="devno")
    selectors(p)

    p = leaf("message", _message, "send a message to a target (or '@...' to dm core)")
    p.add_argument("words", nargs="+", metavar="[NAME] SECTOR MESSAGE")
    selectors(p)

    p = leaf("wait", _wait, "wait until the device's event number moves past EVENT_NR",
             json_=True)
    p.add_argument("name", nargs="?")
    p.add_argument("event_nr", nargs="?")
    selectors(p)

    p = leaf("setgeometry", _setgeometry, "set the device's CHS geometry")
    p.add_argument("words", nargs="+", metavar="[NAME] CYLINDERS HEADS SECTORS START")
    selectors(p)

    leaf("targets", _targets, "list the kernel's target types and versions", json_=True,
         names=False)
    p = leaf("target-version", _target_version, "print target types' versions", names=False)
    p.add_argument("targets", nargs="+", metavar="TARGET")
    leaf("version", _version, "print the kernel's device-mapper interface version",
         names=False)
    p = leaf("mknodes", _mknodes, "make /dev/mapper match the kernel's devices")
    p.add_argument("name", nargs="?")
    selectors(p)
