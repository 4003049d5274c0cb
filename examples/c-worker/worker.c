/* A worker written in C with nothing but the protocol header: it says HELLO,
   waits for WELCOME, asks the supervisor to OPEN each file named on its command
   line, and prints the first line of each (or the errno it got back).

   cc -I Sources/CPrivsepProtocol/include examples/c-worker/worker.c -o c-worker
   privsep run --policy policy.json -- ./c-worker /etc/hostname */
#define _GNU_SOURCE
#include <errno.h>
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
