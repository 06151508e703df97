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

#include "layout_check.h"
#include "lc_dmlog.h"

/* lc_dmlog.h's structs are the kernel's, field for field (Python packs them
 * through views derived from that header). */
LC_SAME_SIZE(lc_nlmsghdr, nlmsghdr);
LC_SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_len);
LC_SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_type);
LC_SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_flags);
LC_SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_seq);
LC_SAME_FIELD(lc_nlmsghdr, nlmsghdr, nlmsg_pid);

LC_SAME_SIZE(lc_cn_msg, cn_msg);
LC_SAME_FIELD_AS(lc_cn_msg, cn_msg, idx, id.idx);
LC_SAME_FIELD_AS(lc_cn_msg, cn_msg, val, id.val);
LC_SAME_FIELD(lc_cn_msg, cn_msg, seq);
LC_SAME_FIELD(lc_cn_msg, cn_msg, ack);
LC_SAME_FIELD(lc_cn_msg, cn_msg, len);
LC_SAME_FIELD(lc_cn_msg, cn_msg, flags);
_Static_assert(offsetof(struct cn_msg, data) == sizeof(struct lc_cn_msg),
               "cn_msg's data follows the struct");

LC_SAME_SIZE(lc_ulog_request, dm_ulog_request);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, luid);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, uuid);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, version);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, error);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, seq);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, request_type);
LC_SAME_FIELD(lc_ulog_request, dm_ulog_request, data_size);
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
