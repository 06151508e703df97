/*
 * loopcore C shim: discovery, one call for every loop device.
 *
 * Plain declarations only (this is also the cffi cdef).  lc_scan_loops
 * walks /sys/block once and fills a caller-provided buffer: fixed-size
 * records grow from the start, the backing-file strings from the end.
 * Python parses it; no per-device file is opened from Python.
 *
 * Where each value comes from: the backing path from sysfs
 * (loop/backing_file: lo_file_name holds only 64 bytes), unless sysfs
 * cannot show it (see LC_SCAN_NAME_PARTIAL).  The rest are the
 * same kernel fields the sysfs attributes print, read with one open of
 * /dev/loopN: LOOP_GET_STATUS64 (lo_offset, lo_sizelimit, lo_flags ->
 * loop/offset, loop/sizelimit, loop/autoclear, loop/partscan, loop/dio;
 * lo_device, lo_inode, which sysfs lacks and losetup reads the same way),
 * BLKROGET (ro), BLKSSZGET (queue/logical_block_size), BLKGETSIZE64
 * (size), BLKGETDISKSEQ (diskseq), fstat (dev).  A sysfs attribute costs
 * an open, a read and a close each (about 3 us); the ioctls together cost
 * less than one.  Where the node is missing or cannot be opened, or with
 * LC_SCAN_SYSFS, the attribute files are read instead.
 */

/* lc_scan_rec.flags bits */
enum {
    LC_SCAN_RO          = 1,      /* ro (the disk, not only LO_FLAGS_READ_ONLY) */
    LC_SCAN_AUTOCLEAR   = 4,      /* loop/autoclear */
    LC_SCAN_PARTSCAN    = 8,      /* loop/partscan */
    LC_SCAN_DIO         = 16,     /* loop/dio */
    LC_SCAN_BOUND       = 256,    /* loop/backing_file was readable */
    LC_SCAN_HAS_DISKSEQ = 512,    /* diskseq known (Linux 5.15+) */
    LC_SCAN_HAS_NODE    = 1024,   /* /dev/loopN is this device's block node */
    LC_SCAN_HAS_STATUS  = 2048,   /* backing_dev/backing_ino are from GET_STATUS64 */
    LC_SCAN_HAS_DIO     = 4096,   /* dio known (Linux 4.4+) */
    LC_SCAN_FROM_SYSFS  = 8192,   /* attributes read from the sysfs files */
    LC_SCAN_NAME_PARTIAL = 16384  /* bound, but loop/backing_file could not be read
                                     (a path longer than the page sysfs shows:
                                     ENAMETOOLONG): the name is lo_file_name from
                                     LOOP_GET_STATUS64, at most 63 bytes, its last
                                     byte '*' when all 63 are used (perhaps cut, as
                                     util-linux marks it); empty when /dev/loopN
                                     could not be asked */
};

/* lc_scan_loops flags argument */
enum {
    LC_SCAN_INCLUDE_UNBOUND = 1,  /* also record devices with no backing file */
    LC_SCAN_NO_STATUS       = 2,  /* never open /dev/loopN (sysfs only, no backing dev/ino) */
    LC_SCAN_SYSFS           = 4   /* read attributes from sysfs files, /dev/loopN
                                     only for the backing dev/ino */
};

/* One device.  Strings live in the same buffer at name_off. */
struct lc_scan_rec {
    uint64_t offset;              /* loop/offset */
    uint64_t sizelimit;           /* loop/sizelimit */
    uint64_t size_sectors;        /* size, 512-byte sectors */
    uint64_t diskseq;             /* diskseq, if LC_SCAN_HAS_DISKSEQ */
    uint64_t backing_dev;         /* lo_device: the backing file's st_dev (if HAS_STATUS) */
    uint64_t backing_ino;         /* lo_inode: the backing file's st_ino (if HAS_STATUS) */
    uint32_t number;              /* N of loopN */
    uint32_t major;               /* dev */
    uint32_t minor;
    uint32_t block_size;          /* queue/logical_block_size */
    uint32_t flags;               /* LC_SCAN_* */
    int32_t  status_err;          /* errno: /dev/loopN missing (ENOENT), not this
                                     device's node (ENODEV), open or GET_STATUS64
                                     failed; else 0 */
    uint32_t name_off;            /* backing file (no trailing newline; see
                                     LC_SCAN_NAME_PARTIAL) */
    uint32_t name_len;
};

/*
 * Scan /sys/block/loop* into buf (bufsize bytes, 8-byte aligned), sorted
 * by number.  Returns the number of records, or -ERANGE when buf is too
 * small (then *needed is the size this scan wanted; devices come and go,
 * so grow with slack and call again), or -errno if /sys/block cannot be
 * read.  *needed is always set.
 */
int lc_scan_loops(void *buf, uint64_t bufsize, uint32_t flags, uint64_t *needed);
