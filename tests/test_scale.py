"""Many devices (benchmarks/scale.py, small form): with 500 bound,
list_devices() needs no more memory per device than with 100 (tracemalloc,
no clock), and neither it nor ``loopcore list`` holds an fd per device:
both list every device in full with the fd limit at 64.  The 10 000-device
form: ``python -m benchmarks.scale --devices 10000``."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

import loopcore

from conftest import bound_under

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
try:
    from benchmarks import scale
finally:
    sys.path.remove(str(ROOT))

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

SMALL, LARGE = 100, 500


def test_listing_stays_flat_per_device_and_holds_no_fd_per_device(tmp_path):
    paths = []
    for i in range(LARGE):
        paths.append(str(tmp_path / f"{i:04d}.img"))
        with open(paths[-1], "wb") as f:
            f.truncate(1 << 20)
    devices = []
    try:
        devices += loopcore.attach_many(paths[:SMALL], direct_io=False)
        small_peak, small_listed = scale.list_peak_bytes()
        devices += loopcore.attach_many(paths[SMALL:], direct_io=False)
        large_peak, large_listed = scale.list_peak_bytes()
        assert large_listed >= LARGE
        # the fixed part (buffer, list) weighs more per device at 100
        assert large_peak / large_listed <= 1.25 * small_peak / small_listed, \
            (small_peak, small_listed, large_peak, large_listed)
        fds = scale.listing_without_fds(str(tmp_path) + "/")
        assert fds == {"fd_limit": scale.FD_LIMIT, "api_listed": LARGE,
                       "api_with_inode": LARGE, "cli_listed": LARGE, "cli_with_inode": LARGE}
        assert [i.number for i in loopcore.find(paths[LARGE // 2])] == \
            [devices[LARGE // 2].number]
    finally:
        loopcore.detach_many(devices)
    assert not bound_under(tmp_path)
