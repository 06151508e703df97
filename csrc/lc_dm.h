/*
 * loopcore C shim: device-mapper.
 *
 * Plain declarations only (this header is also the cffi cdef).  The
 * ioctl buffer -- struct dm_ioctl followed by the command's payload -- is
 * built and parsed in Python (src/loopcore/dm/ioctl.py); C only issues the
 * ioctl, so the cdef never needs a variadic ioctl().
 */

/* open /dev/mapper/control (or another path) O_RDWR|O_CLOEXEC: fd or -errno */
int lc_dm_open(const char *path);

/*
 * DM ioctl number nr (0 VERSION .. 17 GET_TARGET_VERSION) on the control
 * fd with buf, a struct dm_ioctl of buf's data_size bytes (>= 312) plus
 * payload, read and written in place.  Returns 0 or -errno; EINTR is
 * returned, not retried (DEV_WAIT sleeps interruptibly).
 */
int lc_dm_ioctl(int fd, uint32_t nr, uint8_t *buf);
