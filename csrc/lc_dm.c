/*
 * loopcore C shim: the device-mapper ioctl, fixed arity.
 *
 * All policy (buffer sizes, BUFFER_FULL growth, retries, name checks,
 * node management) lives in Python; this file only issues syscalls.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>

#include "lc_dm.h"

/* The Python side packs struct dm_ioctl by hand; pin the layout. */
_Static_assert(sizeof(struct dm_ioctl) == 312, "dm_ioctl is 312 bytes");
_Static_assert(offsetof(struct dm_ioctl, data_size) == 12, "data_size at 12");
_Static_assert(offsetof(struct dm_ioctl, dev) == 40, "dev at 40");
_Static_assert(offsetof(struct dm_ioctl, name) == 48, "name at 48");
_Static_assert(offsetof(struct dm_ioctl, uuid) == 176, "uuid at 176");
_Static_assert(sizeof(struct dm_target_spec) == 40, "dm_target_spec is 40 bytes");

/* Highest command number we pass through (DM_GET_TARGET_VERSION_CMD). */
#define LC_DM_MAX_NR 17

int lc_dm_open(const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int lc_dm_ioctl(int fd, uint32_t nr, uint8_t *buf)
{
    if (nr > LC_DM_MAX_NR || buf == NULL)
        return -EINVAL;
    /* _IOWR(DM_IOCTL, nr, struct dm_ioctl): the size field is always
     * sizeof(struct dm_ioctl); the real length is in data_size. */
    if (ioctl(fd, _IOWR(DM_IOCTL, nr, struct dm_ioctl), buf) < 0)
        return -errno;
    return 0;
}
