"""Make this process's kernel look older: a seccomp filter fails chosen
ioctl requests with a chosen errno, exactly as a kernel without them would
(Linux before 5.8 answers LOOP_CONFIGURE with EINVAL).  Irreversible: use
it in a child process only."""
from __future__ import annotations

import ctypes
import platform
import struct
from typing import Dict

PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_RET_K = 0x06
# (audit arch, ioctl syscall number)
ARCHES = {"x86_64": (0xC000003E, 16), "aarch64": (0xC00000B7, 29)}
# struct seccomp_data: nr @0, arch @4, ip @8, args[6] @16 (args[1] low half @24)
OFF_NR, OFF_ARCH, OFF_ARG1_LO = 0, 4, 24

LOOP_SET_STATUS64 = 0x4C04
LOOP_CONFIGURE = 0x4C0A
LOOP_CTL_GET_FREE = 0x4C82


def fail_ioctls(errors: Dict[int, int]) -> None:
    """Install a filter: ioctl(fd, request, ...) fails with errors[request]."""
    audit_arch, nr_ioctl = ARCHES[platform.machine()]
    insns = [(BPF_LD_W_ABS, 0, 0, OFF_ARCH)]
    tail = 3 + 2 * len(errors)  # instructions after the arch check, before ALLOW
    insns.append((BPF_JEQ_K, 0, tail, audit_arch))
    insns.append((BPF_LD_W_ABS, 0, 0, OFF_NR))
    insns.append((BPF_JEQ_K, 0, tail - 2, nr_ioctl))
    insns.append((BPF_LD_W_ABS, 0, 0, OFF_ARG1_LO))
    for request, err in errors.items():
        insns.append((BPF_JEQ_K, 0, 1, request))
        insns.append((BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | err))
    insns.append((BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *i) for i in insns))
    fprog = ctypes.create_string_buffer(struct.pack("HP", len(insns), ctypes.addressof(prog)))
    libc = ctypes.CDLL(None, use_errno=True)
    ulong = ctypes.c_ulong
    libc.prctl.argtypes = [ctypes.c_int, ulong, ulong, ulong, ulong]  # no int truncation
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 or \
            libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "seccomp filter not installed")
