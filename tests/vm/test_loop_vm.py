"""Loop devices on the Debian kernel (6.1) in the VM: what the development
host's kernel cannot show."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import loopcore


def test_default_direct_io_on_overlay_over_tmpfs_stays_usable(tmp_path: Path):
    # The guest's /tmp is overlayfs over tmpfs, and tmpfs on 6.1 has no
    # O_DIRECT: overlayfs still claims it, so the kernel would turn direct
    # I/O on and fail every request.  loopcore must fall back to buffered.
    fstype = subprocess.run(["stat", "-f", "-c", "%T", str(tmp_path)], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert fstype == "overlayfs", f"{tmp_path} is on {fstype}; this test needs overlayfs"
    img = tmp_path / "overlay.img"
    img.write_bytes(b"\0" * (1 << 20))
    with loopcore.attach(img) as dev:  # default: direct_io=True
        assert not dev.info().direct_io
        fd = os.open(dev.path, os.O_RDWR)
        try:
            os.pwrite(fd, b"D" * 4096, 8192)
            os.fsync(fd)
            assert os.pread(fd, 4096, 8192) == b"D" * 4096
        finally:
            os.close(fd)
    assert img.read_bytes()[8192:8192 + 4096] == b"D" * 4096
