/* The C reference worker for privsep-bench's start-up row: the same steps as a
   locked-down Swift worker (HELLO, WELCOME, no_new_privs, a libseccomp filter
   with the same baseline size, SANDBOX_STATUS), then exit. Uses only
   privsep_protocol.h: the protocol stands on its own. */
#define _GNU_SOURCE
#include <errno.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "privsep_protocol.h"

static int send_message(int fd, uint16_t type, const void *payload, uint32_t length) {
    unsigned char buffer[sizeof(struct privsep_header) + 64];
    struct privsep_header header = { PRIVSEP_MAGIC, PRIVSEP_VERSION, type, 0, length, 0, 0 };
    memcpy(buffer, &header, sizeof header);
    memcpy(buffer + sizeof header, payload, length);
    return send(fd, buffer, sizeof header + length, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static const char *const allowed[] = {
    "read", "write", "readv", "writev", "pread64", "pwrite64", "close", "fstat", "newfstatat", "lseek", "fcntl",
    "dup", "dup2", "dup3", "mmap", "munmap", "mprotect", "mremap", "madvise", "brk", "rt_sigaction",
    "rt_sigprocmask", "rt_sigreturn", "sigaltstack", "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid",
    "getegid", "futex", "set_robust_list", "rseq", "set_tid_address", "sched_yield", "exit", "exit_group",
    "clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "getrandom", "uname", "arch_prctl",
    "poll", "ppoll", "epoll_create1", "epoll_ctl", "epoll_wait", "pipe2", "sendmsg", "recvmsg", "sendto",
    "recvfrom", "shutdown", "getsockopt", "getsockname", "getpeername",
};

int main(void) {
    const int fd = PRIVSEP_CHANNEL_FD;
    if (prctl(PR_SET_PDEATHSIG, 9) != 0) return 10;
    struct privsep_hello hello = { (uint32_t)getpid(), 0 };
    if (send_message(fd, PRIVSEP_HELLO, &hello, sizeof hello) != 0) return 11;
    unsigned char reply[PRIVSEP_MAX_MESSAGE];
    ssize_t n = recv(fd, reply, sizeof reply, MSG_CMSG_CLOEXEC);
    if (n != (ssize_t)(sizeof(struct privsep_header) + sizeof(struct privsep_welcome))) return 12;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 13;
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (!filter) return 14;
    seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
    seccomp_attr_set(filter, SCMP_FLTATR_CTL_TSYNC, 1);
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr != __NR_SCMP_ERROR && seccomp_rule_add(filter, SCMP_ACT_ALLOW, nr, 0) != 0) return 15;
    }
    seccomp_rule_add(filter, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
    if (seccomp_load(filter) != 0) return 16;
    seccomp_release(filter);
    struct privsep_sandbox_status status = { PRIVSEP_LAYER_NO_NEW_PRIVS | PRIVSEP_LAYER_SECCOMP,
                                             PRIVSEP_LAYER_NO_NEW_PRIVS | PRIVSEP_LAYER_SECCOMP, 0, 0 };
    if (send_message(fd, PRIVSEP_SANDBOX_STATUS, &status, sizeof status) != 0) return 17;
    return 0;
}
