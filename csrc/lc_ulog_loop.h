/*
 * loopcore C shim: the dirty-log server's request loop.
 *
 * The requests on a mirror's I/O path (IN_SYNC, IS_CLEAN, MARK_REGION,
 * CLEAR_REGION, FLUSH, GET_RESYNC_WORK, SET_REGION_SYNC, GET_SYNC_COUNT,
 * IS_REMOTE_RECOVERING) are answered here, from the log state below, which
 * lives in C memory and which Python's DirtyLog reads and writes in place
 * (its bitmaps are views of these buffers, its counters these fields).
 * Everything else, and every request that needs a decision C does not
 * make (a write to the log device or state file, an error to log, an
 * unknown log, a malformed datagram), is handed back to Python unanswered
 * and untouched: Python answers it and calls the loop again.
 *
 * Datagrams are received in batches (recvmmsg) and the replies sent in
 * batches (sendmmsg); in order, so a request handed to Python sees the
 * state every earlier one left.  After a full batch the loop receives
 * again at once (more is waiting); after a smaller one, which emptied the
 * socket, it polls (and sleeps if nothing came meanwhile).
 */

/* One log's state (the fields Python's DirtyLog keeps here). */
struct lc_ulog_log {
    struct lc_ulog_log *next;     /* the table's list (lc_ulog_add links it) */
    uint64_t luid;                /* the key: (uuid, luid) */
    char uuid[129];               /* NUL padded, as the request carries it */
    uint8_t *clean;               /* 1 bit per region, 1 = clean; 64-bit padded */
    uint8_t *sync;                /* 1 bit per region, 1 = the legs are equal */
    uint8_t *pending;             /* 1 bit per page of the store: clean bits held back */
    uint64_t region_count;
    uint64_t bitmap_bytes;        /* of clean and sync */
    uint64_t pending_bytes;
    uint32_t page;                /* bytes per page of the store; 0: no store */
    uint32_t persist;             /* a dirtied clean bit must be written: Python's */
    uint32_t flush_failed;        /* CLEAR does nothing until the next resume */
    uint32_t was_complete;        /* every region was in sync (the log line is Python's) */
    int64_t recovering;           /* the region handed out for recovery; -1: none */
    uint64_t search;              /* where GET_RESYNC_WORK looks next */
    uint64_t low;                 /* every region below is in sync */
    uint64_t sync_count;
};

enum {
    LC_ULOG_BATCH = 16,           /* datagrams per recvmmsg */
    LC_ULOG_SLOT = 65536,         /* the largest datagram received whole */
    LC_ULOG_REPLY_MAX = 212,      /* 36 + 160 + the largest reply C builds (16) */
    LC_ULOG_STREAK = 64,          /* batches received back to back before Python's turn */
};

/* What lc_ulog_serve returns for. */
enum {
    LC_ULOG_DATAGRAM = 1,         /* ev->data, ev->len, ev->sender: Python's to answer */
    LC_ULOG_STOP = 2,             /* the wake-up fd is readable */
    LC_ULOG_IDLE = 3,             /* a signal (ev->err EINTR), the busy poll ran out, or
                                     work done before a sleep: Python's handlers run */
    LC_ULOG_RECV_ERROR = 4,       /* ev->err: recvmmsg's errno (ENOBUFS: an overrun), or
                                     ENOTCONN: a readable socket gave nothing */
    LC_ULOG_SEND_ERROR = 5,       /* ev->err: sendmmsg's errno; the others were sent */
};

struct lc_ulog_event {
    const uint8_t *data;
    uint32_t len;
    uint32_t sender;              /* netlink port (0: the kernel) */
    int32_t err;
};

/* The logs C answers for and the batch in progress.  Allocated zeroed by
 * Python with ``slots`` (LC_ULOG_BATCH * LC_ULOG_SLOT bytes) and
 * ``replies`` (LC_ULOG_BATCH * LC_ULOG_REPLY_MAX bytes). */
struct lc_ulog_table {
    struct lc_ulog_log *logs;
    uint32_t python_only;         /* hand every request to Python (debug logging) */
    int32_t sock_fd;
    int32_t wake_fd;
    uint32_t netlink;             /* replies go to the kernel's address (port 0) */
    int64_t spin_ns;              /* busy poll this long after an answer */
    int64_t busy_until_ns;        /* CLOCK_MONOTONIC; 0: sleep in poll() */
    uint32_t count;               /* datagrams of the batch */
    uint32_t next;                /* the next one to answer */
    uint32_t nreplies;
    uint32_t drained;             /* the last receive emptied the socket: poll first */
    uint32_t lens[LC_ULOG_BATCH];
    uint32_t senders[LC_ULOG_BATCH];
    uint32_t reply_lens[LC_ULOG_BATCH];
    uint8_t *slots;
    uint8_t *replies;
    uint64_t answered;            /* requests answered in C (a statistic) */
};

/* Hold / release the log state: Python's side of a log's state (its
 * bitmaps, its counters) is touched only under this lock while a loop
 * serves; the loop holds it while it answers a batch.  0, or -errno. */
int lc_ulog_lock(void);
int lc_ulog_unlock(void);

/* Link log into table (at the front) / unlink it (no-op if absent); 0. */
int lc_ulog_add(struct lc_ulog_table *table, struct lc_ulog_log *log);
int lc_ulog_remove(struct lc_ulog_table *table, struct lc_ulog_log *log);

/*
 * Answer one datagram from sender (netlink port) if C owns it: the reply's
 * length, written to reply (LC_ULOG_REPLY_MAX bytes), and the log state
 * updated.  0: Python's (nothing was changed).
 */
int lc_ulog_answer(struct lc_ulog_table *table, const uint8_t *dgram, uint32_t len,
                   uint32_t sender, uint8_t *reply);

/*
 * Serve table->sock_fd until a datagram needs Python, the wake-up fd is
 * readable, a signal comes, the busy poll runs out, a socket call fails,
 * or LC_ULOG_STREAK batches came back to back (LC_ULOG_IDLE: Python's
 * signal handlers get their turn under a steady stream too): one of
 * LC_ULOG_*, with ev filled in.  Call again to go on (the rest of a batch
 * is kept).
 */
int lc_ulog_serve(struct lc_ulog_table *table, struct lc_ulog_event *ev);
