/*
 * loopcore C shim: device-mapper.
 *
 * Plain declarations only (this header is also the cffi cdef).  The
 * ioctl buffer -- struct dm_ioctl followed by the command's payload -- is
 * built and parsed in Python (src/loopcore/dm/ioctl.py) with views
 * derived from the structs below (loopcore._c.struct_view); C only issues
 * the ioctl, so the cdef never needs a variadic ioctl().
 *
 * The structs mirror <linux/dm-ioctl.h> byte for byte (lc_dm.c proves it
 * with static asserts of every size and offset): the one place the layout
 * of what goes through /dev/mapper/control is written.
 */

/* struct dm_ioctl: the header of every request and reply. */
struct lc_dm_ioctl {
    uint32_t version[3];         /* interface version asked for / the kernel's */
    uint32_t data_size;          /* the whole buffer, header included */
    uint32_t data_start;         /* where the payload starts */
    uint32_t target_count;
    int32_t  open_count;
    uint32_t flags;
    uint32_t event_nr;           /* also udev cookie and flags on the way in */
    uint32_t padding;
    uint64_t dev;
    char     name[128];          /* DM_NAME_LEN, NUL included */
    char     uuid[129];          /* DM_UUID_LEN, NUL included */
    char     data[7];
};

/* struct dm_target_spec: one table line, its params string following. */
struct lc_dm_target_spec {
    uint64_t sector_start;
    uint64_t length;
    int32_t  status;
    uint32_t next;               /* to the next spec: from this one (load), from the first (status) */
    char     target_type[16];    /* DM_MAX_TYPE_NAME */
};

/* struct dm_target_deps: TABLE_DEPS's answer. */
struct lc_dm_target_deps {
    uint32_t count;
    uint32_t padding;
    uint64_t dev[];
};

/* struct dm_name_list: one LIST_DEVICES record, chained by next. */
struct lc_dm_name_list {
    uint64_t dev;
    uint32_t next;               /* from this record; 0 for the last */
    char     name[];
};

/*
 * After each dm_name_list name, 8-aligned (interface 4.37+): event_nr,
 * then (4.46+, asked with DM_UUID_FLAG) flags saying whether a uuid
 * follows.  The kernel documents this in a comment, with no struct of its
 * own, so nothing in the C header to assert it against.
 */
struct lc_dm_name_list_trailer {
    uint32_t event_nr;
    uint32_t flags;              /* DM_NAME_LIST_FLAG_HAS_UUID / _DOESNT_HAVE_UUID */
    char     uuid[];
};

/* struct dm_target_versions: one LIST_VERSIONS record, chained by next. */
struct lc_dm_target_versions {
    uint32_t next;
    uint32_t version[3];
    char     name[];
};

/* struct dm_target_msg: TARGET_MSG's payload. */
struct lc_dm_target_msg {
    uint64_t sector;
    char     message[];
};

/*
 * struct ucred (<sys/socket.h>): the sender's credentials on a netlink
 * message (SCM_CREDENTIALS), read to trust only root's (udevd's) uevents.
 */
struct lc_ucred {
    int32_t  pid;
    uint32_t uid;
    uint32_t gid;
};

/* open /dev/mapper/control (or another path) O_RDWR|O_CLOEXEC: fd or -errno */
int lc_dm_open(const char *path);

/*
 * DM ioctl number nr (0 VERSION .. 17 GET_TARGET_VERSION) on the control
 * fd with buf, a struct lc_dm_ioctl of buf's data_size bytes plus payload,
 * read and written in place.  Returns 0 or -errno; EINTR is returned, not
 * retried (DEV_WAIT sleeps interruptibly).
 */
int lc_dm_ioctl(int fd, uint32_t nr, uint8_t *buf);
