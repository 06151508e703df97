/*
 * loopcore C shim: scan every loop device in one call.
 *
 * One dirfd on /sys/devices/virtual/block (where /sys/block/loopN points)
 * and one on /dev; per device one look-up of loopN/loop (there only while
 * bound: an unbound device costs nothing more), then for a bound one the
 * backing path from sysfs (openat + pread + close; lo_file_name where
 * sysfs cannot show it) and one read-only open of /dev/loopN -- checked
 * to be a loop block node -- for LOOP_GET_STATUS64 and four block ioctls
 * (see lc_scan.h for which sysfs attribute each replaces).  Where that
 * open is impossible the sysfs attribute files are read.  No stdio, no
 * allocation.
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

#include "kernel_compat.h"
#include "libc_compat.h"
#include "lc_scan.h"

#define LOOP_MAJOR_NUMBER 7

_Static_assert(sizeof(struct lc_scan_rec) == 80, "lc_scan_rec is 80 bytes");
_Static_assert((int)LC_SCAN_RO == (int)LO_FLAGS_READ_ONLY
               && (int)LC_SCAN_AUTOCLEAR == (int)LO_FLAGS_AUTOCLEAR
               && (int)LC_SCAN_PARTSCAN == (int)LO_FLAGS_PARTSCAN
               && (int)LC_SCAN_DIO == (int)LO_FLAGS_DIRECT_IO,
               "LC_SCAN_ flag bits are the LO_FLAGS_ bits");

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

/*
 * lo_file_name as a name (into out, NUL-terminated; its length).  The
 * kernel keeps 63 bytes and a NUL: a name using all 63 may have been cut,
 * so its last byte becomes '*', the mark util-linux gives a name it read
 * from lo_file_name (util-linux marks 62-byte names too, which cannot have
 * been cut).
 */
static int status_name(const struct loop_info64 *info, char *out)
{
    size_t n = strnlen((const char *)info->lo_file_name, LO_NAME_SIZE - 1);

    memcpy(out, info->lo_file_name, n);
    if (n == LO_NAME_SIZE - 1)
        out[n - 1] = '*';
    out[n] = '\0';
    return (int)n;
}

/*
 * Everything but the backing path from the device itself: one open of
 * /dev/loopN.  Returns 0 if the attributes are filled in, -1 if the
 * caller must read them from sysfs instead (rec->status_err says why).
 * For an LC_SCAN_NAME_PARTIAL device the name comes from here too: into
 * name_buf, its length into *name_len.
 */
static int read_node(int dev_dfd, const char *name, struct lc_scan_rec *rec,
                     int status_only, char *name_buf, int *name_len)
{
    struct loop_info64 info;
    struct lc_fd_facts facts;
    uint64_t u64;
    int fd, ro = 0, ssz = 0;

    if (dev_dfd < 0) {
        rec->status_err = ENOENT;
        return -1;
    }
    /* Open, then check what we opened before any ioctl: devtmpfs makes
     * /dev/loopN, but anyone may have put something else there. */
    fd = openat(dev_dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        rec->status_err = errno;
        return -1;
    }
    if (lc_fd_facts(fd, &facts) < 0 || !S_ISBLK(facts.mode)
        || major(facts.rdev) != LOOP_MAJOR_NUMBER) {
        rec->status_err = ENODEV;
        close(fd);
        return -1;
    }
    rec->flags |= LC_SCAN_HAS_NODE;
    rec->major = major(facts.rdev);
    rec->minor = minor(facts.rdev);
    if (rec->flags & LC_SCAN_BOUND) {
        int r = ioctl(fd, LOOP_GET_STATUS64, &info);

        if (r < 0 || info.lo_number != rec->number) {
            /* ENXIO: detached since we read backing_file; another number:
             * not this device's node */
            rec->status_err = r < 0 ? errno : ENODEV;
            close(fd);
            return -1;
        }
        rec->backing_dev = info.lo_device;
        rec->backing_ino = info.lo_inode;
        rec->flags |= LC_SCAN_HAS_STATUS;
        if (rec->flags & LC_SCAN_NAME_PARTIAL)
            *name_len = status_name(&info, name_buf);
        if (!status_only) {
            rec->offset = info.lo_offset;
            rec->sizelimit = info.lo_sizelimit;
            rec->flags |= info.lo_flags & (LC_SCAN_AUTOCLEAR | LC_SCAN_PARTSCAN | LC_SCAN_DIO);
            rec->flags |= LC_SCAN_HAS_DIO;
        }
    }
    if (!status_only) {
        if (ioctl(fd, BLKROGET, &ro) < 0 || ioctl(fd, BLKSSZGET, &ssz) < 0
            || ioctl(fd, BLKGETSIZE64, &u64) < 0) {
            rec->status_err = errno;
            close(fd);
            return -1;
        }
        if (ro)
            rec->flags |= LC_SCAN_RO;
        rec->block_size = (uint32_t)ssz;
        rec->size_sectors = u64 >> 9;
        if (ioctl(fd, BLKGETDISKSEQ, &u64) == 0) {
            rec->diskseq = u64;
            rec->flags |= LC_SCAN_HAS_DISKSEQ;
        }
    }
    close(fd);
    return status_only ? -1 : 0;
}

/* The same attributes from their sysfs files (no node, or LC_SCAN_SYSFS).
 * -ENOENT if a bound device's loop/ is gone (detached since), else 0. */
static int read_sysfs(int dfd, struct lc_scan_rec *rec)
{
    char dev[64], *colon;
    uint64_t v;
    uint32_t keep = rec->flags & (LC_SCAN_BOUND | LC_SCAN_HAS_NODE | LC_SCAN_HAS_STATUS
                                  | LC_SCAN_NAME_PARTIAL);

    rec->flags = keep | LC_SCAN_FROM_SYSFS;
    rec->offset = rec->sizelimit = rec->size_sectors = rec->diskseq = 0;
    rec->block_size = 0;
    if (rec->flags & LC_SCAN_BOUND) {
        int r = read_u64(dfd, "loop/offset", &v);

        if (r == -ENOENT)
            return r;
        if (r == 0)
            rec->offset = v;
        if (read_u64(dfd, "loop/sizelimit", &v) == 0)
            rec->sizelimit = v;
        read_flag(dfd, "loop/autoclear", LC_SCAN_AUTOCLEAR, &rec->flags);
        read_flag(dfd, "loop/partscan", LC_SCAN_PARTSCAN, &rec->flags);
        if (read_flag(dfd, "loop/dio", LC_SCAN_DIO, &rec->flags) == 0)
            rec->flags |= LC_SCAN_HAS_DIO;
    }
    read_flag(dfd, "ro", LC_SCAN_RO, &rec->flags);
    if (read_u64(dfd, "queue/logical_block_size", &v) == 0)
        rec->block_size = (uint32_t)v;
    if (read_u64(dfd, "size", &v) == 0)
        rec->size_sectors = v;
    if (read_u64(dfd, "diskseq", &v) == 0) {
        rec->diskseq = v;
        rec->flags |= LC_SCAN_HAS_DISKSEQ;
    }
    if (!(rec->flags & LC_SCAN_HAS_NODE)
        && read_attr(dfd, "dev", dev, sizeof(dev)) > 0 && (colon = strchr(dev, ':')) != NULL) {
        int ok1, ok2;
        uint64_t mj = parse_u64(dev, &ok1), mn = parse_u64(colon + 1, &ok2);
        if (ok1 && ok2) {
            rec->major = (uint32_t)mj;
            rec->minor = (uint32_t)mn;
        }
    }
    return 0;
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
    /* Loop disks have no parent device: they all live in virtual/block,
     * and reading there skips resolving /sys/block's symlinks. */
    dir = opendir("/sys/devices/virtual/block");
    if (!dir)
        dir = opendir("/sys/block");
    if (!dir)
        return -errno;
    dev_dfd = (flags & LC_SCAN_NO_STATUS) ? -1
            : open("/dev", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dev_dfd < 0)
        flags |= LC_SCAN_NO_STATUS;

    while ((d = readdir(dir)) != NULL) {
        struct lc_scan_rec rec;
        int n = loop_number(d->d_name), len;
        char path[NAME_MAX + 32];

        if (n < 0)
            continue;
        memset(&rec, 0, sizeof(rec));
        rec.number = (uint32_t)n;

        /* loopN/loop exists only while the device is bound: one lookup
         * tells most devices apart (a machine may have a thousand unbound
         * ones), cheaper than the open of loop/backing_file, which fails
         * one level deeper.  Size cannot tell: a device bound to an empty
         * file has size 0 too. */
        memcpy(path, d->d_name, strlen(d->d_name));
        strcpy(path + strlen(d->d_name), "/loop");
        if (faccessat(dirfd(dir), path, F_OK, 0) < 0 && errno == ENOENT) {
            if (!(flags & LC_SCAN_INCLUDE_UNBOUND))
                continue;   /* unbound, or loopN went away meanwhile */
            len = -ENOENT;
        } else {
            /* The one attribute always read from sysfs: the full path
             * (any other answer of the look-up is left to this read). */
            strcat(path, "/backing_file");
            len = read_attr(dirfd(dir), path, attr, sizeof(attr));
        }
        if (len >= 0) {
            if (len > 0 && attr[len - 1] == '\n')
                attr[--len] = '\0';
            rec.flags |= LC_SCAN_BOUND;
        } else if (len == -ENOENT || len == -ENODEV) {
            /* ENOENT: unbound (loop/ exists only while bound); ENODEV: the
             * device went away while we read */
            if (len == -ENODEV || !(flags & LC_SCAN_INCLUDE_UNBOUND))
                continue;
            len = 0;
        } else {
            /* Bound, but sysfs cannot show the name: the path is longer than
             * the page an attribute prints (ENAMETOOLONG).  Skipping it would
             * hide a bound device from every listing (and detach --all), so
             * it is reported with the name LOOP_GET_STATUS64 has (read_node),
             * as util-linux falls back to it. */
            rec.flags |= LC_SCAN_BOUND | LC_SCAN_NAME_PARTIAL;
            len = 0;
        }

        if (flags & LC_SCAN_NO_STATUS || read_node(dev_dfd, d->d_name, &rec,
                                                   (flags & LC_SCAN_SYSFS) != 0,
                                                   attr, &len) < 0) {
            int dfd;

            if ((rec.flags & LC_SCAN_BOUND) && rec.status_err == ENXIO) {
                /* LOOP_GET_STATUS64 says unbound: detached since we read
                 * backing_file, so unbound after all (not listed with a
                 * name it no longer has) */
                rec.flags &= ~(uint32_t)(LC_SCAN_BOUND | LC_SCAN_NAME_PARTIAL);
                rec.status_err = 0;
                if (!(flags & LC_SCAN_INCLUDE_UNBOUND))
                    continue;
            }
            dfd = openat(dirfd(dir), d->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
            if (dfd < 0)
                continue;   /* removed while we looked */
            if (read_sysfs(dfd, &rec) < 0) {
                /* loop/ is gone: detached since backing_file was read */
                rec.flags &= ~(uint32_t)(LC_SCAN_BOUND | LC_SCAN_NAME_PARTIAL
                                         | LC_SCAN_HAS_STATUS);
                rec.backing_dev = rec.backing_ino = 0;
                len = 0;
                if (!(flags & LC_SCAN_INCLUDE_UNBOUND)) {
                    close(dfd);
                    continue;
                }
                read_sysfs(dfd, &rec);
            }
            close(dfd);
        }

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
