/* System calls a hostile worker would try after lockdown, for the tests and
   `privsep selftest`. Each
   returns the raw result (-errno on failure) if the process survives. */
#ifndef PRIVSEP_ATTACKS_H
#define PRIVSEP_ATTACKS_H

long attack_openat(const char *path);
long attack_openat2(const char *path);
long attack_openat_write(const char *path);
long attack_execve(const char *path);
long attack_socket_inet(void);
long attack_ptrace_attach(int pid);
long attack_i386_getpid(void);
long attack_x32_getpid(void);
long attack_clone3(void);
/* Starts a thread through pthread_create and joins it: 0 when it ran. */
int attack_start_thread(void);
long attack_unshare_user(void);
long attack_seccomp_new_filter(void);
long attack_io_uring_setup(void);
long attack_memfd_execveat(void);
long attack_prctl_set_dumpable(void);
long attack_fork(void);
long attack_fcntl_clear_append(void);
long attack_fcntl_setown(void);
long attack_fcntl_async(void);
long attack_madvise_hwpoison(void);
long attack_madvise_guard(void);
long attack_sendto_address(void);
long attack_sendto_fastopen(void);
long attack_prlimit_other(void);
long attack_fcntl_keep_append(void);
/* Forks a child that tries to leave the process group (setsid, setpgid) and to start a
   sibling with CLONE_PARENT, reports the three results, then sleeps for ever. Returns
   the child's pid. */
long attack_leave_process_group(long results[3]);
/* SIGURG (harmless) to the parent, the supervisor. */
long attack_kill_parent(void);
long attack_renice_parent(void);
long attack_renice_user(void);
long attack_renice_self(void);
long attack_pin_parent(void);
long attack_pin_self(void);
/* FIOSETOWN on the channel naming the supervisor: with FIOASYNC, the kernel would signal it. */
long attack_fiosetown(void);
/* TCGETS on stdout: a terminal ioctl the tty group allows. */
long attack_tcgets(void);
/* TCGETS2 on stdout: what glibc 2.42's isatty uses; in the baseline. */
long attack_tcgets2(void);
/* `count` system calls no kernel has (1000, 1001, ...): how many failed ENOSYS. */
long attack_unknown_syscalls(long count);
/* Forks a child that leaves the process group (setsid), then after `pause_seconds` makes
   a socket call every 10 ms (20 s at most) until one fails ENOSYS, which it says on its
   stdout ("escaped enosys") before it sleeps 30 s; returns the child's pid. */
long attack_escape_and_call(long pause_seconds);
/* A TCP connect to 127.0.0.1:port from a socket of the worker's own (the `inet` group). */
long attack_connect_tcp_loopback(int port);
/* A connect to the abstract unix socket `name` (no leading NUL) from a socket of the
   worker's own (the `unix` group). */
long attack_connect_abstract(const char *name);
/* For the tests: starts a thread that sleeps for ever, then sets no_new_privs and loads an
   allow-all filter on the calling thread only (no TSYNC): a lockdown that binds one thread
   of two. 0 on success. */
long attack_filter_one_thread_of_two(void);
/* For the selftest itself (the supervisor side): a listening abstract unix socket named
   `name`, close-on-exec, for attack_connect_abstract to aim at; -1 with errno on failure. */
int privsep_selftest_listen_abstract(const char *name);

#endif
