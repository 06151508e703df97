"""Start-up: ``import loopcore`` and a ``loopcore list`` process import only
what they use (behaviour, not time: the figures are the benchmarks' ``cli``
scenario).  The lazy exports (loopcore._lazy) keep every public name,
``from loopcore import X``, ``dir()`` and ``__all__`` as the eager
``__init__`` files had them."""
from __future__ import annotations

import ast
import importlib
import os
import pickle
import subprocess
import sys
from typing import Dict, Set

import pytest
from test_layout import PACKAGE, _cycle, import_graph

import loopcore

LAZY_PACKAGES = ["loopcore", "loopcore.loop", "loopcore.dm", "loopcore.dmlog"]

# What a process that only lists loop devices has no use for: the other
# subsystems, the attach and partition code, and the standard library that
# only they (or help, JSON, sizes) need.
NOT_FOR_LIST = {
    "loopcore.dm", "loopcore.dmlog", "loopcore.cli.dm", "loopcore.cli.dmlog",
    "loopcore.loop.partition_table", "loopcore.loop.partitions", "loopcore.loop.policy",
    "loopcore.loop.burst", "loopcore.loop.device",
    "logging", "uuid", "platform", "fractions", "decimal", "json", "dataclasses",
    "shutil", "socket", "threading", "zlib",
    # argument checks and deadlines: a listing takes no argument to check;
    # unicodedata only for a name that is not ASCII
    "loopcore._validate", "loopcore._retry", "unicodedata",
    # struct.py re-exports _struct (built in): _c takes Struct from there
    "struct",
}


def _modules_after(code: str) -> Set[str]:
    """The modules a fresh interpreter holds after running ``code``,
    less those its start-up (site) imported anyway."""
    script = f"import sys; before = set(sys.modules)\n{code}\n" \
             "print(sorted(set(sys.modules) - before))"
    out = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True,
                         text=True, env=_no_debug()).stdout
    return set(ast.literal_eval(out.splitlines()[-1]))


def _no_debug() -> Dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "LOOPCORE_DEBUG"}


def test_import_loopcore_imports_nothing_but_itself():
    modules = _modules_after("import loopcore")
    assert {m for m in modules if m.startswith("loopcore")} == {
        "loopcore", "loopcore._lazy", "loopcore._log", "loopcore._version"}
    heavy = {"typing", "re", "enum", "logging", "argparse", "_cffi_backend"}
    assert modules & heavy == set()


def test_listing_devices_in_the_library_imports_only_the_listing():
    modules = _modules_after("import loopcore\n"
                             "for r in loopcore.list_devices(include_unbound=True):\n"
                             "    r.read_only, r.autoclear, r.partscan, r.direct_io")
    assert modules & NOT_FOR_LIST == set()
    assert "argparse" not in modules
    assert "typing" not in modules  # LoopInfo is a NamedTuple all the same
    assert "enum" not in modules  # the flags are read as bits; Flags is made when asked
    assert "collections" not in modules  # records are made without it
    assert "loopcore.loop.discovery" in modules  # the test can see an import


def test_detaching_imports_none_of_the_attach_code():
    # what ``loopcore detach DEV...`` uses: open() and detach_many()
    modules = _modules_after("import loopcore; loopcore.open; loopcore.detach_many")
    assert "loopcore.loop.detach_burst" in modules
    assert modules & {"loopcore.loop.burst", "loopcore.loop.binding", "loopcore.loop.policy",
                      "loopcore.loop.request", "loopcore.loop.legacy"} == set()


def test_a_record_reads_its_flags_as_the_enum():
    from loopcore import Flags, LoopInfo
    from loopcore.loop import info

    def record(flags):
        return LoopInfo(3, "/dev/loop3", "/x.img", 1, 2, 0, 0, flags, 512, 4096, None)

    flags = Flags.READ_ONLY | Flags.PARTSCAN
    bits, enum = record(int(flags)), record(flags)  # as the scan and info() make them
    for rec in (bits, enum):
        assert type(rec.flags) is Flags and rec.flags == flags
        assert Flags.PARTSCAN in rec.flags and Flags.AUTOCLEAR not in rec.flags
        assert (rec.read_only, rec.autoclear, rec.partscan, rec.direct_io) == \
            (True, False, True, False)
        assert "flags=<Flags.READ_ONLY|PARTSCAN: 9>" in repr(rec)
        assert type(rec._asdict()["flags"]) is Flags
    assert bits == enum and hash(bits) == hash(enum) and repr(bits) == repr(enum)
    assert pickle.loads(pickle.dumps(bits)) == bits
    assert info.Flags is Flags and record(0).flags is Flags(0)


def test_loopcore_list_process_imports_only_its_command():
    # the real entry point, as a process; -X importtime names every import
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "loopcore", "list"],
                       capture_output=True, text=True, env=_no_debug())
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert "loopcore.cli.loop" in imported
    assert imported & NOT_FOR_LIST == set()
    assert "typing" not in imported


def _commands(argv):
    from loopcore.cli import build_parser
    (sub,) = build_parser(argv)._subparsers._group_actions  # type: ignore[union-attr]
    return set(sub.choices)


def test_argparse_parses_only_the_extension_it_runs():
    # dm and dmlog are still argparse's: a process builds only its own
    assert _commands(["dm", "ls"]) == {"dm"}
    assert _commands(["--help"]) == _commands(["lsit"]) == {"dm", "dmlog"}


# --- the command line's own imports ------------------------------------------------
# argparse (with re, gettext and locale), typing and enum were most of a
# ``loopcore list`` process's imports beyond the listing itself.  The
# library's call for the same job is the baseline: what it imports (enum
# for Flags, today) is the library's to drop; the command adds nothing.

HEAVY = {"argparse", "re", "enum", "typing", "gettext"}
#: what no loop command's process imports, whatever the library does
NEVER = {"argparse", "gettext", "locale"}


def _main_modules(argv) -> Set[str]:
    """What ``cli.main(argv)`` imports in a fresh interpreter (exit 0)."""
    code = (f"import sys; from loopcore.cli import main\n"
            f"assert main({argv!r}) == 0")
    return _modules_after(code)


def test_loopcore_list_imports_no_argparse_re_enum_typing_or_gettext():
    library = _modules_after("import loopcore; loopcore.list_devices()")
    for argv in (["list"], ["list", "-n", "--raw", "-O", "NAME,RO"], ["list", "--json"]):
        modules = _main_modules(argv)
        assert "loopcore.cli.loop" in modules  # the check sees the command's imports
        assert modules & HEAVY <= library & HEAVY, argv
        assert modules & (NEVER | {"re", "typing"}) == set(), argv


def test_the_import_check_sees_argparse():
    # the check above can fail: a command argparse parses imports it
    assert "argparse" in _modules_after(
        "from loopcore.cli import main; main(['dmlog', 'serve', '--help'])")


@pytest.mark.root
@pytest.mark.usefixtures("no_leaks")
def test_batch_attach_and_detach_import_what_the_library_does(make_image):
    images = [str(make_image(size=1 << 20)) for _ in range(3)]
    code = ("import sys; before = set(sys.modules)\n"
            "from loopcore.cli import main\n"
            "status = main(sys.argv[1:])\n"
            "print(sorted(set(sys.modules) - before)); sys.exit(status)")

    def command(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True,
                              text=True, env=_no_debug())

    attached = command("attach", "--show", *images)
    try:
        paths = attached.stdout.splitlines()[:-1]
        detached = command("detach", *paths)
    finally:
        for image in images:  # only if the detach failed
            for info in loopcore.find(image):
                loopcore.detach(info.number)
    assert (attached.returncode, detached.returncode) == (0, 0), attached.stderr + detached.stderr
    library = _modules_after(f"import loopcore; loopcore.detach_many("
                             f"loopcore.attach_many({images!r}))")
    for proc in (attached, detached):
        modules = set(ast.literal_eval(proc.stdout.splitlines()[-1]))
        assert "loopcore.cli.loop" in modules
        assert modules & HEAVY <= library & HEAVY
        assert modules & NEVER == set()
        assert "loopcore.cli.columns" not in modules  # nothing listed: no losetup columns


def test_a_dm_command_imports_the_dm_side():
    modules = _modules_after("from loopcore.cli import main; main(['dm', 'version'])")
    assert {"loopcore.cli.dm", "loopcore.dm"} <= modules
    assert "loopcore.dmlog" not in modules


# --- the lazy exports keep the API ---------------------------------------------

def _type_checking_names(package: str) -> Dict[str, str]:
    """{exported name: "module:name"} of the ``if TYPE_CHECKING:`` block of
    ``package``'s __init__.py (what the type checker sees)."""
    path = PACKAGE.parent / package.replace(".", "/") / "__init__.py"
    tree = ast.parse(path.read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If)
                 and ast.unparse(node.test) == "TYPE_CHECKING")
    names: Dict[str, str] = {}
    for node in block.body:
        if isinstance(node, ast.ImportFrom):
            base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            for alias in node.names:
                names[alias.asname or alias.name] = f"{base}:{alias.name}"
        elif isinstance(node, ast.Assign):  # read_ahead = read_ahead_sectors
            (target,) = node.targets
            names[target.id] = names.pop(node.value.id)  # type: ignore[attr-defined]
    return names


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_the_type_checkers_names_are_the_runtime_exports(package):
    module = importlib.import_module(package)
    declared = _type_checking_names(package)
    assert set(declared) == set(module.__all__) - {"__version__"}
    for name, where in declared.items():
        source, original = where.split(":")
        try:
            expected = getattr(importlib.import_module(source), original)
        except AttributeError:  # from . import thin_messages
            expected = importlib.import_module(f"{source}.{original}")
        assert getattr(module, name) is expected, name


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_export_is_in_dir_and_importable_by_name(package):
    # a fresh process: nothing imported before the names are asked for
    code = (f"import {package} as p; missing = set(p.__all__) - set(dir(p)); "
            f"assert not missing, missing; "
            f"exec('from {package} import ' + ', '.join(p.__all__)); print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr


def test_a_name_that_is_not_exported_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        loopcore.nonesuch  # noqa: B018
    assert not hasattr(loopcore.loop, "nonesuch")


def test_submodules_are_attributes_as_the_eager_init_had_them():
    modules = _modules_after("import loopcore; loopcore.loop.read_partition_table; "
                             "loopcore.loop.discovery.partitions")
    assert "loopcore.loop.partition_table" in modules


def test_lazy_imports_make_no_import_cycle():
    # the tables' edges are strings the static graph cannot see: add them
    graph = import_graph()
    for package in LAZY_PACKAGES:
        for where in _type_checking_names(package).values():
            source = where.split(":")[0]
            target = source if source in graph else f"{source}.{where.split(':')[1]}"
            if target != package:
                graph[package].add(target)
    assert not _cycle(graph), " -> ".join(_cycle(graph))


def test_a_record_class_is_what_typings_namedtuple_makes():
    import typing

    from loopcore._namedtuple import NamedTuple

    def body(base):
        class Rec(base):
            """doc"""
            a: int
            b: str = "x"

            @property
            def twice(self) -> int:
                return self.a * 2
        return Rec

    ours, theirs = body(NamedTuple), body(typing.NamedTuple)
    for cls in (ours, theirs):
        rec = cls(1)
        assert (rec, rec.twice, rec._replace(b="y").b) == ((1, "x"), 2, "y")
        assert (cls.__mro__[1:], cls.__doc__, cls._fields, cls._field_defaults) == \
            ((tuple, object), "doc", ("a", "b"), {"b": "x"})
        assert (repr(rec), rec._asdict(), cls._make([2, "z"]), cls(b="y", a=3)) == \
            ("Rec(a=1, b='x')", {"a": 1, "b": "x"}, (2, "z"), (3, "y"))
        assert (cls.__match_args__, cls.a.__doc__, type(cls), hasattr(rec, "__dict__")) == \
            (("a", "b"), "Alias for field number 0", type, False)
    failures = []
    for cls in (ours, theirs):
        for bad in (lambda c: c(), lambda c: c(1, 2, 3), lambda c: c._make([1]),
                    lambda c: c(1)._replace(c=1)):
            with pytest.raises((TypeError, ValueError)) as e:
                bad(cls)
            failures.append((type(e.value), str(e.value)))
    assert failures[:4] == failures[4:]  # the same errors, word for word
    with pytest.raises(TypeError, match="without a default follows"):
        class Bad(NamedTuple):
            a: int = 0
            b: int


# --- logging on first use -------------------------------------------------------

def test_logging_is_imported_when_loopcore_first_logs():
    code = ("import loopcore, sys\n"
            "from loopcore import _log\n"
            "log = _log.get_logger('test')\n"
            "assert 'logging' not in sys.modules\n"
            "log.warning('first words')\n"
            "import logging\n"
            "print([type(h).__name__ for h in logging.getLogger('loopcore').handlers])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=_no_debug())
    assert r.returncode == 0, r.stderr
    assert (r.stdout.strip(), r.stderr) == ("['NullHandler']", "")  # silent, as a library is


def test_the_debug_trace_is_set_up_at_import_when_asked_for():
    r = subprocess.run([sys.executable, "-c", "import loopcore, sys; "
                        "print('logging' in sys.modules)"],
                       capture_output=True, text=True, env=dict(os.environ, LOOPCORE_DEBUG="1"))
    assert r.stdout.strip() == "True"


def test_a_stand_in_logger_reads_the_level_anew():
    import logging

    from loopcore import _log
    log = _log.get_logger("startup-test")
    real = logging.getLogger("loopcore.startup-test")
    real.setLevel(logging.INFO)
    assert log.level == logging.INFO
    real.setLevel(logging.ERROR)
    assert log.level == logging.ERROR
    assert not log.isEnabledFor(logging.INFO)


def test_the_debug_level_is_loggings():
    import logging

    from loopcore import _log
    assert _log.DEBUG == logging.DEBUG


def test_public_annotations_resolve_where_they_always_did():
    # Modules whose public functions' annotations name typing at run time
    # keep it there (typing.get_type_hints works on them); those on the
    # listing's path (LoopInfo, list_devices, find) never did.
    import typing

    from loopcore import loop
    for name in ("attach", "attach_many", "detach", "detach_many", "open", "LoopDevice",
                 "LoopControl", "DeviceLock", "Flags", "Partition", "PartitionTable"):
        typing.get_type_hints(getattr(loop, name))


def test_the_listing_benchmark_prints_its_figures():
    # python -m benchmarks.listing_before_after, one round, the loopcore
    # this interpreter imports (an installed wheel's too: no --baseline)
    r = subprocess.run([sys.executable, "-m", "benchmarks.listing_before_after",
                        "--rounds", "1", "--runs", "1"],
                       cwd=PACKAGE.parents[1], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    after = r.stdout.splitlines()[-1].split()
    assert after[0] == "after" and float(after[3]) > 0  # the walk took time


def test_safe_human_tells_controls_apart_as_unicodedata_does():
    # the ASCII test in safe_human stands for unicodedata's category there
    import unicodedata

    from loopcore.cli.columns import safe_human

    for code in [*range(0x100), 0x2028, 0x200B, 0xFEFF, 0x1F600]:
        ch = chr(code)
        control = unicodedata.category(ch) in ("Cc", "Cs")
        escaped = safe_human(f"a{ch}b") != f"a{ch}b"
        assert escaped == control, hex(code)
