/* The shims are static inline in include/privsep_shims.h but for the futex lock's waits,
   here. This file also holds the header's written-in constants to the C library's, with
   the definitions that _GNU_SOURCE shows. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/ioctl.h>
#include <termios.h>
#include "privsep_shims.h"

int privsep_open_output_pty(int *master, int *slave, int window_of) {
    int unlocked = 0;
    int m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (m < 0) return -1;
    /* The slave by the master's fd (TIOCGPTPEER), not by a path someone could swap. */
    int s = ioctl(m, TIOCSPTLCK, &unlocked) == 0 ? ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC) : -1;
    struct termios settings;
    if (s < 0 || tcgetattr(s, &settings) != 0) goto fail;
    settings.c_oflag &= ~OPOST;
    if (tcsetattr(s, TCSANOW, &settings) != 0) goto fail;
    struct winsize window;
    if (ioctl(window_of, TIOCGWINSZ, &window) == 0) (void)ioctl(m, TIOCSWINSZ, &window);
    *master = m;
    *slave = s;
    return 0;
fail:;
    int error = errno;
    if (s >= 0) close(s);
    close(m);
    errno = error;
    return -1;
}

int privsep_bytes_waiting(int fd) {
    int count = 0;
    return ioctl(fd, FIONREAD, &count) == 0 ? count : -1;
}

void privsep_monitor_lock_contended(struct privsep_monitor *monitor) {
    /* Marked 2 by whoever takes it from here on, so its unlock wakes a sleeper. A failed
       wait (EAGAIN: no longer 2; EINTR) just tries again. */
    while (__atomic_exchange_n(&monitor->lock, 2, __ATOMIC_ACQUIRE) != 0) {
        syscall(SYS_futex, &monitor->lock, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
    }
}

void privsep_monitor_wake_one(struct privsep_monitor *monitor) {
    syscall(SYS_futex, &monitor->lock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

void privsep_monitor_wait(struct privsep_monitor *monitor) {
    uint32_t seen = __atomic_load_n(&monitor->sequence, __ATOMIC_RELAXED);
    privsep_monitor_unlock(monitor);
    /* Returns at once (EAGAIN) if a broadcast came between the unlock and here. */
    syscall(SYS_futex, &monitor->sequence, FUTEX_WAIT_PRIVATE, seen, NULL, NULL, 0);
    privsep_monitor_lock(monitor);
}

void privsep_monitor_broadcast(struct privsep_monitor *monitor) {
    __atomic_fetch_add(&monitor->sequence, 1, __ATOMIC_RELAXED);
    syscall(SYS_futex, &monitor->sequence, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

_Static_assert(privsep_O_PATH == O_PATH, "O_PATH");
_Static_assert(privsep_O_TMPFILE == O_TMPFILE, "O_TMPFILE");
_Static_assert(privsep_O_NOATIME == O_NOATIME, "O_NOATIME");
_Static_assert(privsep_O_DIRECT == O_DIRECT, "O_DIRECT");
/* O_LARGEFILE is not checked: glibc shows 0 on 64-bit targets, the kernel's bit only in its uapi headers. */
