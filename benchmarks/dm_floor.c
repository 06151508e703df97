/* The floor of a device-mapper create+load+resume+remove cycle: the same
 * ioctls loopcore.dm makes, in C, with nothing else.
 *
 *   dm_floor MODE COUNT PREFIX TABLE_TYPE TABLE_PARAMS SECTORS
 *
 * MODE "bare": DM_DEV_CREATE, DM_TABLE_LOAD, DM_DEV_SUSPEND (resume),
 * DM_DEV_REMOVE.  MODE "nodes": also what loopcore does for the
 * /dev/mapper node without udev (stat, mknod, chown root:disk and chmod
 * 0660 -- udev's owner and mode, whatever the umask -- after create; lstat,
 * unlink after remove), so that the comparison with loopcore is the same
 * syscalls.  Prints the mean nanoseconds per cycle.  MODE "split":
 * "nodes", timing each step apart; prints one "step=ns" per step (the
 * mean), to show where the kernel spends a cycle.  Built by
 * benchmarks/dm_bench.py with the system compiler.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/dm-ioctl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

static char buf[16384] __attribute__((aligned(8)));

static struct dm_ioctl *header(const char *name, size_t data_size)
{
    struct dm_ioctl *io = (struct dm_ioctl *)buf;
    memset(buf, 0, sizeof(struct dm_ioctl) + 256);
    io->version[0] = DM_VERSION_MAJOR;
    io->version[1] = 0;
    io->version[2] = 0;
    io->data_size = (uint32_t)data_size;
    io->data_start = sizeof(struct dm_ioctl);
    strncpy(io->name, name, sizeof(io->name) - 1);
    return io;
}

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

/* The steps of a cycle, as "split" reports them. */
enum { CREATE, MKNOD, LOAD, RESUME, REMOVE, UNLINK, STEPS };
static const char *const step_names[STEPS] = {
    "create", "mknod", "load", "resume", "remove", "unlink"};
static double spent[STEPS];
static double mark;

/* In "split" mode: charge the time since the last mark to ``step``. */
static void lap(int split, int step)
{
    if (split) {
        double t = now_ns();
        spent[step] += t - mark;
        mark = t;
    }
}

static void must(int rc, const char *what, const char *name)
{
    if (rc < 0) {
        fprintf(stderr, "dm_floor: %s %s: %s\n", what, name, strerror(errno));
        exit(1);
    }
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: dm_floor bare|nodes|split COUNT PREFIX TYPE PARAMS SECTORS\n");
        return 2;
    }
    int split = strcmp(argv[1], "split") == 0;
    int nodes = split || strcmp(argv[1], "nodes") == 0;
    long count = atol(argv[2]);
    const char *prefix = argv[3], *type = argv[4], *params = argv[5];
    unsigned long long sectors = strtoull(argv[6], NULL, 10);
    int ctl = open("/dev/mapper/control", O_RDWR | O_CLOEXEC);
    must(ctl, "open", "/dev/mapper/control");
    struct group *disk = getgrnam("disk");   /* once, as loopcore looks it up */
    gid_t disk_gid = disk ? disk->gr_gid : 0;

    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long i = 0; i < count; i++) {
        char name[64], path[128];
        struct stat st;
        snprintf(name, sizeof name, "%s%ld", prefix, i);
        snprintf(path, sizeof path, "/dev/mapper/%s", name);
        if (split)
            mark = now_ns();

        struct dm_ioctl *io = header(name, sizeof(struct dm_ioctl));
        must(ioctl(ctl, DM_DEV_CREATE, io), "DM_DEV_CREATE", name);
        dev_t dev = (dev_t)io->dev;
        lap(split, CREATE);
        if (nodes) {
            if (stat(path, &st) == 0)    /* not there: the usual case */
                unlink(path);
            must(mknod(path, S_IFBLK | 0660, dev), "mknod", path);
            must(chown(path, 0, disk_gid), "chown", path);
            must(chmod(path, 0660), "chmod", path);
        }
        lap(split, MKNOD);

        size_t plen = strlen(params) + 1;
        size_t spec = (sizeof(struct dm_target_spec) + plen + 7) & ~(size_t)7;
        io = header(name, sizeof(struct dm_ioctl) + spec);
        io->target_count = 1;
        struct dm_target_spec *t = (struct dm_target_spec *)(buf + sizeof(struct dm_ioctl));
        t->sector_start = 0;
        t->length = sectors;
        t->next = (uint32_t)spec;
        strncpy(t->target_type, type, sizeof(t->target_type) - 1);
        memcpy((char *)(t + 1), params, plen);
        must(ioctl(ctl, DM_TABLE_LOAD, io), "DM_TABLE_LOAD", name);
        lap(split, LOAD);

        io = header(name, sizeof(struct dm_ioctl));
        must(ioctl(ctl, DM_DEV_SUSPEND, io), "resume", name);
        lap(split, RESUME);

        io = header(name, sizeof(struct dm_ioctl));
        must(ioctl(ctl, DM_DEV_REMOVE, io), "DM_DEV_REMOVE", name);
        lap(split, REMOVE);
        if (nodes && lstat(path, &st) == 0)
            unlink(path);
        lap(split, UNLINK);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    if (split)
        for (int k = 0; k < STEPS; k++)
            printf("%s=%.0f\n", step_names[k], spent[k] / (double)count);
    else
        printf("%.0f\n", ns / (double)count);
    close(ctl);
    return 0;
}
