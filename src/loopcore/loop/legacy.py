"""The pre-5.8 bind: LOOP_SET_FD inside lc_attach, then the settings one
ioctl at a time (LOOP_SET_STATUS64, LOOP_SET_BLOCK_SIZE,
LOOP_SET_DIRECT_IO), as losetup does on kernels without LOOP_CONFIGURE."""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, List, Tuple

from .. import _c
from ..errors import error_from_errno
from . import _calls, binding, teardown
from .backing import BackingFile
from .device import LoopDevice
from .info import PAGE_SIZE, block_size_refused
from .request import AUTOCLEAR, DIRECT_IO, PARTSCAN, READ_ONLY, AttachRequest

if TYPE_CHECKING:
    from .._native import CData

__all__: List[str] = []  # attach()'s own: nothing public

_INFO = _c.ffi.typeof("struct lc_loop_info64 *")


def bind_legacy(bf: BackingFile, request: AttachRequest,
                flags: int) -> Tuple[LoopDevice, CData]:
    """Bind ``bf`` with LOOP_SET_FD and apply the request's settings; the
    device and its state (lc_read_state's), for the post-bind check.  A
    device lock, if asked for, is held throughout; on failure nothing
    stays bound."""
    # READ_ONLY only: it picks the device's open mode for SET_FD
    result = binding.bind(bf, request, flags & READ_ONLY, set_fd=True)
    device = binding.device_from_result(result)
    try:
        _apply_settings(device, bf, request, flags)
        _, state = device._state()
        device.diskseq = int(state.diskseq) or None
    except BaseException:
        teardown.unbind_fresh(device)  # nothing stays bound
        raise
    return device, state


def _apply_settings(device: LoopDevice, bf: BackingFile, request: AttachRequest,
                    flags: int) -> None:
    """After LOOP_SET_FD: status, block size, direct I/O."""
    dev_fd = device.fileno()
    info = _c.ffi.new(_INFO)
    info.lo_offset = request.offset
    info.lo_sizelimit = request.size_limit
    # READ_ONLY comes from the fd's open mode; DIRECT_IO has its own ioctl.
    info.lo_flags = flags & (AUTOCLEAR | PARTSCAN)
    info.lo_file_name = bf.file_name_field()
    _calls.check(_calls.retry_eagain(lambda: _c.lib.lc_set_status64(dev_fd, info)), bf.name)
    block_size = request.block_size
    if block_size:
        rc = _calls.retry_eagain(lambda: _c.lib.lc_set_block_size(dev_fd, block_size))
        if rc == -errno.EINVAL and block_size > PAGE_SIZE:
            raise block_size_refused(block_size, error_from_errno(errno.EINVAL))
        _calls.check(rc, bf.name)
    if flags & DIRECT_IO:
        # Best effort, like LOOP_CONFIGURE: the kernel says EINVAL when the
        # backing file or the offset does not allow direct I/O.
        rc = _calls.retry_eagain(lambda: _c.lib.lc_set_direct_io(dev_fd, 1))
        if rc not in (0, -errno.EINVAL):
            _calls.check(rc, bf.name)
