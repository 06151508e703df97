"""``loopcore dm kpartx``: kpartx's command line over :mod:`loopcore.dm.kpartx`.

``-a`` add, ``-d`` delete, ``-u`` update, ``-l`` list (the default, as in
kpartx), with ``-r`` read-only, ``-p SEP`` the name delimiter, ``-s``/``-n``
wait for udev or not (``-s`` is the default, as in kpartx) and ``-v``
kpartx's verbose lines.  ``-l`` prints what kpartx prints.
"""
from __future__ import annotations

import argparse
import os

from ..dm import DeviceMapper, kpartx
from ..dm.partmaps import listing
from ..loop import find
from ._rules import write_json, write_stderr, write_text

__all__ = ["run"]


def run(args: argparse.Namespace) -> int:
    """``kpartx [-a|-d|-u|-l] [-r] [-p SEP] [-s|-n] [-v] DEVICE|IMAGE``."""
    if args.action == "list":  # needs no device-mapper, as kpartx -l
        maps = kpartx.list(args.device, delimiter=args.delimiter)
        if args.json:
            write_json([dict(m._asdict(), target=str(m.target)) for m in maps])
        else:
            write_text("".join(line + "\n" for line in listing(maps)))
        return 0
    kpartx.check_source(args.device)  # before device-mapper is opened
    udev = "off" if args.nosync or getattr(args, "noudevsync", False) else "auto"
    with DeviceMapper(udev=udev) as m:
        if args.action == "delete":
            bound = None
            if args.verbose and os.path.isfile(args.device):
                found = find(os.path.realpath(args.device))
                bound = min(found, key=lambda info: info.number).path if found else None
            removed = kpartx.delete(args.device, mapper=m)
            if args.json:
                write_json(removed)
            elif args.verbose:
                # kpartx's lines come in partition order (delete removes the last first)
                write_text("".join(f"del devmap : {name}\n" for name in reversed(removed)))
                if bound is not None:
                    write_stderr(f"loop deleted : {bound}\n")
            return 0
        verb = kpartx.update if args.action == "update" else kpartx.add
        maps = verb(args.device, delimiter=args.delimiter, read_only=args.readonly, mapper=m)
        if args.json:
            write_json([dict(part._asdict(), target=str(part.target)) for part in maps])
        elif args.verbose:
            lines = []
            for part in maps:
                info = m.info(part.name)
                target = part.target
                lines.append(f"add map {part.name} ({info.major}:{info.minor}): 0 "
                             f"{part.sectors} {target.target_type} {target.params}\n")
            write_text("".join(lines))
    return 0
