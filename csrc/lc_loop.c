/*
 * loopcore C shim: loop device ioctls and the one-call attach.
 *
 * Syscalls and tight loops only; every policy knob (retry counts,
 * backoff, fallbacks, what counts as success) comes from Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/syscall.h>
#include "kernel_compat.h"
#include "libc_compat.h"
#include "lc_loop.h"

/* Our mirrors must match the kernel ABI exactly. */
_Static_assert(sizeof(struct lc_loop_info64) == 232, "loop_info64 is 232 bytes");
_Static_assert(offsetof(struct lc_loop_info64, lo_flags) == 52, "lo_flags at 52");
_Static_assert(offsetof(struct lc_loop_info64, lo_file_name) == 56, "lo_file_name at 56");
_Static_assert(sizeof(struct lc_loop_config) == 304, "loop_config is 304 bytes");
_Static_assert(sizeof(((struct lc_loop_info64 *)0)->lo_file_name) == LC_NAME_FIELD,
               "a request's file name is lo_file_name");

#define RET(expr) ((expr) < 0 ? -errno : 0)

int lc_ctl_open(void)
{
    int fd = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int lc_ctl_add(int ctl_fd, int number)
{
    int r = ioctl(ctl_fd, LOOP_CTL_ADD, number);
    return r < 0 ? -errno : r;
}

int lc_ctl_remove(int ctl_fd, int number)
{
    int r = ioctl(ctl_fd, LOOP_CTL_REMOVE, number);
    return r < 0 ? -errno : r;
}

int lc_ctl_get_free(int ctl_fd)
{
    int r = ioctl(ctl_fd, LOOP_CTL_GET_FREE);
    return r < 0 ? -errno : r;
}

int lc_dev_open(int number, int read_only)
{
    char path[32];
    int fd;

    if (number < 0)
        return -EINVAL;
    snprintf(path, sizeof(path), "/dev/loop%d", number);
    fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int lc_configure(int dev_fd, const struct lc_loop_config *config)
{
    return RET(ioctl(dev_fd, LOOP_CONFIGURE, config));
}

/*
 * LOOP_CONFIGURE with fd -1: the kernel looks the fd up first, so a kernel
 * that knows the ioctl answers EBADF and binds nothing.  Returns 1 if the
 * ioctl exists, 0 for EINVAL/ENOTTY/ENOSYS (pre-5.8 kernels), else -errno.
 */
int lc_probe_configure(int dev_fd)
{
    struct lc_loop_config config;

    memset(&config, 0, sizeof(config));
    config.fd = (uint32_t)-1;
    if (ioctl(dev_fd, LOOP_CONFIGURE, &config) == 0) {
        /* Cannot happen with fd -1; never leave it bound if it did. */
        ioctl(dev_fd, LOOP_CLR_FD, 0);  /* the caller closes dev_fd */
        return 1;
    }
    switch (errno) {
    case EBADF:
        return 1;
    case EINVAL:
    case ENOTTY:
    case ENOSYS:
        return 0;
    default:
        return -errno;
    }
}

int lc_set_fd(int dev_fd, int backing_fd)
{
    return RET(ioctl(dev_fd, LOOP_SET_FD, backing_fd));
}

int lc_clr_fd(int dev_fd)
{
    return RET(ioctl(dev_fd, LOOP_CLR_FD, 0));
}

int lc_set_status64(int dev_fd, const struct lc_loop_info64 *info)
{
    return RET(ioctl(dev_fd, LOOP_SET_STATUS64, info));
}

int lc_get_status64(int dev_fd, struct lc_loop_info64 *info)
{
    return RET(ioctl(dev_fd, LOOP_GET_STATUS64, info));
}

int lc_change_fd(int dev_fd, int backing_fd)
{
    return RET(ioctl(dev_fd, LOOP_CHANGE_FD, backing_fd));
}

int lc_set_capacity(int dev_fd)
{
    return RET(ioctl(dev_fd, LOOP_SET_CAPACITY, 0));
}

int lc_set_block_size(int dev_fd, uint32_t block_size)
{
    return RET(ioctl(dev_fd, LOOP_SET_BLOCK_SIZE, (unsigned long)block_size));
}

int lc_set_direct_io(int dev_fd, uint32_t enable)
{
    return RET(ioctl(dev_fd, LOOP_SET_DIRECT_IO, (unsigned long)(enable ? 1 : 0)));
}

int lc_get_diskseq(int fd, uint64_t *diskseq)
{
    return RET(ioctl(fd, BLKGETDISKSEQ, diskseq));
}

int lc_get_size64(int fd, uint64_t *size_bytes)
{
    return RET(ioctl(fd, BLKGETSIZE64, size_bytes));
}

int lc_get_sector_size(int fd, uint32_t *sector_size)
{
    int ssz = 0;

    if (ioctl(fd, BLKSSZGET, &ssz) < 0)
        return -errno;
    *sector_size = (uint32_t)ssz;
    return 0;
}

int lc_get_read_only(int fd, uint32_t *read_only)
{
    int ro = 0;

    if (ioctl(fd, BLKROGET, &ro) < 0)
        return -errno;
    *read_only = ro ? 1 : 0;
    return 0;
}

int lc_set_read_only(int fd, uint32_t read_only)
{
    int ro = read_only ? 1 : 0;

    return RET(ioctl(fd, BLKROSET, &ro));
}

int lc_blkpg(int fd, int op, int pno, int64_t start, int64_t length)
{
    struct blkpg_partition part;
    struct blkpg_ioctl_arg arg;

    memset(&part, 0, sizeof(part));
    memset(&arg, 0, sizeof(arg));
    switch (op) {
    case LC_BLKPG_ADD:
        arg.op = BLKPG_ADD_PARTITION;
        part.start = start;
        part.length = length;
        break;
    case LC_BLKPG_DEL:
        arg.op = BLKPG_DEL_PARTITION;
        break;
    default:
        return -EINVAL;
    }
    part.pno = pno;
    arg.datalen = sizeof(part);
    arg.data = &part;
    return RET(ioctl(fd, BLKPG, &arg));
}

#define OVERLAYFS_MAGIC 0x794c7630

int lc_direct_io_refused(int backing_fd)
{
    struct statfs fs;
    char path[40];
    int probe;

    if (fstatfs(backing_fd, &fs) < 0)
        return -errno;
    if ((uint32_t)fs.f_type != OVERLAYFS_MAGIC)
        return 0;
    /* overlayfs claims direct I/O for every file, so the loop driver turns
     * it on, then every I/O fails (EIO) where the lower file system has no
     * O_DIRECT (tmpfs before 6.6).  Reopening with O_DIRECT asks the
     * lower file system itself. */
    snprintf(path, sizeof(path), "/proc/self/fd/%d", backing_fd);
    probe = open(path, O_RDONLY | O_DIRECT | O_CLOEXEC);
    if (probe < 0)
        return errno == EINVAL ? 1 : 0;
    close(probe);
    return 0;
}

int lc_backing_stat(int fd, int probe_direct_io, struct lc_backing *out)
{
    struct lc_fd_facts facts;
    int r;

    memset(out, 0, sizeof(*out));
    if ((r = lc_fd_facts(fd, &facts)) < 0)
        return r;
    out->mode = facts.mode;
    out->size = facts.size;
    out->dev = facts.dev;
    out->ino = facts.ino;
    if (S_ISBLK(facts.mode)) {
        if ((r = lc_get_size64(fd, &out->size)) < 0)
            return r;
    } else if (!S_ISREG(facts.mode)) {
        return -EINVAL;
    }
    if (probe_direct_io)
        out->direct_io_refused = lc_direct_io_refused(fd) == 1;
    return 0;
}

int lc_backing_open(const char *path, int read_only, int probe_direct_io,
                    struct lc_backing *out)
{
    /* O_NONBLOCK: opening a FIFO read-only would otherwise wait for a
     * writer forever; it is refused right after, and the flag cleared on
     * what is kept (the kernel keeps this open file for the device). */
    int fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
    int r;

    memset(out, 0, sizeof(*out));
    if (fd < 0)
        return -errno;
    if ((r = lc_backing_stat(fd, probe_direct_io, out)) < 0
        || (fcntl(fd, F_SETFL, 0) < 0 && (r = -errno) < 0)) {
        close(fd);
        return r;
    }
    return fd;
}

int lc_flush(int fd)
{
    /* Not BLKFLSBUF: it writes back but swallows the write errors (a loop
     * device over a full file system "succeeds" and drops the data).
     * sync_file_range reports them through the fd's error sequence, and
     * unlike fsync it sends no cache flush down to the backing file. */
    /* EINTR goes back to the caller, whose signal handlers must run. */
    int r = sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WAIT_BEFORE |
                            SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER);

    if (r == 0)
        return 0;
    if (errno != ENOSYS)
        return -errno;
    return RET(fsync(fd));
}

/* Unbind and close, ignoring errors: only for a device this call bound
 * moments ago and failed to set up, which nobody has written to. */
static void unbind_and_close(int dev_fd)
{
    ioctl(dev_fd, LOOP_CLR_FD, 0);
    close(dev_fd);
}

int lc_detach(int dev_fd)
{
    /* Our fd keeps the device open, so a writer's close() was not the
     * last one and its dirty pages are still in the device's page cache:
     * write them back first, or unbinding throws them away.  If they
     * cannot be written, stay bound: the data is still in the cache. */
    int r = lc_flush(dev_fd);

    if (r < 0)
        return r - LC_NOT_WRITTEN_BACK;
    if (ioctl(dev_fd, LOOP_CLR_FD, 0) < 0)
        return -errno;
    /* Another opener makes LOOP_CLR_FD only mark the device autoclear: it
     * stays bound, its status still reads, until the last of them closes.
     * Alone, the kernel unbinds it now (or at this close, 6.11+), and the
     * status reads ENXIO.  One ioctl tells the two apart. */
    struct lc_loop_info64 status;
    int deferred = lc_get_status64(dev_fd, &status) == 0;
    close(dev_fd);
    return deferred;
}

static uint32_t random_below(uint32_t bound)
{
    uint32_t value = 0;

    if (bound == 0)
        return 0;
    if (syscall(SYS_getrandom, &value, sizeof(value), 0) != (long)sizeof(value)) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        value = (uint32_t)now.tv_nsec ^ (uint32_t)getpid();
    }
    return value % bound;
}

static int64_t monotonic_ns(void)
{
    struct timespec now;

    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Sleep us microseconds, but not past deadline_ns (0: no deadline).
 * 0, -EINTR (a signal: the caller's handlers must run) or -ETIMEDOUT. */
static int sleep_until(uint64_t us, int64_t deadline_ns)
{
    struct timespec ts;
    int64_t ns = (int64_t)us * 1000;

    if (deadline_ns) {
        int64_t left = deadline_ns - monotonic_ns();
        if (left <= 0)
            return -ETIMEDOUT;
        if (ns > left)
            ns = left;
    }
    ts.tv_sec = ns / 1000000000;
    ts.tv_nsec = ns % 1000000000;
    if (nanosleep(&ts, NULL) < 0)
        return -errno;
    if (deadline_ns && ns < (int64_t)us * 1000)
        return -ETIMEDOUT;
    return 0;
}

static int backoff(const struct lc_attach_req *req, uint32_t attempt)
{
    uint64_t limit = req->sleep_base_us +
        (uint64_t)req->sleep_span_us * attempt / req->max_attempts;

    return sleep_until(random_below(limit > UINT32_MAX ? UINT32_MAX : (uint32_t)limit),
                       req->deadline_ns);
}

/*
 * flock(LOCK_EX) on fd (the control fd, or a device's lock fd).  Without
 * a deadline it blocks (a signal returns -EINTR); with one it polls
 * LOCK_NB, sleeping 50 us at first and at most 5 ms between tries, until
 * the deadline (-ETIMEDOUT).
 */
static int lock_until(int fd, int64_t deadline_ns)
{
    uint64_t pause_us = 50;

    if (!deadline_ns)
        return RET(flock(fd, LOCK_EX));
    for (;;) {
        int r;

        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK)
            return -errno;
        if ((r = sleep_until(pause_us, deadline_ns)) < 0)
            return r;
        if (pause_us < 5000)
            pause_us *= 2;
    }
}

/* The read-back after a bind, as much as `what` (LC_ATTACH_READ_* bits)
 * asks for; the read-only state and the diskseq always. */
static int read_state(int dev_fd, uint32_t what, struct lc_loop_info64 *status,
                      struct lc_attach_result *result)
{
    struct lc_loop_info64 local;
    struct lc_loop_info64 *info = status ? status : &local;
    int r;

    if (what & LC_ATTACH_READ_SETTINGS) {
        if ((r = lc_get_status64(dev_fd, info)) < 0)
            return r;
        result->flags = info->lo_flags;
        if ((r = lc_get_sector_size(dev_fd, &result->block_size)) < 0)
            return r;
        if ((r = lc_get_size64(dev_fd, &result->size_bytes)) < 0)
            return r;
    }
    if ((r = lc_get_read_only(dev_fd, &result->disk_read_only)) < 0)
        return r;
    if (lc_get_diskseq(dev_fd, &result->diskseq) < 0)
        result->diskseq = 0;     /* kernels before 5.15 */
    if (what & LC_ATTACH_READ_DEVNUM) {
        struct lc_fd_facts facts;

        if ((r = lc_fd_facts(dev_fd, &facts)) < 0)
            return r;
        result->devnum = (uint64_t)facts.rdev;
    }
    return 0;
}

int lc_read_state(int dev_fd, struct lc_loop_info64 *status,
                  struct lc_attach_result *result)
{
    return read_state(dev_fd, LC_ATTACH_READ_SETTINGS | LC_ATTACH_READ_DEVNUM, status, result);
}

/* For a failure r of attempt: after -EINTR the caller runs its signal
 * handlers and calls lc_attach again from result->attempts (nothing is
 * held or bound at any of those points). */
static int interrupted(struct lc_attach_result *result, uint32_t attempt, int r)
{
    if (r == -EINTR)
        result->attempts = attempt;
    return r;
}

/* Whether an open loop device has a backing file: LOOP_GET_STATUS64
 * answers ENXIO for an unbound one.  Any other failure says "unbound" and
 * leaves the verdict to the bind. */
static int is_bound(int dev_fd)
{
    struct lc_loop_info64 info;

    return ioctl(dev_fd, LOOP_GET_STATUS64, &info) == 0;
}

/* The device lock: a second fd (read-only, so closing it is no
 * IN_CLOSE_WRITE that makes udev probe) with flock(LOCK_EX).  Locked on
 * its own fd rather than dev_fd so the caller can drop the lock without
 * closing the device.  Returns the fd or -errno. */
static int lock_device(int number, int64_t deadline_ns)
{
    char path[32];
    int fd, r;

    snprintf(path, sizeof(path), "/dev/loop%d", number);
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    if (fd < 0)
        return -errno;
    if ((r = lock_until(fd, deadline_ns)) < 0) {
        close(fd);
        return r;
    }
    return fd;
}

/*
 * After a bind without LO_FLAGS_PARTSCAN, with the device lock held (udev
 * skips probing a device locked exclusively): turn the flag on with
 * LOOP_SET_STATUS64, whose one partition scan announces each partition
 * once, with its /dev node made (devtmpfs) before the ioctl returns.
 * LOOP_CONFIGURE with the flag instead announces the disk first, and a
 * probe opening it then can rescan it: partitions added, removed, added.
 * A fresh open first: a bind can leave the disk marked for a rescan at
 * its next open (which drops the partitions); that open is this one,
 * before there are any.  Returns 0 or -errno; the caller unbinds.
 */
static int scan_partitions(int dev_fd, int number)
{
    struct lc_loop_info64 info;
    int fd = lc_dev_open(number, 1);

    if (fd < 0)
        return fd;
    close(fd);
    if ((fd = lc_get_status64(dev_fd, &info)) < 0)
        return fd;
    info.lo_flags |= LO_FLAGS_PARTSCAN;
    return lc_set_status64(dev_fd, &info);
}

static void unlock_control(int ctl_fd, uint32_t options)
{
    if (!(options & LC_ATTACH_CONTROL_HELD))
        flock(ctl_fd, LOCK_UN);
}

/* *result before the first step: nothing bound, nothing open. */
static void begin_result(struct lc_attach_result *result, int number, uint32_t first_attempt)
{
    memset(result, 0, sizeof(*result));
    result->number = number >= 0 ? number : -1;
    result->attempts = first_attempt;
    result->fd = -1;
    result->lock_fd = -1;
}

/*
 * The retry loop stays here, in C, rather than in Python's retry_ebusy:
 * its tries run under the control lock, GET_FREE..bind in one C call, and
 * a fresh GET_FREE after each EBUSY only means something while the lock
 * is held.  The policy's numbers come from the caller in the request.
 */
static int attach_one(int ctl_fd, const struct lc_attach_req *req, int32_t backing_fd,
                      int number, uint32_t flags, const char *file_name,
                      uint32_t first_attempt, struct lc_attach_result *result)
{
    uint32_t options = req->options;
    int64_t deadline_ns = req->deadline_ns;
    int read_only = (flags & LO_FLAGS_READ_ONLY) != 0;
    int chosen = number >= 0;
    /* LOOP_CONFIGURE with PARTSCAN announces the disk before it reads the
     * table: bind without it, then scan (scan_partitions) */
    int partscan_after = !(options & LC_ATTACH_SET_FD) && (flags & LO_FLAGS_PARTSCAN);
    struct lc_loop_config config;
    uint32_t attempt;
    int last_error = -EBUSY;

    memset(&config, 0, sizeof(config));
    config.fd = (uint32_t)backing_fd;
    config.block_size = req->block_size;
    config.info.lo_offset = req->offset;
    config.info.lo_sizelimit = req->size_limit;
    config.info.lo_flags = partscan_after ? flags & ~(uint32_t)LO_FLAGS_PARTSCAN : flags;
    /* up to the NUL: a reused request may hold a longer name after it */
    strncpy((char *)config.info.lo_file_name, file_name, sizeof(config.info.lo_file_name) - 1);
    begin_result(result, number, first_attempt);
    if (req->max_attempts == 0)
        return -EINVAL;

    for (attempt = first_attempt; attempt < req->max_attempts; attempt++) {
        int dev_fd, lock_fd = -1, r;

        result->attempts = attempt + 1;
        /* The control lock serializes GET_FREE..bind between cooperating
         * processes, so they stop racing each other for the same N. */
        if (!(options & LC_ATTACH_CONTROL_HELD)
            && (r = lock_until(ctl_fd, deadline_ns)) < 0) {
            result->failed_step = LC_STEP_LOCK;
            return interrupted(result, attempt, r);
        }
        if (!chosen) {
            number = lc_ctl_get_free(ctl_fd);
            if (number < 0) {
                unlock_control(ctl_fd, options);
                result->failed_step = LC_STEP_GET_FREE;
                return interrupted(result, attempt, number);
            }
            result->number = number;
        }
        dev_fd = lc_dev_open(number, read_only);
        if (dev_fd == -ENOENT && chosen) {
            /* No /dev/loopN: make the device (EEXIST: the kernel has it,
             * its node is late), then look again. */
            r = lc_ctl_add(ctl_fd, number);
            if (r >= 0) {
                result->created = 1;
            } else if (r != -EEXIST) {
                unlock_control(ctl_fd, options);
                result->failed_step = LC_STEP_ADD;
                return interrupted(result, attempt, r);
            }
            dev_fd = lc_dev_open(number, read_only);
        }
        if (dev_fd < 0) {
            unlock_control(ctl_fd, options);
            result->failed_step = LC_STEP_OPEN;
            if (dev_fd != -ENXIO && dev_fd != -ENOENT)
                return interrupted(result, attempt, dev_fd);
            /* Being torn down, or the node is not there yet. */
            result->vanished_retries++;
            last_error = dev_fd;
        } else if (chosen && is_bound(dev_fd)) {
            /* Bound to a file: someone else's, waiting helps nothing. */
            close(dev_fd);
            unlock_control(ctl_fd, options);
            result->failed_step = LC_STEP_BIND;
            return -EBUSY;
        } else {
            if ((options & LC_ATTACH_LOCK_DEVICE || partscan_after)
                && (lock_fd = lock_device(number, deadline_ns)) < 0) {
                close(dev_fd);
                unlock_control(ctl_fd, options);
                result->failed_step = LC_STEP_DEVICE_LOCK;
                return interrupted(result, attempt, lock_fd);
            }
            if (options & LC_ATTACH_SET_FD)
                r = lc_set_fd(dev_fd, backing_fd);
            else
                r = lc_configure(dev_fd, &config);
            unlock_control(ctl_fd, options);
            if (r == 0 && partscan_after) {
                if ((r = scan_partitions(dev_fd, number)) < 0) {
                    close(lock_fd);
                    unbind_and_close(dev_fd);
                    result->failed_step = LC_STEP_PARTSCAN;
                    return interrupted(result, attempt, r);
                }
                if (!(options & LC_ATTACH_LOCK_DEVICE)) {
                    close(lock_fd);  /* the partitions exist: udev may look */
                    lock_fd = -1;
                }
            }
            if (r == 0) {
                if ((r = read_state(dev_fd, options, NULL, result)) < 0) {
                    /* The lock fd first: a second opener would turn
                     * LOOP_CLR_FD into a deferred (autoclear) detach. */
                    if (lock_fd >= 0)
                        close(lock_fd);
                    unbind_and_close(dev_fd);
                    result->failed_step = LC_STEP_READ_BACK;
                    return interrupted(result, attempt, r);
                }
                result->failed_step = LC_STEP_NONE;
                result->fd = dev_fd;
                result->lock_fd = lock_fd;
                return number;
            }
            if (lock_fd >= 0)
                close(lock_fd);
            close(dev_fd);
            result->failed_step = LC_STEP_BIND;
            if (r != -EBUSY && r != -EAGAIN)
                return interrupted(result, attempt, r);
            /* Someone else bound it between GET_FREE and us, or (a chosen
             * device) it is still being torn down. */
            result->busy_retries++;
            last_error = -EBUSY;
        }
        /* Back off (not before the first retry from GET_FREE: a fresh
         * GET_FREE usually names another device; a chosen device is the
         * same one, so it waits from the start) without holding the
         * control lock (unless the caller holds it), then return to the
         * caller: a signal that came while this loop ran between two
         * syscalls interrupted none of them, and its Python handler must
         * run before the next sleep, not after the last (PEP 475). */
        if ((attempt >= 1 || chosen) && attempt + 1 < req->max_attempts) {
            result->failed_step = LC_STEP_BACKOFF;
            r = backoff(req, attempt + 1);
            return interrupted(result, attempt + 1, r < 0 ? r : -EINTR);
        }
    }
    return last_error;
}

int lc_attach(int ctl_fd, const struct lc_attach_req *req, const char *backing_path,
              struct lc_attach_result *result)
{
    struct lc_backing backing;
    uint32_t flags = req->flags;
    int backing_fd, r;

    if (req->backing_fd >= 0)
        return attach_one(ctl_fd, req, req->backing_fd, req->number, flags, req->file_name,
                          req->first_attempt, result);
    /* The path: opened here, before the control lock (a slow open must
     * not hold up other attaches), so attach() is one C call. */
    backing_fd = lc_backing_open(backing_path, (flags & LO_FLAGS_READ_ONLY) != 0,
                                 (flags & LO_FLAGS_DIRECT_IO) != 0, &backing);
    if (backing_fd < 0) {
        begin_result(result, req->number, req->first_attempt);
        result->failed_step = LC_STEP_BACKING;
        result->backing = backing;
        return backing_fd;
    }
    if (req->offset && req->offset >= backing.size) {
        close(backing_fd);
        begin_result(result, req->number, req->first_attempt);
        result->failed_step = LC_STEP_OFFSET;
        result->backing = backing;
        return -EINVAL;
    }
    /* overlayfs over a file system without O_DIRECT: the kernel would
     * say yes, then fail every I/O */
    if (backing.direct_io_refused)
        flags &= ~(uint32_t)LO_FLAGS_DIRECT_IO;
    /* lo_file_name: the path's first 63 bytes, as losetup records it */
    r = attach_one(ctl_fd, req, backing_fd, req->number, flags, backing_path,
                   req->first_attempt, result);
    close(backing_fd);  /* the kernel holds the file now, or nothing does */
    result->backing = backing;
    return r;
}

int lc_attach_many(int ctl_fd, const struct lc_attach_req *req, const int32_t *backing_fds,
                   const uint32_t *flags, const uint8_t *file_names, uint32_t count,
                   struct lc_attach_result *results, uint32_t *done)
{
    struct lc_attach_req each = *req;
    int r = 0;

    *done = 0;
    for (uint32_t i = 0; i < count; i++)
        results[i].fd = results[i].lock_fd = -1;  /* nothing bound yet */
    if (!(req->options & LC_ATTACH_CONTROL_HELD)
        && (r = lock_until(ctl_fd, req->deadline_ns)) < 0) {
        begin_result(&results[0], -1, req->first_attempt);
        results[0].failed_step = LC_STEP_LOCK;
        return r;
    }
    each.options |= LC_ATTACH_CONTROL_HELD;
    each.options &= ~(uint32_t)LC_ATTACH_SET_FD;
    for (uint32_t i = 0; i < count; i++) {
        r = attach_one(ctl_fd, &each, backing_fds[i], -1, flags[i],
                       (const char *)file_names + (size_t)i * LC_NAME_FIELD,
                       i ? 0 : req->first_attempt, &results[i]);
        if (r < 0)
            break;
        *done = i + 1;
        r = 0;
    }
    unlock_control(ctl_fd, req->options);
    return r;
}

int lc_detach_many(const int32_t *dev_fds, uint32_t count, int32_t *rcs)
{
    int failures = 0;

    for (uint32_t i = 0; i < count; i++) {
        rcs[i] = lc_detach(dev_fds[i]);
        failures += rcs[i] < 0;
    }
    return failures;
}
