"""Typed targets against a real device-mapper (inside the qemu guest): each
target type made over loop devices from its parameter class, data written
and read through it where it carries data, and its table and status, as
loopcore formats and parses them, compared with ``dmsetup table`` and
``dmsetup status`` for the same device.  Then thin provisioning end to
end: a pool, thin volumes, a snapshot, delete, growing the pool's data
device, usage read from the typed status.
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import select
import time
from typing import Callable, Iterator, List, Tuple

import pytest

from loopcore import dm
from loopcore.dm import thin_messages

from vmhelpers import backing_bytes, dmsetup, read_dm, write_dm

S = 512
dev = dm.device_arg


@pytest.fixture
def made(mapper: dm.DeviceMapper, names: Callable[[str], str]) -> Iterator[List[str]]:
    """Names of the devices a test made, removed last first (a thin volume
    holds its pool open); the ``names`` fixture then finds none left."""
    created: List[str] = []
    yield created
    for name in reversed(created):
        if mapper.exists(name):
            mapper.remove(name, retries=10, retry_delay=0.05)


def create(mapper: dm.DeviceMapper, names: Callable[[str], str], made: List[str], tag: str,
           targets: List[dm.Target], read_only: bool = False) -> str:
    name = names(tag)
    made.append(name)
    mapper.create(name, table=targets, read_only=read_only)
    return name


def same_as_dmsetup(mapper: dm.DeviceMapper, name: str) -> Tuple[List[dm.TargetParams],
                                                                  List[dm.TargetStatus]]:
    """The typed table and status of ``name``, after checking that loopcore
    reads and writes them as the kernel and dmsetup do."""
    table = mapper.table(name)
    assert str(table) == dmsetup("table", name).stdout.rstrip("\n")
    params = []
    for target in table:
        typed = target.parsed()
        assert str(typed) == target.params          # our format is the kernel's
        assert type(typed).parse(str(typed)) == typed
        params.append(typed)
    # a status can move between our read and dmsetup's (a commit, a
    # resync): compare again, a bounded number of times
    for _ in range(10):
        status = mapper.status(name)
        if str(status) == dmsetup("status", name).stdout.rstrip("\n"):
            break
    else:
        raise AssertionError(f"status of {name}: {status} != dmsetup's")
    return params, [line.parsed() for line in status]


def pattern(size: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(f"loopcore-{seed}".encode()).digest(size)


def read_uncached(name: str, offset: int, length: int) -> bytes:
    """Read through the device, dropping its page cache first."""
    fd = os.open(os.path.join(dm.DEV_DIR, name), os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def wait_status(mapper: dm.DeviceMapper, name: str,
                done: Callable[[dm.TargetStatus], bool], timeout: float = 120) -> dm.TargetStatus:
    """The device's status once ``done`` holds for it.  What these tests wait
    for (a resync's end, a pool running out of space, a snapshot filling)
    raises a dm event: sleep in poll() on the control fd, armed for the
    next event of any device, and look again at each (``timeout`` bounds a
    hang, it is no guess at how long it takes)."""
    deadline = time.monotonic() + timeout
    while True:
        mapper.arm_poll()  # before the look: an event after it wakes the poll
        status = mapper.status(name)[0].parsed()
        left = deadline - time.monotonic()
        if done(status) or left <= 0:
            return status
        select.select([mapper.fileno()], [], [], left)


# --- linear, striped, zero, error -------------------------------------------------------

def test_linear_striped_zero_error(mapper, loops, names, made):
    a, b, c = loops(1 << 20), loops(1 << 20), loops(1 << 20)
    targets = [dm.LinearParams(dev(a), 8).target(0, 256),
               dm.StripedParams(8, ((dev(b), 0), (dev(c), 16))).target(256, 512),
               dm.ZeroParams().target(768, 256), dm.ErrorParams().target(1024, 256)]
    name = create(mapper, names, made, "plain", targets)
    params, status = same_as_dmsetup(mapper, name)
    assert params == [t.parsed() for t in targets]
    assert status[0] == dm.EmptyStatus("linear")
    assert status[1] == dm.StripedStatus((dev(b), dev(c)), (dm.DeviceHealth.ALIVE,) * 2)
    assert status[1].healthy
    assert status[2:] == [dm.EmptyStatus("zero"), dm.EmptyStatus("error")]
    data = pattern(256 * S + 512 * S)
    write_dm(name, 0, data)
    assert read_uncached(name, 0, len(data)) == data
    assert backing_bytes(a, 8 * S, 256 * S) == data[:256 * S]
    # the first stripe chunk (8 sectors) of the striped part on b, the second on c
    assert backing_bytes(b, 0, 8 * S) == data[256 * S:264 * S]
    assert backing_bytes(c, 16 * S, 8 * S) == data[264 * S:272 * S]
    assert read_dm(name, 768 * S, 4096) == bytes(4096)
    with pytest.raises(OSError) as exc:
        read_uncached(name, 1024 * S, 4096)
    assert exc.value.errno == errno.EIO


# --- crypt --------------------------------------------------------------------------------

def test_crypt(mapper, loops, names, made):
    backing = loops(1 << 20)
    key = os.urandom(64).hex()
    params = dm.CryptParams("aes-xts-plain64", key, 0, dev(backing), 8, allow_discards=True,
                            sector_size=4096)
    name = create(mapper, names, made, "crypt", [params.target(0, 2040)])
    typed, status = same_as_dmsetup(mapper, name)
    assert status == [dm.EmptyStatus("crypt")]
    # the table reads with the key as zeros, as dmsetup prints it ...
    assert typed[0] == dataclasses.replace(params, key="0" * 128)
    assert key not in repr(params)
    # ... and with the key when asked
    shown = mapper.table(name, showkeys=True)
    assert str(shown) == dmsetup("table", "--showkeys", name).stdout.rstrip("\n")
    assert shown[0].parsed() == params
    data = pattern(64 << 10, 1)
    write_dm(name, 0, data)
    assert read_uncached(name, 0, len(data)) == data
    assert backing_bytes(backing, 8 * S, len(data)) != data


# --- verity -------------------------------------------------------------------------------

def verity_tree(data: bytes, salt: bytes, block: int = 4096) -> Tuple[bytes, bytes]:
    """(hash device image, root digest) of a format 1 sha256 hash tree: each
    digest is sha256(salt + block); levels are stored top first."""
    per_block = block // 32
    levels = []
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    while True:
        digests = b"".join(hashlib.sha256(salt + b).digest() for b in blocks)
        level = [digests[i:i + per_block * 32].ljust(block, b"\0")
                 for i in range(0, len(digests), per_block * 32)]
        levels.append(level)
        if len(level) == 1:
            break
        blocks = level
    root = hashlib.sha256(salt + levels[-1][0]).digest()
    image = b"".join(b"".join(level) for level in reversed(levels))
    return image, root


def test_verity(mapper, loops, names, made):
    nblocks = 256                      # two hash levels (128 digests per block)
    data = pattern(nblocks * 4096, 2)
    salt = os.urandom(32)
    image, root = verity_tree(data, salt)
    data_loop = loops(len(data), data)
    hash_loop = loops(len(image) + 4096, image)
    params = dm.VerityParams(1, dev(data_loop), dev(hash_loop), 4096, 4096, nblocks, 0,
                             "sha256", root.hex(), salt.hex())
    name = create(mapper, names, made, "verity", [params.target(0, nblocks * 8)],
                  read_only=True)
    typed, status = same_as_dmsetup(mapper, name)
    assert typed == [params]
    assert status == [dm.VerityStatus(corrupted=False)]
    assert read_uncached(name, 0, 64 << 10) == data[:64 << 10]
    # corrupt a block the device has not read yet, underneath it
    with open(data_loop.backing, "r+b") as f:
        f.seek(250 * 4096)
        f.write(b"X")
    with pytest.raises(OSError) as exc:
        read_uncached(name, 250 * 4096, 4096)
    assert exc.value.errno == errno.EIO
    _typed, status = same_as_dmsetup(mapper, name)
    assert status == [dm.VerityStatus(corrupted=True)]
    # every optional argument the 6.1 kernel takes, forward error
    # correction included: the kernel writes them back in our order
    fec = loops(1 << 20)
    options = dataclasses.replace(params, mode="ignore_corruption", ignore_zero_blocks=True,
                                  check_at_most_once=True, try_verify_in_tasklet=True,
                                  fec_device=dev(fec), fec_blocks=nblocks + len(image) // 4096,
                                  fec_start=0, fec_roots=2)
    name = create(mapper, names, made, "verity-opts", [options.target(0, nblocks * 8)],
                  read_only=True)
    typed, status = same_as_dmsetup(mapper, name)
    assert typed == [options]
    assert isinstance(status[0], dm.VerityStatus) and not status[0].corrupted


# --- snapshots ----------------------------------------------------------------------------

def test_snapshot_origin_and_snapshot(mapper, loops, names, made):
    before = pattern(1 << 20, 3)
    origin_loop, cow = loops(1 << 20, before), loops(256 << 10)
    origin = create(mapper, names, made, "origin",
                    [dm.SnapshotOriginParams(dev(origin_loop)).target(0, 2048)])
    snap_params = dm.SnapshotParams(dev(origin_loop), dev(cow), 8)
    snap = create(mapper, names, made, "snap", [snap_params.target(0, 2048)])
    typed, status = same_as_dmsetup(mapper, origin)
    assert status == [dm.EmptyStatus("snapshot-origin")]
    typed, status = same_as_dmsetup(mapper, snap)
    assert typed == [snap_params]
    first = status[0]
    assert isinstance(first, dm.SnapshotStatus) and first.total_sectors == 512
    assert first.allocated_sectors == first.metadata_sectors
    # a write through the origin copies the old chunk to the COW first
    write_dm(origin, 0, pattern(8192, 4))
    assert backing_bytes(origin_loop, 0, 8192) == pattern(8192, 4)
    assert read_uncached(snap, 0, 8192) == before[:8192]
    _typed, status = same_as_dmsetup(mapper, snap)
    assert status[0].allocated_sectors == first.allocated_sectors + 16
    # writing more than the COW holds invalidates the snapshot
    write_dm(origin, 0, pattern(1 << 20, 5))
    _typed, status = same_as_dmsetup(mapper, snap)
    assert status == [dm.UnavailableStatus("snapshot", "Invalid")]
    assert status[0].failed
    with pytest.raises(OSError) as exc:
        read_uncached(snap, 0, 4096)
    assert exc.value.errno == errno.EIO


# --- mirror -------------------------------------------------------------------------------

def test_mirror_core_and_disk_logs(mapper, loops, names, made):
    a, b, c, d = (loops(1 << 20, pattern(1 << 20, 6)), loops(1 << 20),
                  loops(1 << 20, pattern(1 << 20, 7)), loops(1 << 20))
    log = loops(1 << 20)
    core = create(mapper, names, made, "mcore", [dm.mirror(0, 2048, [a, b], 64)])
    disk = create(mapper, names, made, "mdisk",
                  [dm.mirror(0, 2048, [c, (d, 0)], 64, log="disk", log_device=log,
                             handle_errors=True)])
    for name, legs, log_args in ((core, (a, b), ("core",)),
                                 (disk, (c, d), ("disk", dev(log), "A"))):
        status = wait_status(mapper, name, lambda s: isinstance(s, dm.MirrorStatus)
                             and s.in_sync)
        assert isinstance(status, dm.MirrorStatus) and status.in_sync, status
        typed, statuses = same_as_dmsetup(mapper, name)
        assert statuses == [dm.MirrorStatus((dev(legs[0]), dev(legs[1])),
                                            (dm.DeviceHealth.ALIVE,) * 2, 32, 32, log_args)]
        assert isinstance(typed[0], dm.MirrorParams)
        assert typed[0].legs == ((dev(legs[0]), 0), (dev(legs[1]), 0))
        assert backing_bytes(legs[1], 0, 1 << 20) == backing_bytes(legs[0], 0, 1 << 20)
    assert statuses[0].log_device == dev(log)
    assert statuses[0].log_health is dm.DeviceHealth.ALIVE
    assert typed[0] == dm.MirrorParams(((dev(c), 0), (dev(d), 0)), 64, log="disk",
                                       log_device=dev(log), handle_errors=True)
    data = pattern(64 << 10, 8)
    write_dm(core, 4096, data)
    assert backing_bytes(a, 4096, len(data)) == data == backing_bytes(b, 4096, len(data))


# --- integrity ----------------------------------------------------------------------------

def test_integrity_detects_a_changed_block(mapper, loops, names, made):
    backing = loops(8 << 20)
    params = dm.IntegrityParams(dev(backing), 0, 4, "D", internal_hash="crc32c")
    # one sector first: the kernel formats the device and reports its size
    name = create(mapper, names, made, "integ", [params.target(0, 1)])
    status = mapper.status(name)[0].parsed()
    assert isinstance(status, dm.IntegrityStatus) and status.mismatches == 0
    provided = status.provided_data_sectors
    assert 0 < provided < (8 << 20) // S
    mapper.load(name, [params.target(0, provided)])
    mapper.resume(name)
    typed, statuses = same_as_dmsetup(mapper, name)
    assert statuses == [dm.IntegrityStatus(0, provided, None)]
    kernel = typed[0]
    assert isinstance(kernel, dm.IntegrityParams)
    assert (kernel.device, kernel.tag_size, kernel.mode, kernel.internal_hash) == \
        (dev(backing), 4, "D", "crc32c")
    assert kernel.journal_sectors is not None and kernel.buffer_sectors is not None
    data = pattern(4096, 9)
    write_dm(name, 64 << 10, data)
    assert read_uncached(name, 64 << 10, 4096) == data
    # change a byte of that block on the backing device, under dm-integrity
    raw = backing_bytes(backing, 0, 8 << 20)
    at = raw.find(data)
    assert at >= 0, "the block is not on the backing device"
    with open(backing.backing, "r+b") as f:
        f.seek(at + 100)
        f.write(bytes([data[100] ^ 0xFF]))
    with pytest.raises(OSError) as exc:
        read_uncached(name, 64 << 10, 4096)
    assert exc.value.errno in (errno.EILSEQ, errno.EIO)
    _typed, statuses = same_as_dmsetup(mapper, name)
    assert statuses[0].mismatches >= 1


def test_integrity_key_is_masked(mapper, loops, names, made):
    backing = loops(8 << 20)
    key = os.urandom(32).hex()
    params = dm.IntegrityParams(dev(backing), 0, 32, "J", internal_hash=f"hmac(sha256):{key}")
    name = create(mapper, names, made, "integk", [params.target(0, 1)])
    typed, _status = same_as_dmsetup(mapper, name)
    assert typed[0].internal_hash == "hmac(sha256):" + "0" * 64
    assert key not in repr(params) and key not in str(mapper.table(name))
    shown = mapper.table(name, showkeys=True)[0].parsed()
    assert shown.internal_hash == f"hmac(sha256):{key}"


# --- thin provisioning end to end ---------------------------------------------------------

def test_thin_provisioning_end_to_end(mapper, loops, names, made):
    meta, data = loops(4 << 20), loops(16 << 20)
    block = 128                                       # 64 KiB data blocks
    pool_params = dm.ThinPoolParams(dev(meta), dev(data), block, 16)
    pool = create(mapper, names, made, "pool", [pool_params.target(0, (16 << 20) // S)])
    pool_dev = dev(mapper.info(pool).devnum)
    typed, status = same_as_dmsetup(mapper, pool)
    assert typed == [pool_params]
    empty = status[0]
    assert isinstance(empty, dm.ThinPoolStatus)
    assert (empty.transaction_id, empty.used_data_blocks, empty.total_data_blocks) == \
        (0, 0, 256)
    assert (empty.mode, empty.discard, empty.no_space, empty.needs_check,
            empty.held_metadata_root) == ("rw", "discard_passdown", "queue_if_no_space",
                                          False, None)
    assert empty.metadata_low_watermark is not None
    # a thin volume of 64 MiB over 16 MiB of data: thin provisioning
    mapper.message(pool, 0, thin_messages.create_thin(0))
    thin0_params = dm.ThinParams(pool_dev, 0)
    thin0 = create(mapper, names, made, "thin0", [thin0_params.target(0, (64 << 20) // S)])
    typed, status = same_as_dmsetup(mapper, thin0)
    assert typed == [thin0_params] and status == [dm.ThinStatus(0, None)]
    old = pattern(1 << 20, 10)
    write_dm(thin0, 0, old)
    _typed, status = same_as_dmsetup(mapper, thin0)
    assert status == [dm.ThinStatus(2048, 2047)]
    assert mapper.status(pool)[0].parsed().used_data_blocks == 16
    # a snapshot of thin0, taken with thin0 suspended, shares its blocks
    mapper.suspend(thin0)
    try:
        mapper.message(pool, 0, thin_messages.create_snap(1, origin_id=0))
    finally:
        mapper.resume(thin0)
    snap = create(mapper, names, made, "thin1", [dm.ThinParams(pool_dev, 1).target(
        0, (64 << 20) // S)])
    assert read_uncached(snap, 0, len(old)) == old
    write_dm(thin0, 0, pattern(64 << 10, 11))
    assert read_uncached(snap, 0, len(old)) == old
    assert read_uncached(thin0, 0, 64 << 10) == pattern(64 << 10, 11)
    _typed, status = same_as_dmsetup(mapper, pool)
    assert status[0].used_data_blocks == 17            # one block no longer shared
    mapper.message(pool, 0, thin_messages.set_transaction_id(0, 1))
    mapper.message(pool, 0, thin_messages.reserve_metadata_snap())
    held = mapper.status(pool)[0].parsed()
    assert held.transaction_id == 1 and held.held_metadata_root is not None
    mapper.message(pool, 0, thin_messages.release_metadata_snap())
    # delete the snapshot: its device first, then the volume
    mapper.remove(snap)
    made.remove(snap)
    mapper.message(pool, 0, thin_messages.delete(1))
    _typed, status = same_as_dmsetup(mapper, pool)
    assert status[0].used_data_blocks == 16 and status[0].held_metadata_root is None
    # grow the data device: a bigger backing file, set_capacity, reload the
    # pool with the new length
    with open(data.backing, "r+b") as f:
        f.truncate(32 << 20)
    data.device.set_capacity()
    mapper.load(pool, [pool_params.target(0, (32 << 20) // S)])
    mapper.resume(pool)
    typed, status = same_as_dmsetup(mapper, pool)
    assert status[0].total_data_blocks == 512 and status[0].used_data_blocks == 16
    assert status[0].free_data_blocks == 496
    assert read_uncached(thin0, 64 << 10, len(old) - (64 << 10)) == old[64 << 10:]
    # a deleted id cannot be activated: the kernel refuses the thin table
    with pytest.raises(OSError):
        create(mapper, names, made, "gone", [dm.ThinParams(pool_dev, 1).target(0, 2048)])
    made.pop()



def test_thin_pool_out_of_data_space_then_grown(mapper, loops, names, made):
    """A full pool with error_if_no_space fails the write that needs a new
    block and says out_of_data_space; the low water mark raised an event
    before; growing the data device brings it back to rw."""
    meta, data = loops(4 << 20), loops(1 << 20)          # 16 data blocks of 64 KiB
    params = dm.ThinPoolParams(dev(meta), dev(data), 128, 4, error_if_no_space=True)
    pool = create(mapper, names, made, "fullpool", [params.target(0, (1 << 20) // S)])
    events = mapper.info(pool).event_nr
    mapper.message(pool, 0, thin_messages.create_thin(0))
    thin = create(mapper, names, made, "fullthin", [dm.ThinParams(
        dev(mapper.info(pool).devnum), 0).target(0, (8 << 20) // S)])
    with pytest.raises(OSError) as exc:
        write_dm(thin, 0, pattern(2 << 20, 12))
    assert exc.value.errno in (errno.ENOSPC, errno.EIO)
    typed, status = same_as_dmsetup(mapper, pool)
    full = status[0]
    assert isinstance(full, dm.ThinPoolStatus)
    assert (full.mode, full.no_space, full.used_data_blocks, full.total_data_blocks) == \
        ("out_of_data_space", "error_if_no_space", 16, 16)
    assert full.read_only and full.free_data_blocks == 0
    assert typed == [params]
    assert mapper.info(pool).event_nr > events          # the low water mark was crossed
    with open(data.backing, "r+b") as f:
        f.truncate(4 << 20)
    data.device.set_capacity()
    mapper.load(pool, [params.target(0, (4 << 20) // S)])
    mapper.resume(pool)
    _typed, status = same_as_dmsetup(mapper, pool)
    assert (status[0].mode, status[0].total_data_blocks) == ("rw", 64)
    write_dm(thin, 0, pattern(2 << 20, 12))
    assert read_uncached(thin, 0, 2 << 20) == pattern(2 << 20, 12)
    assert mapper.status(thin)[0].parsed() == dm.ThinStatus(4096, 4095)
