#define _GNU_SOURCE
#include "cbench.h"

#include <errno.h>
#include <sched.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

pid_t cbench_spawn(const char *path, char *const *argv, int channel_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    if (channel_fd == 3) {
        /* dup2(3, 3) would be a no-op that leaves close-on-exec set: go via a spare slot. */
        posix_spawn_file_actions_adddup2(&actions, 3, 4);
        posix_spawn_file_actions_adddup2(&actions, 4, 3);
    } else {
        posix_spawn_file_actions_adddup2(&actions, channel_fd, 3);
    }
    posix_spawn_file_actions_addclosefrom_np(&actions, 4);
    pid_t pid = -1;
    int rc = posix_spawn(&pid, path, &actions, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) { errno = rc; return -1; }
    return pid;
}

int cbench_pin(int cpu) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (cpu >= 0) {
        CPU_SET(cpu, &set);
    } else {
        long n = sysconf(_SC_NPROCESSORS_CONF);
        for (long i = 0; i < n && i < CPU_SETSIZE; i++) CPU_SET(i, &set);
    }
    return sched_setaffinity(0, sizeof set, &set);
}

uint64_t cbench_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int cbench_echo_loop(int fd) {
    unsigned char data[8192];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(253 * sizeof(int))]; } control;
    unsigned char reply[16] = {0};
    for (;;) {
        struct iovec iov = { data, sizeof data };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                              .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        if (n == 0) return 0;
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
            if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
                int count = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
                int fds[253];
                memcpy(fds, CMSG_DATA(c), (size_t)count * sizeof(int));
                for (int i = 0; i < count; i++) close(fds[i]);
            }
        }
        struct iovec out = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &out, .msg_iovlen = 1 };
        while (sendmsg(fd, &rmsg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
    }
}

int cbench_round_trips(int fd, int fd_count, int fd_to_send, int iterations, uint64_t *out_ns) {
    unsigned char request[16] = {1};
    unsigned char reply[64];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(253 * sizeof(int))]; } control;
    memset(&control, 0, sizeof control);
    if (fd_count > 0) {
        struct msghdr tmp = { .msg_control = control.buf, .msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int)) };
        struct cmsghdr *c = CMSG_FIRSTHDR(&tmp);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)fd_count * sizeof(int));
        int *data = (int *)CMSG_DATA(c);
        for (int i = 0; i < fd_count; i++) data[i] = fd_to_send;
    }
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        struct iovec iov = { request, sizeof request };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        if (fd_count > 0) {
            msg.msg_control = control.buf;
            msg.msg_controllen = CMSG_SPACE((size_t)fd_count * sizeof(int));
        }
        while (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        struct iovec riov = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1 };
        for (;;) {
            ssize_t n = recvmsg(fd, &rmsg, MSG_CMSG_CLOEXEC);
            if (n >= 0) break;
            if (errno != EINTR) return -1;
        }
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}

int cbench_reply_fd_loop(int fd, int held_fd) {
    unsigned char data[8192];
    unsigned char reply[32] = {0};
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    for (;;) {
        struct iovec iov = { data, sizeof data };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        ssize_t n = recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0) { if (errno == EINTR) continue; return -1; }
        if (n == 0) return 0;
        memset(&control, 0, sizeof control);
        struct iovec out = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &out, .msg_iovlen = 1,
                               .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&rmsg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &held_fd, sizeof(int));
        while (sendmsg(fd, &rmsg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
    }
}

int cbench_request_fd_round_trips(int fd, int iterations, uint64_t *out_ns) {
    unsigned char request[40] = {3};
    unsigned char reply[64];
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    for (int i = 0; i < iterations; i++) {
        uint64_t start = cbench_now_ns();
        struct iovec iov = { request, sizeof request };
        struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
        while (sendmsg(fd, &msg, MSG_NOSIGNAL) < 0) { if (errno != EINTR) return -1; }
        struct iovec riov = { reply, sizeof reply };
        struct msghdr rmsg = { .msg_iov = &riov, .msg_iovlen = 1,
                               .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        for (;;) {
            ssize_t n = recvmsg(fd, &rmsg, MSG_CMSG_CLOEXEC);
            if (n >= 0) break;
            if (errno != EINTR) return -1;
        }
        struct cmsghdr *c = CMSG_FIRSTHDR(&rmsg);
        if (c && c->cmsg_type == SCM_RIGHTS) {
            int received;
            memcpy(&received, CMSG_DATA(c), sizeof(int));
            close(received);
        }
        out_ns[i] = cbench_now_ns() - start;
    }
    return 0;
}
