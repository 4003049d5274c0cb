/* Compile-time proof that the spec's structs have the sizes and offsets that
   docs/PROTOCOL.md states, with no padding the compiler chose on its own. */
#include <stddef.h>
#include "privsep_protocol.h"

_Static_assert(sizeof(struct privsep_header) == 24, "header is 24 bytes");
_Static_assert(offsetof(struct privsep_header, length) == 8, "header.length at 8");
_Static_assert(offsetof(struct privsep_header, request_id) == 16, "header.request_id at 16");
_Static_assert(sizeof(struct privsep_hello) == 8, "hello is 8 bytes");
_Static_assert(sizeof(struct privsep_welcome) == 16, "welcome is 16 bytes");
_Static_assert(sizeof(struct privsep_open) == 8, "open is 8 bytes");
_Static_assert(sizeof(struct privsep_socket) == 16, "socket is 16 bytes");
_Static_assert(sizeof(struct privsep_address) == 24, "address is 24 bytes");
_Static_assert(sizeof(struct privsep_address_request) == 32, "address request is 32 bytes");
_Static_assert(sizeof(struct privsep_reply) == 8, "reply is 8 bytes");
_Static_assert(sizeof(struct privsep_violation) == 64, "violation is 64 bytes");
_Static_assert(sizeof(struct privsep_log) == 8, "log is 8 bytes");
_Static_assert(sizeof(struct privsep_sandbox_status) == 16, "sandbox status is 16 bytes");
_Static_assert(sizeof(struct privsep_listener) == 8, "listener is 8 bytes");
_Static_assert(sizeof(struct privsep_job) == 8, "job is 8 bytes");
_Static_assert(sizeof(struct privsep_result) == 8, "result is 8 bytes");
_Static_assert(PRIVSEP_MAX_JOB_BYTES == PRIVSEP_MAX_MESSAGE - sizeof(struct privsep_header) - sizeof(struct privsep_job),
               "a JOB's bytes fill one message exactly");
_Static_assert(PRIVSEP_MAX_MESSAGE >= sizeof(struct privsep_header) + sizeof(struct privsep_open) + PRIVSEP_MAX_PATH,
               "the longest OPEN fits in a message");

/* SwiftPM needs a symbol in every C target. */
int privsep_protocol_version(void) { return PRIVSEP_VERSION; }
