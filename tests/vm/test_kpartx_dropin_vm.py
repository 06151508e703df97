"""loopcore-kpartx against Debian's kpartx (multipath-tools 0.9.4), byte
for byte: stdout, stderr and exit status of the same command line on the
same image file or loop device (-l, -a/-d with -v, -p, -r, -u, an image
file getting a loop device of its own and -d detaching it, a missing
device, a bad option).  kpartx runs first and its maps are gone (its own
-d) before the drop-in runs the same line, so both get the same free loop
device and dm minors.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import List, Tuple

import pytest

import loopcore
from loopcore import cli

from vmhelpers import udev_settle

KPARTX = "/sbin/kpartx" if os.path.exists("/sbin/kpartx") else "kpartx"
MiB = 1 << 20
LAYOUT = ("label: dos\nlabel-id: 0x12345678\nstart=2048, size=4096, type=83\n"
          "start=8192, size=8192, type=83\n")

Result = Tuple[int, str, str]


def theirs(argv: List[str]) -> Result:
    if "-d" in argv:
        # kpartx -d gives up on a map a udev probe holds open for a moment
        udev_settle()
    env = {k: v for k, v in os.environ.items() if k != "DM_DISABLE_UDEV"}
    proc = subprocess.run(["kpartx", *argv], executable=KPARTX, capture_output=True,
                          text=True, env=env, stdin=subprocess.DEVNULL, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def ours(capfd: pytest.CaptureFixture, argv: List[str]) -> Result:
    capfd.readouterr()
    status = cli.main(["kpartx", *argv])
    out, err = capfd.readouterr()
    return status, out, err


@pytest.fixture
def image(tmp_path: Path) -> Path:
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        f.truncate(32 * MiB)
    subprocess.run(["sfdisk", "--quiet", str(img)], input=LAYOUT, text=True, check=True,
                   capture_output=True)
    yield img
    assert loopcore.find(img) == [], "a loop device was left on the image"


@pytest.mark.parametrize("add, delete", [
    (["-a", "-v"], ["-d", "-v"]),
    (["-av", "-p", "-part"], ["-dv", "-p", "-part"]),
    (["-a", "-r", "-v", "-s"], ["-d", "-v", "-f"]),
    (["-u", "-v", "-n"], ["-d", "-v"]),
])
def test_an_image_file(capfd, image, add, delete):
    # (-l -v: kpartx attaches a loop device to list an image and says
    # "loop deleted" after; loopcore reads the image, so has none to delete)
    assert ours(capfd, ["-l", str(image)]) == theirs(["-l", str(image)])
    expected_add = theirs([*add, str(image)])
    expected_delete = theirs([*delete, str(image)])
    assert ours(capfd, [*add, str(image)]) == expected_add
    assert ours(capfd, [*delete, str(image)]) == expected_delete
    assert expected_add[0] == 0


def test_a_loop_device(capfd, image):
    dev = loopcore.attach(image)
    try:
        for argv in (["-l", dev.path], ["-a", "-v", dev.path]):
            expected = theirs(argv)
            if argv[0] == "-a":
                theirs(["-d", dev.path])
            assert ours(capfd, argv) == expected, argv
        expected = theirs(["-d", "-v", dev.path])
        ours(capfd, ["-a", dev.path])
        assert ours(capfd, ["-d", "-v", dev.path]) == expected
    finally:
        theirs(["-d", dev.path])
        dev.detach()


@pytest.mark.parametrize("argv", [["-a", "/nonexistent/disk"], ["-l", "/nonexistent/disk"]])
def test_errors(capfd, argv):
    assert ours(capfd, argv) == theirs(argv)
