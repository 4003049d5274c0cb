/* A worker written in C with the protocol header and libseccomp: it says HELLO,
   waits for WELCOME, locks itself down (root given up, no_new_privs, a seccomp
   filter with no open, socket or exec) and reports it in SANDBOX_STATUS, which
   the policy's "require" holds it to; then it asks the supervisor to OPEN each
   file named on its command line, and prints the first line of each (or the
   errno it got back).

   cc -I Sources/CPrivsepProtocol/include examples/c-worker/worker.c -lseccomp -o c-worker
   privsep run --policy policy.json -- ./c-worker /etc/hostname */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <seccomp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "privsep_protocol.h"

static const int channel = PRIVSEP_CHANNEL_FD;

static void send_message(uint16_t type, uint64_t request_id, const void *payload, size_t length,
                         const char *text) {
    unsigned char buffer[PRIVSEP_MAX_MESSAGE];
    size_t text_length = text ? strlen(text) + 1 : 0;
    struct privsep_header header = { PRIVSEP_MAGIC, PRIVSEP_VERSION, type, 0,
                                     (uint32_t)(length + text_length), 0, request_id };
    if (sizeof header + length + text_length > sizeof buffer) { fprintf(stderr, "message too long\n"); exit(2); }
    memcpy(buffer, &header, sizeof header);
    memcpy(buffer + sizeof header, payload, length);
    if (text) memcpy(buffer + sizeof header + length, text, text_length);
    if (send(channel, buffer, sizeof header + length + text_length, MSG_NOSIGNAL) < 0) { perror("send"); exit(2); }
}

/* Receives one message; returns its header and payload, and an fd if one came. */
static struct privsep_header receive_message(void *payload, size_t capacity, int *fd) {
    unsigned char buffer[PRIVSEP_MAX_MESSAGE];
    union { struct cmsghdr align; unsigned char bytes[CMSG_SPACE(sizeof(int))]; } control;
    struct iovec iov = { buffer, sizeof buffer };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.bytes, .msg_controllen = sizeof control.bytes };
    ssize_t n = recvmsg(channel, &message, MSG_CMSG_CLOEXEC);
    struct privsep_header header;
    if (n < (ssize_t)sizeof header || (message.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) { fprintf(stderr, "bad message\n"); exit(2); }
    memcpy(&header, buffer, sizeof header);
    if (header.magic != PRIVSEP_MAGIC || header.version != PRIVSEP_VERSION || header.length != n - sizeof header
        || header.length > capacity) { fprintf(stderr, "malformed message\n"); exit(2); }
    memcpy(payload, buffer + sizeof header, header.length);
    *fd = -1;
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&message);
    if (cmsg && cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS) memcpy(fd, CMSG_DATA(cmsg), sizeof(int));
    return header;
}

static void fail(const char *what) { fprintf(stderr, "c-worker: %s: %s\n", what, strerror(errno)); exit(3); }

/* Everything the loop below calls after the lockdown, and nothing else. */
static const char *const allowed[] = {
    "read", "write", "close", "fstat", "newfstatat", "brk", "mmap", "munmap",
    "sendto", "sendmsg", "recvmsg", "exit_group", "exit", "rt_sigreturn",
};

static void lock_down(void) {
    /* Spawned by a root supervisor, it is root until it gives that up: nobody. Changing
       credentials clears the death signal, so it is set again. */
    if (getuid() == 0) {
        if (setgroups(0, NULL) != 0) fail("setgroups");
        if (setresgid(65534, 65534, 65534) != 0) fail("setresgid");
        if (setresuid(65534, 65534, 65534) != 0) fail("setresuid");
        if (setresuid(0, 0, 0) == 0) { fprintf(stderr, "c-worker: root could be regained\n"); exit(3); }
        if (prctl(PR_SET_PDEATHSIG, 9) != 0) fail("PR_SET_PDEATHSIG");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) fail("PR_SET_NO_NEW_PRIVS");
    scmp_filter_ctx filter = seccomp_init(SCMP_ACT_KILL_PROCESS);
    if (!filter) { fprintf(stderr, "c-worker: seccomp_init failed\n"); exit(3); }
    if (seccomp_attr_set(filter, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS) != 0) { fprintf(stderr, "c-worker: seccomp_attr_set failed\n"); exit(3); }
    for (size_t i = 0; i < sizeof allowed / sizeof allowed[0]; i++) {
        int number = seccomp_syscall_resolve_name(allowed[i]);
        if (number != __NR_SCMP_ERROR && seccomp_rule_add(filter, SCMP_ACT_ALLOW, number, 0) != 0) {
            fprintf(stderr, "c-worker: seccomp_rule_add %s failed\n", allowed[i]);
            exit(3);
        }
    }
    int loaded = seccomp_load(filter);
    seccomp_release(filter);
    if (loaded != 0) { fprintf(stderr, "c-worker: seccomp_load failed: %s\n", strerror(-loaded)); exit(3); }
    struct privsep_sandbox_status status = { PRIVSEP_LAYER_NO_NEW_PRIVS | PRIVSEP_LAYER_SECCOMP,
                                             PRIVSEP_LAYER_NO_NEW_PRIVS | PRIVSEP_LAYER_SECCOMP, 0, 0 };
    send_message(PRIVSEP_SANDBOX_STATUS, 0, &status, sizeof status, NULL);
}

int main(int argc, char **argv) {
    /* Die with the supervisor, and check it did not die before this line. */
    pid_t parent = getppid();
    prctl(PR_SET_PDEATHSIG, 9);
    if (getppid() != parent) return 1;

    struct privsep_hello hello = { (uint32_t)getpid(), 0 };
    send_message(PRIVSEP_HELLO, 0, &hello, sizeof hello, NULL);
    struct privsep_welcome welcome;
    int fd;
    struct privsep_header header = receive_message(&welcome, sizeof welcome, &fd);
    if (header.type != PRIVSEP_WELCOME) { fprintf(stderr, "expected WELCOME\n"); return 2; }
    printf("c-worker: welcomed as worker %llu by supervisor %u\n", (unsigned long long)welcome.worker_id, welcome.supervisor_pid);
    lock_down();

    for (int i = 1; i < argc; i++) {
        struct privsep_open request = { 0 /* O_RDONLY */, 0 };
        send_message(PRIVSEP_OPEN, (uint64_t)i, &request, sizeof request, argv[i]);
        struct privsep_reply reply;
        header = receive_message(&reply, sizeof reply, &fd);
        if (header.type != PRIVSEP_REPLY || header.request_id != (uint64_t)i) { fprintf(stderr, "unexpected reply\n"); return 2; }
        if (reply.error != 0) {
            printf("c-worker: %s: refused: %s\n", argv[i], strerror(reply.error));
            continue;
        }
        char line[256] = { 0 };
        ssize_t n = read(fd, line, sizeof line - 1);
        close(fd);
        char *newline = strchr(line, '\n');
        if (newline) *newline = 0;
        printf("c-worker: %s: %s\n", argv[i], n > 0 ? line : "(empty)");
    }
    return 0;
}
