"""A single-node dm-log-userspace server: dirty logs for dm-mirror in userspace.

The kernel's ``dm-log-userspace`` module forwards every dirty-log call of a
mirror whose table says ``mirror userspace ...`` to a server over the
netlink connector.  :class:`DirtyLogServer` is that server for one machine:
``clustered-core`` and ``clustered-disk`` logs (the latter in the kernel's
own ``disk`` log format, so either can read what the other wrote),
crash-safe ordering (dirty bits on stable storage before the write they
cover, clean bits only after the legs' caches are flushed), and a restart
path on which the kernel reconnects by itself.

>>> from loopcore import dm
>>> from loopcore.dmlog import DirtyLogServer
>>> with DirtyLogServer() as server, dm.DeviceMapper() as m:
...     m.create("m1", table=[dm.mirror(0, 65536, [leg0, leg1], 1024, log="userspace",
...                                  uuid="m1-log", log_device=logdev)])
...     print(server.logs)

Modules: :mod:`.protocol` (the wire format and reply rules), :mod:`.requests`
(the request table: decoder, log operation, encoder, reply size per type),
:mod:`.ctr` (the CTR string), :mod:`.bitmap` (bit operations),
:mod:`.disklog` (the on-disk format), :mod:`.log` (one log's state and
operations), :mod:`.legs` (finding and flushing the mirror legs),
:mod:`.transport` (lock file, netlink socket, serving loop and its
wake-up), :mod:`.server` (the logs, CTR/DTR, dispatch, lifetime),
:mod:`.cli` (``loopcore dmlog serve``).
The ``mirror`` target itself is built with :func:`loopcore.dm.mirror`.
"""
from .._lazy import export

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .log import LogView as LogView
    from .server import DEFAULT_LOCK_FILE as DEFAULT_LOCK_FILE
    from .server import DEFAULT_STATE_DIR as DEFAULT_STATE_DIR
    from .server import DirtyLogServer as DirtyLogServer

__all__ = export(__name__, {
    ".server": (
        "DirtyLogServer", "DEFAULT_LOCK_FILE", "DEFAULT_STATE_DIR",
    ),
    ".log": (
        "LogView",
    ),
})
