"""Packaging: the shim builds against old kernel headers, and the wheel
installed into a fresh venv outside the source tree attaches a device
with no compiler around."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# linux/loop.h as of Linux 3.1 (LOOP_CTL_* just added): no LOOP_CONFIGURE,
# no LOOP_SET_BLOCK_SIZE/DIRECT_IO, no struct loop_config, no PARTSCAN flag.
OLD_LOOP_H = """
#ifndef _LINUX_LOOP_H
#define _LINUX_LOOP_H
#include <linux/types.h>
#define LO_NAME_SIZE 64
#define LO_KEY_SIZE 32
enum { LO_FLAGS_READ_ONLY = 1, LO_FLAGS_USE_AOPS = 2, LO_FLAGS_AUTOCLEAR = 4 };
struct loop_info64 {
    __u64 lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit;
    __u32 lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags;
    __u8 lo_file_name[LO_NAME_SIZE];
    __u8 lo_crypt_name[LO_NAME_SIZE];
    __u8 lo_encrypt_key[LO_KEY_SIZE];
    __u64 lo_init[2];
};
#define LOOP_SET_FD 0x4C00
#define LOOP_CLR_FD 0x4C01
#define LOOP_SET_STATUS 0x4C02
#define LOOP_GET_STATUS 0x4C03
#define LOOP_SET_STATUS64 0x4C04
#define LOOP_GET_STATUS64 0x4C05
#define LOOP_CHANGE_FD 0x4C06
#define LOOP_SET_CAPACITY 0x4C07
#define LOOP_CTL_ADD 0x4C80
#define LOOP_CTL_REMOVE 0x4C81
#define LOOP_CTL_GET_FREE 0x4C82
#endif
"""


def test_shim_builds_against_old_kernel_headers(tmp_path: Path):
    (tmp_path / "linux").mkdir()
    (tmp_path / "linux" / "loop.h").write_text(OLD_LOOP_H)
    for source in sorted((ROOT / "csrc").glob("lc_*.c")):
        proc = subprocess.run(
            ["cc", "-std=gnu11", "-Wall", "-Werror", "-fsyntax-only", f"-I{tmp_path}",
             f"-I{ROOT / 'csrc'}", str(source)], capture_output=True, text=True)
        assert proc.returncode == 0, f"{source.name}:\n{proc.stderr}"
    # and the old header really lacks what the shim needs a fallback for
    assert "LOOP_CONFIGURE" not in OLD_LOOP_H


def test_cdef_headers_have_no_variadic_ioctl():
    for header in (ROOT / "csrc").glob("lc_*.h"):
        text = header.read_text()
        assert not re.search(r"\.\.\.\s*\)", text), f"{header.name} declares a variadic function"
        assert not re.search(r"^\s*#", text, re.M), f"{header.name} has preprocessor lines"
        assert "Python.h" not in text


SMOKE = """
import json, os, tempfile
import loopcore, loopcore._native
with tempfile.TemporaryDirectory() as d:
    img = os.path.join(d, "w.img")
    open(img, "wb").truncate(1 << 20)
    with loopcore.attach(img) as dev:
        backing = dev.info().backing_file
    print(json.dumps({"module": loopcore.__file__, "native": loopcore._native.__file__,
                      "backing": backing, "img": img}))
"""


@pytest.mark.root
def test_wheel_installs_and_attaches_in_a_fresh_venv(tmp_path: Path):
    built = subprocess.run([str(ROOT / "scripts" / "build-wheel"), sys.executable],
                           capture_output=True, text=True, cwd=ROOT)
    assert built.returncode == 0, built.stderr
    wheel = ROOT / built.stdout.strip().splitlines()[-1]
    assert "-cp39-abi3-manylinux" in wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    assert "loopcore/py.typed" in names
    assert any(n.startswith("loopcore/_native") and n.endswith(".abi3.so") for n in names)
    assert not any(n.endswith((".c", ".h")) and "bench" not in n for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(wheel)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr
    # No compiler reachable: PATH holds only the venv, CC points nowhere.
    env = {"PATH": str(venv / "bin"), "CC": "/nonexistent-cc", "HOME": str(tmp_path)}
    run = subprocess.run([str(venv / "bin" / "python"), "-c", SMOKE], capture_output=True,
                         text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["module"].startswith(str(venv))
    assert out["native"].startswith(str(venv)) and out["native"].endswith(".abi3.so")
    assert out["backing"] == out["img"]
