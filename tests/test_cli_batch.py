"""The command line's batch forms for shell users: ``loopcore attach
FILE...`` binds every file in one process and one burst (attach_many),
printing one device a line in the files' order, all or nothing; ``loopcore
detach DEV...`` opens every device before it detaches any, then detaches
them in one C loop (detach_many).  Real devices, cleaned up."""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

import pytest

import loopcore

from cli_runner import (
    STDOUT_REASONS,
    assert_clean_stderr,
    loopcore_cmd,
    loopcore_redirected,
    one_line,
)
from conftest import bound_under, fresh_number, sysfs

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]


def _devices(stdout: bytes) -> List[str]:
    return stdout.decode().splitlines()


def _number(path: str) -> int:
    return int(re.fullmatch(r"/dev/loop(\d+)", path).group(1))  # type: ignore[union-attr]


def test_attach_several_prints_one_device_a_line_in_order_and_detach_takes_them_all(
        make_image, tmp_path):
    images = [make_image(size=(4 + i) << 20) for i in range(5)]
    r = loopcore_cmd("attach", "-f", "--show", *map(str, images), check=True)
    paths = _devices(r.stdout)
    try:
        assert len(paths) == len(set(paths)) == len(images)
        for path, img in zip(paths, images):
            assert sysfs(_number(path), "loop/backing_file") == str(img)
        assert r.stderr == b""
    finally:
        r = loopcore_cmd("detach", *paths)
    assert r.returncode == 0, r.stderr
    assert bound_under(tmp_path) == {}


def test_options_apply_to_every_file(make_image, tmp_path):
    images = [make_image(size=8 << 20) for _ in range(3)]
    r = loopcore_cmd("attach", "-r", "-o", "1M", "--sizelimit", "2M", "-b", "4096",
                     "--direct-io=off", *map(str, images), check=True)
    paths = _devices(r.stdout)
    try:
        for path in paths:
            n = _number(path)
            assert sysfs(n, "ro") == "1"
            assert sysfs(n, "loop/offset") == str(1 << 20)
            assert sysfs(n, "loop/sizelimit") == str(2 << 20)
            assert sysfs(n, "queue/logical_block_size") == "4096"
            assert sysfs(n, "loop/dio") == "0"
    finally:
        loopcore_cmd("detach", *paths, check=True)
    assert bound_under(tmp_path) == {}


def test_a_file_that_cannot_be_bound_leaves_none_bound(make_image, tmp_path):
    good = [make_image(), make_image()]
    missing = tmp_path / "missing.img"
    r = loopcore_cmd("attach", str(good[0]), str(missing), str(good[1]))
    assert r.returncode == 1
    assert r.stdout == b""
    assert one_line(r.stderr) == f"loopcore: {missing}: No such file or directory"
    assert bound_under(tmp_path) == {}


@pytest.mark.parametrize("stdout", ["full", "closed", "broken-pipe"])
def test_devices_that_cannot_be_printed_are_detached_again(make_image, tmp_path, stdout):
    images = [make_image() for _ in range(3)]
    r = loopcore_redirected(["attach", *map(str, images)], stdout=stdout)
    assert bound_under(tmp_path) == {}  # nobody learnt their names
    assert r.returncode == 1, r.stderr
    (line,) = assert_clean_stderr(r.stderr, stdout)
    assert re.fullmatch(r"loopcore: /dev/loop\d+, /dev/loop\d+, /dev/loop\d+: cannot print the "
                        rf"devices' names \({STDOUT_REASONS[stdout]}\); detached them again",
                        line), line


@pytest.mark.parametrize("extra", [["-L"], ["--nooverlap"]])
def test_options_for_one_file_are_usage_errors_with_several(make_image, tmp_path, extra):
    images = [str(make_image()), str(make_image())]
    r = loopcore_cmd("attach", *extra, *images)
    assert r.returncode == 2
    assert "takes one FILE" in one_line(r.stderr)
    assert bound_under(tmp_path) == {}


def test_a_chosen_device_takes_one_file(make_image, tmp_path):
    n = fresh_number()
    r = loopcore_cmd("attach", f"/dev/loop{n}", str(make_image()), str(make_image()))
    assert r.returncode == 2
    assert "a chosen device takes one FILE" in one_line(r.stderr)
    assert bound_under(tmp_path) == {}
    assert not Path(f"/sys/block/loop{n}").exists()  # not even made


def test_dev_file_still_binds_that_device(make_image):
    # two operands whose first names a loop device: losetup's DEV FILE
    n = fresh_number()
    img = make_image()
    try:
        r = loopcore_cmd("attach", str(n), str(img), check=True)
        assert _devices(r.stdout) == [f"/dev/loop{n}"]
        assert sysfs(n, "loop/backing_file") == str(img)
    finally:
        loopcore_cmd("detach", str(n))
        loopcore_cmd("control", "remove", str(n))


def test_detach_several_detaches_none_when_one_is_not_bound(make_image, tmp_path):
    devices = loopcore.attach_many([make_image(), make_image()])
    unbound = fresh_number()
    try:
        for device in devices:
            device.close()  # bound, and the CLI's to detach
        r = loopcore_cmd("detach", devices[0].path, str(unbound), devices[1].path)
        assert r.returncode == 1
        assert one_line(r.stderr).startswith(f"loopcore: /dev/loop{unbound}: detach failed")
        assert sorted(bound_under(tmp_path)) == sorted(d.number for d in devices)
    finally:
        r = loopcore_cmd("detach", *(d.path for d in devices))
    assert r.returncode == 0, r.stderr
    assert bound_under(tmp_path) == {}
