/*
 * loopcore C shim: the dirty-log server's request loop (see lc_ulog_loop.h).
 *
 * Each answer here is the one Python's reference (loopcore.dmlog.log and
 * .requests) gives, on the same state; a differential test holds the two
 * to it.  Whenever the reference would write the store, log a line or
 * answer an error, the request goes to Python before anything changes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <linux/netlink.h>

#include "lc_dmlog.h"
#include "lc_ulog_loop.h"

/* dm-log-userspace request types (linux/dm-log-userspace.h) */
enum {
    IS_CLEAN = 7, IN_SYNC = 8, FLUSH = 9, MARK_REGION = 10, CLEAR_REGION = 11,
    GET_RESYNC_WORK = 12, SET_REGION_SYNC = 13, GET_SYNC_COUNT = 14,
    IS_REMOTE_RECOVERING = 17,
};

#define CN_IDX_DM 7
#define CN_VAL_DM_USERSPACE_LOG 1
#define NLMSG_DONE_TYPE 3
#define REQUEST_VERSION 3
#define MAX_PAYLOAD 332           /* the largest payload the kernel sends */
#define BITMAP_OFFSET 1024        /* the disk log's bitmap starts here */

#define REQ_AT (sizeof(struct lc_nlmsghdr) + sizeof(struct lc_cn_msg))
#define HEADER_SIZE (REQ_AT + sizeof(struct lc_ulog_request))
_Static_assert(HEADER_SIZE + 16 == LC_ULOG_REPLY_MAX, "the reply room");

/* Python's side of the state and this loop's exclude each other (lc_ulog_lock). */
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;

int lc_ulog_lock(void)
{
    return -pthread_mutex_lock(&state_lock);
}

int lc_ulog_unlock(void)
{
    return -pthread_mutex_unlock(&state_lock);
}

static int test_bit(const uint8_t *bits, uint64_t r)
{
    return bits[r >> 3] >> (r & 7) & 1;
}

/* The lowest zero bit of bits[0..nbytes) at or after start; limit if none below it. */
static uint64_t next_zero(const uint8_t *bits, uint64_t nbytes, uint64_t start,
                          uint64_t limit)
{
    uint64_t i = start >> 3;
    unsigned byte;

    if (i >= nbytes)
        return limit;
    byte = bits[i] | ((1u << (start & 7)) - 1);
    while (byte == 0xFF) {
        if (++i >= nbytes)
            return limit;
        /* whole words of ones at a time once aligned */
        while ((i & 7) == 0 && i + 8 <= nbytes) {
            uint64_t w;
            memcpy(&w, bits + i, 8);
            if (w != UINT64_MAX)
                break;
            i += 8;
        }
        if (i >= nbytes)
            return limit;
        byte = bits[i];
    }
    i = i * 8 + (uint64_t)__builtin_ctz(~byte);
    return i < limit ? i : limit;
}

int lc_ulog_add(struct lc_ulog_table *table, struct lc_ulog_log *log)
{
    (void)lc_ulog_remove(table, log);
    log->next = table->logs;
    table->logs = log;
    return 0;
}

int lc_ulog_remove(struct lc_ulog_table *table, struct lc_ulog_log *log)
{
    struct lc_ulog_log **p;

    for (p = &table->logs; *p; p = &(*p)->next) {
        if (*p == log) {
            *p = log->next;
            log->next = NULL;
            return 0;
        }
    }
    return 0;
}

/* The log of (uuid up to its NUL, luid), or NULL. */
static struct lc_ulog_log *find(struct lc_ulog_table *table, const char *uuid, uint64_t luid)
{
    size_t n = strnlen(uuid, sizeof(((struct lc_ulog_log *)0)->uuid));
    struct lc_ulog_log *log;

    for (log = table->logs; log; log = log->next)
        if (log->luid == luid && strnlen(log->uuid, sizeof(log->uuid)) == n
                && memcmp(log->uuid, uuid, n) == 0)
            return log;
    return NULL;
}

static uint64_t u64_at(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Every u64 of data[0..n) a region of log (the reference raises at the first that is not,
 * having changed the ones before it: such a request is Python's). */
static int all_in_range(const struct lc_ulog_log *log, const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i += 8)
        if (u64_at(data + i) >= log->region_count)
            return 0;
    return 1;
}

/* Would marking these regions dirty a clean bit (which the reference writes)? */
static int dirties(const struct lc_ulog_log *log, const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i += 8)
        if (test_bit(log->clean, u64_at(data + i)))
            return 1;
    return 0;
}

static void mark(struct lc_ulog_log *log, const uint8_t *data, uint32_t n)
{
    for (uint32_t i = 0; i < n; i += 8) {
        uint64_t r = u64_at(data + i);
        log->clean[r >> 3] &= (uint8_t)~(1u << (r & 7));
    }
}

static int any_pending(const struct lc_ulog_log *log)
{
    for (uint64_t i = 0; i < log->pending_bytes; i++)
        if (log->pending[i])
            return 1;
    return 0;
}

/* The reply payload (out, returns its length), or -1: Python's. */
static int operate(struct lc_ulog_log *log, uint32_t rtype, const uint8_t *data,
                   uint32_t dsize, uint8_t *out)
{
    uint64_t r, v[2];

    switch (rtype) {
    case IS_CLEAN:
    case IN_SYNC:
        if (dsize != 8 || (r = u64_at(data)) >= log->region_count)
            return -1;
        v[0] = (uint64_t)test_bit(rtype == IN_SYNC ? log->sync : log->clean, r);
        memcpy(out, v, 8);
        return 8;
    case MARK_REGION:
        if (dsize % 8 || !all_in_range(log, data, dsize)
                || (log->persist && dirties(log, data, dsize)))
            return -1;  /* a dirty bit goes to the store before the answer: Python's */
        mark(log, data, dsize);
        return 0;
    case FLUSH:
        if (dsize % 8 || !all_in_range(log, data, dsize)
                || (log->persist && (dirties(log, data, dsize) || any_pending(log))))
            return -1;  /* a write (and the legs' flush before clean bits): Python's */
        mark(log, data, dsize);
        return 0;
    case CLEAR_REGION:
        if (log->flush_failed)
            return 0;
        if (dsize % 8 || !all_in_range(log, data, dsize))
            return -1;
        for (uint32_t i = 0; i < dsize; i += 8) {
            r = u64_at(data + i);
            if (test_bit(log->sync, r) && !test_bit(log->clean, r)) {
                log->clean[r >> 3] |= (uint8_t)(1u << (r & 7));
                if (log->page) {
                    uint64_t p = (BITMAP_OFFSET + (r >> 3)) / log->page;
                    log->pending[p >> 3] |= (uint8_t)(1u << (p & 7));
                }
            }
        }
        return 0;
    case GET_RESYNC_WORK:
        if (log->recovering >= 0) {
            v[0] = 1;
            v[1] = (uint64_t)log->recovering;
        } else {
            r = next_zero(log->sync, log->bitmap_bytes, log->search, log->region_count);
            if (r >= log->region_count) {
                log->search = log->region_count;
                v[0] = v[1] = 0;
            } else {
                log->search = r + 1;
                log->recovering = (int64_t)r;
                v[0] = 1;
                v[1] = r;
            }
        }
        memcpy(out, v, 16);
        return 16;
    case SET_REGION_SYNC: {
        int64_t in_sync;
        if (dsize != 16 || (r = u64_at(data)) >= log->region_count)
            return -1;
        memcpy(&in_sync, data + 8, 8);
        if (in_sync) {
            if (!test_bit(log->sync, r) && log->sync_count + 1 == log->region_count
                    && !log->was_complete)
                return -1;  /* "resync finished" is Python's to log */
        } else if (log->persist && test_bit(log->clean, r)) {
            return -1;      /* a dirty bit to write */
        } else if (log->was_complete && test_bit(log->sync, r)) {
            return -1;      /* the end of a full sync: Python drops its marker file */
        }
        if (log->recovering == (int64_t)r)
            log->recovering = -1;
        if (in_sync) {
            if (!test_bit(log->sync, r)) {
                log->sync[r >> 3] |= (uint8_t)(1u << (r & 7));
                log->sync_count++;
            }
        } else {
            if (test_bit(log->sync, r)) {
                log->sync[r >> 3] &= (uint8_t)~(1u << (r & 7));
                log->sync_count--;
                if (r < log->low)
                    log->low = r;
                log->was_complete = 0;
            }
            log->clean[r >> 3] &= (uint8_t)~(1u << (r & 7));
        }
        return 0;
    }
    case GET_SYNC_COUNT:
        memcpy(out, &log->sync_count, 8);
        return 8;
    case IS_REMOTE_RECOVERING:
        if (dsize != 8 || u64_at(data) >= log->region_count)
            return -1;
        log->low = next_zero(log->sync, log->bitmap_bytes, log->low, log->region_count);
        v[0] = 0;
        v[1] = log->low;
        memcpy(out, v, 16);
        return 16;
    default:
        return -1;
    }
}

int lc_ulog_answer(struct lc_ulog_table *table, const uint8_t *dgram, uint32_t len,
                   uint32_t sender, uint8_t *reply)
{
    struct lc_nlmsghdr nl;
    struct lc_cn_msg cn;
    struct lc_ulog_request req;
    struct lc_ulog_log *log;
    uint32_t end, clen;
    int n;

    if (sender != 0 || table->python_only || len < HEADER_SIZE)
        return 0;
    memcpy(&nl, dgram, sizeof(nl));
    memcpy(&cn, dgram + sizeof(nl), sizeof(cn));
    memcpy(&req, dgram + REQ_AT, sizeof(req));
    /* the reference's well-formed case (loopcore.dmlog.protocol.parse_datagram) */
    end = (uint32_t)HEADER_SIZE + req.data_size;
    if (cn.idx != CN_IDX_DM || cn.val != CN_VAL_DM_USERSPACE_LOG
            || req.data_size > MAX_PAYLOAD || end > len || nl.nlmsg_len < end
            || nl.nlmsg_len > len || cn.len < sizeof(req) + req.data_size
            || REQ_AT + cn.len > nl.nlmsg_len
            || req.version < 1 || req.version > REQUEST_VERSION)
        return 0;
    log = find(table, req.uuid, req.luid);
    if (!log)
        return 0;
    n = operate(log, req.request_type & 0xFF, dgram + HEADER_SIZE, req.data_size,
                reply + HEADER_SIZE);
    if (n < 0)
        return 0;
    /* the header echoed: the reference's protocol.build_reply */
    clen = (uint32_t)sizeof(req) + (uint32_t)n;
    memset(&nl, 0, sizeof(nl));
    nl.nlmsg_len = (uint32_t)REQ_AT + clen;
    nl.nlmsg_type = NLMSG_DONE_TYPE;
    nl.nlmsg_seq = req.seq;
    memset(&cn, 0, sizeof(cn));
    cn.idx = CN_IDX_DM;
    cn.val = CN_VAL_DM_USERSPACE_LOG;
    cn.seq = req.seq;
    cn.len = (uint16_t)clen;
    {
        size_t ulen = strnlen(req.uuid, sizeof(req.uuid));
        memset(req.uuid + ulen, 0, sizeof(req.uuid) - ulen);
    }
    req.error = 0;
    req.request_type &= 0xFF;
    req.data_size = (uint32_t)n;
    /* the 3 bytes after uuid are padding: zeros, as struct.pack writes them */
    memset(reply, 0, HEADER_SIZE);
    memcpy(reply, &nl, sizeof(nl));
    memcpy(reply + sizeof(nl), &cn, sizeof(cn));
    memcpy(reply + REQ_AT + offsetof(struct lc_ulog_request, luid), &req.luid,
           sizeof(req.luid));
    memcpy(reply + REQ_AT + offsetof(struct lc_ulog_request, uuid), req.uuid,
           sizeof(req.uuid));
    memcpy(reply + REQ_AT + offsetof(struct lc_ulog_request, version), &req.version,
           sizeof(req) - offsetof(struct lc_ulog_request, version));
    table->answered++;
    return (int)(HEADER_SIZE + (uint32_t)n);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Send the replies waiting: 0, or the errno of the first that failed (the
 * others are sent all the same). */
static int send_replies(struct lc_ulog_table *t)
{
    struct mmsghdr msgs[LC_ULOG_BATCH];
    struct iovec iov[LC_ULOG_BATCH];
    struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };  /* port 0, no groups */
    uint32_t i, done = 0;
    int err = 0;

    memset(msgs, 0, sizeof(msgs));
    for (i = 0; i < t->nreplies; i++) {
        iov[i].iov_base = t->replies + (size_t)i * LC_ULOG_REPLY_MAX;
        iov[i].iov_len = t->reply_lens[i];
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        if (t->netlink) {
            msgs[i].msg_hdr.msg_name = &kernel;
            msgs[i].msg_hdr.msg_namelen = sizeof(kernel);
        }
    }
    while (done < t->nreplies) {
        int n = sendmmsg(t->sock_fd, msgs + done, t->nreplies - done, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (!err)
                err = errno;
            done++;  /* this one is lost (the kernel resends it after 15 s) */
            continue;
        }
        done += (uint32_t)n;
    }
    t->nreplies = 0;
    return err;
}

/* Receive a batch (never blocking): the count, or -errno. */
static int receive(struct lc_ulog_table *t)
{
    struct mmsghdr msgs[LC_ULOG_BATCH];
    struct iovec iov[LC_ULOG_BATCH];
    struct sockaddr_nl from[LC_ULOG_BATCH];
    int i, n;

    memset(msgs, 0, sizeof(msgs));
    for (i = 0; i < LC_ULOG_BATCH; i++) {
        iov[i].iov_base = t->slots + (size_t)i * LC_ULOG_SLOT;
        iov[i].iov_len = LC_ULOG_SLOT;
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &from[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(from[i]);
        from[i].nl_family = 0;
    }
    n = recvmmsg(t->sock_fd, msgs, LC_ULOG_BATCH, MSG_DONTWAIT, NULL);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    for (i = 0; i < n; i++) {
        uint32_t got = msgs[i].msg_len;
        t->lens[i] = got < LC_ULOG_SLOT ? got : LC_ULOG_SLOT;
        t->senders[i] = msgs[i].msg_hdr.msg_namelen >= sizeof(struct sockaddr_nl)
                        && from[i].nl_family == AF_NETLINK ? from[i].nl_pid : 0;
    }
    t->count = (uint32_t)n;
    t->next = 0;
    /* fewer than asked for: the socket was empty when the call returned */
    t->drained = n < LC_ULOG_BATCH;
    return n;
}

/* A failed receive as the event Python logs (0: nothing from a readable
 * socket, whose peer is gone: a test's socketpair). */
static int receive_failed(struct lc_ulog_event *ev, int n)
{
    ev->err = n < 0 ? -n : ENOTCONN;
    return LC_ULOG_RECV_ERROR;
}

int lc_ulog_serve(struct lc_ulog_table *t, struct lc_ulog_event *ev)
{
    /* Python's signal handlers run only between calls: a signal that came
     * while this loop was busy must not be slept on.  So the loop goes back
     * to Python (LC_ULOG_IDLE) before each sleep that follows work, and
     * after LC_ULOG_STREAK batches without a sleep. */
    int worked = 0;
    unsigned batches = 0;

    for (;;) {
        int n, answered = 0;

        pthread_mutex_lock(&state_lock);
        while (t->next < t->count) {
            uint32_t i = t->next++;
            const uint8_t *dgram = t->slots + (size_t)i * LC_ULOG_SLOT;
            uint8_t *reply = t->replies + (size_t)t->nreplies * LC_ULOG_REPLY_MAX;

            n = lc_ulog_answer(t, dgram, t->lens[i], t->senders[i], reply);
            if (n == 0) {
                int err;
                pthread_mutex_unlock(&state_lock);
                err = send_replies(t);
                if (t->spin_ns)
                    t->busy_until_ns = now_ns() + t->spin_ns;
                ev->data = dgram;
                ev->len = t->lens[i];
                ev->sender = t->senders[i];
                ev->err = err;
                return LC_ULOG_DATAGRAM;
            }
            t->reply_lens[t->nreplies++] = (uint32_t)n;
            answered = worked = 1;
        }
        pthread_mutex_unlock(&state_lock);
        if (t->nreplies) {
            int err = send_replies(t);
            if (err) {
                ev->err = err;
                return LC_ULOG_SEND_ERROR;
            }
        }
        if (answered && t->spin_ns)
            t->busy_until_ns = now_ns() + t->spin_ns;
        if (!t->drained) {
            /* the last receive took a full batch: more is waiting (several
             * kernel threads at once), taken without a poll or a trip to Python */
            if (batches >= LC_ULOG_STREAK) {
                ev->err = 0;
                return LC_ULOG_IDLE;
            }
            n = receive(t);
            if (n > 0) {
                batches++;
                continue;
            }
            if (n != -EAGAIN && n != -EINTR)
                return receive_failed(ev, n);
            t->drained = 1;
        }
        if (worked && !t->busy_until_ns) {
            ev->err = 0;
            return LC_ULOG_IDLE;
        }
        {
            struct pollfd fds[2] = {
                { .fd = t->sock_fd, .events = POLLIN },
                { .fd = t->wake_fd, .events = POLLIN },
            };
            /* asleep in poll() unless busy-polling, where it only looks */
            if (poll(fds, 2, t->busy_until_ns ? 0 : -1) < 0) {
                ev->err = errno;
                return errno == EINTR ? LC_ULOG_IDLE : LC_ULOG_RECV_ERROR;
            }
            if (fds[1].revents)
                return LC_ULOG_STOP;
            if (!fds[0].revents) {
                if (t->busy_until_ns && now_ns() > t->busy_until_ns) {
                    t->busy_until_ns = 0;
                    ev->err = 0;
                    return LC_ULOG_IDLE;  /* Python's signal handlers run before a sleep */
                }
                continue;
            }
        }
        n = receive(t);
        if (n == -EAGAIN || n == -EINTR)
            continue;
        if (n <= 0)
            return receive_failed(ev, n);
        batches++;
    }
}
