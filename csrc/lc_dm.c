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
#include <sys/socket.h>
#include <linux/dm-ioctl.h>

#include "layout_check.h"
#include "lc_dm.h"

/*
 * lc_dm.h's structs are the kernel's, field for field: Python packs them
 * through views derived from lc_dm.h, so the compiler checks that header
 * against <linux/dm-ioctl.h> here.
 */

LC_SAME_SIZE(lc_dm_ioctl, dm_ioctl);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, version);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, data_size);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, data_start);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, target_count);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, open_count);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, flags);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, event_nr);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, padding);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, dev);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, name);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, uuid);
LC_SAME_FIELD(lc_dm_ioctl, dm_ioctl, data);
_Static_assert(sizeof(((struct lc_dm_ioctl *)0)->name) == DM_NAME_LEN, "name is DM_NAME_LEN");
_Static_assert(sizeof(((struct lc_dm_ioctl *)0)->uuid) == DM_UUID_LEN, "uuid is DM_UUID_LEN");

LC_SAME_SIZE(lc_dm_target_spec, dm_target_spec);
LC_SAME_FIELD(lc_dm_target_spec, dm_target_spec, sector_start);
LC_SAME_FIELD(lc_dm_target_spec, dm_target_spec, length);
LC_SAME_FIELD(lc_dm_target_spec, dm_target_spec, status);
LC_SAME_FIELD(lc_dm_target_spec, dm_target_spec, next);
LC_SAME_FIELD(lc_dm_target_spec, dm_target_spec, target_type);
_Static_assert(sizeof(((struct lc_dm_target_spec *)0)->target_type) == DM_MAX_TYPE_NAME,
               "target_type is DM_MAX_TYPE_NAME");

LC_SAME_SIZE(lc_dm_target_deps, dm_target_deps);
LC_SAME_FIELD(lc_dm_target_deps, dm_target_deps, count);
LC_SAME_FIELD(lc_dm_target_deps, dm_target_deps, padding);
LC_SAME_FLEX(lc_dm_target_deps, dm_target_deps, dev);

LC_SAME_SIZE(lc_dm_name_list, dm_name_list);
LC_SAME_FIELD(lc_dm_name_list, dm_name_list, dev);
LC_SAME_FIELD(lc_dm_name_list, dm_name_list, next);
LC_SAME_FLEX(lc_dm_name_list, dm_name_list, name);

LC_SAME_SIZE(lc_dm_target_versions, dm_target_versions);
LC_SAME_FIELD(lc_dm_target_versions, dm_target_versions, next);
LC_SAME_FIELD(lc_dm_target_versions, dm_target_versions, version);
LC_SAME_FLEX(lc_dm_target_versions, dm_target_versions, name);

LC_SAME_SIZE(lc_dm_target_msg, dm_target_msg);
LC_SAME_FIELD(lc_dm_target_msg, dm_target_msg, sector);
LC_SAME_FLEX(lc_dm_target_msg, dm_target_msg, message);

LC_SAME_SIZE(lc_ucred, ucred);
LC_SAME_FIELD(lc_ucred, ucred, pid);
LC_SAME_FIELD(lc_ucred, ucred, uid);
LC_SAME_FIELD(lc_ucred, ucred, gid);

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
