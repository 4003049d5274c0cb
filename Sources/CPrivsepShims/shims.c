/* All shims are static inline in include/privsep_shims.h; SwiftPM needs one source file. */
#include "privsep_shims.h"
