/*
 * privsep_shims.h: what Swift cannot import from C on Linux, as thin functions.
 *
 * Macros (CMSG_*, W*), raw syscalls without a usable libc wrapper, and a few
 * constants that Glibc's module map hides or mistypes. No logic lives here:
 * every function is one call or one expression, but for the futex lock at the
 * end. Return values follow the C convention (-1 and errno); the Swift side
 * turns them into typed errors.
 */
#ifndef PRIVSEP_SHIMS_H
#define PRIVSEP_SHIMS_H

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/vfs.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <pthread.h>
#include <time.h>

#pragma clang assume_nonnull begin

/* ---- constants ---- */

static const int privsep_SOCK_STREAM = SOCK_STREAM;
static const int privsep_SOCK_DGRAM = SOCK_DGRAM;
static const int privsep_SOCK_SEQPACKET = SOCK_SEQPACKET;
static const int privsep_SOCK_CLOEXEC = SOCK_CLOEXEC;
static const int privsep_SOCK_NONBLOCK = SOCK_NONBLOCK;
static const int privsep_MSG_NOSIGNAL = MSG_NOSIGNAL;
static const int privsep_MSG_CMSG_CLOEXEC = MSG_CMSG_CLOEXEC;
static const int privsep_MSG_DONTWAIT = MSG_DONTWAIT;
static const int privsep_MSG_TRUNC = MSG_TRUNC;
static const int privsep_MSG_CTRUNC = MSG_CTRUNC;
static const int privsep_MSG_EOR = MSG_EOR;
static const int privsep_SCM_RIGHTS = SCM_RIGHTS;
static const int privsep_SCM_CREDENTIALS = 0x02; /* hidden without _GNU_SOURCE */
/* Linux 6.5+; older uapi headers lack them. */
static const int privsep_SO_PEERPIDFD = 77;
static const int privsep_SCM_PIDFD = 0x04;
/* Linux 6.16+: off, the kernel refuses SCM_RIGHTS sent to the socket (EPERM to the sender). */
static const int privsep_SO_PASSRIGHTS = 83;
/* The kernel's SCM_MAX_FD. */
static const int privsep_SCM_MAX_FD = 253;
/* Hidden without _GNU_SOURCE, or (O_LARGEFILE) not what the kernel sets: the kernel's
   values, some of which differ on arm64. shims.c checks them against <fcntl.h>. */
static const int privsep_O_PATH = 010000000;
static const int privsep_O_NOATIME = 01000000;
#if defined(__aarch64__)
static const int privsep_O_TMPFILE = 020040000; /* __O_TMPFILE | O_DIRECTORY */
static const int privsep_O_DIRECT = 0200000;
static const int privsep_O_LARGEFILE_KERNEL = 0400000;
#else
static const int privsep_O_TMPFILE = 020200000; /* __O_TMPFILE | O_DIRECTORY */
static const int privsep_O_DIRECT = 040000;
static const int privsep_O_LARGEFILE_KERNEL = 0100000;
#endif
static const unsigned long long privsep_RESOLVE_BENEATH = RESOLVE_BENEATH;
static const unsigned long long privsep_RESOLVE_NO_SYMLINKS = RESOLVE_NO_SYMLINKS;
static const unsigned long long privsep_RESOLVE_NO_MAGICLINKS = RESOLVE_NO_MAGICLINKS;
static const unsigned long long privsep_RESOLVE_NO_XDEV = RESOLVE_NO_XDEV;

/* struct ucred without _GNU_SOURCE: the same layout, for SO_PEERCRED. */
struct privsep_peer_credentials {
    int32_t pid;
    uint32_t uid;
    uint32_t gid;
};

/* ---- control messages ---- */

static inline size_t privsep_cmsg_space(size_t data_length) { return CMSG_SPACE(data_length); }
static inline size_t privsep_cmsg_len(size_t data_length) { return CMSG_LEN(data_length); }
static inline struct cmsghdr *_Nullable privsep_cmsg_firsthdr(struct msghdr *message) {
    return CMSG_FIRSTHDR(message);
}
/* No CMSG_NXTHDR: glibc's is a call into libc; SeqpacketSocket walks received control
   messages in Swift. */
static inline unsigned char *privsep_cmsg_data(struct cmsghdr *cmsg) { return CMSG_DATA(cmsg); }

/* ---- raw syscalls ---- */

static inline int privsep_pidfd_open(pid_t pid, unsigned int flags) {
    return (int)syscall(SYS_pidfd_open, pid, flags);
}
static inline int privsep_pidfd_send_signal(int pidfd, int sig, unsigned int flags) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, flags);
}
static inline int privsep_openat2(int dirfd, const char *path, struct open_how *how, size_t size) {
    return (int)syscall(SYS_openat2, dirfd, path, how, size);
}
/* fstat(2) itself: glibc's fstat is newfstatat(fd, "", AT_EMPTY_PATH), which the kernel
   first checks for an empty path (about 50 ns more a call here). */
static inline int privsep_fstat(int fd, struct stat *info) {
    return (int)syscall(SYS_fstat, fd, info);
}
static inline int privsep_close_range(unsigned int first, unsigned int last, unsigned int flags) {
    return (int)syscall(SYS_close_range, first, last, flags);
}
static inline long privsep_seccomp(unsigned int operation, unsigned int flags, void *_Nullable args) {
    return syscall(SYS_seccomp, operation, flags, args);
}
static inline int privsep_prctl(int option, unsigned long arg2, unsigned long arg3, unsigned long arg4, unsigned long arg5) {
    return prctl(option, arg2, arg3, arg4, arg5);
}
static const int privsep_PR_SET_PDEATHSIG = PR_SET_PDEATHSIG;
static const int privsep_PR_SET_NO_NEW_PRIVS = PR_SET_NO_NEW_PRIVS;
static const int privsep_PR_GET_NO_NEW_PRIVS = PR_GET_NO_NEW_PRIVS;
static const int privsep_PR_GET_SECCOMP = PR_GET_SECCOMP;
/* Landlock (Linux 5.13+). The uapi structs are repeated here because older
   headers lack the fields of newer ABIs (net ABI 4, scoped ABI 6). */
struct privsep_landlock_ruleset_attr {
    uint64_t handled_access_fs;
    uint64_t handled_access_net;
    uint64_t scoped;
};
struct __attribute__((packed)) privsep_landlock_path_beneath_attr {
    uint64_t allowed_access;
    int32_t parent_fd;
};
static inline int privsep_landlock_create_ruleset(const struct privsep_landlock_ruleset_attr *_Nullable attr,
                                                  size_t size, uint32_t flags) {
    return (int)syscall(SYS_landlock_create_ruleset, attr, size, flags);
}
static inline int privsep_landlock_add_path_rule(int ruleset, const struct privsep_landlock_path_beneath_attr *attr) {
    return (int)syscall(SYS_landlock_add_rule, ruleset, 1 /* LANDLOCK_RULE_PATH_BENEATH */, attr, 0);
}
static inline int privsep_landlock_restrict_self(int ruleset) {
    return (int)syscall(SYS_landlock_restrict_self, ruleset, 0);
}
/* Raw credential changes: the kernel's, which apply to the calling thread only
   (glibc's wrappers broadcast to every thread with signals). Called before any
   thread exists. */
static inline int privsep_setgroups_empty(void) { return (int)syscall(SYS_setgroups, 0, NULL); }
static inline int privsep_setresgid(uint32_t gid) { return (int)syscall(SYS_setresgid, gid, gid, gid); }
static inline int privsep_setresuid(uint32_t uid) { return (int)syscall(SYS_setresuid, uid, uid, uid); }
/* Gives up every capability of the calling thread for good, and any a later exec would
   grant. With CAP_SETPCAP: SECBIT_NOROOT locked (uid 0 gains none at exec) and the bounding
   set emptied. Without it (a container that dropped it, ambient capabilities of a non-root
   service): the sets alone are emptied, which holds once no_new_privs is set (the caller sets
   it next): an exec then never raises the permitted set above the empty one it had. Returns
   0, or -1 with errno from the step that failed. A thread that holds no capability and is not
   uid 0 has none to give up: it returns 0 at once. */
static inline int privsep_drop_all_capabilities(void) {
    struct { uint32_t version; int pid; } header = { 0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0 };
    struct { uint32_t effective, permitted, inheritable; } data[2];
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    int holds = data[0].permitted | data[1].permitted | data[0].effective | data[1].effective;
    if (!holds && syscall(SYS_getuid) != 0 && syscall(SYS_geteuid) != 0) return 0;
    int setpcap = (data[0].permitted >> 8) & 1; /* CAP_SETPCAP is 8 */
    if (setpcap && !((data[0].effective >> 8) & 1)) {
        data[0].effective |= 1u << 8; /* permitted, so it may be raised for the steps below */
        if (syscall(SYS_capset, &header, data) != 0) return -1;
    }
    if (setpcap) {
        /* SECBIT_NOROOT | _LOCKED, NO_SETUID_FIXUP | _LOCKED, KEEP_CAPS_LOCKED, NO_CAP_AMBIENT_RAISE | _LOCKED */
        if (prctl(PR_SET_SECUREBITS, 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80, 0, 0, 0) != 0) return -1;
        for (int cap = 0; cap < 64; cap++) {
            if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EINVAL) return -1; /* EINVAL: past the last */
        }
    }
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0) return -1;
    for (int i = 0; i < 2; i++) data[i].effective = data[i].permitted = data[i].inheritable = 0;
    if (syscall(SYS_capset, &header, data) != 0) return -1;
    if (syscall(SYS_capget, &header, data) != 0) return -1;
    if (data[0].permitted | data[1].permitted | data[0].effective | data[1].effective | data[0].inheritable | data[1].inheritable) {
        errno = EPERM;
        return -1;
    }
    for (int cap = 0; setpcap && cap < 64; cap++) {
        int in = prctl(PR_CAPBSET_READ, cap, 0, 0, 0);
        if (in > 0) { errno = EPERM; return -1; }
    }
    return 0;
}
// Thread-only effective identity switches for intercept mode's serving thread: the raw
// syscalls change the calling thread's credentials only (glibc's wrappers broadcast to every
// thread). -1 leaves an id unchanged; real and saved ids stay as they are, so a thread whose
// real/saved uid is 0 can switch its effective (and fs) ids back.
static inline int privsep_thread_setresuid(int64_t real, int64_t effective, int64_t saved) {
    return (int)syscall(SYS_setresuid, (uid_t)real, (uid_t)effective, (uid_t)saved);
}
static inline int privsep_thread_setresgid(int64_t real, int64_t effective, int64_t saved) {
    return (int)syscall(SYS_setresgid, (gid_t)real, (gid_t)effective, (gid_t)saved);
}
static inline int privsep_thread_setgroups(size_t count, const gid_t *_Nullable groups) {
    return (int)syscall(SYS_setgroups, count, groups);
}
static inline int privsep_thread_getresuid(uid_t *real, uid_t *effective, uid_t *saved) {
    return (int)syscall(SYS_getresuid, real, effective, saved);
}
static inline int privsep_thread_getresgid(gid_t *real, gid_t *effective, gid_t *saved) {
    return (int)syscall(SYS_getresgid, real, effective, saved);
}
static inline int privsep_thread_getgroups(int count, gid_t *_Nullable groups) {
    return (int)syscall(SYS_getgroups, count, groups);
}
// The fs uid/gid the thread has now (setfsuid with an invalid id changes nothing and returns it).
static inline uint32_t privsep_thread_fsuid(void) { return (uint32_t)syscall(SYS_setfsuid, (uid_t)-1); }
static inline uint32_t privsep_thread_fsgid(void) { return (uint32_t)syscall(SYS_setfsgid, (gid_t)-1); }
static inline int privsep_unshare(int flags) { return (int)syscall(SYS_unshare, flags); }
static inline int privsep_setrlimit(int resource, uint64_t soft, uint64_t hard) {
    struct rlimit limit = { (rlim_t)soft, (rlim_t)hard };
    return (int)syscall(SYS_prlimit64, 0, resource, &limit, NULL);
}
static inline long privsep_raw_syscall6(long number, long a, long b, long c, long d, long e, long f) {
    return syscall(number, a, b, c, d, e, f);
}
/* seccomp user notification: answer one with "let the call run". */
static inline int privsep_notif_continue(int listener, uint64_t id) {
    struct seccomp_notif_resp response;
    memset(&response, 0, sizeof response);
    response.id = id;
    response.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response);
}
/* The f_type of the filesystem `fd` is on, or -1. */
static inline long privsep_fstatfs_type(int fd) {
    struct statfs info;
    return fstatfs(fd, &info) == 0 ? (long)info.f_type : -1;
}
static inline pid_t privsep_gettid(void) { return (pid_t)syscall(SYS_gettid); }
/* The calling thread's CPU affinity as a bit mask of `bytes` bytes (raw syscalls:
   tid 0 is the calling thread). get returns the kernel's mask size in bytes. */
static inline int privsep_sched_getaffinity(uint64_t *mask, size_t bytes) {
    return (int)syscall(SYS_sched_getaffinity, 0, bytes, mask);
}
static inline int privsep_sched_setaffinity(const uint64_t *mask, size_t bytes) {
    return (int)syscall(SYS_sched_setaffinity, 0, bytes, mask);
}
static const int privsep_SCHED_BATCH = 3;
static const int privsep_SCHED_RESET_ON_FORK = 0x40000000;
static inline int privsep_prlimit(pid_t pid, int resource, const struct rlimit *_Nullable new_limit,
                                  struct rlimit *_Nullable old_limit) {
    return (int)syscall(SYS_prlimit64, pid, resource, new_limit, old_limit);
}
/* waitid(P_PIDFD, pidfd, ...): reaps the process behind a pidfd. *code is the
   siginfo si_code (CLD_EXITED, CLD_KILLED, CLD_DUMPED...), *status its si_status,
   *max_rss_kib the peak resident set the kernel recorded for it (rusage). */
static inline int privsep_waitid_pidfd(int pidfd, int options, int *code, int *status, long *max_rss_kib) {
    siginfo_t info;
    struct rusage usage;
    info.si_pid = 0;
    usage.ru_maxrss = 0;
    int rc = (int)syscall(SYS_waitid, 3 /* P_PIDFD */, pidfd, &info, options, &usage);
    if (rc == 0) { *code = info.si_pid == 0 ? 0 : info.si_code; *status = info.si_status; *max_rss_kib = usage.ru_maxrss; }
    return rc;
}
static inline int privsep_eventfd(unsigned int initial, int flags) {
    return (int)syscall(SYS_eventfd2, initial, flags);
}
static const int privsep_EFD_CLOEXEC = 02000000;
static const int privsep_EFD_NONBLOCK = 04000;

/* ---- spawn (GNU extensions the Glibc module does not export to Swift) ---- */

/* Declared here because spawn.h, built as part of the Glibc module, hides them
   without _GNU_SOURCE. Both exist since glibc 2.34. */
extern int posix_spawn_file_actions_addclosefrom_np(posix_spawn_file_actions_t *actions, int from);
extern int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *actions, const char *path);

static inline int privsep_spawn_addclosefrom(posix_spawn_file_actions_t *actions, int from) {
    return posix_spawn_file_actions_addclosefrom_np(actions, from);
}
static inline int privsep_spawn_addchdir(posix_spawn_file_actions_t *actions, const char *path) {
    return posix_spawn_file_actions_addchdir_np(actions, path);
}
#ifdef POSIX_SPAWN_SETSID
static const short privsep_POSIX_SPAWN_SETSID = POSIX_SPAWN_SETSID;
#else
static const short privsep_POSIX_SPAWN_SETSID = 0x80; /* glibc's value */
#endif

/* ---- wait status ---- */

static inline int privsep_wifexited(int status) { return WIFEXITED(status); }
static inline int privsep_wexitstatus(int status) { return WEXITSTATUS(status); }
static inline int privsep_wifsignaled(int status) { return WIFSIGNALED(status); }
static inline int privsep_wtermsig(int status) { return WTERMSIG(status); }
static const int privsep_CLD_EXITED = CLD_EXITED;
static const int privsep_CLD_KILLED = CLD_KILLED;
static const int privsep_CLD_DUMPED = CLD_DUMPED;

/* ---- errno ---- */

static inline int privsep_errno(void) { return errno; }
static inline void privsep_set_errno(int value) { errno = value; }

/* ---- intercept mode (seccomp user notification serving) ---- */

/* One notification, flattened (struct seccomp_notif nests a union Swift imports badly). */
struct privsep_notification {
    uint64_t id;
    uint32_t pid;
    uint32_t flags;
    int32_t nr;
    uint32_t arch;
    uint64_t instruction_pointer;
    uint64_t args[6];
};
static inline int privsep_notif_receive_full(int listener, struct privsep_notification *out) {
    struct seccomp_notif notification;
    memset(&notification, 0, sizeof notification);
    int rc = ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, &notification);
    if (rc == 0) {
        out->id = notification.id; out->pid = notification.pid; out->flags = notification.flags;
        out->nr = notification.data.nr; out->arch = notification.data.arch;
        out->instruction_pointer = notification.data.instruction_pointer;
        for (int i = 0; i < 6; i++) out->args[i] = notification.data.args[i];
    }
    return rc;
}
/* 0 while the notifying task is still blocked in that very call (so its pid still names it). */
static inline int privsep_notif_id_valid(int listener, uint64_t id) {
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &id);
}
/* Answers a notification: the call returns `value`, or fails with `error` (positive errno). */
static inline int privsep_notif_respond(int listener, uint64_t id, int64_t value, int32_t error) {
    struct seccomp_notif_resp response;
    memset(&response, 0, sizeof response);
    response.id = id;
    response.val = value;
    response.error = error == 0 ? 0 : -error;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, &response);
}
/* Installs `source` in the target and answers the notification with its number, atomically
   (SECCOMP_ADDFD_FLAG_SEND). Returns the target's fd number, or -1 and errno. */
static inline int privsep_notif_addfd_send(int listener, uint64_t id, int source, uint32_t newfd_flags) {
    struct seccomp_notif_addfd addfd;
    memset(&addfd, 0, sizeof addfd);
    addfd.id = id;
    addfd.flags = 1u << 1; /* SECCOMP_ADDFD_FLAG_SEND (Linux 5.14) */
    addfd.srcfd = (uint32_t)source;
    addfd.newfd_flags = newfd_flags;
    return ioctl(listener, SECCOMP_IOCTL_NOTIF_ADDFD, &addfd);
}
static inline long privsep_process_vm_readv(pid_t pid, const struct iovec *local, unsigned long local_count,
                                            const struct iovec *remote, unsigned long remote_count) {
    return syscall(SYS_process_vm_readv, pid, local, local_count, remote, remote_count, 0UL);
}
static inline int privsep_pidfd_getfd(int pidfd, int target_fd) {
    return (int)syscall(SYS_pidfd_getfd, pidfd, target_fd, 0U);
}
static inline int privsep_statx(int dirfd, const char *path, int flags, unsigned int mask, void *buffer) {
    return (int)syscall(SYS_statx, dirfd, path, flags, mask, buffer);
}
static inline int privsep_faccessat2(int dirfd, const char *path, int mode, int flags) {
    return (int)syscall(SYS_faccessat2, dirfd, path, mode, flags);
}
/* Loads a classic BPF program as a seccomp filter with `flags`; with
   SECCOMP_FILTER_FLAG_NEW_LISTENER returns the listener fd. */
static inline int privsep_seccomp_load_program(unsigned int flags, const void *instructions, unsigned short count) {
    struct { unsigned short len; const void *filter; } program = { count, instructions };
    return (int)syscall(SYS_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, flags, &program);
}
static const unsigned int privsep_SECCOMP_FILTER_FLAG_NEW_LISTENER = 1u << 3;
static const unsigned int privsep_SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV = 1u << 5; /* Linux 5.19 */
static const uint32_t privsep_AUDIT_ARCH_X86_64 = 0xC000003Eu;
static const int privsep_AT_EMPTY_PATH = 0x1000;
static const int privsep_AT_SYMLINK_NOFOLLOW = 0x100;
static const int privsep_AT_EACCESS = 0x200;
static const int privsep_AT_FDCWD = -100;

/* ---- a lock and a condition on futexes (SupervisorConnection's) ----
   The one exception to "no logic here": C11 atomics do not import into Swift without
   the Synchronization module, whose atomics have no address to give futex(2). pthread's
   mutex costs a call into libc for each lock and unlock, two more pages of code on every
   request (BENCHMARKS.md, sixth round); here the uncontended lock and unlock are one
   atomic instruction each, inline, and only waiting calls out (shims.c).
   `lock`: 0 free, 1 held, 2 held and someone may be asleep on it (Drepper, "Futexes Are
   Tricky", the second mutex). `sequence`: bumped by each broadcast, under the lock; a
   waiter sleeps while it still holds the value it saw under the lock, so no wake-up
   between its unlock and its sleep is lost. */
struct privsep_monitor {
    uint32_t lock;
    uint32_t sequence;
};
void privsep_monitor_lock_contended(struct privsep_monitor *monitor);
void privsep_monitor_wake_one(struct privsep_monitor *monitor);
static inline void privsep_monitor_lock(struct privsep_monitor *monitor) {
    uint32_t expected = 0;
    if (!__atomic_compare_exchange_n(&monitor->lock, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
        privsep_monitor_lock_contended(monitor);
    }
}
static inline void privsep_monitor_unlock(struct privsep_monitor *monitor) {
    if (__atomic_exchange_n(&monitor->lock, 0, __ATOMIC_RELEASE) == 2) privsep_monitor_wake_one(monitor);
}
/* With the lock held: releases it, sleeps until a broadcast (or spuriously: callers
   check their condition in a loop), takes it again. */
void privsep_monitor_wait(struct privsep_monitor *monitor);
/* With the lock held: wakes every thread in privsep_monitor_wait. */
void privsep_monitor_broadcast(struct privsep_monitor *monitor);

/* ---- a timer that interrupts one thread's blocking call ---- */

/* The signal: one glibc leaves to applications (SIGRTMAX is a call in glibc). */
static inline int privsep_interrupt_signal(void) { return SIGRTMAX - 3; }
static void privsep_interrupt_handler(int signo) { (void)signo; }
/* Without SA_RESTART, so the call the signal lands in returns EINTR. */
static inline int privsep_install_interrupt_handler(int signo) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = privsep_interrupt_handler;
    sigemptyset(&action.sa_mask);
    return sigaction(signo, &action, NULL);
}
static inline int privsep_unblock_signal(int signo) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signo);
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL);
}
/* A CLOCK_MONOTONIC timer that sends `signo` to the calling thread alone (SIGEV_THREAD_ID).
   glibc's timer_t is then the kernel's timer id: the process's first timer is NULL. */
static inline int privsep_thread_timer_create(int signo, timer_t _Nullable * _Nonnull timer) {
    struct sigevent event;
    memset(&event, 0, sizeof event);
    event.sigev_notify = 4; /* SIGEV_THREAD_ID */
    event.sigev_signo = signo;
    event._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    return timer_create(CLOCK_MONOTONIC, &event, timer);
}
/* Fires after `nanoseconds`, then every `interval` nanoseconds (0: once); 0, 0 disarms. */
static inline int privsep_thread_timer_arm(timer_t _Nullable timer, long long nanoseconds, long long interval) {
    struct itimerspec spec;
    memset(&spec, 0, sizeof spec);
    spec.it_value.tv_sec = (time_t)(nanoseconds / 1000000000LL);
    spec.it_value.tv_nsec = (long)(nanoseconds % 1000000000LL);
    spec.it_interval.tv_sec = (time_t)(interval / 1000000000LL);
    spec.it_interval.tv_nsec = (long)(interval % 1000000000LL);
    return timer_settime(timer, 0, &spec, NULL);
}
static inline int privsep_thread_timer_delete(timer_t _Nullable timer) { return timer_delete(timer); }

/* 1 if this process's children are reaped by the kernel as they exit (SIGCHLD ignored,
   or handled with SA_NOCLDWAIT), 0 if not, -1 if it cannot tell. */
static inline int privsep_children_reaped_by_kernel(void) {
    struct sigaction current;
    if (sigaction(SIGCHLD, NULL, &current) != 0) return -1;
    return (!(current.sa_flags & SA_SIGINFO) && current.sa_handler == SIG_IGN) || (current.sa_flags & SA_NOCLDWAIT) ? 1 : 0;
}
/* A new pseudo-terminal, both ends close-on-exec and neither a controlling terminal: the
   slave for a worker's output, the master for the supervisor to copy it from. The slave
   passes bytes unchanged (no output processing: the terminal they are copied to does its
   own) and has the window size of `window_of` (when that is a terminal). 0, or -1 with errno. */
int privsep_open_output_pty(int *master, int *slave, int window_of);
/* Bytes waiting to be read on `fd` (FIONREAD), or -1 with errno. */
int privsep_bytes_waiting(int fd);
/* A pipe whose ends are close-on-exec from the start (pipe2 needs _GNU_SOURCE): no spawn
   on another thread can inherit an end between pipe and fcntl. */
static inline int privsep_pipe_cloexec(int *fds) {
    return (int)syscall(SYS_pipe2, fds, O_CLOEXEC);
}
/* SIGCHLD back to its default disposition (ignored, but children stay until reaped). */
static inline int privsep_default_sigchld(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = SIG_DFL;
    sigemptyset(&action.sa_mask);
    return sigaction(SIGCHLD, &action, NULL);
}

#pragma clang assume_nonnull end


#endif /* PRIVSEP_SHIMS_H */
