/*
 * privsep_protocol.h: the swift-privsep wire protocol. This header IS the spec.
 *
 * A worker written in C needs nothing else: include this file, find the
 * channel at fd PRIVSEP_CHANNEL_FD (an AF_UNIX SOCK_SEQPACKET socket the
 * supervisor left open across exec), and exchange datagrams.
 *
 * Rules that hold for every message:
 *   - One datagram is one message: a struct privsep_header followed by
 *     exactly header.length payload bytes. SOCK_SEQPACKET keeps message
 *     boundaries, so there is no framing and no partial read; and the peer's
 *     death is seen as end-of-file rather than silence.
 *   - Integers are in host byte order (both ends run on the same machine).
 *     IP addresses are bytes in network order, as in struct in6_addr.
 *   - A datagram is at most PRIVSEP_MAX_MESSAGE bytes.
 *   - Every reserved field and every flags field not defined below is zero.
 *   - Each type carries a fixed-size payload struct. OPEN, CONNECT, BIND (for
 *     AF_UNIX) and LOG are followed by one string: its bytes run to the end of
 *     the datagram, end with exactly one NUL, contain no other NUL, and are
 *     valid UTF-8.
 *   - JOB and RESULT are followed by opaque bytes (0...PRIVSEP_MAX_JOB_BYTES),
 *     running to the end of the datagram: no terminator, any byte values.
 *   - Each type carries an exact number of fds (SCM_RIGHTS): zero for every
 *     type except REPLY, which carries exactly reply.fd_count, JOB, which
 *     carries exactly job.fd_count, and LISTENER, which carries exactly one.
 *   - The receiver rejects anything else. The supervisor kills a worker that
 *     sends a malformed message; it never guesses what was meant.
 *
 * Conversation:
 *   worker -> supervisor   HELLO            (first message, exactly once)
 *   supervisor -> worker   WELCOME          (the worker waits for it before anything else)
 *   worker -> supervisor   OPEN | SOCKET | CONNECT | BIND      -> REPLY with the same request_id
 *   worker -> supervisor   LOG | VIOLATION | SANDBOX_STATUS     (no reply)
 *   worker -> supervisor   LISTENER         (learning mode: no reply; intercept mode: a REPLY,
 *                                            the go-ahead to exec)
 *
 * Pool workers (started by a WorkerPool) also serve jobs, one at a time:
 *   supervisor -> worker   JOB              (request_id names the job)
 *   worker -> supervisor   RESULT ... RESULT (same request_id; every chunk but
 *                                            the last has PRIVSEP_RESULT_MORE)
 *   While a job runs the worker may send requests of its own as usual. The
 *   supervisor never sends a second JOB before the last RESULT of the first.
 *
 * Outside the protocol, a worker in C must do what the Swift Worker library does
 * for it: prctl(PR_SET_PDEATHSIG, SIGKILL) first thing, then check getppid() is
 * still the supervisor (it may have died before the prctl), so the worker dies with
 * its supervisor; then lock itself down before it reads untrusted input.
 */
#ifndef PRIVSEP_PROTOCOL_H
#define PRIVSEP_PROTOCOL_H

#include <stdint.h>

/* The fd number at which a worker inherits its channel. */
#define PRIVSEP_CHANNEL_FD 3
/* The environment variable that names the channel fd ("3"). */
#define PRIVSEP_CHANNEL_ENV "PRIVSEP_FD"

#define PRIVSEP_MAGIC 0x5350u     /* bytes 'P' 'S' on a little-endian host */
#define PRIVSEP_VERSION 1u

/* Hard limits. */
#define PRIVSEP_MAX_MESSAGE 8192u  /* bytes in one datagram, header included */
#define PRIVSEP_MAX_FDS 253u       /* SCM_MAX_FD: the kernel's limit per message */
#define PRIVSEP_MAX_PATH 4096u     /* path bytes including the NUL (PATH_MAX) */
#define PRIVSEP_MAX_UNIX_PATH 108u /* unix socket path bytes including the NUL (sun_path) */
#define PRIVSEP_MAX_LOG 2048u      /* log line bytes including the NUL */
#define PRIVSEP_MAX_ERRNO 4095u    /* a REPLY error is 0 or 1...4095, as the kernel's */
#define PRIVSEP_MAX_JOB_BYTES 8160u /* opaque bytes after a JOB or RESULT struct (8192 - 24 - 8) */

enum privsep_type {
    PRIVSEP_HELLO = 1,          /* w->s  struct privsep_hello                          0 fds */
    PRIVSEP_WELCOME = 2,        /* s->w  struct privsep_welcome                        0 fds */
    PRIVSEP_OPEN = 3,           /* w->s  struct privsep_open + path                    0 fds */
    PRIVSEP_SOCKET = 4,         /* w->s  struct privsep_socket                         0 fds */
    PRIVSEP_CONNECT = 5,        /* w->s  struct privsep_address_request [+ unix path]  0 fds */
    PRIVSEP_BIND = 6,           /* w->s  struct privsep_address_request [+ unix path]  0 fds */
    PRIVSEP_REPLY = 7,          /* s->w  struct privsep_reply               reply.fd_count fds */
    PRIVSEP_VIOLATION = 8,      /* w->s  struct privsep_violation                      0 fds */
    PRIVSEP_LOG = 9,            /* w->s  struct privsep_log + message                  0 fds */
    PRIVSEP_SANDBOX_STATUS = 10, /* w->s  struct privsep_sandbox_status                0 fds */
    PRIVSEP_LISTENER = 11,      /* w->s  struct privsep_listener                       1 fd  */
    PRIVSEP_JOB = 12,           /* s->w  struct privsep_job + input bytes        job.fd_count fds */
    PRIVSEP_RESULT = 13         /* w->s  struct privsep_result + output bytes          0 fds */
    /* 14...0x7fff: reserved for this protocol's later versions.
       0x8000...0xffff: reserved for embedders' own message types. */
};

/* 24 bytes, at the start of every datagram. */
struct privsep_header {
    uint16_t magic;      /* PRIVSEP_MAGIC */
    uint16_t version;    /* PRIVSEP_VERSION */
    uint16_t type;       /* enum privsep_type */
    uint16_t flags;      /* none defined: 0 */
    uint32_t length;     /* payload bytes after this header */
    uint32_t reserved;   /* 0 */
    uint64_t request_id; /* chosen by the requester; echoed by its REPLY */
};

/* HELLO: the worker introduces itself. pid must equal the sender's pid as the kernel reports
   it with the datagram (SCM_CREDENTIALS): the worker the supervisor spawned. */
struct privsep_hello {
    uint32_t pid;
    uint32_t flags; /* none defined: 0 */
};

/* WELCOME: the supervisor lets the worker go. */
struct privsep_welcome {
    uint32_t supervisor_pid;
    uint32_t reserved; /* 0 */
    uint64_t worker_id; /* the supervisor's name for this worker, for logs */
};

/* OPEN: open an absolute path. Followed by the path (2...PRIVSEP_MAX_PATH bytes with the NUL).
   flags are open(2) flags; the supervisor vets them bit by bit and forces O_CLOEXEC.
   mode is advisory: a file the supervisor creates gets the mode its policy names. */
struct privsep_open {
    uint32_t flags;
    uint32_t mode;
};

/* SOCKET: create a socket. type may include SOCK_NONBLOCK; SOCK_CLOEXEC is forced.
   Internet stream and seqpacket sockets are refused (EACCES) whatever the policy: CONNECT
   and BIND give TCP sockets (an unbound one could listen on every interface). */
struct privsep_socket {
    int32_t domain;
    int32_t type;
    int32_t protocol;
    uint32_t reserved; /* 0 */
};

/* An address for CONNECT and BIND. family is AF_INET, AF_INET6 or AF_UNIX.
     AF_INET:  addr[0...3] the address, addr[4...15] zero, scope_id zero.
     AF_INET6: addr[0...15] the address, scope_id the interface index or zero.
     AF_UNIX:  port, addr and scope_id zero; the path follows the request
               (2...PRIVSEP_MAX_UNIX_PATH bytes with the NUL). */
struct privsep_address {
    uint16_t family;
    uint16_t port;     /* host byte order */
    uint32_t scope_id;
    uint8_t addr[16];  /* network byte order */
};

/* CONNECT / BIND: a socket of (address.family, type, protocol), connected to or bound
   at address, comes back in the REPLY. */
struct privsep_address_request {
    int32_t type;
    int32_t protocol;
    struct privsep_address address;
};

/* REPLY: the answer to the request with the same request_id.
   error == 0: success; exactly fd_count fds (0...PRIVSEP_MAX_FDS) are attached.
   error in 1...PRIVSEP_MAX_ERRNO: the errno the equivalent syscall would give; fd_count == 0. */
struct privsep_reply {
    int32_t error;
    uint32_t fd_count;
};

/* VIOLATION: the worker's seccomp filter trapped a syscall (sent from its SIGSYS handler). */
struct privsep_violation {
    int32_t syscall_nr;
    uint32_t arch;         /* AUDIT_ARCH_* of the call */
    uint64_t instruction_pointer;
    uint64_t args[6];
};

/* LOG: a line for the supervisor's log. Followed by the message (1...PRIVSEP_MAX_LOG bytes with the NUL). */
struct privsep_log {
    uint32_t level;    /* enum privsep_log_level */
    uint32_t reserved; /* 0 */
};

enum privsep_log_level {
    PRIVSEP_LOG_DEBUG = 0,
    PRIVSEP_LOG_INFO = 1,
    PRIVSEP_LOG_WARNING = 2,
    PRIVSEP_LOG_ERROR = 3
};

/* SANDBOX_STATUS: which sandbox layers the worker has applied (after lockdown). */
struct privsep_sandbox_status {
    uint32_t requested;   /* PRIVSEP_LAYER_* bits asked for */
    uint32_t active;      /* PRIVSEP_LAYER_* bits in force; a requested layer missing here is fatal */
    uint32_t landlock_abi; /* 0 if Landlock is not active */
    uint32_t reserved;    /* 0 */
};

/* LISTENER: a seccomp user-notification listener fd, for the supervisor to
   serve. Sent only when the supervisor asked for learning mode (PRIVSEP_LEARN=1
   in the worker's environment): the supervisor records each system call the
   filter did not allow and lets it run. Never used in production.
   PRIVSEP_LISTENER_INTERCEPT: sent by the privsep-intercept helper of a worker
   the supervisor spawned in intercept mode; the supervisor serves every notified
   call under the worker's policy and answers the LISTENER with a REPLY carrying
   no fd (error 0): the go-ahead to exec the program. A LISTENER whose purpose
   does not match the mode the supervisor spawned the worker in kills the worker. */
struct privsep_listener {
    uint32_t purpose;  /* PRIVSEP_LISTENER_LEARNING or PRIVSEP_LISTENER_INTERCEPT */
    uint32_t reserved; /* 0 */
};

#define PRIVSEP_LISTENER_LEARNING 1u
#define PRIVSEP_LISTENER_INTERCEPT 2u

/* JOB: work for a pool worker. Followed by the job's input bytes; carries
   exactly fd_count fds (0...PRIVSEP_MAX_FDS), typically files the supervisor
   opened for the job. Larger inputs travel as fds, never as more JOBs. */
struct privsep_job {
    uint32_t fd_count;
    uint32_t reserved; /* 0 */
};

/* RESULT: a pool worker's answer to the JOB with the same request_id.
   Followed by output bytes. Output longer than one datagram is sent as
   several RESULTs: each but the last has PRIVSEP_RESULT_MORE in flags and
   status 0; the last carries the status. status 0: the job succeeded;
   1...0x7fffffff: the worker's own failure code (input rejected, say), with
   the output bytes as its explanation. The supervisor caps the total output. */
struct privsep_result {
    int32_t status;
    uint32_t flags;    /* PRIVSEP_RESULT_MORE or 0 */
};
#define PRIVSEP_RESULT_MORE 1u

#define PRIVSEP_LAYER_NO_NEW_PRIVS 0x01u
#define PRIVSEP_LAYER_SECCOMP 0x02u
#define PRIVSEP_LAYER_LANDLOCK 0x04u
#define PRIVSEP_LAYER_USER_NAMESPACE 0x08u
#define PRIVSEP_LAYER_NET_NAMESPACE 0x10u
#define PRIVSEP_LAYER_RLIMITS 0x20u
#define PRIVSEP_LAYER_LANDLOCK_SCOPES 0x40u /* signals and abstract unix sockets scoped (Landlock ABI 6+) */
#define PRIVSEP_LAYER_ALL 0x7fu

#endif /* PRIVSEP_PROTOCOL_H */
