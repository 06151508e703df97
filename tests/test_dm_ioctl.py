"""The ioctl layer on the host: the structs' Python views against
``<linux/dm-ioctl.h>`` (compiled here), the command table (valid flags,
minimum versions), and the records parsed from the kernel's payloads."""
from __future__ import annotations

import errno
import struct
import subprocess

import pytest

from loopcore import _c, dm, errors
from loopcore.dm import ioctl as dm_ioctl
from loopcore.dm import records as dm_records

from dmfake import FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture


def test_parse_versions():
    def entry(name, ver, last=False):
        body = struct.pack("=I3I", 0, *ver) + name.encode() + b"\0"
        body += b"\0" * (-len(body) % 8)
        return body if last else struct.pack("=I", len(body)) + body[4:]
    data = entry("linear", (1, 4, 0)) + entry("zero", (1, 2, 0), last=True)
    versions = dm_records.parse_versions(data)
    assert [str(v) for v in versions] == ["linear           v1.4.0", "zero             v1.2.0"]


# --- the structs, checked field by field against <linux/dm-ioctl.h> ---------------------

def _fields(sname: str):
    """(name, cffi field) of ``struct lc_<sname>``, as lc_dm.h declares it."""
    return _c.ffi.typeof(f"struct lc_{sname}").fields


def _c_program() -> str:
    """A C program printing, for every struct of dm_ioctl.VIEWS and each of
    its fields, offsetof, sizeof and signedness in the kernel's header, and
    the header's constants."""
    out = ["#include <stddef.h>", "#include <stdio.h>", "#include <linux/dm-ioctl.h>",
           "int main(void) {"]

    def emit(key: str, expr: str, fmt: str = "%zu") -> None:
        out.append(f'    printf("{key} {fmt}\\n", {expr});')

    for sname in dm_ioctl.VIEWS:
        emit(f"{sname}.sizeof", f"sizeof(struct {sname})")
        for fname, field in _fields(sname):
            member = f"((struct {sname} *)0)->{fname}"
            emit(f"{sname}.{fname}.offset", f"offsetof(struct {sname}, {fname})")
            if field.type.kind == "array" and field.type.length is None:
                continue  # a flexible array: no size
            emit(f"{sname}.{fname}.size", f"sizeof({member})")
            element = member + ("[0]" if field.type.kind == "array" else "")
            emit(f"{sname}.{fname}.signed", f"(int)((__typeof__({element}))-1 < 0)", "%d")
    for const in ("DM_NAME_LEN", "DM_UUID_LEN", "DM_MAX_TYPE_NAME",
                  "DM_NAME_LIST_FLAG_HAS_UUID", "DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID"):
        emit(const, const, "%d")
    for cmd in dm.Cmd:
        # enum members: only in headers of the interface version that has them
        out.append(f"#if DM_VERSION_MINOR >= {dm_ioctl.COMMANDS[cmd].min_version[1]}")
        emit(f"cmd.{cmd.name}", f"DM_{cmd.name}_CMD", "%d")
        out.append("#endif")
    for flag in dm.Flag:
        macro = "DM_DEFERRED_REMOVE" if flag.name == "DEFERRED_REMOVE" else f"DM_{flag.name}_FLAG"
        out += [f"#ifdef {macro}"]
        emit(f"flag.{flag.name}", macro, "%d")
        out += ["#endif"]
    out += ["    return 0;", "}"]
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def kernel_header(tmp_path_factory) -> dict:
    """What the C compiler says about <linux/dm-ioctl.h>: key -> int."""
    work = tmp_path_factory.mktemp("dm_layout")
    (work / "layout.c").write_text(_c_program())
    subprocess.run(["cc", "-std=gnu11", "-Wall", "-Werror", "-o", str(work / "layout"),
                    str(work / "layout.c")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(work / "layout")], check=True, capture_output=True,
                         text=True).stdout
    return {key: int(value) for key, value in (line.split() for line in out.splitlines())}


@pytest.mark.parametrize("sname", sorted(dm_ioctl.VIEWS))
def test_struct_layout_matches_the_kernel_header(kernel_header, sname):
    """The Python view derived from lc_dm.h packs each field where, as
    wide and as signed as <linux/dm-ioctl.h> has it (the C build asserts
    the same of lc_dm.h itself)."""
    view = dm_ioctl.VIEWS[sname]
    c = kernel_header
    fields = _fields(sname)
    assert [f for f, _ in fields] == list(view.offsets), sname
    for i, (fname, field) in enumerate(fields):
        assert view.offsets[fname] == c[f"{sname}.{fname}.offset"], (sname, fname)
        ftype = field.type
        if ftype.kind == "array" and ftype.length is None:
            assert i == len(fields) - 1, f"{sname}.{fname}: a flexible array comes last"
            continue
        assert _c.ffi.sizeof(ftype) == c[f"{sname}.{fname}.size"], (sname, fname)
        item = ftype.item if ftype.kind == "array" else ftype
        if item.cname != "char":
            assert int(not item.cname.startswith("u")) == c[f"{sname}.{fname}.signed"], \
                (sname, fname)
    # packed, the view is the whole C struct, tail padding included
    assert view.struct.size == c[f"{sname}.sizeof"], sname
    # and it unpacks one value per field (an array's items each)
    assert len(view.names) == len(view.struct.unpack(bytes(view.struct.size))), sname


def test_constants_match_the_kernel_header(kernel_header):
    c = kernel_header
    assert (c["DM_NAME_LEN"], c["DM_UUID_LEN"], c["DM_MAX_TYPE_NAME"]) == \
        (dm.DM_NAME_LEN, dm.DM_UUID_LEN, dm.DM_MAX_TYPE_NAME)
    assert c["DM_NAME_LIST_FLAG_HAS_UUID"] == dm_ioctl.NAME_LIST_HAS_UUID
    assert c["DM_NAME_LIST_FLAG_DOESNT_HAVE_UUID"] == dm_ioctl.NAME_LIST_NO_UUID
    assert dm.HEADER_SIZE == c["dm_ioctl.sizeof"] == 312
    assert dm_ioctl.NAME_LIST.offsets["name"] == 12     # before the padded size (16)
    for cmd in dm.Cmd:
        if f"cmd.{cmd.name}" in c:
            assert c[f"cmd.{cmd.name}"] == cmd, cmd
    for flag in dm.Flag:
        if f"flag.{flag.name}" in c:
            assert c[f"flag.{flag.name}"] == flag, flag
    assert "cmd.VERSION" in c and "flag.SECURE_DATA" in c  # the program did look


# --- the command table: valid flags and minimum versions ------------------------------

def test_every_command_has_a_spec():
    assert set(dm_ioctl.COMMANDS) == set(dm.Cmd)
    assert dm_ioctl.COMMANDS[dm.Cmd.GET_TARGET_VERSION].min_version == (4, 41, 0)
    assert dm_ioctl.COMMANDS[dm.Cmd.DEV_ARM_POLL].min_version == (4, 37, 0)


def test_flags_a_command_does_not_take_fail_before_the_ioctl(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    del kernel.requests[:]
    for cmd, flags in ((dm.Cmd.DEV_REMOVE, dm.Flag.NOFLUSH),
                       (dm.Cmd.DEV_CREATE, dm.Flag.SUSPEND),
                       (dm.Cmd.TABLE_DEPS, dm.Flag.SECURE_DATA),
                       (dm.Cmd.VERSION, dm.Flag.UUID)):
        with pytest.raises(ValueError, match=f"DM_{cmd.name} does not take") as exc:
            m._channel.call(cmd, name=b"x", flags=flags)
        assert isinstance(exc.value, errors.ValueError)
    with pytest.raises(ValueError):
        m._channel.call(dm.Cmd.DEV_STATUS, name=b"x", secure=True)  # SECURE_DATA
    assert kernel.requests == []


def test_request_version_is_the_commands_minimum(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    m = fake_mapper(kernel)
    m.set_geometry("g", 1, 1, 1, 0)
    m.message("g", 0, "@cancel_deferred_remove")
    m.info("g")
    assert kernel.versions[-3:] == [(4, 6, 0), (4, 2, 0), (4, 0, 0)]


def test_commands_newer_than_the_kernel_fail_before_the_ioctl(fake_mapper):
    kernel = FakeKernel(version=(4, 36, 0))
    m = fake_mapper(kernel)
    with pytest.raises(OSError) as exc:
        m.arm_poll()
    assert exc.value.errno == errno.EOPNOTSUPP and "4.37.0" in str(exc.value)
    assert isinstance(exc.value, errors.DmError)
    assert dm.Cmd.DEV_ARM_POLL not in [r[0] for r in kernel.requests]
    # target_version() uses LIST_VERSIONS instead of GET_TARGET_VERSION (4.41)
    with pytest.raises(OSError) as exc:
        m.target_version("linear")   # the fake lists none
    assert exc.value.errno == errno.EINVAL
    assert [r[0] for r in kernel.requests][-1] == dm.Cmd.LIST_VERSIONS
    with pytest.raises(OSError):
        fake_mapper(FakeKernel(version=(5, 0, 0)))  # not interface 4: EPROTO
