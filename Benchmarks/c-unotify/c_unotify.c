/*
 * c_unotify.c: the intercept-mode benchmark's C side, built by privsep-bench with cc.
 *
 *   c_unotify loop N PATH        N x (openat(AT_FDCWD, PATH) + close), timed one by one after
 *                                N/10 warm-up; prints "MEDIAN_US P99_US". This is the program
 *                                privsep runs intercepted, and the target of the reference below.
 *   c_unotify reference N PATH   the reference: a minimal C seccomp user-notification broker.
 *                                A forked child loads a filter that sends openat to a listener
 *                                (NEW_LISTENER | WAIT_KILLABLE_RECV, as privsep does), passes it
 *                                over a seqpacket pair and runs the loop; this process serves each
 *                                notification: RECV, path read with process_vm_readv (to the end
 *                                of its page), ID_VALID, openat beneath the directory's O_PATH fd,
 *                                ADDFD with SECCOMP_ADDFD_FLAG_SEND. No policy, no audit.
 *   c_unotify resolved N PATH    the same broker doing the kernel work privsep's policy asks for:
 *                                openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS |
 *                                RESOLVE_NO_SYMLINKS and an fstat of what was opened (its type).
 *   c_unotify waiting N PATH     resolved, receiving without a poll before each RECV: a RECV
 *                                that blocks returns once the filter is unused (Linux 6.11),
 *                                as privsep's serving thread receives there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static int compare(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int open_loop(const char *path, int count) {
    int warmup = count / 10 > 100 ? count / 10 : 100;
    uint64_t *samples = calloc((size_t)count, sizeof *samples);
    if (!samples) return 1;
    for (int i = 0; i < warmup + count; i++) {
        uint64_t start = now_ns();
        int fd = openat(AT_FDCWD, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) { dprintf(2, "c_unotify: open %s: %s\n", path, strerror(errno)); return 1; }
        close(fd);
        if (i >= warmup) samples[i - warmup] = now_ns() - start;
    }
    qsort(samples, (size_t)count, sizeof *samples, compare);
    int p99 = count * 99 / 100 < count - 1 ? count * 99 / 100 : count - 1;
    dprintf(1, "%.3f %.3f\n", samples[count / 2] / 1000.0, samples[p99] / 1000.0);
    return 0;
}

static int reference(const char *path, int count, int resolved, int waiting) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return 1;
    const char *slash = strrchr(path, '/');
    if (!slash) return 1;
    char directory_path[4096];
    snprintf(directory_path, sizeof directory_path, "%.*s", (int)(slash - path), path);
    int directory = open(directory_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (directory < 0) return 1;
    pid_t child = fork();
    if (child < 0) return 1;
    if (child == 0) {
        close(pair[0]);
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_openat, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog program = { sizeof filter / sizeof filter[0], filter };
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(2);
        int listener = (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER,
                                    SECCOMP_FILTER_FLAG_NEW_LISTENER | (1UL << 5) /* WAIT_KILLABLE_RECV */, &program);
        if (listener < 0) _exit(3);
        union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
        memset(&control, 0, sizeof control);
        char byte = 1;
        struct iovec iov = { &byte, 1 };
        struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
        struct cmsghdr *c = CMSG_FIRSTHDR(&message);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &listener, sizeof(int));
        if (sendmsg(pair[1], &message, 0) != 1) _exit(4);
        close(listener);
        if (read(pair[1], &byte, 1) != 1) _exit(5); /* the go-ahead */
        _exit(open_loop(path, count));
    }
    close(pair[1]);
    union { struct cmsghdr align; unsigned char buf[CMSG_SPACE(sizeof(int))]; } control;
    char byte;
    struct iovec iov = { &byte, 1 };
    struct msghdr message = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf };
    if (recvmsg(pair[0], &message, MSG_CMSG_CLOEXEC) != 1) return 1;
    int listener;
    memcpy(&listener, CMSG_DATA(CMSG_FIRSTHDR(&message)), sizeof(int));
    if (write(pair[0], &byte, 1) != 1) return 1;
    char buffer[4096];
    for (;;) {
        if (!waiting) {
            struct pollfd poller = { listener, POLLIN, 0 };
            if (poll(&poller, 1, -1) < 0) { if (errno == EINTR) continue; return 1; }
            if (!(poller.revents & POLLIN)) break; /* POLLHUP: the child is gone */
        }
        struct seccomp_notif request;
        memset(&request, 0, sizeof request);
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &request) != 0) {
            if (waiting) { /* ENOENT: the filter is unused (POLLHUP), or the caller died */
                struct pollfd poller = { listener, POLLIN, 0 };
                if (poll(&poller, 1, -1) < 0 || !(poller.revents & POLLIN)) break;
            }
            continue;
        }
        size_t want = 4096 - (request.data.args[1] % 4096);
        struct iovec local = { buffer, want }, remote = { (void *)request.data.args[1], want };
        ssize_t got = process_vm_readv((pid_t)request.pid, &local, 1, &remote, 1, 0);
        char *nul = got > 0 ? memchr(buffer, 0, (size_t)got) : NULL;
        struct seccomp_notif_resp response;
        memset(&response, 0, sizeof response);
        response.id = request.id;
        if (!nul) {
            response.error = -EFAULT;
            ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response);
            continue;
        }
        if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &request.id) != 0) continue;
        const char *name = strrchr(buffer, '/');
        int fd;
        if (resolved) {
            struct open_how how = { .flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK,
                                    .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_SYMLINKS };
            fd = (int)syscall(SYS_openat2, directory, name ? name + 1 : buffer, &how, sizeof how);
            struct stat info;
            /* fstat(2) itself, as privsep calls it (glibc's fstat is newfstatat). */
            if (fd >= 0 && (syscall(SYS_fstat, fd, &info) != 0 || !S_ISREG(info.st_mode))) { close(fd); fd = -1; errno = EACCES; }
        } else {
            fd = openat(directory, name ? name + 1 : buffer, O_RDONLY | O_CLOEXEC);
        }
        if (fd < 0) {
            response.error = -errno;
            ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response);
            continue;
        }
        struct seccomp_notif_addfd addfd;
        memset(&addfd, 0, sizeof addfd);
        addfd.id = request.id;
        addfd.flags = SECCOMP_ADDFD_FLAG_SEND;
        addfd.srcfd = (uint32_t)fd;
        addfd.newfd_flags = O_CLOEXEC;
        ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
        close(fd);
    }
    int status = 0;
    while (waitpid(child, &status, 0) < 0 && errno == EINTR) {}
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(int argc, char **argv) {
    if (argc != 4) { dprintf(2, "usage: c_unotify loop|reference|resolved|waiting N PATH\n"); return 2; }
    int count = atoi(argv[2]);
    if (count <= 0) return 2;
    if (strcmp(argv[1], "loop") == 0) return open_loop(argv[3], count);
    if (strcmp(argv[1], "reference") == 0) return reference(argv[3], count, 0, 0);
    if (strcmp(argv[1], "resolved") == 0) return reference(argv[3], count, 1, 0);
    if (strcmp(argv[1], "waiting") == 0) return reference(argv[3], count, 1, 1);
    return 2;
}
