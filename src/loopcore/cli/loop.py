"""The loop subcommands: attach, detach, list, find, info, set-capacity, control.

A new loop subcommand is a ``cmd_*`` handler here and a row of
:data:`.loop_parsers.COMMANDS` (its options and operands); the handler
returns the exit status or raises, under the rules of :mod:`._rules`.
Devices on the command line go through :func:`.arguments.loop_ref`
(``N``, ``loopN``, ``/dev/loopN`` or a node's path); records are
:class:`loopcore.LoopInfo`; losetup's columns and formats are in
:mod:`.columns`.
"""
from __future__ import annotations

import errno
import os
import stat

from .. import loop
from ..errors import Error, error_from_errno
from ..loop import LoopInfo, discovery
from ._rules import (
    EXIT_FAILURE,
    CLIError,
    UsageError,
    describe,
    error,
    print_made,
    write,
    write_json,
    write_text,
)
from .arguments import loop_number_arg, loop_ref

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, List, Optional

    from .table_parser import Args


__all__ = ["cmd_attach", "cmd_partitions", "cmd_detach", "cmd_list", "cmd_find", "cmd_info",
           "cmd_set_capacity", "cmd_control", "DETACH_WAIT_S"]

#: ``detach --wait`` without SECONDS (udevadm settle's default is 120 s;
#: a probe holds a device for well under a second)
DETACH_WAIT_S = 60.0

#: ``info``'s names of the flags (LoopInfo's properties), in lo_flags order
_FLAG_NAMES = (("read_only", "read-only"), ("autoclear", "autoclear"),
               ("partscan", "partscan"), ("direct_io", "direct-io"))


def _records_by_number(include_unbound: bool) -> Dict[int, LoopInfo]:
    return {r.number: r for r in loop.list_devices(include_unbound=include_unbound)}


def _named_records(refs: List[str]) -> List[LoopInfo]:
    """The records of the devices ``refs`` name, in that order; ENODEV
    naming the reference as typed for a device that does not exist."""
    numbers = [loop_ref(ref).number for ref in refs]
    by_number = _records_by_number(include_unbound=True)
    records = []
    for ref, number in zip(refs, numbers):
        if number not in by_number:
            raise error_from_errno(errno.ENODEV, ref, "no such loop device")
        records.append(by_number[number])
    return records


def _print_records(args: Args, records: List[LoopInfo]) -> None:
    # losetup's columns only where records are printed: attach and detach
    # processes do not import them (start-up time)
    from .columns import ALL_COLUMNS, DEFAULT_COLUMNS, parse_columns, render_json, render_table

    if args.output_all:
        columns: List[str] = list(ALL_COLUMNS)
    elif args.output:
        columns = parse_columns(args.output)
    else:
        columns = list(DEFAULT_COLUMNS)
    if args.json:
        write(render_json(columns, records))
    else:
        write_text(render_table(columns, records, headings=not args.noheadings, raw=args.raw))


# --- handlers -----------------------------------------------------------------------

def _chosen_device(operands: List[str]) -> Optional[int]:
    """losetup's DEV of ``attach DEV FILE``: the first of two operands when
    it names a loop device (``N``, ``loopN``, ``/dev/loopN``, a block node);
    None when the operands are files (``attach FILE...``)."""
    if len(operands) < 2:
        return None
    try:
        number = loop_number_arg(operands[0])
    except ValueError as e:
        if isinstance(e.__cause__, OSError) and not _is_block_device(operands[0]):
            return None  # a file (or no such file: attaching it says so)
        raise UsageError(f"attach: {e}") from None
    if len(operands) > 2:
        raise UsageError("attach: give FILE..., or DEV FILE (a chosen device takes one FILE)")
    return number


def _is_block_device(path: str) -> bool:
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def cmd_attach(args: Args) -> int:
    # losetup's two forms, FILE (a free device) and DEV FILE (that device),
    # and FILE... (a free device each, in one burst, all or nothing)
    number = _chosen_device(args.operands)
    files = args.operands[1:] if number is not None else args.operands
    options = dict(read_only=args.read_only, partscan=args.partscan, autoclear=args.autoclear,
                   direct_io=args.direct_io == "on", block_size=args.sector_size or 0,
                   offset=args.offset, size_limit=args.sizelimit, make_nodes=args.make_nodes)
    if len(files) > 1:
        if args.nooverlap:
            raise UsageError("attach: -L/--nooverlap takes one FILE")
        devices = loop.attach_many(files, **options)
        try:
            def undo_all() -> None:
                loop.detach_many(devices)

            print_made([d.path for d in devices], undo_all,
                       "detached them again", "detaching them again failed")
        finally:
            for device in devices:
                device.close()  # closes our fds (if detach did not); does not detach
        return 0
    device = loop.attach(files[0], number=number, reuse=args.nooverlap, **options)
    try:
        if device.reused:  # someone else's binding: print it, never undo it
            write_text(device.path + "\n")
        else:
            def undo() -> None:
                device.detach()

            print_made(device.path, undo, "detached it again", "detaching it again failed")
    finally:
        device.close()  # closes our fd (if detach did not); does not detach
    return 0


def cmd_partitions(args: Args) -> int:
    device = loop.open(loop_ref(args.device).node)
    try:
        if args.action == "list":
            table = device.partition_table()
            if args.json:
                doc = None if table is None else dict(
                    table._asdict(), partitions=[dict(p._asdict(), node=f"{device.path}p{p.number}")
                                                 for p in table.partitions])
                write_json(doc)
            else:
                write_text("".join(f"{device.path}p{p.number} start={p.start} size={p.size}"
                                   f" type={p.type}\n"
                                   for p in (table.partitions if table else [])))
        elif args.action == "add":
            write_text("".join(path + "\n" for path in device.add_partitions()))
        else:
            write_text("".join(path + "\n" for path in device.remove_partitions()))
    finally:
        device.close()  # partitions added stay: they are the kernel's now
    return 0


def _deferred_notice(dev: str) -> None:
    # losetup says nothing; a builder about to delete the image should know
    # (stderr: stdout stays clean)
    error(f"{dev}: still open elsewhere: the kernel detaches it at the last close "
          "(--wait waits for that)")


def cmd_detach(args: Args) -> int:
    wait: Optional[float] = args.wait
    if args.all == bool(args.devices):
        raise UsageError("detach: give DEV... or --all, not both" if args.all
                         else "detach: give DEV... or --all")
    if args.all:
        return _detach_all(wait)
    # DEV...: all or nothing as far as the kernel allows: every device is
    # opened (so it exists, is bound and is ours to detach) before any is
    # detached, then one C loop detaches them (loop.detach_many)
    devices: List[loop.LoopDevice] = []
    try:
        for dev in args.devices:
            try:
                devices.append(loop.open(loop_ref(dev).node))
            except (Error, OSError, ValueError) as e:
                raise CLIError(describe(e, action="detach failed", default=dev)) from e
        try:
            released = loop.detach_many(devices, wait=wait)
        except (Error, OSError, ValueError) as e:
            raise CLIError(describe(e, action="detach failed")) from e
    finally:
        for device in devices:
            device.close()  # those not detached (closed already if they were)
    for dev, done in zip(args.devices, released):
        if not done:
            _deferred_notice(dev)
    return 0


def _detach_all(wait: Optional[float]) -> int:
    """``detach --all`` (losetup -D): each bound device in turn, past
    those that fail and those someone else detached meanwhile."""
    status = 0
    for number in [r.number for r in loop.list_devices()]:
        dev = loop.device_path(number)
        try:
            if not loop.detach(dev, wait=wait):
                _deferred_notice(dev)
        except (Error, OSError, ValueError) as e:
            if isinstance(e, OSError) and e.errno in (errno.ENXIO, errno.ENOENT):
                continue  # detached by someone else meanwhile
            error(describe(e, action="detach failed", default=dev))
            status = EXIT_FAILURE
    return status


def cmd_list(args: Args) -> int:
    if args.all and args.devices:
        raise UsageError("list: give DEV... or --all, not both")
    records = _named_records(args.devices) if args.devices else loop.list_devices()
    _print_records(args, records)
    return 0


def cmd_find(args: Args) -> int:
    records = loop.find(args.file, offset=args.offset)
    if args.json or args.output or args.output_all:
        args.noheadings = args.raw = False
        _print_records(args, records)
    else:
        from .columns import losetup_j_line

        write_text("".join(losetup_j_line(r) + "\n" for r in records))
    return 0


def _info_fields(rec: LoopInfo) -> Dict[str, object]:
    parts = discovery.partitions(rec.number) if rec.bound else []
    bdev = rec.backing_devnum if rec.has_status else None
    return {
        "name": loop.device_path(rec.number),
        "number": rec.number,
        "maj:min": f"{rec.major}:{rec.minor}",
        "node": rec.has_node,
        "bound": rec.bound,
        "back-file": rec.backing_file,
        # True: not the full path, which sysfs cannot show (longer than a
        # page), but lo_file_name (63 bytes, '*' where cut); see LoopInfo.
        "back-file-partial": rec.backing_partial,
        "back-maj:min": f"{os.major(bdev)}:{os.minor(bdev)}" if bdev else None,
        "back-ino": rec.backing_inode if rec.has_status else None,
        "offset": rec.offset if rec.bound else None,
        "sizelimit": rec.size_limit if rec.bound else None,
        "size": rec.size_sectors * 512,
        "log-sec": rec.block_size,
        "ro": rec.read_only,
        "autoclear": rec.autoclear,
        "partscan": rec.partscan,
        "dio": rec.direct_io,
        "diskseq": rec.diskseq,
        "partitions": parts,
    }


def cmd_info(args: Args) -> int:
    from .columns import safe_human

    (rec,) = _named_records([args.device])
    fields = _info_fields(rec)
    if args.json:
        write_json(fields, ensure_ascii=False)
        return 0
    flags = [name for prop, name in _FLAG_NAMES if getattr(rec, prop)]
    lines = [f"{fields['name']} ({fields['maj:min']})"
             + ("" if rec.has_node else " [no /dev node]")]
    if not rec.bound:
        lines.append("  not attached")
    else:
        ino = f" (dev {fields['back-maj:min']}, inode {fields['back-ino']})" \
            if fields["back-ino"] is not None else ""
        lines.append(f"  backing file: {safe_human(rec.backing_file or '')}{ino}")
        if rec.backing_partial:
            lines.append("                (not the full path, which is too long for sysfs: "
                         "the kernel's 64-byte lo_file_name, '*' where cut)")
        lines += [
            f"  offset:       {rec.offset}",
            f"  size limit:   {rec.size_limit or 'none'}",
        ]
    lines += [
        f"  size:         {fields['size']} bytes",
        f"  block size:   {rec.block_size}",
        f"  flags:        {', '.join(flags) or 'none'}",
        f"  diskseq:      {rec.diskseq if rec.diskseq is not None else 'n/a'}",
    ]
    if rec.bound:
        parts = fields["partitions"]
        assert isinstance(parts, list)
        lines.append(f"  partitions:   {' '.join(parts) or 'none'}")
    write_text("\n".join(lines) + "\n")
    return 0


def cmd_set_capacity(args: Args) -> int:
    device = loop.open(loop_ref(args.device).node)
    try:
        device.set_capacity()
    finally:
        device.close()
    return 0


def cmd_control(args: Args) -> int:
    # Arguments first: a usage error must not hinge on /dev/loop-control
    # existing or being ours to open (containers, non-root users).
    given: Optional[int] = args.number
    if args.action == "get-free":
        if given is not None:
            raise UsageError("control get-free: takes no device number")
    elif given is None:
        raise UsageError(f"control {args.action}: a device number is required")
    with loop.LoopControl() as ctl:
        if args.action == "get-free":
            # Not removed if it cannot be printed: GET_FREE reserves nothing, so
            # another process may have been handed the same device meanwhile.
            number = ctl.get_free()
        elif args.action == "add":
            assert given is not None  # checked above
            number = ctl.add(given)
            print_made(loop.device_path(number), lambda: ctl.remove(number),
                       "removed it again", "removing it again failed")
            return 0
        else:
            assert given is not None  # checked above
            ctl.remove(given)
            return 0
    write_text(loop.device_path(number) + "\n")
    return 0
