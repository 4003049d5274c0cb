/* All shims are static inline in include/privsep_shims.h; SwiftPM needs one source file.
   This one also holds the header's written-in constants to the C library's, with the
   definitions that _GNU_SOURCE shows. */
#define _GNU_SOURCE
#include <fcntl.h>
#include "privsep_shims.h"

_Static_assert(privsep_O_PATH == O_PATH, "O_PATH");
_Static_assert(privsep_O_TMPFILE == O_TMPFILE, "O_TMPFILE");
_Static_assert(privsep_O_NOATIME == O_NOATIME, "O_NOATIME");
_Static_assert(privsep_O_DIRECT == O_DIRECT, "O_DIRECT");
/* O_LARGEFILE is not checked: glibc shows 0 on 64-bit targets, the kernel's bit only in its uapi headers. */
