/*
 * loopcore C shim: discovery, one call for every loop device.
 *
 * Plain declarations only (this is also the cffi cdef).  lc_scan_loops
 * walks /sys/block once and fills a caller-provided buffer: fixed-size
 * records grow from the start, the backing-file strings from the end.
 * Python parses it; no per-device file is opened from Python.
 */

/* lc_scan_rec.flags bits */
enum {
    LC_SCAN_RO          = 1,      /* sysfs ro */
    LC_SCAN_AUTOCLEAR   = 4,      /* sysfs loop/autoclear */
    LC_SCAN_PARTSCAN    = 8,      /* sysfs loop/partscan */
    LC_SCAN_DIO         = 16,     /* sysfs loop/dio */
    LC_SCAN_BOUND       = 256,    /* loop/backing_file was readable */
    LC_SCAN_HAS_DISKSEQ = 512,    /* diskseq attribute present */
    LC_SCAN_HAS_NODE    = 1024,   /* /dev/loopN is this device's block node */
    LC_SCAN_HAS_STATUS  = 2048,   /* backing_dev/backing_ino are from GET_STATUS64 */
    LC_SCAN_HAS_DIO     = 4096    /* loop/dio attribute present (Linux 4.4+) */
};

/* lc_scan_loops flags argument */
enum {
    LC_SCAN_INCLUDE_UNBOUND = 1,  /* also record devices with no backing file */
    LC_SCAN_NO_STATUS       = 2   /* skip opening /dev/loopN (no backing dev/ino) */
};

/* One device.  Strings live in the same buffer at name_off. */
struct lc_scan_rec {
    uint64_t offset;              /* loop/offset */
    uint64_t sizelimit;           /* loop/sizelimit */
    uint64_t size_sectors;        /* size, 512-byte sectors */
    uint64_t diskseq;             /* diskseq, if LC_SCAN_HAS_DISKSEQ */
    uint64_t backing_dev;         /* lo_device: the backing file's st_dev */
    uint64_t backing_ino;         /* lo_inode: the backing file's st_ino */
    uint32_t number;              /* N of loopN */
    uint32_t major;               /* dev */
    uint32_t minor;
    uint32_t block_size;          /* queue/logical_block_size */
    uint32_t flags;               /* LC_SCAN_* */
    int32_t  status_err;          /* errno opening /dev/loopN or GET_STATUS64, else 0 */
    uint32_t name_off;            /* backing file (no trailing newline) */
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
