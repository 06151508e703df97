"""Shared fixtures: images in a per-session temp dir, leak checks, and the
kernel's own view of a loop device (sysfs and raw ioctls), read without
going through loopcore so tests never check loopcore against itself."""
from __future__ import annotations

import contextlib
import fcntl
import gc
import os
import random
import struct
import subprocess
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Set

import pytest

import loopcore

from uevents import wait_for_deferred_detaches

LOOP_GET_STATUS64 = 0x4C05
BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
# struct loop_info64: 5 u64, 4 u32, file name, crypt name, key, 2 u64
LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")


def root_skip_reason() -> Optional[str]:
    """Why ``root`` tests cannot run here (a user, or a container without
    /dev/loop-control), or None: then none of them is skipped."""
    if os.geteuid() != 0:
        return f"needs root and /dev/loop-control (running as uid {os.geteuid()})"
    if not os.path.exists("/dev/loop-control"):
        return "needs root and /dev/loop-control (no /dev/loop-control here: a container?)"
    return None


def needs_root() -> bool:
    """True when real loop devices are usable: root and /dev/loop-control."""
    return root_skip_reason() is None


def pytest_collection_modifyitems(config: pytest.Config, items: List[pytest.Item]) -> None:
    reason = root_skip_reason()
    if reason is None:
        return  # root with /dev/loop-control (make test): skip nothing
    skip = pytest.mark.skip(reason=reason)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


# --- the kernel's view ---------------------------------------------------------

def sysfs(number: int, attr: str) -> Optional[str]:
    """/sys/block/loopN/<attr>, stripped; None if absent."""
    try:
        return Path(f"/sys/block/loop{number}/{attr}").read_text().rstrip("\n")
    except OSError:  # absent, or the device is being removed under us
        return None


def bound_backing(number: int) -> Optional[str]:
    return sysfs(number, "loop/backing_file")


def kernel_status(number: int) -> Dict[str, object]:
    """LOOP_GET_STATUS64 on /dev/loopN, decoded with struct."""
    fd = os.open(f"/dev/loop{number}", os.O_RDONLY)
    try:
        raw = fcntl.ioctl(fd, LOOP_GET_STATUS64, bytes(LOOP_INFO64.size))
    finally:
        os.close(fd)
    (device, inode, rdevice, offset, sizelimit, lo_number, _etype, _eksize, flags,
     file_name, _crypt, _key, _i0, _i1) = LOOP_INFO64.unpack(raw)
    return {
        "device": device, "inode": inode, "offset": offset, "sizelimit": sizelimit,
        "number": lo_number, "flags": flags,
        "file_name": file_name.split(b"\0", 1)[0].decode(),
    }


def kernel_size(number: int) -> int:
    fd = os.open(f"/dev/loop{number}", os.O_RDONLY)
    try:
        return struct.unpack("Q", fcntl.ioctl(fd, BLKGETSIZE64, bytes(8)))[0]
    finally:
        os.close(fd)


def bound_under(directory: Path) -> Dict[int, str]:
    """Loop devices bound to files under ``directory``: {number: backing}."""
    prefix = str(directory)
    found = {}
    for entry in os.listdir("/sys/block"):
        if not entry.startswith("loop") or not entry[4:].isdigit():
            continue
        backing = bound_backing(int(entry[4:]))
        if backing and backing.startswith(prefix):
            found[int(entry[4:])] = backing
    return found


def open_fds() -> Dict[int, str]:
    """This process's fds and what they point at, bar loopcore's shared
    /dev/loop-control fd (kept open for the process's life by design)."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:
            continue  # the fd listdir itself used
        if target != "/dev/loop-control":
            fds[int(name)] = target
    return fds


def force_detach(numbers: Set[int]) -> None:
    for number in numbers:
        subprocess.run(["losetup", "-d", f"/dev/loop{number}"], check=False)


# Varied attach options: each must show up alike in loopcore's and losetup's lists.
VARIANTS = [
    dict(direct_io=False),
    dict(read_only=True, offset=4096, size_limit=1 << 20),
    dict(block_size=4096, direct_io=True),
    dict(partscan=True, direct_io=False),
    dict(autoclear=True),
    dict(offset=512, size_limit=3 * (1 << 20) + 512, direct_io=True),
    dict(read_only=True, block_size=2048, partscan=True),
]


@contextlib.contextmanager
def attached(*specs) -> Iterator[List[loopcore.LoopDevice]]:
    """Attach (backing, options) pairs; detach them all whatever happens."""
    devices: List[loopcore.LoopDevice] = []
    try:
        for backing, options in specs:
            devices.append(loopcore.attach(backing, **options))
        yield devices
    finally:
        for dev in devices:
            with contextlib.suppress(OSError, ValueError):
                dev.detach()


# --- fixtures ------------------------------------------------------------------

@pytest.fixture(scope="session", autouse=True)
def session_leak_check(tmp_path_factory: pytest.TempPathFactory):
    """Fail the run if any device is still bound to a file the tests made."""
    base = tmp_path_factory.getbasetemp()
    yield
    if not needs_root():
        return
    leaked = bound_under(base)
    force_detach(set(leaked))
    if leaked:
        pytest.fail(f"loop devices left bound to test files: {leaked}", pytrace=False)


@pytest.fixture
def no_leaks(tmp_path: Path):
    """Assert a test leaves no fd open and no device bound to its files."""
    loopcore.kernel_supports_configure()  # opens the shared control fd up front
    before = open_fds()
    yield
    gc.collect()
    wait_for_deferred_detaches(lambda: [f"loop{n}" for n in bound_under(tmp_path)])
    leaked_devices = bound_under(tmp_path)
    force_detach(set(leaked_devices))
    leaked_fds = {fd: t for fd, t in open_fds().items() if before.get(fd) != t}
    assert not leaked_devices, f"devices left bound: {leaked_devices}"
    assert not leaked_fds, f"fds left open: {leaked_fds}"


@pytest.fixture
def make_image(tmp_path: Path) -> Callable[..., Path]:
    """make_image(size=8 MiB, name=..., data=None) -> path of a new image."""
    counter = iter(range(1_000_000))

    def make(size: int = 8 << 20, name: Optional[str] = None,
             data: Optional[bytes] = None) -> Path:
        path = tmp_path / (name or f"disk{next(counter)}.img")
        with open(path, "wb") as f:
            f.truncate(size)
            if data:
                f.write(data)
        return path

    return make


def connector_available() -> bool:
    """Whether the kernel has the netlink connector dm-log-userspace talks over."""
    try:
        with open("/proc/net/connector") as f:
            return "Name" in f.read()
    except OSError:
        return False


def fresh_number() -> int:
    """A loop device number nobody has: tests that make /dev/loopN never
    touch a device they did not create."""
    while True:
        number = random.randint(200_000, 900_000)
        if not os.path.exists(f"/sys/block/loop{number}"):
            return number


@pytest.fixture
def new_number(tmp_path: Path) -> Iterator[int]:
    """A number with no device behind it; whatever the test made there is
    detached (if bound to the test's files) and removed afterwards."""
    number = fresh_number()
    yield number
    backing = bound_backing(number)
    if backing and backing.startswith(str(tmp_path)):
        force_detach({number})
    if os.path.exists(f"/sys/block/loop{number}"):
        with loopcore.LoopControl() as ctl:
            with contextlib.suppress(OSError):
                ctl.remove(number)


@pytest.fixture
def image(make_image: Callable[..., Path]) -> Path:
    """An 8 MiB image whose bytes are a known pattern."""
    pattern = bytes(range(256)) * (8 << 12)
    return make_image(data=pattern)


# --- partitions ----------------------------------------------------------------
# This development host's kernel has no partition-table parsers
# (CONFIG_EFI_PARTITION and CONFIG_MSDOS_PARTITION are off), so LO_FLAGS_PARTSCAN
# finds nothing here; the Debian kernel in the VM tests parses GPT.  Tests
# that need partition nodes on the host add them with BLKPG, as `partx -a`
# does, which works on any kernel.

BLKPG = 0x1269
BLKPG_ADD_PARTITION = 1
BLKPG_DEL_PARTITION = 2


def kernel_parses_gpt() -> bool:
    import gzip
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            return "CONFIG_EFI_PARTITION=y" in f.read()
    except OSError:
        return True  # no config exposed: assume a distribution kernel


def blkpg_partition(dev_path: str, op: int, pno: int, start: int = 0, length: int = 0) -> None:
    """Add (op=1) or delete (op=2) partition ``pno`` of a block device."""
    import ctypes
    part = ctypes.create_string_buffer(struct.pack("qqi64s64s", start, length, pno, b"", b""),
                                       struct.calcsize("qqi64s64s") + 4)
    arg = struct.pack("iiiP", op, 0, len(part), ctypes.addressof(part))
    fd = os.open(dev_path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, BLKPG, arg)
    finally:
        os.close(fd)


def kernel_view(number: int) -> Dict[str, object]:
    """Everything the kernel says about a bound device that a caller chose."""
    status = kernel_status(number)
    view = {attr: sysfs(number, attr) for attr in (
        "ro", "loop/offset", "loop/sizelimit", "loop/autoclear", "loop/partscan", "loop/dio",
        "loop/backing_file", "queue/logical_block_size", "size")}
    view.update(flags=status["flags"], file_name=status["file_name"],
                status_offset=status["offset"], status_sizelimit=status["sizelimit"],
                size_bytes=kernel_size(number))
    return view


def run_child(code: str, *, env: Optional[Dict[str, str]] = None, timeout: float = 120):
    """Run Python code in a child with tests/ importable; return parsed JSON
    from its last stdout line (the child prints one)."""
    import json
    import sys
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).parent)] + os.environ.get("PYTHONPATH", "").split(os.pathsep)))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full_env, timeout=timeout)
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
