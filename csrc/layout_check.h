/*
 * Compile-time proof that a struct the cdef declares (struct lc_*, which
 * Python packs through views derived from it) is laid out as the kernel's
 * or libc's own: same size, each field at the same offset with the same
 * size.  Not an lc_*.h header: cffi never parses it.
 */
#ifndef LOOPCORE_LAYOUT_CHECK_H
#define LOOPCORE_LAYOUT_CHECK_H

#include <stddef.h>

#define LC_SAME_SIZE(lc, k) \
    _Static_assert(sizeof(struct lc) == sizeof(struct k), #lc " is the size of " #k)
/* Field lf of struct lc is field kf of struct k (names may differ). */
#define LC_SAME_FIELD_AS(lc, k, lf, kf) \
    _Static_assert(offsetof(struct lc, lf) == offsetof(struct k, kf) \
                   && sizeof(((struct lc *)0)->lf) == sizeof(((struct k *)0)->kf), \
                   #lc "." #lf " is where and as large as " #k "." #kf)
#define LC_SAME_FIELD(lc, k, field) LC_SAME_FIELD_AS(lc, k, field, field)
/* A flexible array member has no size: only where it starts is compared. */
#define LC_SAME_FLEX(lc, k, field) \
    _Static_assert(offsetof(struct lc, field) == offsetof(struct k, field), \
                   #lc "." #field "[] starts where " #k "." #field "[] does")

#endif
