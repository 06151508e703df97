"""Packaging: the shim builds against old kernel headers; the sdist holds
everything needed to build and test and installs from source; the wheel
is tagged manylinux_2_28 and needs no newer glibc symbol, ships stripped
and without the cffi builder, and attaches a device from a fresh venv
with no compiler around."""
from __future__ import annotations

import ast
import email
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, NamedTuple, Optional

import pytest

import loopcore

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


def _stub_lib() -> Dict[str, Optional[List[str]]]:
    """``_native.pyi``'s class _Lib: each constant (None) and function (its
    parameters' annotations, ``self`` left out)."""
    tree = ast.parse((ROOT / "src" / "loopcore" / "_native.pyi").read_text())
    (lib_class,) = [node for node in tree.body
                    if isinstance(node, ast.ClassDef) and node.name == "_Lib"]
    stubs: Dict[str, Optional[List[str]]] = {}
    for node in lib_class.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            assert ast.unparse(node.annotation) == "int", node.target.id
            stubs[node.target.id] = None
        elif isinstance(node, ast.FunctionDef):
            assert ast.unparse(node.returns) == "int", f"{node.name}: every shim call returns int"
            params = node.args.posonlyargs + node.args.args
            stubs[node.name] = [ast.unparse(a.annotation) for a in params[1:]
                                if a.annotation is not None]
    return stubs


def test_native_stubs_match_the_cdef():
    """``_native.pyi`` is written by hand: every function and constant of
    ``loopcore._native.lib`` (the cdef, csrc/lc_*.h) has its stub and every
    stub its C declaration, with as many parameters, each an int where C
    takes an integer and cdata (or bytes) where it takes a pointer."""
    from loopcore._native import ffi, lib
    stubs = _stub_lib()
    assert sorted(stubs) == sorted(dir(lib))
    for name, params in stubs.items():
        value = getattr(lib, name)
        if params is None:
            assert isinstance(value, int), f"{name} is a function in the cdef"
            continue
        assert not isinstance(value, int), f"{name} is a constant in the cdef"
        ctype = ffi.typeof(value)
        assert ctype.result.cname == "int", name
        assert len(params) == len(ctype.args), \
            f"{name}: {len(params)} parameters in _native.pyi, {len(ctype.args)} in C"
        for annotation, arg in zip(params, ctype.args):
            kinds = {"CData", "bytes"} if arg.kind == "pointer" else {"int"}
            assert kinds & set(annotation.replace(" ", "").split("|")), \
                f"{name}: {annotation} for C {arg.cname}"


SMOKE = """
import json, os, tempfile
import loopcore, loopcore._native
with tempfile.TemporaryDirectory() as d:
    img = os.path.join(d, "w.img")
    open(img, "wb").truncate(1 << 20)
    with loopcore.attach(img) as dev:
        backing = dev.info().backing_file
    print(json.dumps({"module": loopcore.__file__, "native": loopcore._native.__file__,
                      "backing": backing, "img": img, "version": loopcore.__version__}))
"""

# The oldest glibc the wheel may need: manylinux_2_28 (Debian 10, Ubuntu
# 20.04, RHEL 8).  glibc 2.33 made fstat a GLIBC_2.33 symbol.
GLIBC_FLOOR = (2, 28)
# What a build copies: the tree as a clean clone has it, no build output.
_NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "wheelhouse",
                                     "__pycache__", "*.so", "*.egg-info", "_native.c",
                                     ".pytest_cache", "bench-results",
                                     # linters' caches: ruff's files are 0600,
                                     # unreadable to a non-root test run
                                     ".ruff_cache", ".mypy_cache")


class Built(NamedTuple):
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    """scripts/build-wheel run once, on a copy of the tree (the build writes
    egg-info into its source directory)."""
    work = tmp_path_factory.mktemp("build")
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=_NOT_SOURCE)
    proc = subprocess.run([str(src / "scripts" / "build-wheel"), sys.executable,
                           str(work / "out")], capture_output=True, text=True, cwd=src)
    assert proc.returncode == 0, proc.stderr
    sdist, wheel = proc.stdout.strip().splitlines()[-2:]
    yield Built(Path(sdist), Path(wheel))


def _glibc_versions(elf: Path) -> set[tuple[int, ...]]:
    """The GLIBC_x.y versions an ELF file's dynamic symbols need."""
    dump = subprocess.run(["objdump", "-T", str(elf)], capture_output=True, text=True,
                          check=True).stdout
    return {tuple(int(p) for p in v.split(".")) for v in re.findall(r"GLIBC_([0-9.]+)", dump)}


def _fresh_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def _pip_install(python: Path, target: Path) -> None:
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q",
                          "--disable-pip-version-check", str(target)],
                         capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr


def _smoke(python: Path, home: Path) -> dict[str, str]:
    """Attach a device with the installed loopcore, outside the source tree,
    with nothing but the venv on PATH and no compiler."""
    env = {"PATH": str(python.parent), "CC": "/nonexistent-cc", "HOME": str(home)}
    run = subprocess.run([str(python), "-c", SMOKE], capture_output=True, text=True,
                         env=env, cwd=home)
    assert run.returncode == 0, run.stderr
    out: dict[str, str] = json.loads(run.stdout)
    venv = str(python.parent.parent)
    assert out["module"].startswith(venv) and out["native"].startswith(venv)
    assert out["native"].endswith(".abi3.so")
    assert out["backing"] == out["img"]
    assert out["version"] == loopcore.__version__
    return out


def test_wheel_is_manylinux_2_28_and_needs_no_newer_glibc(built: Built, tmp_path: Path):
    tag = re.search(r"-cp39-abi3-((?:manylinux_(\d+)_(\d+)_\w+\.?)+)\.whl$", built.wheel.name)
    assert tag, built.wheel.name
    promised = (int(tag.group(2)), int(tag.group(3)))
    assert promised <= GLIBC_FLOOR, f"{built.wheel.name} promises glibc {promised}"
    with zipfile.ZipFile(built.wheel) as z:
        so = [n for n in z.namelist() if n.startswith("loopcore/_native") and n.endswith(".so")]
        assert len(so) == 1, so
        z.extract(so[0], tmp_path)
    needed = _glibc_versions(tmp_path / so[0])
    assert needed, "no versioned glibc symbol found: objdump output not understood"
    assert max(needed) <= promised, f"needs GLIBC_{'.'.join(map(str, max(needed)))}"
    # Stripped: no static symbol table, only the dynamic one.
    sections = subprocess.run(["readelf", "-S", "-W", str(tmp_path / so[0])],
                              capture_output=True, text=True, check=True).stdout
    assert ".dynsym" in sections and ".symtab" not in sections


def test_wheel_contents_and_metadata(built: Built):
    with zipfile.ZipFile(built.wheel) as z:
        names = z.namelist()
        meta_name = next(n for n in names if n.endswith(".dist-info/METADATA"))
        meta = email.message_from_bytes(z.read(meta_name))
    assert "loopcore/py.typed" in names
    assert "loopcore/_native.pyi" in names
    assert "loopcore/_build.py" not in names  # build-time only
    assert not any(n.endswith((".c", ".h")) for n in names)
    assert not any(n.startswith(("benchmarks/", "loopcore/bench/")) for n in names)
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert meta["Version"] == loopcore.__version__
    assert meta["License-Expression"] == "MIT"
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Typing :: Typed", "Operating System :: POSIX :: Linux",
                   "Programming Language :: Python :: 3.9"):
        assert wanted in classifiers
    assert any(c.startswith("Development Status ::") for c in classifiers)


def test_sdist_holds_what_building_and_testing_need(built: Built):
    with tarfile.open(built.sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    tracked = subprocess.run(["git", "ls-files", "csrc", "tests", "scripts", "benchmarks"],
                             cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0 and tracked.stdout:
        # every source, test and script the repository tracks
        # (as present in the working tree: a file deleted but not yet committed is gone)
        assert {n for n in tracked.stdout.split() if (ROOT / n).exists()} <= names
    for wanted in ("csrc/lc_dm.h", "csrc/lc_loop.h", "csrc/kernel_compat.h",
                   "csrc/libc_compat.h", "src/loopcore/_build.py", "setup.py",
                   "pyproject.toml", "LICENSE", "CHANGELOG.md", "README.md", "Makefile",
                   "tests/conftest.py", "tests/vm/conftest.py", "scripts/bootstrap",
                   "benchmarks/__main__.py", "benchmarks/floor.c", "benchmarks/dm-bench"):
        assert wanted in names, wanted
    assert not any(n.endswith((".so", ".pyc")) or "__pycache__" in n for n in names)


@pytest.mark.root
def test_wheel_installs_and_attaches_in_a_fresh_venv(built: Built, tmp_path: Path):
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, built.wheel)
    _smoke(python, tmp_path)


@pytest.mark.root
def test_sdist_builds_installs_and_attaches_in_a_fresh_venv(built: Built, tmp_path: Path):
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, built.sdist)  # compiles the shim from the sdist
    out = _smoke(python, tmp_path)
    assert "site-packages" in out["native"]


# A container as cibuildwheel's test step sees one: a private mount
# namespace whose /dev is a fresh tmpfs with the usual character devices
# and no loop devices at all.  The host's /dev is untouched.
CONTAINER_SH = r"""
mount -t tmpfs -o mode=0755,nosuid tmpfs /dev
mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7
mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9
mkdir -m 1777 /dev/shm; ln -s /proc/self/fd /dev/fd
ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout
ln -s /proc/self/fd/2 /dev/stderr
exec "$@"
"""


@pytest.mark.root
def test_wheel_test_command_passes_unprivileged_without_loop_control(built: Built):
    """What [tool.cibuildwheel] runs: the installed wheel, the tests marked
    neither root nor vm, as an unprivileged user with no /dev/loop-control.
    (test_packaging itself is left out: it would build the wheel again.)"""
    work = Path(tempfile.mkdtemp(prefix="loopcore-unpriv-"))
    try:
        shutil.copytree(ROOT, work / "project", ignore=_NOT_SOURCE)
        python = _fresh_venv(work / "venv")
        _pip_install(python, built.wheel)
        _pip_install(python, Path("pytest"))
        _pip_install(python, Path("hypothesis"))  # test-requires: the property tests
        subprocess.run(["chown", "-R", "nobody:", str(work)], check=True)
        work.chmod(0o755)
        tests = work / "project" / "tests"
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "--", "sh", "-euc",
             CONTAINER_SH, "sh", "runuser", "-u", "nobody", "--", "env",
             f"HOME={work}", "PYTHONDONTWRITEBYTECODE=1", str(python), "-m", "pytest",
             str(tests), "-m", "not root and not vm", "-p", "no:cacheprovider", "-q",
             "--ignore", str(tests / "vm"), "--ignore", str(tests / "test_packaging.py")],
            capture_output=True, text=True, cwd=work, stdin=subprocess.DEVNULL, timeout=600)
        assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
        summary = proc.stdout.strip().splitlines()[-1]
        assert re.search(r"\d+ passed", summary) and "failed" not in summary, summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
