"""Device-mapper names and uuids: the kernel's rules, dmsetup's mangling
(``--manglename``), and that every verb sends the name as mangled and
reports it as typed (through a FakeKernel)."""
from __future__ import annotations

import errno

import pytest

from loopcore import dm

from dmfake import FakeKernel, fake_mapper_fixture  # noqa: F401 - the fixture


@pytest.mark.parametrize("name", ["", "a/b", "control", ".", "..", "x" * 128, "a\0b"])
def test_bad_names(name):
    with pytest.raises(ValueError):
        dm.validate_name(name)


def test_good_names_and_uuids():
    assert dm.validate_name("x" * 127) == b"x" * 127
    assert dm.validate_name("with space") == b"with\\x20space"  # mangled, as dmsetup stores it
    assert dm.validate_uuid("u" * 128) == b"u" * 128
    for bad in ("", "u" * 129, "a\0"):
        with pytest.raises(ValueError):
            dm.validate_uuid(bad)
    with pytest.raises(TypeError):
        dm.validate_name(b"bytes")  # type: ignore[arg-type]


# --- names: dmsetup's mangling ("--manglename auto") ---------------------------------

@pytest.mark.parametrize("typed, kernel", [
    ("plain-name_1.2:3=4@5+6#7", "plain-name_1.2:3=4@5+6#7"),   # the whitelist
    ("a b", "a\\x20b"),
    ("line\nbreak", "line\\x0abreak"),
    ("tab\there", "tab\\x09here"),
    ("café", "caf\\xc3\\xa9"),          # UTF-8, byte by byte
    ("back\\slash", "back\\x5cslash"),
    ("x*y?z", "x\\x2ay\\x3fz"),
    ("a\\x20b", "a\\x20b"),              # already mangled: kept
    ("\\x20\\xc3\\xa9", "\\x20\\xc3\\xa9"),
    ("a\\xzzb", "a\\xzzb"),              # kept as is, like libdm (4 characters copied)
])
def test_mangle_auto(typed, kernel):
    assert dm.mangle(typed) == kernel
    assert dm.mangle(typed, "auto") == kernel


@pytest.mark.parametrize("typed", [
    "a b\\x20",        # unmangled, then mangled: mixed
    "a\\x20b c",       # mangled, then unmangled: mixed
    "a\\x2",           # a \x sequence cut short
    "a\\x5cx20b",      # mangled twice
])
def test_mangle_auto_refuses_what_dmsetup_refuses(typed):
    with pytest.raises(ValueError):
        dm.mangle(typed)
    with pytest.raises(ValueError):
        dm.validate_name(typed)


def test_mangle_hex_and_none():
    assert dm.mangle("a\\x20b", "hex") == "a\\x5cx20b"  # hex mangles every backslash
    assert dm.mangle("a b\\x20", "hex") == "a\\x20b\\x5cx20"
    assert dm.mangle("a\\x5cx20b", "hex") == "a\\x5cx5cx20b"
    assert dm.mangle("a b", "none") == "a b"
    assert dm.unmangle("a\\x20b", "none") == "a\\x20b"
    with pytest.raises(ValueError):
        dm.mangle("a", "sometimes")


@pytest.mark.parametrize("kernel, shown", [
    ("a\\x20b", "a b"),
    ("caf\\xc3\\xa9", "café"),
    ("A\\x2Fb", "A/b"),                  # upper-case hex too
    ("plain", "plain"),
    ("a b", "a b"),                      # not mangled at all (raw): shown as stored
    ("raw name\\x20", "raw name\\x20"),
    ("a\\xzz", "a\\xzz"),                # not a hex sequence: kept
    ("nul\\x00", "nul\\x00"),            # a name cannot hold NUL: kept
])
def test_unmangle(kernel, shown):
    assert dm.unmangle(kernel) == shown


def test_mangle_round_trips():
    names = ["a b", "line\nbreak", "café", "日本語", "x\\y", "tab\t", "#+-.:=@_",
             "".join(chr(c) for c in range(1, 128) if chr(c) != "/")[:31]]
    names += [f"a{chr(c)}b" for c in range(1, 256) if chr(c) != "/"]
    for name in names:
        kernel = dm.mangle(name)
        assert all(c.isascii() and (c.isalnum() or c in "#+-.:=@_\\") for c in kernel), kernel
        assert dm.unmangle(kernel) == name, (name, kernel)
        assert dm.unmangle(dm.mangle(name, "hex"), "hex") == name


def test_validate_mangles_and_limits_the_mangled_length():
    assert dm.validate_name("with space") == b"with\\x20space"
    assert dm.validate_name("with space", "none") == b"with space"
    assert dm.validate_name(" " * 31) == b"\\x20" * 31           # 124 bytes
    with pytest.raises(ValueError, match="too long"):
        dm.validate_name(" " * 32)                               # 128 bytes mangled
    assert dm.validate_uuid("u v") == b"u\\x20v"
    assert dm.validate_uuid(" " * 32) == b"\\x20" * 32            # 128 bytes
    with pytest.raises(ValueError, match="too long"):
        dm.validate_uuid(" " * 32 + "x")
    with pytest.raises(ValueError):
        dm.validate_uuid("a b\\x20")
    # a name the kernel already holds is used as it is
    assert dm.validate_name(dm.KernelName("a b")) == b"a b"
    assert dm.validate_name(dm.KernelName("a\\x5cx20")) == b"a\\x5cx20"


def test_names_are_mangled_on_every_path(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    m = fake_mapper(kernel)
    m.create("a b", uuid="u é", table="0 8 zero")
    m.info("a b")
    m.table("a b")
    m.status("a b")
    m.deps("a b")
    m.suspend("a b")
    m.resume("a b")
    m.message("a b", 0, "@cancel_deferred_remove")
    m.rename("a b", "c\nd")
    m.set_uuid("c\nd", "new uuid")
    m.remove("c\nd")
    names = {r[2] for r in kernel.requests if r[0] != dm.Cmd.VERSION}
    assert names == {b"a\\x20b", b"c\\x0ad"}
    creates = [r for r in kernel.requests if r[0] == dm.Cmd.DEV_CREATE]
    assert creates[0][3] == b"u\\x20\\xc3\\xa9"
    renames = [r[4].rstrip(b"\0") for r in kernel.requests if r[0] == dm.Cmd.DEV_RENAME]
    assert renames == [b"c\\x0ad", b"new\\x20uuid"]


def test_other_mangling_modes_reach_the_kernel(fake_mapper):
    kernel = FakeKernel()
    fake_mapper(kernel, name_mangling="none").info("a b")
    fake_mapper(kernel, name_mangling="hex").info("a\\x20b")
    fake_mapper(kernel).info(dm.KernelName("raw name"))
    assert [r[2] for r in kernel.requests if r[0] == dm.Cmd.DEV_STATUS] == \
        [b"a b", b"a\\x5cx20b", b"raw name"]
    with pytest.raises(ValueError):
        dm.DeviceMapper(name_mangling="sometimes")


def test_list_devices_unmangles(fake_mapper):
    kernel = FakeKernel(devices=[("a\\x20b", "u\\x20v"), ("plain", "LVM-x"),
                                 ("raw name", ""), ("caf\\xc3\\xa9", "")])
    m = fake_mapper(kernel)
    entries = m.list_devices()
    assert [e.name for e in entries] == ["a b", "plain", "raw name", "café"]
    assert [e.kernel_name for e in entries] == ["a\\x20b", "plain", "raw name",
                                                "caf\\xc3\\xa9"]
    assert entries[0].uuid == "u v"
    assert all(isinstance(e.kernel_name, dm.KernelName) for e in entries)
    raw = fake_mapper(kernel, name_mangling="none").list_devices()
    assert [e.name for e in raw] == ["a\\x20b", "plain", "raw name", "caf\\xc3\\xa9"]


def test_info_reports_the_typed_name_and_the_node(fake_mapper):
    kernel = FakeKernel()
    m = fake_mapper(kernel)
    info = m.info("a b")   # the fake echoes the request header back
    assert info.name == "a b" and info.kernel_name == "a\\x20b"
    assert info.path == "/dev/mapper/a\\x20b"     # udev's and libdm's node name


# --- addressing by uuid ----------------------------------------------------------------

def test_devices_found_by_uuid(fake_mapper):
    kernel = FakeKernel("0 8 zero")
    kernel.names[b"MY\\x20uuid"] = b"the-name"
    m = fake_mapper(kernel)
    del kernel.requests[:]
    by_uuid = dm.DevId.uuid("MY uuid")
    assert isinstance(by_uuid, dm.DmUuid) and by_uuid.raw == b"MY\\x20uuid"
    assert m.info(by_uuid).name == "the-name"
    m.status(by_uuid)
    m.table(by_uuid)
    m.suspend(by_uuid)
    m.remove(by_uuid)
    assert {(r[2], r[3]) for r in kernel.requests} == {(b"", b"MY\\x20uuid")}
    # rename finds devices by name only: the name is asked first
    del kernel.requests[:]
    m.rename(by_uuid, "new")
    assert [(r[0], r[2], r[3]) for r in kernel.requests] == [
        (dm.Cmd.DEV_STATUS, b"", b"MY\\x20uuid"), (dm.Cmd.DEV_RENAME, b"the-name", b"")]
    # a plain str, a DmName and DevId.name are names
    del kernel.requests[:]
    m.info("x y")
    m.info(dm.DmName("x y"))
    m.info(dm.DevId.name("x y"))
    assert [(r[2], r[3]) for r in kernel.requests] == [(b"x\\x20y", b"")] * 3
    # errors name the uuid
    kernel.fail[dm.Cmd.DEV_STATUS] = [-errno.ENXIO]
    with pytest.raises(OSError) as exc:
        m.info(by_uuid)
    assert exc.value.filename == "uuid MY uuid"
    with pytest.raises(TypeError):
        m.create(by_uuid)
    with pytest.raises(TypeError):
        dm.DevId()


def test_names_are_checked_once_when_made():
    name = dm.DmName("a b")
    assert name == "a b" and name.raw == b"a\\x20b" and name.kernel == "a\\x20b"
    assert isinstance(name.kernel, dm.KernelName)
    assert dm.DmName("a\\x20b", "hex").raw == b"a\\x5cx20b"
    # made with its own mode, it keeps it whatever the client's mode
    assert dm.validate_name(name, "none") == b"a\\x20b"
    assert dm.validate_name(dm.KernelName("a b"), "auto") == b"a b"
    assert dm.DmUuid("u v").raw == b"u\\x20v"
    for bad in ("", "a/b", "control", "x" * 128, "a b\\x20"):
        with pytest.raises(ValueError):
            dm.DmName(bad)
    with pytest.raises(TypeError):
        dm.DmName(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        dm.DmUuid("")
