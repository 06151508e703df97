/*
 * Loop and block ioctl constants newer than the oldest kernel headers the
 * shim builds against (linux/loop.h of Linux 3.1 has none of these).
 * Internal: not a cdef header (those are lc_*.h).
 */
#ifndef LOOPCORE_KERNEL_COMPAT_H
#define LOOPCORE_KERNEL_COMPAT_H

#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/fs.h>
#include <linux/loop.h>
#include <linux/blkpg.h>

#ifndef LO_FLAGS_PARTSCAN
#define LO_FLAGS_PARTSCAN 8
#endif
#ifndef LO_FLAGS_DIRECT_IO
#define LO_FLAGS_DIRECT_IO 16
#endif
#ifndef LOOP_SET_CAPACITY
#define LOOP_SET_CAPACITY 0x4C07
#endif
#ifndef LOOP_SET_DIRECT_IO
#define LOOP_SET_DIRECT_IO 0x4C08
#endif
#ifndef LOOP_SET_BLOCK_SIZE
#define LOOP_SET_BLOCK_SIZE 0x4C09
#endif
#ifndef LOOP_CONFIGURE
#define LOOP_CONFIGURE 0x4C0A
#endif
#ifndef LOOP_CTL_ADD
#define LOOP_CTL_ADD 0x4C80
#define LOOP_CTL_REMOVE 0x4C81
#define LOOP_CTL_GET_FREE 0x4C82
#endif
#ifndef BLKGETDISKSEQ
#define BLKGETDISKSEQ _IOR(0x12, 128, uint64_t)
#endif
#ifndef BLKFLSBUF
#define BLKFLSBUF _IO(0x12, 97)
#endif
#ifndef BLKROSET
#define BLKROSET _IO(0x12, 93)
#define BLKROGET _IO(0x12, 94)
#endif
#ifndef BLKSSZGET
#define BLKSSZGET _IO(0x12, 104)
#endif
#ifndef BLKGETSIZE64
#define BLKGETSIZE64 _IOR(0x12, 114, size_t)
#endif
#ifndef BLKPG
#define BLKPG _IO(0x12, 105)
#endif
#ifndef BLKPG_ADD_PARTITION
#define BLKPG_ADD_PARTITION 1
#define BLKPG_DEL_PARTITION 2
#endif

#endif /* LOOPCORE_KERNEL_COMPAT_H */
