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

/* File type bits (S_IFMT) and st_rdev of an open fd; -errno on failure. */
static inline int lc_fd_node(int fd, unsigned int *mode, dev_t *rdev)
{
#ifdef __GLIBC__
    struct statx stx;

    if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE, &stx) < 0)
        return -errno;
    *mode = stx.stx_mode & S_IFMT;
    *rdev = makedev(stx.stx_rdev_major, stx.stx_rdev_minor);
#else
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    *mode = st.st_mode & S_IFMT;
    *rdev = st.st_rdev;
#endif
    return 0;
}

/* File type bits, size, st_dev and st_ino of an open fd (a backing
 * file); -errno on failure. */
static inline int lc_fd_file(int fd, unsigned int *mode, uint64_t *size, uint64_t *dev,
                             uint64_t *ino)
{
#ifdef __GLIBC__
    struct statx stx;

    if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE | STATX_INO, &stx) < 0)
        return -errno;
    *mode = stx.stx_mode & S_IFMT;
    *size = stx.stx_size;
    *dev = makedev(stx.stx_dev_major, stx.stx_dev_minor);
    *ino = stx.stx_ino;
#else
    struct stat st;

    if (fstat(fd, &st) < 0)
        return -errno;
    *mode = st.st_mode & S_IFMT;
    *size = (uint64_t)st.st_size;
    *dev = st.st_dev;
    *ino = st.st_ino;
#endif
    return 0;
}

#endif
