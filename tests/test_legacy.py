"""The pre-5.8 path (LOOP_SET_FD + LOOP_SET_STATUS64 ...): forced, and on an
emulated old kernel (a seccomp filter fails LOOP_CONFIGURE with EINVAL, as
Linux 5.7 does).  Both must give the kernel state LOOP_CONFIGURE gives."""
from __future__ import annotations

import errno
from pathlib import Path
from typing import Dict, List

import pytest

import loopcore

from conftest import bound_under, kernel_view, run_child

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("no_leaks")]

MiB = 1 << 20

OPTION_SETS: List[Dict[str, object]] = [
    {},
    {"read_only": True},
    {"autoclear": True, "partscan": True},
    {"direct_io": False},
    {"offset": 100},                      # direct I/O impossible: buffered
    {"block_size": 4096, "offset": MiB, "size_limit": 2 * MiB},
    {"block_size": 1024, "read_only": True, "direct_io": False, "size_limit": 3 * MiB},
]

CHILD = """
import json, sys
import loopcore
from conftest import kernel_view
{setup}
out = {{"views": []}}
for options in json.loads({options!r}):
    with loopcore.attach({image!r}, **options) as dev:
        out["views"].append(kernel_view(dev.number))
if {probe!r}:
    out["supports_configure"] = loopcore.kernel_supports_configure()
print(json.dumps(out))
"""


def _views(image: Path, **attach_kw) -> List[Dict[str, object]]:
    views = []
    for options in OPTION_SETS:
        with loopcore.attach(image, **options, **attach_kw) as dev:
            views.append(kernel_view(dev.number))
    return views


def _child(image: Path, setup: str = "", env=None, probe: bool = True) -> Dict[str, object]:
    import json
    code = CHILD.format(setup=setup, options=json.dumps(OPTION_SETS), image=str(image),
                        probe=probe)
    return run_child(code, env=env)


def test_forced_legacy_gives_the_same_device(image: Path):
    assert _views(image, legacy=True) == _views(image, legacy=False)


def test_env_switch_forces_legacy(image: Path):
    # The child must take the legacy path: fail LOOP_CONFIGURE there so a
    # wrong turn would show as an error rather than pass unnoticed.
    setup = "import oldkernel; oldkernel.fail_ioctls({oldkernel.LOOP_CONFIGURE: %d})" % errno.EIO
    out = _child(image, setup=setup, env={"LOOPCORE_FORCE_LEGACY": "1"}, probe=False)
    assert out["views"] == _views(image)


def test_emulated_old_kernel(image: Path):
    setup = "import oldkernel; oldkernel.fail_ioctls({oldkernel.LOOP_CONFIGURE: %d})" % errno.EINVAL
    out = _child(image, setup=setup)
    assert out["supports_configure"] is False
    assert out["views"] == _views(image)
    assert not bound_under(image.parent)


FAILING_CHILD = """
import json, os
import loopcore
from loopcore.loop import _calls
import oldkernel
from conftest import open_fds
if {pre_probe}:
    loopcore.kernel_supports_configure()  # the real kernel: LOOP_CONFIGURE exists
_calls.ATTACH_ATTEMPTS = 4
_calls.EAGAIN_ATTEMPTS = 2
_calls.EAGAIN_SLEEP_S = 0.01
oldkernel.fail_ioctls({errors})
before = open_fds()
try:
    loopcore.attach({image!r}, **{options})
    result = {{"raised": None}}
except Exception as e:
    result = {{"raised": type(e).__name__, "errno": getattr(e, "errno", None),
              "filename": getattr(e, "filename", None)}}
result["fds_leaked"] = sorted(set(open_fds()) - set(before))
print(json.dumps(result))
"""


@pytest.mark.parametrize("errors, options, raised, err, about", [
    # legacy: SET_STATUS64 fails after SET_FD bound the device -> CLR_FD
    ({0x4C0A: errno.EINVAL, 0x4C04: errno.EIO}, {}, "LoopError", errno.EIO, "image"),
    # legacy: EAGAIN outlasts the retries
    ({0x4C0A: errno.EINVAL, 0x4C04: errno.EAGAIN}, {}, "BlockingIOError", errno.EAGAIN, "image"),
    # configure: every candidate busy -> DeviceBusyError after the retries
    ({0x4C0A: errno.EBUSY}, {}, "LoopBusyError", errno.EBUSY, "image"),
    # GET_FREE fails: no device can be had
    ({0x4C82: errno.ENOSPC}, {}, "NoFreeDeviceError", errno.ENOSPC, "control"),
    # SET_FD itself refused on an old kernel
    ({0x4C0A: errno.EINVAL, 0x4C00: errno.EPERM}, {"read_only": True}, "PermissionError",
     errno.EPERM, "image"),
])
def test_failures_leave_nothing_bound(image: Path, errors, options, raised, err, about):
    # A configure-path failure needs the probe answered by the real kernel.
    pre_probe = errors.get(0x4C0A) not in (errno.EINVAL,)
    code = FAILING_CHILD.format(errors=errors, image=str(image), options=options,
                                pre_probe=pre_probe)
    out = run_child(code)
    assert out["raised"] == raised and out["errno"] == err
    assert out["filename"] == {"image": str(image), "control": "/dev/loop-control"}[about]
    assert out["fds_leaked"] == []
    assert not bound_under(image.parent)


def test_configure_that_ignores_settings_falls_back_to_legacy(image: Path, monkeypatch):
    # Linux 5.8 could drop PARTSCAN/block size from LOOP_CONFIGURE.  No
    # kernel here does, so make the first read-back report it once.
    from loopcore.loop import binding
    from loopcore.loop.control import control
    real = binding.ignored_settings
    calls = []

    def first_call_ignores(state, request):
        calls.append(int(state.number))
        return "PARTSCAN" if len(calls) == 1 else real(state, request)

    monkeypatch.setattr(binding, "ignored_settings", first_call_ignores)
    monkeypatch.setattr(control, "configure_supported", True)
    with loopcore.attach(image, partscan=True, block_size=4096) as dev:
        view = kernel_view(dev.number)
        assert view["loop/partscan"] == "1" and view["queue/logical_block_size"] == "4096"
        assert loopcore.kernel_supports_configure() is False
    assert len(calls) == 2
    assert not bound_under(image.parent)
