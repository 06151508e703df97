/*
 * loopcore C shim: loop devices.
 *
 * This header is both the C prototype list and the cffi cdef (read by
 * src/loopcore/_build.py), so it holds plain declarations only: no
 * #include, no macros.  Every function has a fixed arity and returns a
 * non-negative value on success or -errno on failure.  The structs
 * mirror the kernel's uapi layouts byte for byte (checked with static
 * asserts in lc_loop.c) so the shim builds against headers that predate
 * LOOP_CONFIGURE.
 */

struct lc_loop_info64 {
    uint64_t lo_device;          /* backing file's st_dev (r/o) */
    uint64_t lo_inode;           /* backing file's st_ino (r/o) */
    uint64_t lo_rdevice;         /* r/o */
    uint64_t lo_offset;
    uint64_t lo_sizelimit;       /* bytes, 0 == whole file */
    uint32_t lo_number;          /* r/o */
    uint32_t lo_encrypt_type;
    uint32_t lo_encrypt_key_size;
    uint32_t lo_flags;
    uint8_t  lo_file_name[64];
    uint8_t  lo_crypt_name[64];
    uint8_t  lo_encrypt_key[32];
    uint64_t lo_init[2];
};

struct lc_loop_config {
    uint32_t fd;
    uint32_t block_size;
    struct lc_loop_info64 info;
    uint64_t reserved[8];
};

/* A backing file, as lc_backing_open/lc_backing_stat found it. */
struct lc_backing {
    uint64_t size;               /* bytes: st_size, or BLKGETSIZE64 of a block device */
    uint64_t dev;                /* st_dev */
    uint64_t ino;                /* st_ino */
    uint32_t mode;               /* st_mode & S_IFMT, also when the type is refused */
    uint32_t direct_io_refused;  /* probe_direct_io: lc_direct_io_refused() said 1 */
};

/* What lc_attach did and what the kernel reports afterwards. */
struct lc_attach_result {
    int32_t  number;             /* N of /dev/loopN */
    int32_t  fd;                 /* open fd on /dev/loopN, O_CLOEXEC */
    uint64_t devnum;             /* st_rdev of the device */
    uint64_t diskseq;            /* 0 where the kernel has none */
    uint64_t size_bytes;         /* BLKGETSIZE64 */
    uint32_t block_size;         /* BLKSSZGET */
    uint32_t flags;              /* lo_flags from LOOP_GET_STATUS64 */
    uint32_t attempts;           /* tries used (1 = no retry) */
    uint32_t busy_retries;       /* EBUSY/EAGAIN from the bind ioctl */
    uint32_t vanished_retries;   /* ENXIO/ENOENT opening the device */
    uint32_t failed_step;        /* on failure: one of enum lc_attach_step */
    uint32_t disk_read_only;     /* BLKROGET: lo_flags or a BLKROSET policy */
    int32_t  lock_fd;            /* LC_ATTACH_LOCK_DEVICE: the fd holding the lock, else -1 */
    uint32_t created;            /* 1 if LOOP_CTL_ADD made the chosen device */
    struct lc_backing backing;   /* the backing file lc_attach opened (req->backing_path) */
};

/* lc_attach's options argument: bits. */
enum lc_attach_option {
    /* flock(LOCK_EX) a second, read-only fd on the device before the
     * bind and hand it back in result->lock_fd: udev (which skips a
     * device it cannot lock shared) never probes it half set up. */
    LC_ATTACH_LOCK_DEVICE = 1,
    /* The caller holds the flock on ctl_fd (a decision taken under it,
     * such as reusing a device, must stay true until the bind): neither
     * take it nor drop it, also not while sleeping between attempts. */
    LC_ATTACH_CONTROL_HELD = 2,
    /* Read back, after the bind, the settings (LOOP_GET_STATUS64's
     * flags, BLKSSZGET, BLKGETSIZE64) into flags, block_size and
     * size_bytes; without it those stay 0 (the caller has no option
     * whose outcome they show).  disk_read_only and diskseq are always
     * read. */
    LC_ATTACH_READ_SETTINGS = 4,
    /* Read devnum back (statx); without it devnum stays 0 (the caller
     * knows the minor layout). */
    LC_ATTACH_READ_DEVNUM = 8,
    /* Bind with LOOP_SET_FD alone (kernels before 5.8): offset, size
     * limit, block size and the flags but READ_ONLY are the caller's to
     * set afterwards.  Without it: LOOP_CONFIGURE with all of them. */
    LC_ATTACH_SET_FD = 16
};

/* The size of lo_file_name and of each entry of lc_attach_many's
 * file_names. */
enum { LC_NAME_FIELD = 64 };

/*
 * One attach request: everything lc_attach needs to know but the control
 * fd.  lc_attach only reads it, so a caller can keep one and fill it for
 * each call (Python packs it in one go; after -EINTR it passes it again
 * with first_attempt moved on).  lc_attach_many takes one for all its
 * files, each with its own backing fd, flags and name.
 */
struct lc_attach_req {
    int32_t  backing_fd;         /* -1: lc_attach's backing_path */
    int32_t  number;             /* /dev/loopN to bind; -1: LOOP_CTL_GET_FREE's */
    uint32_t options;            /* enum lc_attach_option bits */
    uint32_t flags;              /* lo_flags; LO_FLAGS_READ_ONLY also opens the device O_RDONLY */
    uint64_t offset;             /* bytes */
    uint64_t size_limit;         /* bytes, 0: to the end of the backing file */
    uint32_t block_size;         /* 0: the kernel's default (512) */
    uint32_t first_attempt;      /* attempts already made (0 on a first call) */
    int64_t  deadline_ns;        /* CLOCK_MONOTONIC; 0: wait as long as it takes */
    /* the retry policy: total tries (>= 1), and the sleep between two,
     * random below sleep_base_us + sleep_span_us * attempt / max_attempts */
    uint32_t max_attempts;
    uint32_t sleep_base_us;
    uint32_t sleep_span_us;
    char     file_name[LC_NAME_FIELD]; /* lo_file_name: NUL-terminated, 63 bytes at most */
};

enum lc_attach_step {
    LC_STEP_NONE = 0,
    LC_STEP_LOCK = 1,            /* flock on /dev/loop-control */
    LC_STEP_GET_FREE = 2,
    LC_STEP_OPEN = 3,            /* open /dev/loopN */
    LC_STEP_BIND = 4,            /* LOOP_CONFIGURE or LOOP_SET_FD */
    LC_STEP_READ_BACK = 5,
    LC_STEP_BACKOFF = 6,         /* the sleep between two attempts */
    /* 7, 8: not attach steps (lc_detach's failure says itself which it was) */
    LC_STEP_ADD = 9,             /* LOOP_CTL_ADD of a chosen device */
    LC_STEP_DEVICE_LOCK = 10,    /* flock on the device (LC_ATTACH_LOCK_DEVICE, PARTSCAN) */
    LC_STEP_PARTSCAN = 11,       /* LOOP_SET_STATUS64 turning PARTSCAN on after the bind */
    LC_STEP_BACKING = 12,        /* opening lc_attach's backing_path (backing.mode: its type) */
    LC_STEP_OFFSET = 13          /* -EINVAL: req->offset at or past its end (backing.size) */
};

/* lc_blkpg's op argument (BLKPG_ADD_PARTITION, BLKPG_DEL_PARTITION). */
enum lc_blkpg_op {
    LC_BLKPG_ADD = 1,
    LC_BLKPG_DEL = 2
};

/* /dev/loop-control */
int lc_ctl_open(void);
int lc_ctl_add(int ctl_fd, int number);
int lc_ctl_remove(int ctl_fd, int number);
int lc_ctl_get_free(int ctl_fd);

/* open /dev/loopN; read_only selects O_RDONLY over O_RDWR */
int lc_dev_open(int number, int read_only);

/* loop ioctls on an open device */
int lc_configure(int dev_fd, const struct lc_loop_config *config);
int lc_probe_configure(int dev_fd);
int lc_set_fd(int dev_fd, int backing_fd);
int lc_clr_fd(int dev_fd);
int lc_set_status64(int dev_fd, const struct lc_loop_info64 *info);
int lc_get_status64(int dev_fd, struct lc_loop_info64 *info);
int lc_change_fd(int dev_fd, int backing_fd);
int lc_set_capacity(int dev_fd);
int lc_set_block_size(int dev_fd, uint32_t block_size);
int lc_set_direct_io(int dev_fd, uint32_t enable);

/* block ioctls */
int lc_get_diskseq(int fd, uint64_t *diskseq);
int lc_get_size64(int fd, uint64_t *size_bytes);
int lc_get_sector_size(int fd, uint32_t *sector_size);
int lc_get_read_only(int fd, uint32_t *read_only);
int lc_set_read_only(int fd, uint32_t read_only);

/*
 * BLKPG: add partition pno (1-based) of a whole-disk fd covering length
 * bytes from byte start, or delete partition pno (start and length
 * ignored).  start and length must be multiples of the logical block
 * size; EBUSY when an added partition overlaps another or a deleted one
 * is open.
 */
int lc_blkpg(int fd, int op, int pno, int64_t start, int64_t length);

/*
 * The hot path, one call: lock /dev/loop-control, GET_FREE, open
 * /dev/loopN (read-only if LO_FLAGS_READ_ONLY is in req->flags), bind,
 * unlock, then read back what the kernel did into *result.  The bind is
 * LOOP_CONFIGURE with the request's flags, offset, size limit, block size
 * and file name, or with LC_ATTACH_SET_FD LOOP_SET_FD alone.  Retries
 * EBUSY/EAGAIN from the bind and ENXIO/ENOENT from the open with a fresh
 * GET_FREE, up to req->max_attempts tries; after the second failure and
 * later ones it sleeps (the request's backoff) with the lock released.
 *
 * req->number >= 0 binds that device instead of asking GET_FREE
 * (losetup's `losetup DEV FILE`): a missing /dev/loopN is made with
 * LOOP_CTL_ADD (result->created says so), a device that is bound fails at
 * once with -EBUSY (failed_step LC_STEP_BIND), and EBUSY/EAGAIN from the
 * bind (a device still being torn down) or ENXIO/ENOENT from the open are
 * retried on the same device as above.
 *
 * LO_FLAGS_PARTSCAN in the flags (LOOP_CONFIGURE only): the bind goes
 * without it, and LOOP_SET_STATUS64 turns it on afterwards -- the one
 * partition scan, so udev sees each partition added once -- all under an
 * exclusive flock on the device (taken as LC_ATTACH_LOCK_DEVICE takes it,
 * and dropped once the partitions exist unless that option asks to keep
 * it).
 *
 * req->options (enum lc_attach_option): LC_ATTACH_READ_SETTINGS and
 * LC_ATTACH_READ_DEVNUM choose what is read back; LC_ATTACH_LOCK_DEVICE
 * takes flock LOCK_EX on a second fd of the device after the control lock
 * and before the bind (the control lock first, the device lock second,
 * always), and returns it in result->lock_fd; LC_ATTACH_CONTROL_HELD
 * leaves the control lock to the caller; LC_ATTACH_SET_FD picks the bind.
 *
 * Attempts are counted from req->first_attempt.  -EINTR from any step (a
 * signal interrupting a lock wait or a sleep, mostly) is returned at once
 * with result->attempts set to the attempt to resume from: the caller runs
 * its signal handlers and calls again with that as first_attempt (PEP
 * 475), so Ctrl-C is never held up by a retry loop.  -EINTR (failed_step
 * LC_STEP_BACKOFF) also comes after each backoff sleep, signal or not: a
 * signal taken while the loop ran between syscalls interrupted none, and
 * its handler runs then, one sleep later at most.  req->deadline_ns, if
 * not 0, is a CLOCK_MONOTONIC time after which waiting for a lock or
 * sleeping between attempts gives up with -ETIMEDOUT.
 *
 * On failure nothing stays bound, no fd stays open, result->failed_step
 * names the step, result->number the device once GET_FREE named one, and
 * -errno is returned (-EBUSY when the retries ran out); on success the
 * device number.  A device LOOP_CTL_ADD made stays (unbound) on failure:
 * removing it is the caller's choice.
 *
 * With req->backing_fd -1 the backing file is backing_path, opened here
 * first, before any lock (lc_backing_open: read-only with
 * LO_FLAGS_READ_ONLY, the direct I/O probe with LO_FLAGS_DIRECT_IO), so an
 * attach of a path is this one call (the path is an argument, not a field
 * of *req: a PATH_MAX field would cost its caller a 4 KiB fill per call):
 * result->backing says what was found, on failure too.  It must be a
 * regular file or a block device (-EINVAL, LC_STEP_BACKING, otherwise;
 * the open's own -errno likewise), req->offset, if not 0, below its size
 * (-EINVAL, LC_STEP_OFFSET); direct I/O is left out of the flags where
 * lc_direct_io_refused says so; lo_file_name is the path's first 63 bytes
 * (req->file_name is not read).  It is closed before returning.
 */
int lc_attach(int ctl_fd, const struct lc_attach_req *req, const char *backing_path,
              struct lc_attach_result *result);

/*
 * A backing file for lc_attach: lc_backing_open opens path (O_RDONLY or
 * O_RDWR; O_NONBLOCK so a FIFO cannot hang the open, cleared again on
 * success), lc_backing_stat looks at a caller's fd.  Both fill *out (size,
 * st_dev, st_ino, type; with probe_direct_io, lc_direct_io_refused) and
 * refuse anything but a regular file or a block device with -EINVAL
 * (out->mode then says what it was; 0 for other failures).  Returns the
 * new fd / 0, or -errno with nothing left open.
 */
int lc_backing_open(const char *path, int read_only, int probe_direct_io,
                    struct lc_backing *out);
int lc_backing_stat(int fd, int probe_direct_io, struct lc_backing *out);

/*
 * A burst: lc_attach (LOOP_CONFIGURE, GET_FREE) of count backing files
 * under one hold of the control lock (taken here unless req->options has
 * LC_ATTACH_CONTROL_HELD).  *req holds for every file but its backing
 * fd, flags and name: backing_fds[i], flags[i] and the LC_NAME_FIELD-byte
 * file_names[i]; GET_FREE names every device (req->number is not used), and
 * req->first_attempt counts for the first file only.  results[i] for each (their fd fields are set to -1 first).
 * Stops at the first failure: *done devices are bound (results
 * 0..*done-1 hold their fds) and results[*done] says what failed, as
 * lc_attach does; nothing is unbound here, the caller decides (-EINTR:
 * run the signal handlers, then go on from *done with first_attempt =
 * results[*done].attempts, or detach them).  0 when all are bound.
 */
int lc_attach_many(int ctl_fd, const struct lc_attach_req *req, const int32_t *backing_fds,
                   const uint32_t *flags, const uint8_t *file_names, uint32_t count,
                   struct lc_attach_result *results, uint32_t *done);

/*
 * lc_detach of each of count fds, going on past failures: rcs[i] is its
 * result.  Returns how many failed (their fds stay open and their
 * devices bound).
 */
int lc_detach_many(const int32_t *dev_fds, uint32_t count, int32_t *rcs);

/*
 * Fill devnum, diskseq, size_bytes, block_size, flags and disk_read_only
 * of *result from the kernel (GET_STATUS64, BLKSSZGET, BLKGETSIZE64,
 * BLKGETDISKSEQ, BLKROGET, statx); *status, unless NULL, receives the
 * whole GET_STATUS64 answer so callers need not ask again.
 */
int lc_read_state(int dev_fd, struct lc_loop_info64 *status,
                  struct lc_attach_result *result);

/*
 * 1 if the backing file sits on a file system that claims direct I/O but
 * whose lower file refuses O_DIRECT (overlayfs over tmpfs), else 0; -errno
 * if fstatfs fails.  One fstatfs unless the file is on overlayfs.
 */
int lc_direct_io_refused(int backing_fd);

/*
 * Write back a block device's dirty page cache and report whether it all
 * reached the device: sync_file_range(WAIT_BEFORE|WRITE|WAIT_AFTER), which
 * reports a write-back error that happened since fd was opened (BLKFLSBUF
 * does not), without the cache flush fsync() would add; fsync() where the
 * kernel has no sync_file_range.
 */
int lc_flush(int fd);

/* lc_detach's answer when the write-back failed: -(LC_NOT_WRITTEN_BACK + errno). */
enum { LC_NOT_WRITTEN_BACK = 65536 };

/*
 * The detach, one call: write back (lc_flush), LOOP_CLR_FD, close.  On
 * success the fd is closed and 0 returned, or 1 when another opener
 * deferred the unbind to its last close.  On failure the fd stays open
 * and the device bound, so the caller can retry: -errno if LOOP_CLR_FD
 * failed, -(LC_NOT_WRITTEN_BACK + errno) if the write-back did (no
 * out-parameter: the hot path passes ints only).
 */
int lc_detach(int dev_fd);
