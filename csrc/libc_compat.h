/*
 * What the shim needs from the C library, kept to old symbols so one
 * wheel installs on every glibc from 2.28 on (Debian 10+, RHEL 8+, Ubuntu
 * 20.04+) and on musl.  Internal: not a cdef header (those are lc_*.h).
 *
 * glibc 2.33 turned stat/fstat/fstatat into real exported functions
 * (GLIBC_2.33); built against a newer glibc, a call to fstat() pins the
 * extension, and auditwheel's manylinux tag, to 2.33.  statx() is a
 * GLIBC_2.28 symbol and glibc emulates it with fstatat on kernels before
 * 4.11, so the shim asks statx.  musl has no symbol versions, and its
 * statx() wrapper only appeared in 1.2.5, so musl builds use fstat().
 */
#ifndef LOOPCORE_LIBC_COMPAT_H
#define LOOPCORE_LIBC_COMPAT_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>

/* What loopcore needs of an open fd: its file type bits (S_IFMT), st_rdev
 * (a node's device), size, st_dev and st_ino (a backing file's identity);
 * -errno on failure.  One statx (glibc, where fstat is a 2.33 symbol) or
 * fstat (musl). */
struct lc_fd_facts {
    unsigned int mode;
    dev_t rdev;
    uint64_t size;
    uint64_t dev;
    uint64_t ino;
};

static inline int lc_fd_facts(int fd, struct lc_fd_facts *out)
{
#ifdef __GLIBC__
    struct statx stx;

    if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE | STATX_INO, &stx) < 0)
        return -errno;
    out->mode = stx.stx_mode & S_IFMT;
    out->rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
    out->size = stx.stx_size;
    out->dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    out->ino = stx.stx_ino;
#else
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    out->mode = st.st_mode & S_IFMT;
    out->rdev = st.st_rdev;
    out->size = (uint64_t)st.st_size;
    out->dev = st.st_dev;
    out->ino = st.st_ino;
#endif
    return 0;
}

#endif
