"""Helpers shared by the loop builder tests (test_chosen_device, test_reuse,
test_locks, test_diskseq, test_partitions, test_partition_parser): flocks
taken from another process, sfdisk and partx views of a table, sfdisk
layouts."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple

import pytest

import loopcore
from loopcore.loop.partition_table import PartitionTable

MiB = 1 << 20
root = pytest.mark.root
leak_checked = pytest.mark.usefixtures("no_leaks")
needs_sfdisk = pytest.mark.skipif(not any(
    os.path.exists(os.path.join(d, "sfdisk")) for d in ("/sbin", "/usr/sbin", "/usr/bin")),
    reason="needs sfdisk (Debian: fdisk)")


def partitions_in_sysfs(number: int) -> Dict[int, Tuple[int, int]]:
    """{M: (start, size)} in bytes, as the kernel has registered loopNpM."""
    found = {}
    base = Path(f"/sys/block/loop{number}")
    for entry in base.iterdir():
        name = entry.name
        if name.startswith(f"loop{number}p"):
            start = int((entry / "start").read_text()) * 512
            size = int((entry / "size").read_text()) * 512
            found[int(name[len(f"loop{number}p"):])] = (start, size)
    return found


def flock_from_child(path: str, operation: int) -> bool:
    """Whether another process can take flock ``operation`` | LOCK_NB on
    ``path`` (what udev tries before it probes a device)."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
            "try:\n"
            "    fcntl.flock(fd, int(sys.argv[2]) | fcntl.LOCK_NB)\n"
            "except BlockingIOError:\n"
            "    sys.exit(3)\n")
    proc = subprocess.run([sys.executable, "-c", code, path, str(operation)], timeout=30)
    assert proc.returncode in (0, 3), proc
    return proc.returncode == 0


@contextlib.contextmanager
def held_by_child(path: str, operation: int) -> Iterator[None]:
    """Another process holds flock ``operation`` on ``path`` until exit."""
    code = ("import fcntl, os, sys\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY | os.O_NONBLOCK)\n"
            "fcntl.flock(fd, int(sys.argv[2]))\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n")
    proc = subprocess.Popen([sys.executable, "-c", code, path, str(operation)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield
    finally:
        proc.kill()
        proc.wait(timeout=30)


def sfdisk(target: str, script: str) -> None:
    proc = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", target],
                          input=script, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr


def sfdisk_json(target: str) -> Dict[str, object]:
    proc = subprocess.run(["sfdisk", "--json", target], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["partitiontable"]  # type: ignore[no-any-return]


def sfdisk_view(target: str) -> Tuple[str, int, Dict[int, Tuple[int, int, str]]]:
    """sfdisk's own reading of a table: (label, sector size, {number:
    (start, size, type)}), bytes, the type lower case without zeros in
    front (sfdisk prints MBR type 0x05 as "5")."""
    table = sfdisk_json(target)
    size = int(table["sectorsize"])  # type: ignore[call-overload]
    parts = {}
    for entry in table["partitions"]:  # type: ignore[attr-defined]
        node = entry["node"]
        number = int(node[len(node.rstrip("0123456789")):])
        parts[number] = (entry["start"] * size, entry["size"] * size,
                         entry["type"].lower().lstrip("0") or "0")
    return str(table["label"]), size, parts


def partx_view(device: str) -> Dict[int, Tuple[int, int]]:
    """``partx --show`` of a device: {number: (start, size)} in bytes
    (partx counts 512-byte sectors)."""
    proc = subprocess.run(["partx", "--show", "--noheadings", "-o", "NR,START,SECTORS",
                           device], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    view = {}
    for line in proc.stdout.split("\n"):
        if line.strip():
            nr, start, sectors = (int(f) for f in line.split())
            view[nr] = (start * 512, sectors * 512)
    return view


def ours(table: Optional[PartitionTable]) -> Dict[int, Tuple[int, int, str]]:
    assert table is not None
    return {p.number: (p.start, p.size, p.type.lower().lstrip("0") or "0")
            for p in table.partitions}


# Layouts in sfdisk's script syntax, sizes in the table's sectors.
GPT = ("label: gpt\n"
       "start=2048, size=4096, name=esp, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
       "start=6144, size=8192, name=root\n"
       "start=14336, size=8192, name=home\n")
GPT_SPARSE = ("label: gpt\n"       # slots 1 and 4 only: numbers are slots
              "IMG1 : start=2048, size=2048\n"
              "IMG4 : start=8192, size=4096\n")
DOS = ("label: dos\n"
       "label-id: 0x0badcafe\n"
       "start=2048, size=6144, type=83, bootable\n"
       "start=8192, size=8192, type=82\n")
DOS_LOGICAL = ("label: dos\n"
               "label-id: 0x12345678\n"
               "start=2048, size=4096, type=83\n"
               "start=8192, size=20480, type=5\n"
               "start=30720, size=2048, type=c\n"
               "start=10240, size=2048, type=83\n"
               "start=14336, size=4096, type=82\n"
               "start=20480, size=6144, type=83\n")
GPT_4K = ("label: gpt\n"
          "start=256, size=512, name=one\n"
          "start=768, size=1024, name=two\n")
DOS_LOGICAL_4K = ("label: dos\n"
                  "label-id: 0x4b4b4b4b\n"
                  "start=256, size=512, type=83\n"
                  "start=1024, size=2048, type=5\n"
                  "start=1280, size=512, type=83\n"
                  "start=2048, size=512, type=83\n")

LAYOUTS = {
    "gpt": (GPT, 512),
    "gpt-sparse-slots": (GPT_SPARSE, 512),
    "dos": (DOS, 512),
    "dos-extended-logical": (DOS_LOGICAL, 512),
    "gpt-4096": (GPT_4K, 4096),
    "dos-extended-logical-4096": (DOS_LOGICAL_4K, 4096),
}


def make_table(make_image, layout: str, size: int = 32 * MiB) -> Tuple[Path, int]:
    """An image partitioned by sfdisk: for 512-byte sectors the file itself,
    for 4096 through a loop device with 4096-byte sectors (this sfdisk has
    no --sector-size), detached again.  Returns (image, sector size)."""
    script, sector_size = LAYOUTS[layout]
    img = make_image(size=size)
    if sector_size == 512:
        sfdisk(str(img), script.replace("IMG", str(img)))
    else:
        with loopcore.attach(img, block_size=sector_size) as dev:
            sfdisk(dev.path, script.replace("IMG", dev.path + "p"))
    return img, sector_size
