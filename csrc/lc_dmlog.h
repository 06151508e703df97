/*
 * loopcore C shim: the dm-log-userspace wire structs.
 *
 * One datagram between the kernel and the dirty-log server is an
 * nlmsghdr, a cn_msg and a dm_ulog_request, back to back (36 + 160 bytes),
 * then the request's data.  They are declared here once, mirroring the
 * uapi headers field for field (lc_dmlog.c checks every size and offset
 * against them); Python derives its packing from these declarations
 * (loopcore._c.struct_view).  Only structs: no function is called.
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
