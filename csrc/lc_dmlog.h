/*
 * loopcore C shim: the dm-log-userspace wire structs.
 *
 * One datagram between the kernel and the dirty-log server is an
 * nlmsghdr, a cn_msg and a dm_ulog_request, back to back (36 + 160 bytes),
 * then the request's data.  They are declared here once, mirroring the
 * uapi headers field for field (lc_dmlog.c checks every size and offset
 * against them); Python derives its packing from these declarations
 * (loopcore._c.struct_view).
 *
 * lc_dmlog_recv is the serving loop's one call per datagram: it sleeps in
 * poll() on the socket and a wake-up fd (a pipe stop() writes to) and
 * reads one datagram, so that waiting for a request costs no more than a
 * plain blocking receive would, and stop() is seen at once.
 */

/* <linux/netlink.h> struct nlmsghdr */
struct lc_nlmsghdr {
    uint32_t nlmsg_len;           /* the whole message, this header included */
    uint16_t nlmsg_type;          /* NLMSG_DONE (3) */
    uint16_t nlmsg_flags;
    uint32_t nlmsg_seq;
    uint32_t nlmsg_pid;           /* the sender's port: 0 for the kernel */
};

/* <linux/connector.h> struct cn_msg (struct cb_id flattened: idx, val) */
struct lc_cn_msg {
    uint32_t idx;                 /* CN_IDX_DM (7) */
    uint32_t val;                 /* CN_VAL_DM_USERSPACE_LOG (1) */
    uint32_t seq;
    uint32_t ack;                 /* a positive errno in the ack form of a reply */
    uint16_t len;                 /* the bytes after this struct */
    uint16_t flags;
};

/* <linux/dm-log-userspace.h> struct dm_ulog_request */
struct lc_ulog_request {
    uint64_t luid;                /* the kernel's address of the log context */
    char uuid[129];               /* DM_UUID_LEN, NUL padded; 3 bytes of padding follow */
    uint32_t version;             /* DM_ULOG_REQUEST_VERSION */
    int32_t error;                /* 0 or -errno, in replies */
    uint32_t seq;                 /* what the kernel matches a reply on */
    uint32_t request_type;        /* DM_ULOG_*: the low 8 bits */
    uint32_t data_size;           /* the bytes after this struct */
};

/*
 * Receive one datagram from sock_fd into buf (size bytes; a longer one is
 * cut), never blocking in recvfrom.  With wait != 0 first sleep in poll()
 * until sock_fd or wake_fd is readable (no timeout).  Returns the
 * datagram's length (at most size); -ECANCELED when wake_fd is readable;
 * -EAGAIN when nothing is there (yet); -EINTR when a signal came; or
 * -errno from recvfrom (-ENOBUFS: the receive buffer overran).
 * *sender is the netlink port the datagram came from (0: the kernel), 0
 * when sock_fd is not a netlink socket.
 */
int lc_dmlog_recv(int sock_fd, int wake_fd, int wait, void *buf, uint32_t size,
                  uint32_t *sender);
