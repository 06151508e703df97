/*
 * loopcore's benchmarks (python -m benchmarks): the plain C floor.
 *
 * The benchmark compares loopcore with the cheapest possible program that
 * does the same syscalls, so this file holds no policy beyond what it must
 * to survive other processes using loop devices at the same time.  The
 * harness compiles it with the system cc at run time; it prints one number
 * per line (nanoseconds per repetition) so the harness times every
 * repetition the same way as its Python contenders and never counts
 * process start-up.
 *
 *   floor cycle N BACKING DIRECT_IO   N x (GET_FREE, open, LOOP_CONFIGURE,
 *                                      LOOP_CLR_FD, close); BACKING opened once
 *   floor cycle-same N BACKING DIO    exactly loopcore's syscalls for the same cycle
 *   floor burst ROUNDS LIST DIO       ROUNDS x attach every file named in LIST
 *                                      (one path a line) without detaching in
 *                                      between, making attach_many()'s syscalls,
 *                                      then detach them all (detach_many()'s)
 *   floor scan N                      N x read what list_devices() reads for
 *                                      every bound loop device, from the same
 *                                      sources (sysfs, LOOP_GET_STATUS64)
 *   floor scan-ioctl N                the same information from backing_file
 *                                      and ioctls on /dev/loopN (fewer opens)
 *   floor find N BACKING              N x find the devices bound to BACKING
 *                                      by (st_dev, st_ino), like find()
 *
 * After the samples it prints "retries R" (cycle, burst), "devices D" (scan,
 * find) or "detach_ns T" (burst: all its detaches, all rounds) on a line of
 * its own.  A burst's samples are whole bursts.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <linux/fs.h>
#include <linux/loop.h>

#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
struct loop_config {
    uint32_t fd;
    uint32_t block_size;
    struct loop_info64 info;
    uint64_t __reserved[8];
};
#endif
#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif
#ifndef LO_FLAGS_DIRECT_IO
#define LO_FLAGS_DIRECT_IO 16
#endif

/* Attributes list_devices() reads per device (loop/ ones only when bound). */
static const char *const device_attrs[] = {
    "ro", "queue/logical_block_size", "size", "dev", "diskseq",
};
static const char *const loop_attrs[] = {
    "offset", "sizelimit", "autoclear", "partscan", "dio",
};

/* Keeps the compiler from dropping the sysfs reads as unused. */
static volatile unsigned long sink;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int die(const char *what)
{
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    return 1;
}

/* What loopcore reads back after binding with no option whose outcome
 * needs checking (lc_attach without LC_ATTACH_READ_SETTINGS, the devnum
 * layout known): the read-only state and the diskseq. */
static void read_back(int dev)
{
    int read_only;
    uint64_t value;

    ioctl(dev, BLKROGET, &read_only);
    ioctl(dev, BLKGETDISKSEQ, &value);
}

/*
 * One attach+detach cycle; retries the races with a fresh GET_FREE.  With
 * same_as_loopcore it makes exactly the syscalls loopcore.attach(path)
 * .detach() makes, in its order and with its arguments: the backing file
 * opened per cycle (O_NONBLOCK, statx, fstatfs for the overlayfs direct
 * I/O check only with direct I/O, F_SETFL), flock on the control fd,
 * LOOP_CONFIGURE recording the path in lo_file_name, the read-back
 * (BLKROGET, BLKGETDISKSEQ), the backing fd closed, sync_file_range
 * before LOOP_CLR_FD, and LOOP_GET_STATUS64 after it (whether the unbind
 * was deferred).  The gap between the two variants is the cost of those
 * syscalls; the gap between this one and loopcore is Python's.
 */
static int cycle_once(int ctl, const char *backing_path, int backing, int direct_io,
                      int same_as_loopcore, unsigned *retries)
{
    char path[32];
    struct loop_config config;

    if (same_as_loopcore) {
        struct statx stx;
        struct statfs fs;

        backing = open(backing_path, O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        if (backing < 0
            || statx(backing, "", AT_EMPTY_PATH, STATX_TYPE | STATX_SIZE | STATX_INO, &stx) < 0
            || (direct_io && fstatfs(backing, &fs) < 0)
            || fcntl(backing, F_SETFL, 0) < 0)
            return die(backing_path);
    }
    for (int attempt = 0; attempt < 1000; attempt++) {
        int number, dev;

        if (same_as_loopcore)
            flock(ctl, LOCK_EX);
        number = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (number < 0)
            return die("LOOP_CTL_GET_FREE");
        snprintf(path, sizeof(path), "/dev/loop%d", number);
        dev = open(path, O_RDWR | O_CLOEXEC);
        if (dev < 0) {
            if (same_as_loopcore)
                flock(ctl, LOCK_UN);
            if (errno == ENXIO || errno == ENOENT) {
                ++*retries;          /* torn down by someone else */
                continue;
            }
            return die(path);
        }
        memset(&config, 0, sizeof(config));
        config.fd = (uint32_t)backing;
        config.info.lo_flags = direct_io ? LO_FLAGS_DIRECT_IO : 0;
        if (same_as_loopcore)
            strncpy((char *)config.info.lo_file_name, backing_path, LO_NAME_SIZE - 1);
        if (ioctl(dev, LOOP_CONFIGURE, &config) < 0) {
            int saved = errno;

            if (same_as_loopcore)
                flock(ctl, LOCK_UN);
            close(dev);
            if (saved == EBUSY || saved == EAGAIN) {
                ++*retries;          /* someone took it after GET_FREE */
                continue;
            }
            errno = saved;
            return die("LOOP_CONFIGURE");
        }
        if (same_as_loopcore) {
            flock(ctl, LOCK_UN);
            read_back(dev);
            close(backing);
            sync_file_range(dev, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE
                            | SYNC_FILE_RANGE_WAIT_AFTER);
        }
        if (ioctl(dev, LOOP_CLR_FD, 0) < 0) {
            int saved = errno;

            close(dev);
            errno = saved;
            return die("LOOP_CLR_FD");
        }
        if (same_as_loopcore) {
            struct loop_info64 status;

            ioctl(dev, LOOP_GET_STATUS64, &status);  /* ENXIO: unbound now */
        }
        close(dev);
        return 0;
    }
    errno = EBUSY;
    return die("no free loop device after 1000 attempts");
}

static int run_cycles(long count, const char *backing_path, int direct_io,
                      int same_as_loopcore)
{
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    /* opened once for the bare cycle; loopcore's opens its own per cycle
     * (and holds no other: a second writer changes what the last close
     * of the file costs) */
    int backing = same_as_loopcore ? -1 : open(backing_path, O_RDWR | O_CLOEXEC);
    unsigned retries = 0;

    if (ctl < 0)
        return die("/dev/loop-control");
    if (backing < 0 && !same_as_loopcore)
        return die(backing_path);
    for (long i = 0; i < count; i++) {
        uint64_t start = now_ns();

        if (cycle_once(ctl, backing_path, backing, direct_io, same_as_loopcore, &retries))
            return 1;
        printf("%llu\n", (unsigned long long)(now_ns() - start));
    }
    printf("retries %u\n", retries);
    return 0;
}

/*
 * A burst as attach_many() makes it: every backing file opened and
 * checked (O_NONBLOCK, fstat, fstatfs, F_SETFL), the control lock taken
 * once, then per file GET_FREE, open, LOOP_CONFIGURE and the read-back
 * (BLKROGET, BLKGETDISKSEQ), the lock dropped, the backing fds closed.
 * The detach: sync_file_range, LOOP_CLR_FD, close, per device.
 */
static int run_bursts(long rounds, const char *list_path, int direct_io)
{
    char line[4096];
    char **paths = NULL;
    int *backing, *devs;
    size_t count = 0, cap = 0;
    unsigned retries = 0;
    uint64_t detach_ns = 0;
    FILE *list = fopen(list_path, "r");
    int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);

    if (!list)
        return die(list_path);
    if (ctl < 0)
        return die("/dev/loop-control");
    while (fgets(line, sizeof(line), list)) {
        line[strcspn(line, "\n")] = '\0';
        if (!line[0])
            continue;
        if (count == cap) {
            cap = cap ? cap * 2 : 64;
            paths = realloc(paths, cap * sizeof(*paths));
            if (!paths)
                return die("realloc");
        }
        paths[count++] = strdup(line);
    }
    fclose(list);
    backing = calloc(count ? count : 1, sizeof(int));
    devs = calloc(count ? count : 1, sizeof(int));
    if (!backing || !devs)
        return die("calloc");
    for (long r = 0; r < rounds; r++) {
        uint64_t start = now_ns();

        for (size_t i = 0; i < count; i++) {
            struct stat st;
            struct statfs fs;

            backing[i] = open(paths[i], O_RDWR | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
            if (backing[i] < 0 || fstat(backing[i], &st) < 0 || fstatfs(backing[i], &fs) < 0
                || fcntl(backing[i], F_SETFL, 0) < 0)
                return die(paths[i]);
        }
        flock(ctl, LOCK_EX);
        for (size_t i = 0; i < count; i++) {
            char path[32];
            struct loop_config config;
            int number, read_only;
            uint64_t diskseq;

            for (;;) {
                number = ioctl(ctl, LOOP_CTL_GET_FREE);
                if (number < 0)
                    return die("LOOP_CTL_GET_FREE");
                snprintf(path, sizeof(path), "/dev/loop%d", number);
                devs[i] = open(path, O_RDWR | O_CLOEXEC);
                if (devs[i] < 0) {
                    if (errno == ENXIO || errno == ENOENT) {
                        ++retries;
                        continue;
                    }
                    return die(path);
                }
                memset(&config, 0, sizeof(config));
                config.fd = (uint32_t)backing[i];
                config.info.lo_flags = direct_io ? LO_FLAGS_DIRECT_IO : 0;
                strncpy((char *)config.info.lo_file_name, paths[i], LO_NAME_SIZE - 1);
                if (ioctl(devs[i], LOOP_CONFIGURE, &config) == 0)
                    break;
                if (errno != EBUSY && errno != EAGAIN)
                    return die("LOOP_CONFIGURE");
                close(devs[i]);
                ++retries;
            }
            ioctl(devs[i], BLKROGET, &read_only);
            ioctl(devs[i], BLKGETDISKSEQ, &diskseq);
        }
        flock(ctl, LOCK_UN);
        for (size_t i = 0; i < count; i++)
            close(backing[i]);
        printf("%llu\n", (unsigned long long)(now_ns() - start));
        start = now_ns();
        for (size_t i = 0; i < count; i++) {
            sync_file_range(devs[i], 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE
                            | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);
            if (ioctl(devs[i], LOOP_CLR_FD, 0) < 0)
                return die("LOOP_CLR_FD");
            close(devs[i]);
        }
        detach_ns += now_ns() - start;
    }
    printf("retries %u\n", retries);
    printf("detach_ns %llu\n", (unsigned long long)detach_ns);
    return 0;
}

/* Read a small sysfs file relative to dir_fd into buf; length or -1. */
static ssize_t read_attr(int dir_fd, const char *name, char *buf, size_t size)
{
    int fd = openat(dir_fd, name, O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0)
        return -1;
    n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = '\0';
    return n;
}

/* GET_STATUS64 etc. on /dev/NAME; 0 or -1.  Adds what it read to *checksum. */
static int read_by_ioctl(const char *name, int all, unsigned long *checksum)
{
    char path[64];
    struct loop_info64 info;
    struct stat st;
    int fd;

    snprintf(path, sizeof(path), "/dev/%s", name);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return -1;
    if (ioctl(fd, LOOP_GET_STATUS64, &info) == 0)
        *checksum += info.lo_device + info.lo_inode + info.lo_offset + info.lo_flags;
    if (all) {
        int sector_size = 0;
        uint64_t bytes = 0, diskseq = 0;

        ioctl(fd, BLKSSZGET, &sector_size);
        ioctl(fd, BLKGETSIZE64, &bytes);
        ioctl(fd, BLKGETDISKSEQ, &diskseq);
        fstat(fd, &st);
        *checksum += (unsigned long)sector_size + bytes + diskseq + st.st_rdev;
    }
    close(fd);
    return 0;
}

static void read_sysfs_attrs(int dir_fd, unsigned long *checksum)
{
    char buf[64];

    for (size_t i = 0; i < sizeof(loop_attrs) / sizeof(loop_attrs[0]); i++) {
        char path[64];

        snprintf(path, sizeof(path), "loop/%s", loop_attrs[i]);
        if (read_attr(dir_fd, path, buf, sizeof(buf)) > 0)
            *checksum += strtoul(buf, NULL, 10);
    }
    for (size_t i = 0; i < sizeof(device_attrs) / sizeof(device_attrs[0]); i++)
        if (read_attr(dir_fd, device_attrs[i], buf, sizeof(buf)) > 0)
            *checksum += strtoul(buf, NULL, 10);
}

enum method {
    SCAN_SYSFS,   /* list_devices()' sources: sysfs attributes, GET_STATUS64 */
    SCAN_IOCTL,   /* backing_file from sysfs, the rest from ioctls */
    FIND,         /* backing_file + stat per device; everything for matches */
};

/*
 * Visit every bound loop device the way `method` says.  With FIND, count
 * only devices bound to match's (dev, ino).  Returns the number counted.
 */
static long scan(enum method method, const struct stat *match, unsigned long *checksum)
{
    DIR *block = opendir("/sys/block");
    struct dirent *entry;
    long found = 0;
    char buf[4096];

    if (!block)
        return -1;
    while ((entry = readdir(block)) != NULL) {
        int dir_fd;
        ssize_t n;
        struct stat st;

        if (strncmp(entry->d_name, "loop", 4) != 0)
            continue;
        dir_fd = openat(dirfd(block), entry->d_name, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
            continue;
        n = read_attr(dir_fd, "loop/backing_file", buf, sizeof(buf));
        if (n <= 0) {
            close(dir_fd);           /* unbound */
            continue;
        }
        if (buf[n - 1] == '\n')
            buf[n - 1] = '\0';
        switch (method) {
        case SCAN_SYSFS:
            read_sysfs_attrs(dir_fd, checksum);
            read_by_ioctl(entry->d_name, 0, checksum);
            break;
        case SCAN_IOCTL:
            read_by_ioctl(entry->d_name, 1, checksum);
            break;
        case FIND:
            if (stat(buf, &st) < 0 || st.st_dev != match->st_dev
                || st.st_ino != match->st_ino) {
                close(dir_fd);
                continue;
            }
            read_sysfs_attrs(dir_fd, checksum);
            break;
        }
        close(dir_fd);
        found++;
    }
    closedir(block);
    return found;
}

static int run_scans(long count, enum method method, const char *backing_path)
{
    struct stat match;
    unsigned long checksum = 0;
    long found = 0;

    if (backing_path && stat(backing_path, &match) < 0)
        return die(backing_path);
    for (long i = 0; i < count; i++) {
        uint64_t start = now_ns();

        found = scan(method, &match, &checksum);
        if (found < 0)
            return die("/sys/block");
        printf("%llu\n", (unsigned long long)(now_ns() - start));
    }
    printf("devices %ld\n", found);
    sink = checksum;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && strcmp(argv[1], "cycle") == 0)
        return run_cycles(atol(argv[2]), argv[3], atoi(argv[4]), 0);
    if (argc == 5 && strcmp(argv[1], "cycle-same") == 0)
        return run_cycles(atol(argv[2]), argv[3], atoi(argv[4]), 1);
    if (argc == 5 && strcmp(argv[1], "burst") == 0)
        return run_bursts(atol(argv[2]), argv[3], atoi(argv[4]));
    if (argc == 3 && strcmp(argv[1], "scan") == 0)
        return run_scans(atol(argv[2]), SCAN_SYSFS, NULL);
    if (argc == 3 && strcmp(argv[1], "scan-ioctl") == 0)
        return run_scans(atol(argv[2]), SCAN_IOCTL, NULL);
    if (argc == 4 && strcmp(argv[1], "find") == 0)
        return run_scans(atol(argv[2]), FIND, argv[3]);
    fprintf(stderr, "usage: floor cycle|cycle-same N BACKING DIRECT_IO | burst ROUNDS LIST DIRECT_IO"
            " | scan N | scan-ioctl N | find N BACKING\n");
    return 2;
}
