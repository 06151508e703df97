/*
 * loopcore C shim: lc_dmlog.h's structs checked against the uapi headers,
 * so that a layout written once there is the kernel's; the serving loop's
 * receive.
 */
#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/connector.h>
#include <linux/dm-log-userspace.h>
#include <linux/netlink.h>

#include "lc_dmlog.h"

#define SAME_FIELD(lc, k, lf, kf) \
    _Static_assert(offsetof(struct lc, lf) == offsetof(struct k, kf) && \
                   sizeof(((struct lc *)0)->lf) == sizeof(((struct k *)0)->kf), \
                   #lc "." #lf " is not " #k "." #kf)
#define SAME_SIZE(lc, k) \
    _Static_assert(sizeof(struct lc) == sizeof(struct k), #lc " is not " #k)

SAME_SIZE(lc_nlmsghdr, nlmsghdr);
SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_len, nlmsg_len);
SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_type, nlmsg_type);
SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_flags, nlmsg_flags);
SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_seq, nlmsg_seq);
SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_pid, nlmsg_pid);

SAME_SIZE(lc_cn_msg, cn_msg);
SAME_FIELD(lc_cn_msg, cn_msg, idx, id.idx);
SAME_FIELD(lc_cn_msg, cn_msg, val, id.val);
SAME_FIELD(lc_cn_msg, cn_msg, seq, seq);
SAME_FIELD(lc_cn_msg, cn_msg, ack, ack);
SAME_FIELD(lc_cn_msg, cn_msg, len, len);
SAME_FIELD(lc_cn_msg, cn_msg, flags, flags);
_Static_assert(offsetof(struct cn_msg, data) == sizeof(struct lc_cn_msg),
               "cn_msg's data follows the struct");

SAME_SIZE(lc_ulog_request, dm_ulog_request);
SAME_FIELD(lc_ulog_request, dm_ulog_request, luid, luid);
SAME_FIELD(lc_ulog_request, dm_ulog_request, uuid, uuid);
SAME_FIELD(lc_ulog_request, dm_ulog_request, version, version);
SAME_FIELD(lc_ulog_request, dm_ulog_request, error, error);
SAME_FIELD(lc_ulog_request, dm_ulog_request, seq, seq);
SAME_FIELD(lc_ulog_request, dm_ulog_request, request_type, request_type);
SAME_FIELD(lc_ulog_request, dm_ulog_request, data_size, data_size);
_Static_assert(offsetof(struct dm_ulog_request, data) == sizeof(struct lc_ulog_request),
               "dm_ulog_request's data follows the struct");

int lc_dmlog_recv(int sock_fd, int wake_fd, int wait, void *buf, uint32_t size,
                  uint32_t *sender)
{
    struct sockaddr_storage from;
    socklen_t fromlen = sizeof(from);
    ssize_t n;

    if (wait) {
        struct pollfd fds[2] = {
            { .fd = sock_fd, .events = POLLIN },
            { .fd = wake_fd, .events = POLLIN },
        };
        if (poll(fds, 2, -1) < 0)
            return -errno;
        if (fds[1].revents)
            return -ECANCELED;
    }
    memset(&from, 0, sizeof(from));
    n = recvfrom(sock_fd, buf, size, MSG_DONTWAIT, (struct sockaddr *)&from, &fromlen);
    if (n < 0)
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    *sender = from.ss_family == AF_NETLINK ? ((struct sockaddr_nl *)&from)->nl_pid : 0;
    return (int)n;
}
