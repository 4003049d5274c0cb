#define _GNU_SOURCE
#include "privsep_attacks.h"
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stddef.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <unistd.h>

static long raw(long nr, long a, long b, long c, long d, long e, long f) {
    long r = syscall(nr, a, b, c, d, e, f);
    return r < 0 ? -errno : r;
}

long attack_openat(const char *path) { return raw(SYS_openat, AT_FDCWD, (long)path, O_RDONLY | O_CLOEXEC, 0, 0, 0); }
long attack_openat2(const char *path) {
    struct open_how how = { .flags = O_RDONLY | O_CLOEXEC };
    return raw(SYS_openat2, AT_FDCWD, (long)path, (long)&how, sizeof how, 0, 0);
}
long attack_execve(const char *path) {
    char *argv[] = { (char *)path, NULL };
    char *envp[] = { NULL };
    return raw(SYS_execve, (long)path, (long)argv, (long)envp, 0, 0, 0);
}
long attack_socket_inet(void) { return raw(SYS_socket, 2, 1, 0, 0, 0, 0); }
long attack_ptrace_attach(int pid) { return raw(SYS_ptrace, 16 /* PTRACE_ATTACH */, pid, 0, 0, 0, 0); }

long attack_i386_getpid(void) {
#if defined(__x86_64__)
    long result = 20; /* __NR_getpid on i386 */
    __asm__ volatile ("int $0x80" : "+a"(result) : : "memory");
    return result;
#else
    return -ENOSYS;
#endif
}

long attack_x32_getpid(void) { return raw(0x40000000L | 39L, 0, 0, 0, 0, 0, 0); }

long attack_clone3(void) {
    /* A harmless probe: an invalid size. With the filter it never reaches the kernel. */
    return raw(SYS_clone3, 0, 0, 0, 0, 0, 0);
}

static void *thread_body(void *arg) { return arg; }
int attack_start_thread(void) {
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, thread_body, NULL);
    if (rc != 0) return rc;
    return pthread_join(thread, NULL);
}

long attack_unshare_user(void) { return raw(SYS_unshare, 0x10000000 /* CLONE_NEWUSER */, 0, 0, 0, 0, 0); }
long attack_seccomp_new_filter(void) { return raw(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, 0, 0, 0, 0); }
long attack_io_uring_setup(void) { return raw(SYS_io_uring_setup, 1, 0, 0, 0, 0, 0); }
long attack_memfd_execveat(void) {
    long fd = raw(SYS_memfd_create, (long)"x", 0, 0, 0, 0, 0);
    if (fd < 0) return fd;
    char *argv[] = { "x", NULL };
    char *envp[] = { NULL };
    return raw(SYS_execveat, fd, (long)"", (long)argv, (long)envp, AT_EMPTY_PATH, 0);
}
long attack_prctl_set_dumpable(void) { return raw(SYS_prctl, 4 /* PR_SET_DUMPABLE */, 1, 0, 0, 0, 0); }
long attack_fork(void) {
    long r = raw(SYS_clone, 17 /* SIGCHLD */, 0, 0, 0, 0, 0);
    if (r == 0) syscall(SYS_exit_group, 0);
    return r > 0 ? 0 : r;
}

long attack_fcntl_clear_append(void) { return raw(SYS_fcntl, 1, F_SETFL, 0, 0, 0, 0); }
long attack_fcntl_keep_append(void) { return raw(SYS_fcntl, 1, F_SETFL, O_APPEND, 0, 0, 0); }
long attack_fcntl_setown(void) { return raw(SYS_fcntl, 1, F_SETOWN, 1, 0, 0, 0); }
long attack_fcntl_async(void) { return raw(SYS_fcntl, 1, F_SETFL, O_APPEND | O_ASYNC, 0, 0, 0); }
/* An empty range: harmless whether or not the filter stops it (the kernel returns 0). */
long attack_madvise_hwpoison(void) { return raw(SYS_madvise, 0, 0, 100 /* MADV_HWPOISON */, 0, 0, 0); }
long attack_madvise_guard(void) { return raw(SYS_madvise, 0, 0, 102 /* MADV_GUARD_INSTALL */, 0, 0, 0); }
long attack_sendto_address(void) {
    static const char address[16] = { 2, 0, 0, 80, 127, 0, 0, 1 };
    return raw(SYS_sendto, 3, (long)"x", 1, 0, (long)address, 16);
}
long attack_sendto_fastopen(void) { return raw(SYS_sendto, 3, (long)"x", 1, 0x20000000, 0, 0); }
long attack_prlimit_other(void) {
    long limits[2];
    return raw(SYS_prlimit64, 1, 7 /* RLIMIT_NOFILE */, 0, (long)limits, 0, 0);
}

long attack_leave_process_group(long results[3]) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
    long child = raw(SYS_clone, 17 /* SIGCHLD */, 0, 0, 0, 0, 0);
    if (child < 0) return child;
    if (child == 0) {
        long tried[3];
        tried[0] = raw(SYS_setsid, 0, 0, 0, 0, 0, 0);
        tried[1] = raw(SYS_setpgid, 0, 0, 0, 0, 0, 0);
        /* A child of the supervisor's own, if the filter let it. */
        tried[2] = raw(SYS_clone, 0x8000 /* CLONE_PARENT */ | 17, 0, 0, 0, 0, 0);
        if (tried[2] != 0) (void)!write(fds[1], tried, sizeof tried);
        /* Holding no stdio, so nothing waiting for the worker's output waits for it. */
        close(0);
        close(1);
        close(2);
        for (;;) sleep(1000);
    }
    close(fds[1]);
    long got = read(fds[0], results, 3 * sizeof(long));
    close(fds[0]);
    return got == 3 * sizeof(long) ? child : -EIO;
}

long attack_kill_parent(void) { return raw(SYS_kill, getppid(), 23 /* SIGURG: ignored by default */, 0, 0, 0, 0); }
/* Priority and affinity, each set to what it already is (harmless if it went through):
   of the supervisor (refused), of every process of the user (refused), of the worker itself. */
static long renice(int which, int who) {
    long current = raw(SYS_getpriority, which, who, 0, 0, 0, 0); /* 20 - nice, or -errno */
    if (current < 0) return current;
    return raw(SYS_setpriority, which, who, 20 - current, 0, 0, 0);
}
static long pin(int pid) {
    unsigned long mask[16];
    long size = raw(SYS_sched_getaffinity, pid, sizeof mask, (long)mask, 0, 0, 0);
    if (size < 0) return size;
    return raw(SYS_sched_setaffinity, pid, size, (long)mask, 0, 0, 0);
}
long attack_renice_parent(void) { return renice(0 /* PRIO_PROCESS */, getppid()); }
long attack_renice_user(void) { return renice(2 /* PRIO_USER */, 0); }
long attack_renice_self(void) { return renice(0, 0); }
long attack_pin_parent(void) { return pin(getppid()); }
long attack_pin_self(void) { return pin(0); }
long attack_fiosetown(void) {
    int owner = getppid();
    return raw(SYS_ioctl, 3, 0x8901 /* FIOSETOWN */, (long)&owner, 0, 0, 0);
}
long attack_tcgets(void) {
    char termios[64];
    return raw(SYS_ioctl, 1, 0x5401 /* TCGETS */, (long)termios, 0, 0, 0);
}
long attack_openat_write(const char *path) { return raw(SYS_openat, AT_FDCWD, (long)path, O_WRONLY | O_CLOEXEC, 0, 0, 0); }
long attack_tcgets2(void) {
    char termios2[64];
    return raw(SYS_ioctl, 1, 0x802C542A /* TCGETS2 */, (long)termios2, 0, 0, 0);
}
long attack_unknown_syscalls(long count) {
    long failed = 0;
    for (long i = 0; i < count; i++) {
        if (raw(1000 + i, 0, 0, 0, 0, 0, 0) == -ENOSYS) failed++;
    }
    return failed;
}
long attack_escape_and_call(long pause_seconds) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) return -errno;
    long child = raw(SYS_clone, 17 /* SIGCHLD */, 0, 0, 0, 0, 0);
    if (child != 0) {
        /* Returns once the child has left the group, so the worker cannot end first. */
        char left;
        close(fds[1]);
        long got = read(fds[0], &left, 1);
        close(fds[0]);
        return got == 1 ? child : -EIO;
    }
    raw(SYS_setsid, 0, 0, 0, 0, 0, 0);
    (void)!write(fds[1], "x", 1);
    close(fds[0]);
    close(fds[1]);
    close(0);
    close(2);
    sleep((unsigned)pause_seconds);
    for (long i = 0; i < 2000; i++) {
        long fd = raw(SYS_socket, 1 /* AF_UNIX */, 1, 0, 0, 0, 0);
        if (fd == -ENOSYS) {
            (void)!write(1, "escaped enosys\n", 15);
            sleep(30); /* still alive when the test looks */
            break;
        }
        if (fd >= 0) close((int)fd);
        usleep(10000);
    }
    syscall(SYS_exit_group, 0);
    return 0;
}

long attack_connect_tcp_loopback(int port) {
    long fd = raw(SYS_socket, AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0, 0, 0, 0);
    if (fd < 0) return fd;
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                   .sin_addr = { .s_addr = htonl(INADDR_LOOPBACK) } };
    long r = raw(SYS_connect, fd, (long)&address, sizeof address, 0, 0, 0);
    close((int)fd);
    return r;
}

/* The abstract address `name` (without its leading NUL) and its length. */
static socklen_t abstract_address(struct sockaddr_un *address, const char *name) {
    size_t length = strlen(name);
    if (length + 1 > sizeof address->sun_path) return 0;
    memset(address, 0, sizeof *address);
    address->sun_family = AF_UNIX;
    memcpy(address->sun_path + 1, name, length);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + length);
}

long attack_connect_abstract(const char *name) {
    struct sockaddr_un address;
    socklen_t size = abstract_address(&address, name);
    if (size == 0) return -ENAMETOOLONG;
    long fd = raw(SYS_socket, AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, 0, 0, 0);
    if (fd < 0) return fd;
    long r = raw(SYS_connect, fd, (long)&address, size, 0, 0, 0);
    close((int)fd);
    return r;
}

int privsep_selftest_listen_abstract(const char *name) {
    struct sockaddr_un address;
    socklen_t size = abstract_address(&address, name);
    if (size == 0) { errno = ENAMETOOLONG; return -1; }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (bind(fd, (struct sockaddr *)&address, size) != 0 || listen(fd, 8) != 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

static void *sleep_for_ever(void *unused) {
    (void)unused;
    for (;;) pause();
    return NULL;
}

long attack_filter_one_thread_of_two(void) {
    pthread_t thread;
    int rc = pthread_create(&thread, NULL, sleep_for_ever, NULL);
    if (rc != 0) return -rc;
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return -errno;
    struct sock_filter allow = BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
    struct sock_fprog program = { .len = 1, .filter = &allow };
    return raw(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, (long)&program, 0, 0, 0);
}
