/*
 * loopcore C shim: scan every loop device's sysfs attributes in one call.
 *
 * One dirfd on /sys/block, one O_PATH dirfd per device, then openat +
 * pread + close per attribute; no stdio, no allocation.  The backing
 * file's device and inode are not in sysfs: like losetup they come from
 * LOOP_GET_STATUS64 (lo_device, lo_inode) on /dev/loopN, opened read-only
 * only after fstatat shows it is this device's node.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <linux/loop.h>

#include "lc_scan.h"

_Static_assert(sizeof(struct lc_scan_rec) == 80, "lc_scan_rec is 80 bytes");

#define ATTR_MAX 4096   /* sysfs shows at most a page */

/* Read a sysfs attribute into buf (NUL-terminated); length or -errno. */
static int read_attr(int dfd, const char *name, char *buf, size_t size)
{
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    ssize_t n;

    if (fd < 0)
        return -errno;
    do {
        n = pread(fd, buf, size - 1, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    close(fd);
    buf[n] = '\0';
    return (int)n;
}

/* Leading decimal digits of s; *ok set to 0 if there are none. */
static uint64_t parse_u64(const char *s, int *ok)
{
    uint64_t v = 0;
    const char *p = s;

    while (*p >= '0' && *p <= '9')
        v = v * 10 + (uint64_t)(*p++ - '0');
    *ok = p != s;
    return v;
}

/* Read an unsigned decimal attribute; 0 on success. */
static int read_u64(int dfd, const char *name, uint64_t *value)
{
    char buf[64];
    int ok, r = read_attr(dfd, name, buf, sizeof(buf));

    if (r < 0)
        return r;
    *value = parse_u64(buf, &ok);
    return ok ? 0 : -EINVAL;
}

static int read_flag(int dfd, const char *name, uint32_t bit, uint32_t *flags)
{
    uint64_t v;
    int r = read_u64(dfd, name, &v);

    if (r == 0 && v)
        *flags |= bit;
    return r;
}

/* "loop123" -> 123; -1 for anything else (loop-control, loop0p1 ...). */
static int loop_number(const char *name)
{
    int ok;
    uint64_t n;

    if (strncmp(name, "loop", 4) != 0)
        return -1;
    n = parse_u64(name + 4, &ok);
    if (!ok || name[4 + strspn(name + 4, "0123456789")] != '\0' || n > INT32_MAX)
        return -1;
    return (int)n;
}

/* Backing dev/ino from LOOP_GET_STATUS64 on the device's own /dev node. */
static void read_status(int dev_dfd, const char *name, struct lc_scan_rec *rec,
                        int want_status)
{
    struct stat st;
    struct loop_info64 info;
    int fd;

    if (dev_dfd < 0 || fstatat(dev_dfd, name, &st, 0) < 0) {
        rec->status_err = dev_dfd < 0 ? ENOENT : errno;
        return;
    }
    if (!S_ISBLK(st.st_mode) || st.st_rdev != makedev(rec->major, rec->minor)) {
        rec->status_err = ENODEV;
        return;
    }
    rec->flags |= LC_SCAN_HAS_NODE;
    if (!want_status || !(rec->flags & LC_SCAN_BOUND))
        return;
    fd = openat(dev_dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rec->status_err = errno;
        return;
    }
    if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0) {
        rec->backing_dev = info.lo_device;
        rec->backing_ino = info.lo_inode;
        rec->flags |= LC_SCAN_HAS_STATUS;
    } else {
        rec->status_err = errno;
    }
    close(fd);
}

static int cmp_rec(const void *a, const void *b)
{
    uint32_t x = ((const struct lc_scan_rec *)a)->number;
    uint32_t y = ((const struct lc_scan_rec *)b)->number;

    return (x > y) - (x < y);
}

int lc_scan_loops(void *buf, uint64_t bufsize, uint32_t flags, uint64_t *needed)
{
    struct lc_scan_rec *recs = buf;
    char *base = buf;
    uint64_t count = 0, strings = 0, top = bufsize;
    int overflow = 0, dev_dfd;
    DIR *dir;
    struct dirent *d;
    char attr[ATTR_MAX];

    *needed = 0;
    if (((uintptr_t)buf & 7) != 0 || bufsize > UINT32_MAX)
        return -EINVAL;
    dir = opendir("/sys/block");
    if (!dir)
        return -errno;
    dev_dfd = (flags & LC_SCAN_NO_STATUS) ? -1
            : open("/dev", O_PATH | O_DIRECTORY | O_CLOEXEC);

    while ((d = readdir(dir)) != NULL) {
        struct lc_scan_rec rec;
        uint64_t v;
        int n = loop_number(d->d_name), dfd, len;
        char *colon;

        if (n < 0)
            continue;
        dfd = openat(dirfd(dir), d->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
            continue;               /* removed while we looked */
        memset(&rec, 0, sizeof(rec));
        rec.number = (uint32_t)n;

        len = read_attr(dfd, "loop/backing_file", attr, sizeof(attr));
        if (len >= 0) {
            if (len > 0 && attr[len - 1] == '\n')
                attr[--len] = '\0';
            rec.flags |= LC_SCAN_BOUND;
        } else if (!(flags & LC_SCAN_INCLUDE_UNBOUND)) {
            close(dfd);
            continue;
        } else {
            len = 0;
        }
        if (rec.flags & LC_SCAN_BOUND) {
            if (read_u64(dfd, "loop/offset", &v) == 0)
                rec.offset = v;
            if (read_u64(dfd, "loop/sizelimit", &v) == 0)
                rec.sizelimit = v;
            read_flag(dfd, "loop/autoclear", LC_SCAN_AUTOCLEAR, &rec.flags);
            read_flag(dfd, "loop/partscan", LC_SCAN_PARTSCAN, &rec.flags);
            if (read_flag(dfd, "loop/dio", LC_SCAN_DIO, &rec.flags) == 0)
                rec.flags |= LC_SCAN_HAS_DIO;
        }
        read_flag(dfd, "ro", LC_SCAN_RO, &rec.flags);
        if (read_u64(dfd, "queue/logical_block_size", &v) == 0)
            rec.block_size = (uint32_t)v;
        if (read_u64(dfd, "size", &v) == 0)
            rec.size_sectors = v;
        if (read_u64(dfd, "diskseq", &v) == 0) {
            rec.diskseq = v;
            rec.flags |= LC_SCAN_HAS_DISKSEQ;
        }
        {
            char dev[64];
            int ok1 = 0, ok2 = 0;
            if (read_attr(dfd, "dev", dev, sizeof(dev)) > 0
                && (colon = strchr(dev, ':')) != NULL) {
                rec.major = (uint32_t)parse_u64(dev, &ok1);
                rec.minor = (uint32_t)parse_u64(colon + 1, &ok2);
            }
            if (!ok1 || !ok2)
                rec.major = rec.minor = 0;
        }
        close(dfd);

        if (rec.major || rec.minor)
            read_status(dev_dfd, d->d_name, &rec, !(flags & LC_SCAN_NO_STATUS));
        else
            rec.status_err = ENODEV;

        strings += (uint64_t)len;
        if (!overflow && (count + 1) * sizeof(rec) + (uint64_t)len <= top) {
            top -= (uint64_t)len;
            memcpy(base + top, attr, (size_t)len);
            rec.name_off = (uint32_t)top;
            rec.name_len = (uint32_t)len;
            recs[count] = rec;
        } else {
            overflow = 1;
        }
        count++;
    }
    closedir(dir);
    if (dev_dfd >= 0)
        close(dev_dfd);

    *needed = count * sizeof(struct lc_scan_rec) + strings;
    if (overflow)
        return -ERANGE;
    qsort(recs, count, sizeof(struct lc_scan_rec), cmp_rec);
    return (int)count;
}
